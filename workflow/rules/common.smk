# Config validation, the artifact plan, the store check, and helpers shared by the rule files.
#
# Params carry only identity: Snakemake reruns a job when its params change, so they hold the keys
# and settings a result depends on (vegtts.plan.*_identity), never whole config blocks. How a job
# runs (threads, where the model folder or a server is, timeouts) reaches it through the globals
# below, handed to the shell commands as `resources:`; changing them plans nothing.
import json
import shlex

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from vegtts.analysis.provenance import config_hash
from vegtts.io import write_text
from vegtts.config import ConfigError, validate_config
from vegtts.outputs import (
    ANALYSIS_TABLES,
    FIGURES,
    MERGED_SAMPLES,
    TTT_FIGURES,
    TTT_TABLES,
    benchmark_file,
    figure_files,
    table_files,
)
from vegtts.plan import (
    TTTPlan,
    config_identity,
    evaluation_runtime,
    plan_from_config,
    sampling_runtime,
    stage_code,
    ttt_training_settings,
)
from vegtts.store import check_planned

try:
    _validated = validate_config(dict(config))
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_validated)

try:
    PLAN = plan_from_config(config)
except ValueError as err:
    raise WorkflowError(str(err)) from None

# Written into every table's header: the TTT tables depend on the whole config, the base analysis
# on every key but ttt (so that a TTT change does not rerun it).
CONFIG_HASH = config_hash(config_identity(config))
BASE_CONFIG_HASH = config_hash(config_identity(config), without=("ttt",))
STORE = PLAN.store
EXP = PLAN.exp_dir
TASK_OF_KEY = {key: task for task, key in PLAN.task_keys.items()}


def as_json(obj):
    """A JSON string for the command line (rules quote it with :q)."""
    return json.dumps(obj, sort_keys=True)


# Runtime settings: how a job runs, never what it makes. Rules hand them to the shell as
# `resources:` (Snakemake reruns a job when its params change, not its resources), so every value
# a command uses is declared in its rule.
MODEL_PATH = PLAN.model_path
TASK_SUITE = as_json(config["tasks"])
SAMPLING_RUNTIME = as_json(sampling_runtime(config["sampling"]))
EVALUATION_RUNTIME = as_json(evaluation_runtime(config))
CONFIG_JSON = as_json(config)
TABLES = f"{EXP}/tables"
FIGURES_DIR = f"{EXP}/figures"
# The identity of the whole config (params of the rules that read all of it: report, TTT analysis).
CONFIG_KEY = CONFIG_HASH

# Is the store whole? Corrupt artifacts and evaluations of since-regenerated samples are moved to
# <store>/quarantine/ here, so this run regenerates them (rule all requires every store artifact).
# Only the head does it: a cluster job parses this file again on its node.
if workflow.is_main_process:
    _store_report = check_planned(PLAN.store_artifacts())
    for _line in _store_report.lines():
        if "is missing" not in _line:
            logger.warning(_line)


wildcard_constraints:
    skey="[0-9a-f]{12}",
    ekey="[0-9a-f]{12}",
    tkey="[0-9a-f]{12}",
    seed=r"\d+",
    task="[A-Za-z0-9_.-]+",


def sampling_settings(wildcards):
    return as_json(PLAN.sample_sets[wildcards.skey]["settings"])


def sample_policy(wildcards):
    return PLAN.sample_sets[wildcards.skey]["policy"]


def evaluation_settings(wildcards):
    return as_json(PLAN.eval_sets[wildcards.ekey]["settings"])


def resolved_task(wildcards):
    if wildcards.tkey not in TASK_OF_KEY:
        raise WorkflowError(f"task key {wildcards.tkey} is not planned by this config")
    return TASK_OF_KEY[wildcards.tkey]


def all_cores(fallback=1):
    """`--cores` of a local run. A cluster run has no total: there the profile's set-threads
    decides (profiles/slurm), else `fallback`."""
    try:
        return workflow.cores
    except WorkflowError:
        return fallback


def sample_adapter(wildcards):
    """The LoRA adapter a sample set is drawn from (TTT checkpoints), or nothing (the base policy)."""
    adapter = PLAN.sample_sets[wildcards.skey].get("adapter")
    return [adapter] if adapter else []


def store_keys(ttt=False):
    """Store keys of the analysed artifacts, written into every table's header."""
    keys = {
        "tasks": dict(sorted(PLAN.task_keys.items())),
        "samples": PLAN.base_sample_key,
        "evaluations": PLAN.base_eval_key,
    }
    if ttt and PLAN.ttt is not None:
        keys["ttt_checkpoints"] = sorted(PLAN.ttt.checkpoints)
        keys["probe"] = PLAN.ttt.probe_key
    return as_json(keys)


def benchmark_args():
    """`--benchmarks STAGE FILE...` per stage: the benchmark files of the jobs behind the report."""
    return " ".join(
        f"--benchmarks {stage} " + " ".join(shlex.quote(f) for f in files)
        for stage, files in PLAN.stage_benchmarks().items()
        if files
    )


# --- test-time training (ttt.smk): keys and steps from vegtts.plan.build_ttt_plan ----------------
def ttt_step_of(wildcards):
    if PLAN.ttt is None or wildcards.ckey not in PLAN.ttt.checkpoints:
        raise WorkflowError(f"unknown TTT checkpoint {wildcards.ckey}")
    return PLAN.ttt.checkpoints[wildcards.ckey]


def ttt_update_inputs(wildcards):
    step = ttt_step_of(wildcards)
    prev = PLAN.ttt.steps[(step.seed, step.step - 1)]
    samples, evals = PLAN.ttt_batch_files(prev, "train", step.train_tasks)
    inputs = {"samples": samples, "evaluations": evals}
    if step.previous_key:
        inputs["previous"] = PLAN.ttt.checkpoint_dir(STORE, step.previous_key)
    return inputs


def ttt_previous_arg(wildcards):
    step = ttt_step_of(wildcards)
    return (
        PLAN.ttt.checkpoint_dir(STORE, step.previous_key) if step.previous_key else ""
    )


def ttt_update_settings(wildcards):
    return as_json(ttt_training_settings(config["ttt"], ttt_step_of(wildcards).seed))


def ttt_probe_samples(wildcards):
    return [
        PLAN.sample_file(PLAN.base_sample_key, PLAN.ttt.probe_seed, t)
        for t in PLAN.ttt.task_ids
    ]
