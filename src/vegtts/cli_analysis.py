"""`vegtts analyze`, `figures`, `report`, `measured-section`, `compare`: the experiment's tables,
figures and report. The workflow hands them the files its rules declare (vegtts.outputs)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .cli_common import add_command, json_arg, verified
from .outputs import (
    ANALYSIS_TABLES,
    FIGURE_FORMATS,
    FIGURES,
    MERGED_SAMPLES,
    TTT_FIGURES,
    TTT_TABLES,
    folder_of,
)

log = logging.getLogger("vegtts")


def figure_names(stems: tuple[str, ...], formats: tuple[str, ...] = FIGURE_FORMATS) -> list[str]:
    return [f"{stem}.{fmt}" for stem in stems for fmt in formats]


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis import run_analysis
    from .analysis.provenance import run_provenance
    from .io import provenance

    verified(*args.samples, *args.evaluations, *args.tasks)
    run_analysis(
        sample_paths=[Path(p) for p in args.samples],
        eval_paths=[Path(p) for p in args.evaluations],
        settings=args.settings,
        provenance=run_provenance(provenance(), args.config_hash, args.store_keys, args.config_hash_scope),
        out_dir=folder_of(args.out, [*ANALYSIS_TABLES.values(), MERGED_SAMPLES]),
        tasks_path=[Path(p) for p in args.tasks],
    )
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from .plots import make_figures

    make_figures(folder_of(args.tables, ANALYSIS_TABLES.values()), folder_of(args.out, figure_names(FIGURES)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .analysis.provenance import code_version
    from .io import provenance
    from .report import make_report, stage_times_from_benchmarks

    tables = [*ANALYSIS_TABLES.values(), *(TTT_TABLES.values() if args.ttt else ())]
    figures = figure_names(FIGURES + (TTT_FIGURES if args.ttt else ()), ("png",))
    make_report(
        tables_dir=folder_of(args.tables, tables),
        figures_dir=folder_of(args.figures, figures),
        config=args.config,
        provenance=provenance(code=code_version()),
        stage_times=stage_times_from_benchmarks({stage: files for stage, *files in args.benchmarks or []}),
        out_html=Path(args.out),
        ttt=args.ttt,
    )
    return 0


def cmd_measured_section(args: argparse.Namespace) -> int:
    from .measured_section import write_measured_section

    changed = write_measured_section(Path(args.experiment), Path(args.note), check=args.check)
    if args.check:
        if changed:
            log.error("%s: the measured section differs from what %s's tables give; run `vegtts measured-section %s --note %s`",
                      args.note, args.experiment, args.experiment, args.note)
            return 1
        log.info("%s: the measured section matches %s", args.note, args.experiment)
        return 0
    log.info("%s: measured section %s", args.note, "rewritten" if changed else "already up to date")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .report import compare_experiments

    compare_experiments([Path(d) for d in args.experiments], Path(args.out))
    return 0


def add_analysis_parsers(sub: Any) -> None:
    p = add_command(sub, "analyze", cmd_analyze, "tables: sample statistics, selection rules, scaling, signal check")
    p.add_argument("--samples", nargs="+", required=True)
    p.add_argument("--evaluations", nargs="+", required=True)
    p.add_argument("--settings", type=json_arg, required=True)
    p.add_argument("--config-hash", default="", help="hash of the experiment config (written into every table)")
    p.add_argument("--config-hash-scope", default="", help="which config keys the hash covers (written next to it)")
    p.add_argument("--store-keys", type=json_arg, default={}, help="store keys of the inputs as JSON (written into every table)")
    p.add_argument("--tasks", nargs="*", default=[], help="tasks.json files: validation findings per task (and analysis.exclude_flagged)")
    p.add_argument("--out", nargs="+", required=True,
                   help=f"the files to write, in one folder: every table of vegtts.outputs and {MERGED_SAMPLES}")

    p = add_command(sub, "figures", cmd_figures, "figures (PNG + PDF) from the analysis tables")
    p.add_argument("--tables", nargs="+", required=True, help="the analysis tables (every one of vegtts.outputs)")
    p.add_argument("--out", nargs="+", required=True, help="the figure files to write, in one folder (PNG and PDF of each)")

    p = add_command(sub, "report", cmd_report, "the self-contained report.html")
    p.add_argument("--tables", nargs="+", required=True, help="the analysis tables (and with --ttt the TTT tables)")
    p.add_argument("--figures", nargs="+", required=True, help="the figures' PNG files (and with --ttt the TTT figures')")
    p.add_argument("--config", type=json_arg, required=True, help="the experiment config as JSON")
    p.add_argument("--benchmarks", nargs="+", action="append", metavar=("STAGE", "FILE"),
                   help="a stage and the Snakemake benchmark files of its jobs, summed into the wall-time table "
                        "(repeat per stage; missing files count no job)")
    p.add_argument("--ttt", action="store_true", help="add the TTT section (tables ttt_*.csv, figures ttt_*.png)")
    p.add_argument("--out", required=True)

    p = add_command(sub, "measured-section", cmd_measured_section,
                    "write a run note's measured section (between its vegtts:measured markers) from a run's tables")
    p.add_argument("experiment", help="the run's results folder, e.g. results/default (with tables/)")
    p.add_argument("--note", default="benchmarks/results/default_run.md",
                   help="the note to update (default: benchmarks/results/default_run.md)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the section is not what the tables give")

    p = add_command(sub, "compare", cmd_compare, "one HTML report comparing two or more experiments side by side")
    p.add_argument("experiments", nargs="+", help="experiment result folders (results/<exp>/ with tables/ and figures/)")
    p.add_argument("--out", required=True, help="the comparison report.html")
