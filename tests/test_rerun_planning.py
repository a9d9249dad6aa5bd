"""What Snakemake plans is exactly what could change (issues #11.1, #11.2, #14.1).

On one finished tiny run (tests/conftest.py): a setting that is not part of any result plans
nothing; one more sampling seed plans that seed's sample and evaluate jobs and the analysis; an
analysis key plans analysis, figures and report; an edited problem file reruns that task only.
Without a finished run, dry runs show that the planned artifacts follow the content of problem
files (dir and KernelBench suites), of a local model folder and of a hub-cache snapshot. And a job
parsed on a node with other hardware (what a cluster executor does) plans the same keys and runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SHARED_RESOURCES, clone_run, env_for, make_workdir, plan, rule_counts, tiny_args

from vegtts.io import HARDWARE_OVERRIDE_ENV, read_parquet_metadata

pytestmark = pytest.mark.slow

BUILTIN = Path(__file__).resolve().parents[1] / "src/vegtts/tasks/builtin"


def with_config(*config: str, resources: str | Path = SHARED_RESOURCES) -> list[str]:
    return ["--configfile", ".test/config/tiny.yaml", "--config", f"resources_dir={resources}", *config]


def test_a_finished_run_plans_nothing(finished_tiny_run):
    assert plan(finished_tiny_run, *tiny_args()) == []


@pytest.mark.parametrize("override", [
    "sampling={'threads': 1}",
    "sampling={'openai': {'base_url': 'http://10.1.2.3:9000/v1', 'timeout_s': 3, 'max_retries': 0, 'max_concurrency': 1}}",
    "sampling={'vllm': {'gpu_memory_utilization': 0.5, 'enforce_eager': True}}",
    "description=another description of the same experiment",
])
def test_a_setting_that_is_no_results_identity_plans_nothing(finished_tiny_run, override):
    assert plan(finished_tiny_run, *with_config(override)) == []


def test_another_resources_dir_plans_nothing(finished_tiny_run, tmp_path):
    # an empty folder: nothing needs the model, so nothing prepares it either
    assert plan(finished_tiny_run, *with_config(resources=tmp_path / "elsewhere")) == []


def test_one_more_seed_plans_only_that_seeds_jobs_and_the_analysis(finished_tiny_run):
    jobs = plan(finished_tiny_run, *with_config("sampling={'seeds': [0, 1]}"))
    assert rule_counts(jobs) == {"sample": 2, "evaluate": 2, "analyze": 1, "figures": 1, "report": 1, "all": 1}
    for rule, outputs in jobs:
        if rule in ("sample", "evaluate"):
            assert all("/s1/" in o for o in outputs), outputs


def test_an_analysis_key_plans_analysis_figures_and_report(finished_tiny_run):
    jobs = plan(finished_tiny_run, *with_config("analysis={'bootstrap': 150}"))
    assert rule_counts(jobs) == {"analyze": 1, "figures": 1, "report": 1, "all": 1}


def test_an_edited_problem_file_reruns_that_task_only(finished_tiny_run, tmp_path):
    work = clone_run(finished_tiny_run, tmp_path / "work")
    problem = work / "src/vegtts/tasks/builtin/relu_where.py"
    problem.write_text(problem.read_text().replace("torch.zeros_like(x))", "0.01 * x)"))  # ReLU -> leaky ReLU
    jobs = plan(work, *tiny_args())
    assert rule_counts(jobs) == {"resolve_task": 1, "sample": 1, "evaluate": 1, "analyze": 1, "figures": 1,
                                 "report": 1, "all": 1}
    for rule, outputs in jobs:
        if rule in ("sample", "evaluate"):
            assert all(Path(o).name.startswith("relu_where.") for o in outputs), outputs


# --- inputs by content, without a finished run: which artifacts are planned ------------------------------
def planned_artifacts(workdir: Path, config: dict, env: dict[str, str] | None = None) -> dict[str, set[str]]:
    (workdir / "exp.yaml").write_text(json.dumps(config))
    jobs = plan(workdir, "--configfile", "exp.yaml", env=env)
    out: dict[str, set[str]] = {}
    for rule, outputs in jobs:
        out.setdefault(rule, set()).update(outputs)
    return out


def changed(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, int]:
    """Per rule: how many planned outputs are new (not planned before)."""
    return {rule: len(after[rule] - before.get(rule, set())) for rule in after if after[rule] - before.get(rule, set())}


def tiny_experiment(**overrides) -> dict:
    base = {"experiment": "keys", "resources_dir": str(SHARED_RESOURCES), "ttt": {"enabled": False},
            "sampling": {"k": 2, "max_new_tokens": 8, "batch_size": 2}}
    base.update(overrides)
    return base


@pytest.mark.parametrize("layout", ["dir", "kernelbench"])
def test_planned_artifacts_follow_the_content_of_problem_files(tmp_path, layout):
    (tmp_path / "work").mkdir()
    work = make_workdir(tmp_path / "work")
    root = tmp_path / "problems"
    folder = root / "KernelBench" / "level1" if layout == "kernelbench" else root
    folder.mkdir(parents=True)
    shutil.copy(BUILTIN / "relu_where.py", folder / "1_relu_where.py")
    shutil.copy(BUILTIN / "sigmoid_exp.py", folder / "2_sigmoid_exp.py")
    suite = ({"suite": "kernelbench", "path": str(root), "level": 1, "ids": [1, 2]} if layout == "kernelbench"
             else {"suite": "dir", "path": str(root), "ids": "all"})
    before = planned_artifacts(work, tiny_experiment(tasks=suite))
    assert len(before["sample"]) == 2 and len(before["resolve_task"]) == 2
    edited = folder / "1_relu_where.py"
    original = edited.read_text()
    edited.write_text(original.replace("torch.zeros_like(x))", "0.01 * x)"))
    after = planned_artifacts(work, tiny_experiment(tasks=suite))
    assert changed(before, after) == {"resolve_task": 1, "sample": 1, "evaluate": 1}
    first = "kb1_1" if layout == "kernelbench" else "1_relu_where"
    assert all(Path(p).name.startswith(first + ".") for p in after["sample"] - before["sample"])
    edited.write_text(original)  # switching back plans the earlier artifacts again
    assert planned_artifacts(work, tiny_experiment(tasks=suite)) == before


def test_planned_artifacts_follow_the_weights_of_a_local_model_folder(tmp_path):
    (tmp_path / "work").mkdir()
    work = make_workdir(tmp_path / "work")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "gemma3_text"}')
    (model / "model.safetensors").write_bytes(os.urandom(4096))
    (model / "tokenizer.json").write_text("{}")
    config = tiny_experiment(tasks={"ids": ["relu_where", "sigmoid_exp"]}, model={"source": str(model)})
    before = planned_artifacts(work, config)
    (model / "model.safetensors").write_bytes(os.urandom(4096))
    after = planned_artifacts(work, config)
    assert changed(before, after) == {"sample": 2, "evaluate": 2}  # the tasks are the same; all samples are new
    (model / "tokenizer.json").write_text('{"added": 1}')
    third = planned_artifacts(work, config)
    assert changed(after, third) == {"sample": 2, "evaluate": 2}
    moved = tmp_path / "model-moved"  # the folder's place is not its identity
    model.rename(moved)
    config["model"]["source"] = str(moved)
    assert planned_artifacts(work, config)["sample"] == third["sample"]


def test_planned_artifacts_follow_the_snapshot_of_a_hub_cache_model(tmp_path):
    (tmp_path / "work").mkdir()
    work = make_workdir(tmp_path / "work")
    hub = tmp_path / "hub"
    repo = hub / "models--someorg--tiny-lm"
    for rev, blob in (("rev1", "blob1"), ("rev2", "blob2")):
        snap = repo / "snapshots" / rev
        snap.mkdir(parents=True)
        (repo / "blobs").mkdir(exist_ok=True)
        (repo / "blobs" / blob).write_text(blob)
        (repo / "blobs" / "cfg").write_text('{"model_type": "gemma3_text"}')
        (snap / "config.json").symlink_to(Path("../../blobs/cfg"))
        (snap / "model.safetensors").symlink_to(Path("../../blobs") / blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("rev1")
    env = {**env_for(work), "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    config = tiny_experiment(tasks={"ids": ["relu_where"]}, model={"source": "someorg/tiny-lm"})
    before = planned_artifacts(work, config, env=env)
    (repo / "refs" / "main").write_text("rev2")  # a new revision was downloaded
    assert changed(before, planned_artifacts(work, config, env=env)) == {"sample": 1, "evaluate": 1}


# --- hardware: a job parsed on another node ------------------------------------------------------------------
def remote_job_command(rule: str, wildcards: dict[str, str], workdir: Path) -> list[str]:
    """The command a cluster executor submits for one job (snakemake_interface_executor_plugins'
    RealExecutor.format_job_exec, reduced to what decides the DAG): the node parses the workflow again."""
    target = f"{rule}:" + ",".join(f"{k}={v}" for k, v in sorted(wildcards.items()))
    return [sys.executable, "-m", "snakemake", "--snakefile", str(workdir / "Snakefile"), "--target-jobs", target,
            "--allowed-rules", rule, "--cores", "2", "--attempt", "1", "--force-use-threads", "--force",
            "--target-files-omit-workdir-adjustment", "--nolock", "--ignore-incomplete", "--mode", "remote",
            *tiny_args()]


def test_a_job_parsed_on_a_node_with_other_hardware_runs_and_records_it(finished_tiny_run, tmp_path):
    work = clone_run(finished_tiny_run, tmp_path / "work")
    evaluation = next((work / "results/store/evaluations").rglob("sigmoid_exp.*.parquet"))
    skey, ekey, seed = evaluation.parts[-4], evaluation.parts[-3], evaluation.parts[-2]
    task, tkey = evaluation.name.split(".")[:2]
    head_meta = read_parquet_metadata(evaluation)
    env = {**env_for(work), HARDWARE_OVERRIDE_ENV: "node-b"}
    proc = subprocess.run(remote_job_command("evaluate", {"skey": skey, "ekey": ekey, "seed": seed[1:], "task": task,
                                                          "tkey": tkey}, work),
                          cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "KeyError" not in proc.stdout + proc.stderr
    node_meta = read_parquet_metadata(evaluation)
    assert node_meta["hardware"]["cpu"] == "test:node-b" and node_meta["hardware"]["key"] != head_meta["hardware"]["key"]
    # the verdicts were timed on node-b: filed under its own hardware key in the cache
    hw_dirs = {p.name for p in (work / "results/store/evalcache").iterdir() if p.is_dir()}
    assert node_meta["hardware"]["key"] in hw_dirs and head_meta["hardware"]["key"] in hw_dirs
