"""The tiny experiment on a real two-node Slurm cluster, submitted as `snakemake --profile slurm`.

`tests/slurm/cluster.sh up` installs Debian's slurm-wlm and munge when they are missing (root and
apt-get needed), writes a config with two compute nodes on this host (vegtts-n1 and vegtts-n2, one
slurmd each, each with a fake GPU: gres gpu:1 on /dev/null) and starts munged, slurmctld and the
slurmds without systemd; the fixture stops them after. Each node reports its own hardware identity
(a TaskProlog exports VEGTTS_TEST_HARDWARE=<node name>) and the head process a third one, as on a
cluster whose login node and compute nodes have different CPUs.
Without root or apt the test is skipped locally, but fails when CI is set: CI must run it.

The profile is the shipped one, found by name after running the README's profile command (it links
profiles/slurm into ~/.config/snakemake/, here under a temporary HOME). The nodes advertise
8 CPUs and 64 GiB (config_overrides) so the profile's requests schedule unchanged; the command line
adds only what a 2-core machine without an accounting database needs: the squeue status command,
short poll delays and two threads per job.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, env_for, make_workdir, tiny_args

from vegtts.io import sha256_file

CLUSTER_SCRIPT = REPO / "tests" / "slurm" / "cluster.sh"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
NODES = ["vegtts-n1", "vegtts-n2"]
NODE_CPUS, NODE_MEM_MB = 8, 65536  # what each test node advertises (the profile's largest requests fit)
HEAD_HARDWARE = "login-node"  # the head's VEGTTS_TEST_HARDWARE; each node exports its own name
# Only what a 2-core machine without an accounting database needs; everything else is the profile's.
CI_FLAGS = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
            "--latency-wait", "5", "--jobs", "4", "--retries", "0", "--slurm-keep-successful-logs",
            "--set-threads", "evaluate=2", "sample=2", "analyze=2"]


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
    env = {**os.environ, "SLURM_NODES": str(len(NODES)), "SLURM_NODE_CPUS": str(NODE_CPUS), "SLURM_NODE_MEM_MB": str(NODE_MEM_MB)}
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


def readme_block(marker: str) -> str:
    """The shell block after `<!-- marker -->` in README.md (as .ci/run reads the test command)."""
    text = (REPO / "README.md").read_text()
    found = re.search(rf"<!-- {re.escape(marker)} -->\s*```bash\n(.*?)```", text, re.S)
    assert found, f"README.md has no ```bash block after <!-- {marker} -->"
    return found.group(1).strip()


def install_profile_as_readme_says(workdir: Path, home: Path) -> dict[str, str]:
    """Run the README's profile command in `workdir` with HOME=`home`; the env for `--profile slurm`."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**env_for(workdir), "HOME": str(home)}
    env.pop("XDG_CONFIG_HOME", None)
    env.pop("SNAKEMAKE_PROFILE", None)
    subprocess.run(["bash", "-euo", "pipefail", "-c", readme_block("cluster-profile-command")], cwd=workdir, env=env, check=True)
    assert (home / ".config" / "snakemake" / "slurm" / "config.yaml").is_file()
    return env


SQUEUE_FIELDS = [("id", "JobID", 20), ("partition", "Partition", 30), ("state", "State", 20),
                 ("comment", "Comment", 200), ("gpus", "tres-per-job", 60), ("start", "StartTime", 25),
                 ("end", "EndTime", 25), ("node", "NodeList", 40), ("oversubscribe", "OverSubscribe", 15)]


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


