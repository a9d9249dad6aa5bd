"""Fault injection on a finished tiny run: the store never serves wrong data (issue #14).

A copy of the finished run (tests/conftest.py) is damaged the ways the issue found: a bit flip in a
sample parquet, a truncated resolved task, a sample and its evaluation deleted (what Snakemake leaves
after an evaluate job failed on a bad sample and the user removed that sample), a poisoned
evaluation-cache entry (valid JSON, wrong verdict).  The next run must plan exactly the repairs,
regenerate them, end with "Nothing to be done" and a whole store, and give tables equal to the
untouched run's.  A full disk is named in the job's log and in Snakemake's output (a small tmpfs).
The sampling backends' faults (trickling and hostile servers) are tested beside their code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import (
    clone_run,
    env_for,
    flip_bit,
    make_workdir,
    plan,
    rule_counts,
    snakemake,
    tiny_args,
    truncate,
)

from vegtts.analysis.tables import read_table

pytestmark = pytest.mark.slow

TABLES = ("selection.csv", "scaling.csv", "sample_stats.csv", "signal.csv", "selection_per_task.csv")
# per-sample columns that describe how a verdict was obtained (from the cache or not), not what it is
HOW_OBTAINED = ("cached", "eval_seconds")


def store_file(work: Path, stage: str, task: str) -> Path:
    found = [p for p in (work / "results/store" / stage).rglob(f"{task}.*.parquet")]
    assert len(found) == 1, found
    return found[0]


def task_file(work: Path, task: str) -> Path:
    for path in (work / "results/store/tasks").glob("*/tasks.json"):
        if json.loads(path.read_text())["tasks"][0]["task_id"] == task:
            return path
    raise AssertionError(task)


def tables_of(work: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for name in TABLES:
        df, _ = read_table(work / "results/tiny/tables" / name)
        out[name] = df.drop(columns=[c for c in df.columns if any(h in c for h in HOW_OBTAINED)])
    return out


def poison_one_cache_entry(work: Path) -> Path:
    """Turn a verdict that does not depend on timing (not ok) into "ok" at 42x, as a hand edit would."""
    for entry in sorted((work / "results/store/evalcache").rglob("*.json")):
        row = json.loads(entry.read_text())
        if row["status"] not in ("ok",):
            row.update(status="ok", correct=True, speedup=42.0, speedup_lo=41.0, speedup_hi=43.0)
            entry.write_text(json.dumps(row))
            return entry
    pytest.skip("the tiny run produced no verdict that is not ok, so none can be poisoned without timing")


def test_a_damaged_store_is_repaired_and_the_tables_equal_an_untouched_runs(finished_tiny_run, tmp_path):
    work = clone_run(finished_tiny_run, tmp_path / "work")
    flip_bit(store_file(work, "samples", "relu_where"), offset=200)       # corruption
    truncate(task_file(work, "relu_where"))                              # truncation
    store_file(work, "samples", "sigmoid_exp").unlink()                  # deletion, and what Snakemake
    store_file(work, "evaluations", "sigmoid_exp").unlink()              # deleted after a failed job
    poisoned = poison_one_cache_entry(work)                              # a poisoned cache entry

    jobs = plan(work, *tiny_args())
    assert rule_counts(jobs) == {"resolve_task": 1, "sample": 2, "evaluate": 2, "analyze": 1, "figures": 1,
                                 "report": 1, "all": 1}
    quarantine = list((work / "results/store/quarantine").rglob("*.parquet")) + \
        list((work / "results/store/quarantine").rglob("tasks.json"))
    assert {p.name.split(".")[0] for p in quarantine} == {"relu_where", "tasks"}  # moved aside, not deleted

    out = snakemake(work, *tiny_args())
    assert "discarding" in (out.stdout + out.stderr) or any(
        "discarding" in p.read_text() for p in (work / "results/store/evaluations").rglob("*.log"))
    assert json.loads(poisoned.read_text())["status"] != "ok"  # re-evaluated, the true verdict replaced it
    assert plan(work, *tiny_args()) == []  # "Nothing to be done" now means the store is whole
    verify = subprocess.run([sys.executable, "-m", "vegtts.cli", "store", "verify", "results"], cwd=work,
                            env=env_for(work), capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    untouched, repaired = tables_of(finished_tiny_run), tables_of(work)
    for name in TABLES:
        pd.testing.assert_frame_equal(repaired[name], untouched[name], check_exact=False, rtol=1e-9, obj=name)


def test_a_stale_evaluation_is_redone(finished_tiny_run, tmp_path):
    """Samples regenerated (different bytes) under an evaluation that Snakemake would not rerun
    (here: mtimes made equal, as after a copy without them): the store check finds it stale."""
    work = clone_run(finished_tiny_run, tmp_path / "work")
    sample = store_file(work, "samples", "relu_where")
    evaluation = store_file(work, "evaluations", "relu_where")
    from vegtts.io import read_parquet, read_parquet_metadata, write_parquet

    df = read_parquet(sample)
    write_parquet(sample, df, metadata={**read_parquet_metadata(sample), "rewritten": True})
    t = evaluation.stat().st_mtime_ns
    for p in work.joinpath("results").rglob("*"):
        os.utime(p, ns=(t, t))
    jobs = plan(work, *tiny_args())
    assert rule_counts(jobs) == {"evaluate": 1, "analyze": 1, "figures": 1, "report": 1, "all": 1}


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_full_disk_is_named_in_the_jobs_log_and_in_snakemakes_output(tmp_path):
    results = tmp_path / "full"
    if not _mount_tmpfs(results, "256k"):
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN); the ENOSPC handling itself is "
                    "tested with a simulated error in tests/test_store.py")
    try:
        (tmp_path / "work").mkdir()
        work = make_workdir(tmp_path / "work")
        with open(results / "filler", "wb", buffering=0) as f:  # fill the disk but the last page
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        os.truncate(results / "filler", os.path.getsize(results / "filler") - 4096)
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", ".test/config/tiny.yaml",
             "--config", f"results_dir={results}", "--until", "resolve_task"],
            cwd=work, env=env_for(work), capture_output=True, text=True)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "No space left on device" in out, out[-3000:]
        logs = list(results.rglob("resolve.log"))
        assert logs and any("No space left on device" in p.read_text() for p in logs)
        assert not list(results.rglob("tasks.json"))  # nothing half-written
    finally:
        subprocess.run(["umount", str(results)], capture_output=True)
