"""Workflow tests: dry runs, clear errors for bad input, a tiny real run and incremental reruns.

The workflow and the package are copied into a temporary folder and the copy's package is put first
on PYTHONPATH, so a test can edit plot code without touching the checkout.  The prepared default
model is shared through the checkout's `resources/` folder (git-ignored), so it is converted once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SHARED_RESOURCES, clone_run, env_for, job_counts, make_workdir, snakemake, tiny_args


def planned_rules(proc: subprocess.CompletedProcess) -> set[str]:
    """Rule names from the job table of a dry run."""
    return set(job_counts(proc.stdout + proc.stderr))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return make_workdir(tmp_path)


def test_package_copy_is_imported(workdir: Path):
    proc = subprocess.run(
        [sys.executable, "-c", "import vegtts; print(vegtts.__file__)"],
        env=env_for(workdir), capture_output=True, text=True, check=True,
    )
    assert str(workdir) in proc.stdout


def test_default_dry_run_plans_every_stage(workdir: Path):
    proc = snakemake(workdir, "-n")
    rules = planned_rules(proc)
    assert {"sample", "evaluate", "analyze", "figures", "report", "all"} <= rules


def test_snakemake_lint_prints_no_warning(workdir: Path):
    proc = snakemake(workdir, "--lint", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Lints for" not in out, out[-4000:]


@pytest.mark.slow
def test_snakemake_report_holds_the_tables_and_figures(finished_tiny_run: Path, tmp_path: Path):
    import zipfile

    from vegtts.outputs import ANALYSIS_TABLES, FIGURES

    run = clone_run(finished_tiny_run, tmp_path / "run")
    snakemake(run, *tiny_args(), "--report", "report.zip")
    members = {Path(name).name for name in zipfile.ZipFile(run / "report.zip").namelist()}
    assert set(ANALYSIS_TABLES.values()) <= members
    assert {f"{name}.png" for name in FIGURES} | {"report.html"} <= members


@pytest.mark.parametrize(
    "override, message",
    [
        (["samplng={'k': 4}"], "unknown config key 'samplng'"),
        (["sampling={'k': 0}"], "'sampling.k': 0 is not allowed"),
        (["tasks={'ids': ['no_such_task']}"], "no_such_task"),
        (["model={'source': '/no/such/model/folder'}"], "'model.source'"),
    ],
)
@pytest.mark.slow
def test_bad_input_stops_before_anything_runs(workdir: Path, override: list[str], message: str):
    proc = snakemake(workdir, "-n", "--config", *override, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


@pytest.mark.slow
def test_tiny_run_then_incremental_reruns(finished_tiny_run: Path, tmp_path: Path):
    workdir = clone_run(finished_tiny_run, tmp_path / "work")  # the shared tiny run (tests/conftest.py)
    report = workdir / "results/tiny/report.html"
    html = report.read_text()
    assert html.count("data:image/png;base64,") >= 2
    for table in ("selection.csv", "scaling.csv", "sample_stats.csv", "signal.csv"):
        assert (workdir / "results/tiny/tables" / table).stat().st_size > 0
    for fig in ("scaling", "selection"):
        assert (workdir / f"results/tiny/figures/{fig}.png").stat().st_size > 1000

    # A finished run has nothing left to do.
    proc = snakemake(workdir, "-n", *tiny_args())
    assert "Nothing to be done" in proc.stdout + proc.stderr

    # Bad config after a finished run: clear error, nothing lost.
    before = sorted(p for p in (workdir / "results").rglob("*") if p.is_file())
    proc = snakemake(workdir, *tiny_args("sampling={'k': 0}"), check=False)
    assert proc.returncode != 0
    assert before == sorted(p for p in (workdir / "results").rglob("*") if p.is_file())

    # An analysis setting reruns analysis, figures and report only.
    proc = snakemake(workdir, "-n", *tiny_args("analysis={'bootstrap': 150}"))
    assert planned_rules(proc) == {"analyze", "figures", "report", "all"}

    # An evaluation setting re-evaluates but does not resample.
    proc = snakemake(workdir, "-n", *tiny_args("evaluation={'timing_rounds': 6}"))
    assert "sample" not in planned_rules(proc) and "evaluate" in planned_rules(proc)

    # Editing plot code reruns only figures and report.
    plots = workdir / "src/vegtts/plots.py"
    plots.write_text(plots.read_text() + "\n# an edit to the plot code\n")
    proc = snakemake(workdir, "-n", *tiny_args())
    assert planned_rules(proc) == {"figures", "report", "all"}
    snakemake(workdir, *tiny_args())
    proc = snakemake(workdir, "-n", *tiny_args())
    assert "Nothing to be done" in proc.stdout + proc.stderr


# --- test-time training ---------------------------------------------------------------------------
TTT_CONFIG = "ttt={'enabled': True, 'tasks': ['relu_where'], 'seeds': %s, 'steps': %d, 'k': 4, 'lora': {'rank': 4, 'alpha': 8}}"


def selection_header_hash(exp: Path) -> str:
    from vegtts.analysis.tables import read_table

    return read_table(exp / "tables/selection.csv")[1]["config_hash"]


def ttt_args(seeds: str = "[0]", steps: int = 1) -> list[str]:
    return ["--configfile", ".test/config/tiny_ttt.yaml", "--config", f"resources_dir={SHARED_RESOURCES}",
            TTT_CONFIG % (seeds, steps)]


def planned_jobs(proc: subprocess.CompletedProcess) -> list[tuple[str, list[str]]]:
    """(rule, output paths) of every job in a dry run's log."""
    jobs: list[tuple[str, list[str]]] = []
    for line in (proc.stdout + proc.stderr).splitlines():
        stripped = line.strip()
        if stripped.startswith("rule ") and stripped.endswith(":"):
            jobs.append((stripped[5:-1], []))
        elif stripped.startswith("output:") and jobs:
            jobs[-1][1].extend(p.strip() for p in stripped[len("output:"):].split(","))
    return jobs