@pytest.mark.slow
def test_profile_gives_each_rule_its_slurm_resources(workdir_with_plugin: Path):
    """Without a cluster: the shipped profile parses and maps rules to partitions and GPUs."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--profile", str(PROFILE.parent), *tiny_args()]
    proc = subprocess.run(cmd, cwd=workdir_with_plugin, env=env_for(workdir_with_plugin), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = _job_resources(proc.stdout + proc.stderr)
    assert jobs["sample"] and all("slurm_partition=gpu" in r and "gpu=1" in r for r in jobs["sample"]), jobs
    for rule in ("evaluate", "analyze", "figures", "report"):
        assert all("slurm_partition=cpu" in r and "gpu=" not in r for r in jobs[rule]), (rule, jobs[rule])
    # timing takes the node: evaluate jobs ask for it exclusively, nothing else does
    assert all("slurm_extra=--exclusive" in r for r in jobs["evaluate"]), jobs["evaluate"]
    assert not any("exclusive" in r for rule in ("sample", "analyze", "report") for r in jobs[rule])


@pytest.fixture
def workdir_with_plugin(tmp_path: Path) -> Path:
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI must install the 'slurm' extra (snakemake-executor-plugin-slurm)")
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    return make_workdir(tmp_path)


@pytest.mark.slow
def test_profile_is_found_by_name_after_the_readme_command(tmp_path: Path):
    """`snakemake --profile slurm` from a fresh clone: before the README's command it is not found."""
    workdir = make_workdir(tmp_path)
    cmd = [sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", *tiny_args()]
    env = {**env_for(workdir), "HOME": str(tmp_path / "home")}
    env.pop("XDG_CONFIG_HOME", None)
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "no profile.yaml (or config.yaml) found" in proc.stdout + proc.stderr
    env = install_profile_as_readme_says(workdir, tmp_path / "home")
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode != 0 and "executor" in proc.stderr and "slurm" in proc.stderr and "not" in proc.stderr:
        pytest.skip("snakemake-executor-plugin-slurm is not installed")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "slurm_partition=gpu" in proc.stdout + proc.stderr


def _evaluation_hardware(store: Path) -> set[str]:
    return {str(h) for p in store.glob("evaluations/**/*.parquet") for h in pd.read_parquet(p)["hardware"]}


@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_experiment_on_two_slurm_nodes(slurm_cluster, tmp_path: Path, monkeypatch):
    """The tiny experiment through `snakemake --profile slurm` on two nodes with different hardware.

    The head plans as "login-node"; the jobs run as vegtts-n1 or vegtts-n2 (a cluster re-parses the
    workflow on each node: a key that held the parsing machine's hardware failed there with
    KeyError). Once an evaluation runs on one node, that node is drained (its job runs on) and the
    head is SIGKILLed; the resumed head (README: --unlock, same command) sends the other evaluations
    to the other node, so evaluations ran on both.
    """
    (tmp_path / "wd").mkdir()
    workdir = make_workdir(tmp_path / "wd")
    env = install_profile_as_readme_says(workdir, tmp_path / "home")
    env["VEGTTS_TEST_HARDWARE"] = HEAD_HARDWARE
    cmd = ["snakemake", "--profile", "slurm", *CI_FLAGS, *tiny_args()]
    t0 = time.monotonic()
    with open(tmp_path / "head.out", "w") as head_log:
        head = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=head_log, stderr=subprocess.STDOUT)
        while not (running := [j for j in squeue_jobs() if j["comment"].startswith("rule_evaluate") and j["state"] == "RUNNING"]):
            assert head.poll() is None, (tmp_path / "head.out").read_text()[-6000:]
            assert time.monotonic() - t0 < 1200, "no evaluation job started in 20 minutes"
            time.sleep(1)
        first_node = running[0]["node"]
        subprocess.run(["scontrol", "update", f"nodename={first_node}", "state=drain", "reason=vegtts-test"], check=True)
        head.kill()
        head.wait()
    store = workdir / "results" / "store"
    finished = {p: sha256_file(p) for p in [*store.glob("tasks/*/tasks.json"), *store.glob("samples/*/*/*.parquet")]}
    mtimes = {p: p.stat().st_mtime_ns for p in finished}
    subprocess.run([*cmd, "--unlock"], cwd=workdir, env=env, capture_output=True, check=True)
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1500)
    wall = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    print(f"tiny experiment on two Slurm nodes, head killed once and resumed: {wall:.0f}s")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed after {wall:.0f}s:\n{log[-6000:]}"
    assert finished and all(sha256_file(p) == h and p.stat().st_mtime_ns == mtimes[p] for p, h in finished.items())

    report = workdir / "results" / "tiny" / "report.html"
    assert report.is_file() and report.stat().st_size > 10_000, sorted(p.name for p in (workdir / "results").rglob("*"))

    deadline = time.monotonic() + 300  # the orphaned evaluation on the drained node finishes on its own
    while any(j["state"] in ("RUNNING", "PENDING") for j in squeue_jobs()) and time.monotonic() < deadline:
        time.sleep(2)
    jobs = squeue_jobs()
    by_rule: dict[str, list[dict[str, str]]] = {}
    for job in jobs:
        if job["comment"].startswith("rule_"):
            rule = job["comment"][len("rule_"):].split("_wildcards")[0]
            by_rule.setdefault(rule, []).append(job)
    # every stage ran as a Slurm job, and finished
    assert {"sample", "evaluate", "analyze", "figures", "report"} <= set(by_rule), jobs
    assert all(job["state"] == "COMPLETED" for job in jobs), jobs
    # the resumed run submitted nothing that had finished before the kill
    sampled_before_kill = {p.name.split(".")[0] for p in finished if p.suffix == ".parquet"}  # <task>[.<key>].parquet
    resolved = [j["comment"] for rule, js in by_rule.items() if rule.startswith("resolve_task") for j in js]
    assert resolved and len(resolved) == len(set(resolved)), jobs  # tasks resolved before the kill: not again
    for task in sampled_before_kill:
        assert len([j for j in by_rule["sample"] if re.search(rf"_{task}(_|$)", j["comment"])]) == 1, (task, jobs)
    # evaluations ran on both nodes, each job alone on its node; sampling on the gpu partition with a GPU
    assert {j["node"] for j in by_rule["evaluate"]} == set(NODES), by_rule["evaluate"]
    assert all(j["oversubscribe"] == "NO" for j in by_rule["evaluate"]), by_rule["evaluate"]
    for job in by_rule["sample"]:
        assert job["partition"] == "gpu" and job["gpus"] == "gres:gpu:1", job
    for job in by_rule["evaluate"] + by_rule["analyze"]:
        assert job["partition"] == "cpu" and "gpu" not in job["gpus"], job
    # every evaluation was timed on a node and says which: never the head's identity
    from vegtts.io import HARDWARE_OVERRIDE_ENV, hardware_key

    keys = {}
    for name in [HEAD_HARDWARE, *NODES]:
        monkeypatch.setenv(HARDWARE_OVERRIDE_ENV, name)
        keys[name] = hardware_key()
    found = _evaluation_hardware(store)
    assert found and found <= {keys[n] for n in NODES}, (found, keys)
    busy = sum((datetime.fromisoformat(j["end"]) - datetime.fromisoformat(j["start"])).total_seconds() for j in jobs)
    print(f"{len(jobs)} Slurm jobs on {sorted({j['node'] for j in jobs})}, {busy:.0f}s of job run time in {wall:.0f}s of wall time")
    slurm_logs = list((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert slurm_logs, "the plugin kept no job logs"
