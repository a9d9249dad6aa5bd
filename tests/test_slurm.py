"""The tiny experiment on a real one-node Slurm cluster, submitted through workflow/profiles/slurm.

`tests/slurm/cluster.sh up` installs Debian's slurm-wlm and munge when they are missing (root and
apt-get needed), writes a one-node config whose node advertises a fake GPU (gres gpu:1 on
/dev/null) and starts munged, slurmctld and slurmd without systemd; the fixture stops them after.
Without root or apt the test is skipped locally, but fails when CI is set: CI must run it.

The test runs the shipped profile with only what a 2-core box needs changed: the squeue status
command (this cluster has no accounting database), short poll delays, and CPU/memory requests capped
to the node. Partitions, GPU requests and per-rule resources are the shipped ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from test_workflow import REPO, env_for, make_workdir, tiny_args
from vegtts.io import sha256_file

CLUSTER_SCRIPT = REPO / "tests" / "slurm" / "cluster.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
NODE_MEM_MB = 6000  # what the test node advertises (cluster.sh SLURM_NODE_MEM_MB)


def _cannot_run_reason() -> str | None:
    if os.geteuid() != 0:
        return "starting a Slurm cluster needs root"
    have_slurm = shutil.which("slurmctld") and shutil.which("munged")
    if not have_slurm and not shutil.which("apt-get"):
        return "slurm-wlm is not installed and there is no apt-get to install it"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    reason = _cannot_run_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Slurm test, but: {reason}")
        pytest.skip(reason)
    env = {**os.environ, "SLURM_NODE_MEM_MB": str(NODE_MEM_MB)}
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(CLUSTER_SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "down"], capture_output=True)
        pytest.fail(f"bringing up Slurm failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    print(f"slurm cluster up in {time.monotonic() - t0:.1f}s")
    try:
        yield
    finally:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "down"], capture_output=True, text=True, timeout=120)


def ci_profile(dest: Path) -> Path:
    """The shipped profile with the status command, delays and sizes this 2-core node needs."""
    profile = yaml.safe_load(PROFILE.read_text())
    cpus = os.cpu_count() or 2
    profile["slurm-status-command"] = "squeue"
    profile["slurm-init-seconds-before-status-checks"] = 5
    profile["latency-wait"] = 5
    profile["jobs"] = 4
    profile["retries"] = 0
    profile["slurm-keep-successful-logs"] = True
    caps = {"mem_mb": NODE_MEM_MB // 2, "cpus_per_gpu": cpus}
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        for key, cap in caps.items():
            if key in resources:
                resources[key] = min(int(resources[key]), cap)
    profile["set-threads"] = {rule: min(int(n), cpus) for rule, n in profile["set-threads"].items()}
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


SQUEUE_FIELDS = [("id", "JobID", 20), ("partition", "Partition", 30), ("state", "State", 20),
                 ("comment", "Comment", 200), ("gpus", "tres-per-job", 60), ("start", "StartTime", 25),
                 ("end", "EndTime", 25)]


def squeue_jobs() -> list[dict[str, str]]:
    """Every job the controller still remembers (cluster.sh sets MinJobAge=3600).

    The plugin puts rule_<name>_wildcards_... in each job's comment; --gpus shows in tres-per-job.
    """
    fmt = ",".join(f"{name}:{width}" for _, name, width in SQUEUE_FIELDS)
    out = subprocess.run(["squeue", "--states=all", "-h", "-O", fmt], capture_output=True, text=True, check=True)
    jobs = []
    for line in out.stdout.splitlines():
        job, start = {}, 0
        for key, _, width in SQUEUE_FIELDS:
            job[key] = line[start:start + width].strip()
            start += width
        jobs.append(job)
    return jobs


def _job_resources(dry_run_output: str) -> dict[str, list[str]]:
    """Rule -> the `resources:` line of each of its jobs in a dry run."""
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in dry_run_output.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            jobs.setdefault(rule, []).append(line.strip())
    return jobs


def test_profile_gives_each_rule_its_slurm_resources(workdir_with_plugin: Path):
    """Without a cluster: the shipped profile parses and maps rules to partitions and GPUs."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--profile", str(PROFILE.parent), *tiny_args()]
    proc = subprocess.run(cmd, cwd=workdir_with_plugin, env=env_for(workdir_with_plugin), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = _job_resources(proc.stdout + proc.stderr)
    assert jobs["sample"] and all("slurm_partition=gpu" in r and "gpu=1" in r for r in jobs["sample"]), jobs
    for rule in ("evaluate", "analyze", "figures", "report"):
        assert all("slurm_partition=cpu" in r and "gpu=" not in r for r in jobs[rule]), (rule, jobs[rule])


@pytest.fixture
def workdir_with_plugin(tmp_path: Path) -> Path:
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI must install the 'slurm' extra (snakemake-executor-plugin-slurm)")
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    return make_workdir(tmp_path)


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_experiment_through_the_slurm_profile(slurm_cluster, tmp_path: Path):
    (tmp_path / "wd").mkdir()
    workdir = make_workdir(tmp_path / "wd")
    profile = ci_profile(tmp_path / "profile")
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(profile), *tiny_args()]
    env = env_for(workdir)
    t0 = time.monotonic()
    # Kill the head (SIGKILL) once the first evaluation job runs on Slurm; the job runs on without it,
    # as when the login node's process dies. Then resume the way the README says.
    with open(tmp_path / "head.out", "w") as head_log:
        head = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=head_log, stderr=subprocess.STDOUT)
        while not any(j["comment"].startswith("rule_evaluate") and j["state"] == "RUNNING" for j in squeue_jobs()):
            assert head.poll() is None, (tmp_path / "head.out").read_text()[-6000:]
            assert time.monotonic() - t0 < 1200, "no evaluation job started in 20 minutes"
            time.sleep(1)
        head.kill()
        head.wait()
    store = workdir / "results" / "store"
    finished = {p: sha256_file(p) for p in [*store.glob("tasks/*/tasks.json"), *store.glob("samples/*/*/*.parquet")]}
    mtimes = {p: p.stat().st_mtime_ns for p in finished}
    subprocess.run([*cmd, "--unlock"], cwd=workdir, env=env, capture_output=True, check=True)
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1500)
    wall = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    print(f"tiny experiment on Slurm, head killed once and resumed: {wall:.0f}s")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed after {wall:.0f}s:\n{log[-6000:]}"
    assert finished and all(sha256_file(p) == h and p.stat().st_mtime_ns == mtimes[p] for p, h in finished.items())

    report = workdir / "results" / "tiny" / "report.html"
    assert report.is_file() and report.stat().st_size > 10_000, sorted(p.name for p in (workdir / "results").rglob("*"))

    jobs = squeue_jobs()
    by_rule: dict[str, list[dict[str, str]]] = {}
    for job in jobs:
        if job["comment"].startswith("rule_"):
            rule = job["comment"][len("rule_"):].split("_wildcards")[0]
            by_rule.setdefault(rule, []).append(job)
    # every stage ran as a Slurm job, and finished
    assert {"resolve_tasks", "sample", "evaluate", "analyze", "figures", "report"} <= set(by_rule), jobs
    assert all(job["state"] == "COMPLETED" for job in jobs), jobs
    # the resumed run submitted nothing that had finished before the kill
    sampled_before_kill = {p.stem for p in finished if p.suffix == ".parquet"}
    assert len(by_rule["resolve_tasks"]) == 1, jobs
    for task in sampled_before_kill:
        assert len([j for j in by_rule["sample"] if j["comment"].endswith(f"_{task}")]) == 1, (task, jobs)
    # sampling went to the gpu partition with a GPU; the rest to the cpu partition without one
    for job in by_rule["sample"]:
        assert job["partition"] == "gpu" and job["gpus"] == "gres:gpu:1", job
    for job in by_rule["evaluate"] + by_rule["analyze"]:
        assert job["partition"] == "cpu" and "gpu" not in job["gpus"], job
    busy = sum((datetime.fromisoformat(j["end"]) - datetime.fromisoformat(j["start"])).total_seconds() for j in jobs)
    print(f"{len(jobs)} Slurm jobs, {busy:.0f}s of job run time in {wall:.0f}s of wall time")
    slurm_logs = list((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert slurm_logs, "the plugin kept no job logs"
