"""Artifact keys and paths: what each stage's output is named after.

Expensive artifacts (tasks, samples, evaluations) live in a content-addressed store,
``<results>/store/<stage>/<key>/...``, where the key hashes exactly the settings the stage
depends on, the keys of its inputs and a fingerprint of the stage's package code.  Changing a
setting therefore creates new paths (only downstream stages rerun); switching it back finds the
old artifacts again.  Cheap outputs (tables, figures, report) sit at stable, readable paths under
``<results>/<experiment>/`` and are rerun by Snakemake's params trigger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import code_fingerprint, hardware_key, short_hash

DEFAULT_MODEL_SOURCE = "gemma3-270m-gguf"

# Package code each stage's results depend on (relative to src/vegtts).
STAGE_CODE = {
    "tasks": ("tasks",),
    "sample": ("sampling", "extract.py", "models.py"),
    "evaluate": ("evaluate",),
    "analysis": ("analysis",),
    "figures": ("plots.py",),
    "report": ("report.py",),
}


def stage_code(stage: str) -> str:
    return code_fingerprint(*STAGE_CODE[stage])


@dataclass
class Plan:
    config: dict[str, Any]
    results: str
    experiment: str
    task_ids: list[str]
    tasks_key: str
    model_path: str  # folder or hub id handed to the sampler
    model_marker: str | None  # file produced by the prepare_model rule, if the model is prepared here
    sample_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_sample_key: str = ""
    base_eval_key: str = ""

    # --- paths -------------------------------------------------------------------------------
    @property
    def store(self) -> str:
        return f"{self.results}/store"

    @property
    def tasks_file(self) -> str:
        return f"{self.store}/tasks/{self.tasks_key}/tasks.json"

    @property
    def exp_dir(self) -> str:
        return f"{self.results}/{self.experiment}"

    @property
    def tables_dir(self) -> str:
        return f"{self.exp_dir}/tables"

    @property
    def figures_dir(self) -> str:
        return f"{self.exp_dir}/figures"

    @property
    def report_file(self) -> str:
        return f"{self.exp_dir}/report.html"

    def sample_file(self, skey: str, seed: int, task: str) -> str:
        return f"{self.store}/samples/{skey}/s{seed}/{task}.parquet"

    def eval_file(self, skey: str, ekey: str, seed: int, task: str) -> str:
        return f"{self.store}/evaluations/{skey}/{ekey}/s{seed}/{task}.parquet"

    def base_sample_files(self) -> list[str]:
        return [
            self.sample_file(self.base_sample_key, seed, task)
            for seed in self.config["sampling"]["seeds"]
            for task in self.task_ids
        ]

    def base_eval_files(self) -> list[str]:
        return [
            self.eval_file(self.base_sample_key, self.base_eval_key, seed, task)
            for seed in self.config["sampling"]["seeds"]
            for task in self.task_ids
        ]


# Backend settings that change which samples come out; the rest (where the server is, how many
# requests fly at once, timeouts, retries, the key's variable name) do not, and never enter a key.
BACKEND_IDENTITY_KEYS = {
    "openai": ("model", "api", "n_per_request", "token_ids_from_server", "extra_body"),
    "vllm": ("dtype", "n_per_request", "tensor_parallel_size"),
}


def sampling_identity(sampling_config: dict[str, Any]) -> dict[str, Any]:
    """The sampling block as it enters the sample key: only the chosen backend's identity keys."""
    ident = {k: v for k, v in sampling_config.items() if k not in ("seeds", "threads", *BACKEND_IDENTITY_KEYS)}
    backend = sampling_config.get("backend", "transformers")
    if backend == "openai" and not sampling_config.get("openai", {}).get("model"):
        raise ValueError("config key 'sampling.openai.model' is required with sampling.backend: openai (the served model's name)")
    if backend in BACKEND_IDENTITY_KEYS:
        block = sampling_config.get(backend, {})
        ident[backend] = {k: block.get(k) for k in BACKEND_IDENTITY_KEYS[backend]}
    return ident


def sample_identity(config: dict[str, Any], tasks_key: str) -> dict[str, Any]:
    """Everything that changes which samples come out (threads do not)."""
    sampling = sampling_identity(config["sampling"])
    return {
        "tasks": tasks_key,
        "model": config["model"],
        "prompt": config["prompt"],
        "sampling": sampling,
        "code": stage_code("sample"),
    }


def eval_identity(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "evaluation": config["evaluation"],
        "seed": config["seed"],
        "hardware": hardware_key(),
        "code": stage_code("evaluate"),
    }


def build_plan(config: dict[str, Any], task_ids: list[str], model_path: str, model_marker: str | None) -> Plan:
    """`config` must already be validated (vegtts.config.validate_config)."""
    tasks_key = short_hash({"tasks": config["tasks"], "ids": task_ids, "code": stage_code("tasks")})
    plan = Plan(
        config=config,
        results=config["results_dir"].rstrip("/"),
        experiment=config["experiment"],
        task_ids=task_ids,
        tasks_key=tasks_key,
        model_path=model_path,
        model_marker=model_marker,
    )
    s_ident = sample_identity(config, tasks_key)
    plan.base_sample_key = short_hash(s_ident)
    plan.sample_sets[plan.base_sample_key] = {
        "identity": s_ident,
        "policy": "base",
        "settings": {**config["sampling"], **{"prompt": config["prompt"]}},
    }
    e_ident = eval_identity(config)
    plan.base_eval_key = short_hash(e_ident)
    plan.eval_sets[plan.base_eval_key] = {"identity": e_ident, "settings": config["evaluation"]}
    return plan


def model_location(source: str, resources_dir: str) -> tuple[str, str | None]:
    """(path handed to the sampler, marker file of the prepare rule or None).

    Cheap enough for workflow parsing: no torch or transformers import.  Raises ValueError naming
    the config key when the source cannot be used.
    """
    if source == DEFAULT_MODEL_SOURCE:
        folder = f"{resources_dir.rstrip('/')}/models/{DEFAULT_MODEL_SOURCE}"
        return folder, f"{folder}/vegtts_model.json"
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"config key 'model.source': folder {source!r} has no config.json; "
                "expected a Hugging Face model folder"
            )
        return str(path.resolve()), None
    looks_like_path = source.startswith((".", "/", "~")) or source.count("/") > 1
    if looks_like_path:
        raise ValueError(
            f"config key 'model.source': {source!r} does not exist. Allowed: "
            f"'{DEFAULT_MODEL_SOURCE}', a local Hugging Face model folder, or a hub id in the local cache"
        )
    if not _in_hub_cache(source):
        raise ValueError(
            f"config key 'model.source': {source!r} is neither a local folder nor a model in the "
            f"Hugging Face cache (this workflow runs offline). Allowed: '{DEFAULT_MODEL_SOURCE}', a "
            "local Hugging Face model folder, or a hub id already downloaded into the cache"
        )
    return source, None


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)
