# Config validation, the artifact plan, and helpers shared by the rule files.
import json
import shlex

from snakemake.exceptions import WorkflowError

from vegtts.analysis.provenance import config_hash
from vegtts.config import ConfigError, validate_config
from vegtts.plan import build_plan, model_location, stage_code
from vegtts.tasks import list_task_ids

try:
    _validated = validate_config(dict(config))
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_validated)

try:
    TASK_IDS = list_task_ids(config["tasks"])
    MODEL_PATH, MODEL_MARKER = model_location(config["model"]["source"], config["resources_dir"])
    PLAN = build_plan(config, TASK_IDS, MODEL_PATH, MODEL_MARKER)
except ValueError as err:
    raise WorkflowError(str(err)) from None

RESULTS = PLAN.results
# Written into every table's header: the TTT tables depend on the whole config, the base analysis
# on every key but ttt (so that a TTT change does not rerun it).
CONFIG_HASH = config_hash(config)
BASE_CONFIG_HASH = config_hash(config, without=("ttt",))
STORE = PLAN.store
EXP = PLAN.exp_dir

wildcard_constraints:
    skey="[0-9a-f]{12}",
    ekey="[0-9a-f]{12}",
    seed=r"\d+",
    task="[A-Za-z0-9_.-]+",


def as_json(obj):
    """A JSON string for the command line (rules quote it with :q)."""
    return json.dumps(obj, sort_keys=True)


def sampling_settings(wildcards):
    return as_json(PLAN.sample_sets[wildcards.skey]["settings"])


def sample_policy(wildcards):
    return PLAN.sample_sets[wildcards.skey]["policy"]


def evaluation_settings(wildcards):
    return as_json({**PLAN.eval_sets[wildcards.ekey]["settings"], "seed": config["seed"]})


def model_inputs(wildcards):
    return [PLAN.model_marker] if PLAN.model_marker else []


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
