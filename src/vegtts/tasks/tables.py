"""Markdown, CSV and JSON tables of a screen (`vegtts tasks validate --out`) and of a shape
reduction (`vegtts tasks reduce --report`), each with the command, the time and the peak memory."""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import platform
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vegtts.io import write_text
from vegtts.tasks.reduce import Reduction
from vegtts.tasks.validate import UNSCREENED, ScreenResult, check_of


def run_facts(command: str, seconds: float, child_peak_mb: float) -> dict[str, Any]:
    """What every table states about the run that made it."""
    from vegtts.tasks.probe import peak_rss_mb

    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "wall_s": round(seconds, 1),
        "parent_peak_rss_mb": round(peak_rss_mb(), 1),
        "largest_child_peak_rss_mb": round(child_peak_mb, 1) if math.isfinite(child_peak_mb) else None,
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus",
        "load_average_at_end": [round(x, 2) for x in load],
    }


def _ms(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "-"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _run_lines(title: str, facts: dict[str, Any], count: int) -> list[str]:
    """The header every table starts with: what ran, how long, how much memory, on what."""
    return [
        f"# {title}",
        "",
        f"- date: {facts['date']}",
        f"- command: `{facts['command']}`",
        f"- wall time: {facts['wall_s']} s for {count} problems (one at a time, each step in a forked child)",
        f"- peak memory: parent {facts['parent_peak_rss_mb']} MiB; largest child {facts['largest_child_peak_rss_mb']} MiB "
        "(one child at a time, next to the fork server)",
        f"- machine: {facts['machine']}; load average at the end {facts['load_average_at_end']} (shared machine: times are noisy)",
    ]


def screen_markdown(results: list[ScreenResult], names: dict[str, str], facts: dict[str, Any], title: str) -> str:
    counts = Counter(check_of(f) for r in results for f in r.findings)
    clean = sum(1 for r in results if not r.findings)
    unscreened = sum(1 for r in results if r.unscreened)
    lines = _run_lines(title, facts, len(results)) + [
        f"- result: {clean} of {len(results)} problems without findings; {len(results) - clean - unscreened} with findings; "
        f"{unscreened} could not be screened ({', '.join(UNSCREENED)})",
        "- findings by check: " + (", ".join(f"{k} {v}" for k, v in counts.most_common()) or "none"),
        "",
        "Checks and their meaning: `src/vegtts/tasks/validate.py` (module docstring). ref ms = the reference's time per call "
        "on fresh inputs (fastest of 5 rounds of 3 calls, one thread).",
        "",
        "| task | name | ref ms | est. MiB | peak MiB | s | findings |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        found = "; ".join(r.findings) if r.findings else "OK"
        lines.append(
            f"| {r.task_id} | {_md_cell(names.get(r.task_id, ''))} | {_ms(r.ref_ms)} | {_ms(r.est_peak_mb)} | "
            f"{_ms(r.peak_rss_mb)} | {r.seconds:.1f} | {_md_cell(found)} |"
        )
    return "\n".join(lines) + "\n"


def write_screen_table(path: Path, results: list[ScreenResult], names: dict[str, str], facts: dict[str, Any], title: str) -> None:
    """`path` by its suffix: .md (the table above), .csv (one row per problem) or .json."""
    suffix = path.suffix.lower()
    if suffix == ".md":
        write_text(path, screen_markdown(results, names, facts, title))
    elif suffix == ".json":
        write_text(path, json.dumps({"run": facts, "results": [r.to_dict() for r in results]}, indent=1) + "\n")
    elif suffix == ".csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["task_id", "name", "ref_ms", "est_peak_mb", "peak_rss_mb", "seconds", "findings"])
        for r in results:
            writer.writerow([r.task_id, names.get(r.task_id, ""), r.ref_ms, r.est_peak_mb, r.peak_rss_mb, round(r.seconds, 2), " | ".join(r.findings)])
        write_text(path, buf.getvalue())
    else:
        raise ValueError(f"--out {str(path)!r}: the table format comes from the suffix; allowed: .md, .csv, .json")


def reduce_markdown(reductions: Iterable[Reduction], names: dict[str, str], facts: dict[str, Any], target_ms: float, table: str) -> str:
    reductions = list(reductions)
    in_range = sum(1 for r in reductions if r.in_range)
    lines = _run_lines(f"KernelBench shape reduction to about {target_ms:g} ms per reference call", facts, len(reductions)) + [
        f"- result: {in_range} of {len(reductions)} problems reduced to a reference time within [1, 200] ms; the others are "
        "listed with the reason",
        f"- table written: `{table}` (use it with `tasks.shapes`)",
        "",
        "| task | name | constants set | ref ms | step / steps | measurements | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reductions:
        consts = ", ".join(f"{k}={v}" for k, v in r.constants.items()) or "(own shapes)"
        lines.append(
            f"| {r.task_id} | {_md_cell(names.get(r.task_id, ''))} | {_md_cell(consts)} | {_ms(r.ref_ms)} | "
            f"{r.step} / {r.steps} | {_md_cell('; '.join(r.measurements))} | {_md_cell(r.note)} |"
        )
    return "\n".join(lines) + "\n"