@pytest.mark.needs_package("peft", "ttt")
@pytest.mark.slow
def test_tiny_ttt_run_then_one_more_seed_or_step(workdir: Path):
    from vegtts.analysis.tables import read_table

    snakemake(workdir, *ttt_args())
    exp = workdir / "results/tiny_ttt"
    html = (exp / "report.html").read_text()
    assert "<h2>Test-time training</h2>" in html and "TTT seed 0" in html and "equivalent K" in html
    assert html.count("data:image/png;base64,") >= 4
    selection, header = read_table(exp / "tables/ttt_selection.csv")
    assert set(selection["rule"]) == {"boa_in_sample", "boa_held_out", "fixed_final", "early_stop", "per_task_oracle"}
    assert "definition.rule.boa_held_out" in header
    traj, _ = read_table(exp / "tables/ttt_trajectory.csv")
    assert sorted(zip(traj["step"], traj["batch"])) == [(0, "heldout"), (0, "train"), (1, "heldout"), (1, "train")]
    assert (traj["n_samples"] == 4).all()
    probe, probe_header = read_table(exp / "tables/ttt_probe.csv")
    assert sorted(set(probe["step"])) == [0, 1] and probe_header["probe_seed"] == "200000"
    all_rows = probe[probe["subset"] == "all"]
    assert (all_rows["n_probe_samples"] == 4).all() and (all_rows["n_programs"] <= all_rows["n_samples"]).all()
    assert probe_header["config_hash_scope"] == "all" and len(probe_header["config_hash"]) == 12
    assert probe_header["config_hash"] != selection_header_hash(exp)  # the base analysis hashes all but ttt
    compute, _ = read_table(exp / "tables/ttt_compute.csv")
    update = compute[compute["method"] == "ttt_update"]
    assert len(update) == 1 and update["training_tokens"].iloc[0] > 0
    adapters = list((workdir / "results/store/ttt").glob("*/adapter/adapter_model.safetensors"))
    assert len(adapters) == 1
    for fig in ("ttt_trajectory", "ttt_rho"):
        assert (exp / f"figures/{fig}.png").stat().st_size > 1000
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(snakemake(workdir, "-n", *ttt_args()))

    existing = {str(p.relative_to(workdir)) for p in (workdir / "results").rglob("*")}

    # One more seed: only that seed's update, samples (train + heldout of steps 0 and 1), evaluations, probe.
    jobs = planned_jobs(snakemake(workdir, "-n", *ttt_args(seeds="[0, 1]")))
    rules = [rule for rule, _ in jobs]
    assert rules.count("ttt_update") == 1 and rules.count("ttt_score") == 1
    assert rules.count("sample") == 4 and rules.count("evaluate") == 4
    assert "analyze" not in rules and "figures" not in rules
    for rule, outputs in jobs:
        if rule in ("sample", "evaluate"):
            assert all("/s1/" in o or "/s100001/" in o for o in outputs), outputs

    # One more step: only step 2 of seed 0; nothing already stored is planned again.
    jobs = planned_jobs(snakemake(workdir, "-n", *ttt_args(steps=2)))
    rules = [rule for rule, _ in jobs]
    assert rules.count("ttt_update") == 1 and rules.count("ttt_score") == 1
    assert rules.count("sample") == 2 and rules.count("evaluate") == 2
    for rule, outputs in jobs:
        if rule in ("sample", "evaluate", "ttt_update", "ttt_score"):
            assert not set(outputs) & existing, outputs


@pytest.mark.slow
def test_ttt_disabled_plans_no_ttt_jobs(workdir: Path):
    proc = snakemake(workdir, "-n", *tiny_args())
    assert not {r for r in planned_rules(proc) if r.startswith("ttt_")}
