"""Kill the Snakemake head process (SIGKILL) mid-sampling and mid-evaluation, then resume.

One tiny experiment is killed twice: first while the second task is being sampled, then (on the
resumed run) while the second task is being evaluated; a third run finishes it. After each kill the
test checks what a user relies on: the rerun finishes, nothing that had finished is run again (the
job table of the rerun and the mtime + sha256 of every finished artifact), and every artifact reads
back intact (parquet readable, vegtts metadata present, cache entries valid JSON).

The first kill takes the head and the job it was running (its process group), as when a node dies:
the interrupted job leaves no output (writes are atomic). The second kills the head alone, as a user's
`kill -9` does: its running job finishes as an orphan and writes its output, which Snakemake has
marked incomplete; `rerun-incomplete: true` in profiles/default makes the rerun redo that job (its
verdicts come from the evaluation cache) instead of stopping with IncompleteFilesException.
The rerun is what a user types: `snakemake --unlock` (SIGKILL leaves the lock behind), then the
same command again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import env_for, job_counts, make_workdir, tiny_args

from vegtts.io import read_parquet_metadata, sha256_file

pytestmark = pytest.mark.slow

TASKS = ("relu_where", "sigmoid_exp")  # .test/config/tiny.yaml


def snakemake_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--cores", "2", *args, *tiny_args()]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class Run:
    """A Snakemake head in its own process group, its output in a file."""

    def __init__(self, workdir: Path, name: str, *args: str):
        self.workdir = workdir
        self.log_path = workdir / f"{name}.out"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            snakemake_cmd(*args), cwd=workdir, env=env_for(workdir), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, condition, what: str, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"snakemake exited (rc {self.proc.returncode}) before {what}:\n{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"timed out waiting for {what}:\n{self.output()[-4000:]}")
            time.sleep(0.2)

    def kill(self, *, jobs_too: bool = True) -> None:
        """SIGKILL the head; then its jobs too (a dead node), or wait for them to end as orphans."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 600
        while _group_alive(self.proc.pid):
            if jobs_too or time.monotonic() > deadline:
                os.killpg(self.proc.pid, signal.SIGKILL)
            time.sleep(0.2)
        self._log.close()

    def finish(self, timeout: float = 1200) -> str:
        self.proc.wait(timeout=timeout)
        self._log.close()
        out = self.output()
        assert self.proc.returncode == 0, f"run failed (rc {self.proc.returncode}):\n{out[-6000:]}"
        return out


def store_files(workdir: Path, stage: str, suffix: str) -> dict[str, Path]:
    """Task id -> file of a stage in the content-addressed store (one key per stage here)."""
    return {p.stem.split(".")[0]: p for p in (workdir / "results" / "store" / stage).rglob(f"*{suffix}")
            if not p.name.startswith(".")}


def fingerprints(paths) -> dict[Path, tuple[int, str]]:
    return {p: (p.stat().st_mtime_ns, sha256_file(p)) for p in paths}


def started_not_finished(workdir: Path, stage: str) -> set[str]:
    """Tasks whose job of `stage` has started (its log exists) but not written its parquet."""
    logs, done = store_files(workdir, stage, ".log"), store_files(workdir, stage, ".parquet")
    return set(logs) - set(done)


def assert_unchanged(before: dict[Path, tuple[int, str]]) -> None:
    for path, fp in before.items():
        assert path.exists(), f"{path} disappeared"
        assert fingerprints([path])[path] == fp, f"{path} was regenerated"


def assert_artifacts_intact(workdir: Path) -> None:
    results = workdir / "results"
    parquets = [p for p in results.rglob("*.parquet") if not p.name.startswith(".")]
    assert parquets
    for path in parquets:
        df = pd.read_parquet(path)
        assert len(df) > 0, path
        assert read_parquet_metadata(path).get("provenance"), f"{path} has no vegtts provenance"
    cache_entries = list((results / "store" / "evalcache").rglob("*.json"))
    assert cache_entries
    for entry in cache_entries:
        assert "status" in json.loads(entry.read_text()), entry


def test_killed_head_resumes_without_redoing_finished_work(tmp_path: Path):
    workdir = make_workdir(tmp_path)
    t_start = time.monotonic()

    # 1. kill while the second task is being sampled (the first is sampled and maybe evaluated)
    first = Run(workdir, "run1")
    first.wait_for(lambda: store_files(workdir, "samples", ".parquet") and started_not_finished(workdir, "samples"),
                   "the second sampling job")
    first.kill()
    samples_done = store_files(workdir, "samples", ".parquet")
    evals_done = store_files(workdir, "evaluations", ".parquet")
    assert len(samples_done) == 1
    finished = fingerprints([*samples_done.values(), *evals_done.values(), *(workdir / "results" / "store" / "tasks").rglob("tasks.json")])

    # the kill left Snakemake's lock: the rerun says so, and --unlock clears it
    locked = subprocess.run(snakemake_cmd(), cwd=workdir, env=env_for(workdir), capture_output=True, text=True)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    subprocess.run(snakemake_cmd("--unlock"), cwd=workdir, env=env_for(workdir), check=True, capture_output=True)

    # 2. resume; kill the head alone while the second task is being evaluated
    second = Run(workdir, "run2")
    second.wait_for(lambda: len(store_files(workdir, "samples", ".parquet")) == 2
                    and started_not_finished(workdir, "evaluations"), "the second evaluation job")
    interrupted = started_not_finished(workdir, "evaluations")
    samples_done = store_files(workdir, "samples", ".parquet")
    evals_done = {t: p for t, p in store_files(workdir, "evaluations", ".parquet").items() if t not in interrupted}
    second.kill(jobs_too=False)
    orphan_finished = {t for t in interrupted if t in store_files(workdir, "evaluations", ".parquet")}
    assert orphan_finished == interrupted, "the orphaned evaluation job did not write its output"
    counts = job_counts(second.output())
    assert counts.get("sample") == 1 and "resolve_tasks" not in counts, counts
    assert_unchanged(finished)
    assert len(evals_done) == 1
    finished = fingerprints([*finished, *samples_done.values(), *evals_done.values()])

    # 3. resume to the end
    subprocess.run(snakemake_cmd("--unlock"), cwd=workdir, env=env_for(workdir), check=True, capture_output=True)
    out = Run(workdir, "run3").finish()
    counts = job_counts(out)
    assert counts.get("evaluate") == 1 and "sample" not in counts and "resolve_tasks" not in counts, counts
    assert (workdir / "results" / "tiny" / "report.html").is_file()
    assert_unchanged(finished)
    assert_artifacts_intact(workdir)
    evaluations = store_files(workdir, "evaluations", ".parquet")
    for task in orphan_finished:  # redone because incomplete, from the verdicts the orphan cached
        assert "Forced execution" in out or "ncomplete" in out
        df = pd.read_parquet(evaluations[task])
        assert df.loc[df["code_sha256"] != "", "cached"].all(), task  # samples without code are never cached

    nothing = subprocess.run(snakemake_cmd("-n"), cwd=workdir, env=env_for(workdir), capture_output=True, text=True)
    assert "Nothing to be done" in nothing.stdout + nothing.stderr
    print(f"kill, resume, kill, resume: {time.monotonic() - t_start:.0f}s")
