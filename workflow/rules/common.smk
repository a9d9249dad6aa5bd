# Config validation, the artifact plan, the store check, and helpers shared by the rule files.
#
# Params carry only identity: Snakemake reruns a job when its params change, so they hold the keys
# and settings a result depends on (vegtts.plan.*_identity), never whole config blocks. How a job
# runs (threads, where the model folder or a server is, timeouts) reaches it through the globals
# below, used in the shell commands; changing them plans nothing.
import json

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from vegtts.analysis.provenance import config_hash
from vegtts.config import ConfigError, validate_config
from vegtts.plan import config_identity, evaluation_runtime, plan_from_config, sampling_runtime, stage_code
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

RESULTS = PLAN.results
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


# Runtime settings: used in shell commands only (never params).
MODEL_PATH = PLAN.model_path
TASK_SUITE = as_json(config["tasks"])
SAMPLING_RUNTIME = as_json(sampling_runtime(config["sampling"]))
EVALUATION_RUNTIME = as_json(evaluation_runtime(config))
CONFIG_JSON = as_json(config)
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
    decides (workflow/profiles/slurm), else `fallback`."""
    try:
        return workflow.cores
    except WorkflowError:
        return fallback


def sample_adapter(wildcards):
    """The LoRA adapter a sample set is drawn from (TTT checkpoints), or nothing (the base policy)."""
    adapter = PLAN.sample_sets[wildcards.skey].get("adapter")
    return [adapter] if adapter else []
