"""Fault injection for the remote sampling backends: trickling and hostile servers on 127.0.0.1.

Each case scripts a real HTTP server (raw sockets, so it can send bytes as slowly or as wrongly as it
likes) and checks what vegtts does now:
- a server that trickles its answer cannot hold a request past `timeout_s` (a whole-request deadline);
- null, NaN, infinite, positive or non-numeric log-probs, more tokens than `max_new_tokens`, token and
  log-prob counts that differ, malformed JSON shapes and oversized answers are errors, never stored
  and never journaled;
- a lone surrogate in a token does not fail the job (U+FFFD in the text, the rest intact);
- a journal never replays a bad answer and never mixes answers of another server or setting; answers
  naming two different served models in one task are an error;
- converting a completion is linear in its length (counted tokenizer work, not a timing);
- a TTT step sampled through `vegtts sample --adapter` asks the server for the adapter, not the base model.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vegtts.io import write_dir_manifest
from vegtts.sampling.conversion import BadAnswerError, Generation, to_raw_sample
from vegtts.sampling.openai_backend import EndpointError, OpenAISettings, post_json, sample_remote
from vegtts.sampling.transformers_backend import SamplerSettings

REPO = Path(__file__).resolve().parents[1]


class RawServer:
    """A TCP server on 127.0.0.1 that answers each HTTP request with `respond(sock, request)`."""

    def __init__(self, respond: Callable[[socket.socket, dict[str, Any]], None]):
        self.respond = respond
        self.requests: list[dict[str, Any]] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            length = next((int(v) for k, _, v in (h.partition(": ") for h in lines[1:]) if k.lower() == "content-length"), 0)
            while len(body) < length:
                body += conn.recv(65536)
            request = {"path": lines[0].split()[1], "body": json.loads(body or b"{}")}
            self.requests.append(request)
            self.respond(conn, request)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def send_json(conn: socket.socket, obj: Any, status: int = 200, raw: bytes | None = None) -> None:
    data = raw if raw is not None else json.dumps(obj).encode()
    conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)


def choice(tokens: list[str], logprobs: list[Any], index: int = 0, finish: str = "length") -> dict[str, Any]:
    return {"index": index, "text": "".join(tokens), "finish_reason": finish,
            "logprobs": {"tokens": tokens, "token_logprobs": logprobs}}


def good_answer(body: dict[str, Any], model: str = "served") -> dict[str, Any]:
    return {"model": model, "choices": [choice(["x", "1"], [-0.5, -0.25], i) for i in range(body.get("n", 1))]}


def settings(url: str, **kw: Any) -> OpenAISettings:
    return OpenAISettings(base_url=url, model="m", backoff_s=0.0, backoff_max_s=0.0, **kw)


@pytest.fixture
def server_factory():
    servers: list[RawServer] = []

    def make(respond):
        servers.append(RawServer(respond))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


# ---------------------------------------------------------------- trickling servers


def _trickle(conn: socket.socket, data: bytes, every_s: float) -> None:
    for i in range(len(data)):
        conn.sendall(data[i:i + 1])
        time.sleep(every_s)


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_trickling_server_cannot_hold_a_request_past_its_deadline(server_factory, where):
    """0.2 s between bytes keeps every socket read under the 1 s timeout; the whole request is cut at 1 s."""
    answer = json.dumps(good_answer({})).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(answer)}\r\n\r\n".encode()

    def respond(conn, _request):
        if where == "headers":
            _trickle(conn, head + answer, 0.2)
        else:
            conn.sendall(head)
            _trickle(conn, answer, 0.2)

    server = server_factory(respond)
    t0 = time.monotonic()
    with pytest.raises(EndpointError, match=r"within sampling.openai.timeout_s = 1 s.*whole request") as err:
        post_json(server.url + "/completions", {}, None, timeout_s=1.0)
    assert time.monotonic() - t0 < 2.5  # before: ~0.2 s x len(answer) (about 20 s)
    assert err.value.transient


def test_an_oversized_answer_is_refused(server_factory, monkeypatch):
    import vegtts.sampling.openai_backend as ob

    monkeypatch.setattr(ob, "MAX_ANSWER_BYTES", 1000)
    server = server_factory(lambda conn, req: send_json(conn, None, raw=b"{" + b" " * 5000 + b"}"))
    with pytest.raises(EndpointError, match="more than"):
        post_json(server.url + "/completions", {}, None, timeout_s=5.0)


# ---------------------------------------------------------------- hostile answers


HOSTILE = {
    "null log-prob": (lambda b: {"model": "m", "choices": [choice(["x", "y"], [-0.1, None])]}, "not a number"),
    "NaN log-prob": (lambda b: {"model": "m", "choices": [choice(["x", "y"], [-0.1, math.nan])]}, "not a finite number"),
    "-inf log-prob": (lambda b: {"model": "m", "choices": [choice(["x", "y"], [-math.inf, -0.1])]}, "not a finite number"),
    "positive log-prob": (lambda b: {"model": "m", "choices": [choice(["x", "y"], [0.7, -0.1])]}, "not a finite number <= 0"),
    "string log-prob": (lambda b: {"model": "m", "choices": [choice(["x", "y"], ["-0.1", -0.1])]}, "not a number"),
    "no log-probs": (lambda b: {"model": "m", "choices": [{"index": 0, "text": "x", "finish_reason": "stop", "logprobs": None}]}, "without log-probs"),
    "more tokens than the cap": (lambda b: {"model": "m", "choices": [choice(["x"] * 4633, [-0.1] * 4633)]}, "4633 tokens.*capped at 40"),
    "tokens and log-probs differ": (lambda b: {"model": "m", "choices": [choice(["x", "y", "z"], [-0.1, -0.2])]}, "3 tokens but 2 log-probs"),
    "choices not a list": (lambda b: {"model": "m", "choices": {"0": "x"}}, "no list of choices"),
    "unknown finish reason": (lambda b: {"model": "m", "choices": [choice(["x"], [-0.1], finish="abort")]}, "reason 'abort'"),
    "text not a string": (lambda b: {"model": "m", "choices": [{**choice(["x"], [-0.1]), "text": 7}]}, "not a string"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_bad_answer_fails_the_job_and_is_never_journaled(server_factory, tmp_path, case):
    make, message = HOSTILE[case]
    server = server_factory(lambda conn, req: send_json(conn, make(req["body"])))
    journal = tmp_path / "task.parquet.requests.jsonl"
    with pytest.raises(BadAnswerError, match=message):
        sample_remote("p", "t", SamplerSettings(k=1, max_new_tokens=40), settings(server.url), journal)
    assert not journal.exists() or all('"key"' not in line for line in journal.read_text().splitlines())
    assert len(server.requests) == 1  # a bad answer is not a transient error: no retries


def test_a_lone_surrogate_in_a_token_does_not_fail_the_job(server_factory, tmp_path, tasks_json):
    """The answer's JSON carries a lone UTF-16 surrogate (\\ud83d) in one token: the text gets U+FFFD,
    the other tokens and every log-prob stay, and the record is written to parquet."""
    raw = (b'{"model": "m", "choices": [{"index": 0, "finish_reason": "stop", "text": "ab\\ud83dc",'
           b' "logprobs": {"tokens": ["a", "b", "\\ud83d", "c"], "token_logprobs": [-0.1, -0.2, -0.3, -0.4]}}]}')
    server = server_factory(lambda conn, req: send_json(conn, None, raw=raw))
    out = tmp_path / "t.parquet"
    run_remote(server.url, tasks_json, out, k=1)
    import pandas as pd

    row = pd.read_parquet(out).iloc[0]
    assert row["completion"] == "ab\ufffdc" and list(row["token_logprobs"]) == [-0.1, -0.2, -0.3, -0.4]


def test_surrogate_pairs_split_over_tokens_are_joined():
    from vegtts.sampling.conversion import generation_from_completion_choice

    g = generation_from_completion_choice(choice(["a", "\ud83d", "\ude00b"], [-1.0, -1.0, -1.0]))
    assert g.token_texts == ["a", "", "\U0001F600b"] and g.text == "a\U0001F600b"


# ---------------------------------------------------------------- journals


def test_a_journaled_bad_answer_is_dropped_and_asked_for_again(server_factory, tmp_path):
    """A journal written before these checks held a null log-prob: it is not replayed (it used to
    fail every rerun the same way); the request is sent again and the good answer is kept."""
    server = server_factory(lambda conn, req: send_json(conn, good_answer(req["body"])))
    journal = tmp_path / "j.jsonl"
    s = SamplerSettings(k=2, max_new_tokens=40)
    o = settings(server.url)
    sample_remote("p", "t", s, o, journal.with_suffix(".first"))  # learn the header and keys of these requests
    lines = [json.loads(line) for line in journal.with_suffix(".first").read_text().splitlines()]
    bad = {**lines[1], "answer": {"model": "served", "choices": [choice(["x"], [None])]}}
    journal.write_text("\n".join(json.dumps(x) for x in [lines[0], bad, lines[2]]) + "\n")
    before = len(server.requests)
    gens, _ = sample_remote("p", "t", s, o, journal)
    assert len(server.requests) - before == 1  # only the bad one is asked for again
    assert [g.token_logprobs for g in gens] == [[-0.5, -0.25]] * 2


def test_a_journal_of_another_server_is_not_mixed_in(server_factory, tmp_path):
    a = server_factory(lambda conn, req: send_json(conn, good_answer(req["body"], model="served-a")))
    b = server_factory(lambda conn, req: send_json(conn, good_answer(req["body"], model="served-b")))
    journal = tmp_path / "j.jsonl"
    s = SamplerSettings(k=3, max_new_tokens=40)
    sample_remote("p", "t", s, settings(a.url), journal)
    journal.write_text("\n".join(journal.read_text().splitlines()[:2]) + "\n")  # server A answered one request, then died
    _, server = sample_remote("p", "t", s, settings(b.url), journal)
    assert len(b.requests) == 3 and server["model"] == "served-b"  # all three from B: nothing of A's kept


def test_a_journal_of_other_settings_is_not_replayed(server_factory, tmp_path):
    server = server_factory(lambda conn, req: send_json(conn, good_answer(req["body"])))
    journal = tmp_path / "j.jsonl"
    sample_remote("p", "t", SamplerSettings(k=2, temperature=0.5), settings(server.url), journal)
    journal.write_text("\n".join(journal.read_text().splitlines()[:2]) + "\n")
    before = len(server.requests)
    sample_remote("p", "t", SamplerSettings(k=2, temperature=0.9), settings(server.url), journal)
    assert len(server.requests) - before == 2


def test_answers_from_two_served_models_in_one_task_are_an_error(server_factory, tmp_path):
    served = iter(["model-a", "model-b", "model-a", "model-b"])
    server = server_factory(lambda conn, req: send_json(conn, good_answer(req["body"], model=next(served))))
    with pytest.raises(BadAnswerError, match="different served models"):
        sample_remote("p", "t", SamplerSettings(k=2), settings(server.url, max_concurrency=1), tmp_path / "j.jsonl")


# ---------------------------------------------------------------- conversion is linear


class CountingCharTokenizer:
    """One token per character; counts the characters it decodes (the conversion's tokenizer work)."""

    all_special_ids = [0]
    bos_token = None

    def __init__(self):
        self.decoded = 0

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=True):
        self.decoded += len(ids)
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == 0))

    def __call__(self, text, return_tensors=None, add_special_tokens=True):
        import torch

        return {"input_ids": torch.tensor([[ord(c) for c in text]])}


def _conversion_work(n_tokens: int) -> int:
    from vegtts.sampling.transformers_backend import _to_record
    from vegtts.tasks import load_tasks

    tok = CountingCharTokenizer()
    text = ("    y = torch.relu(x) + 1\n" * (n_tokens // 26 + 1))[:n_tokens]
    g = Generation(text=text, token_logprobs=[-0.5] * n_tokens, token_texts=list(text), finish_reason="length")
    s = SamplerSettings(k=1, max_new_tokens=n_tokens)
    raw = to_raw_sample(g, s.stops(), tok, s.max_new_tokens)
    _to_record(raw, 0, load_tasks({"suite": "builtin", "ids": ["relu"]})[0], s, 0, "base", "sha", 1, "m", tok)
    return tok.decoded


def test_conversion_work_is_linear_in_the_completion_length():
    """Doubling the completion doubles the tokenizer work (it quadrupled: every prefix was decoded)."""
    small, large = _conversion_work(2000), _conversion_work(4000)
    assert large / small < 2.3, (small, large)


# ---------------------------------------------------------------- adapters reach remote sampling


@pytest.fixture(scope="module")
def tasks_json(tmp_path_factory) -> Path:
    from vegtts.tasks import resolve_tasks_to_json

    path = tmp_path_factory.mktemp("tasks") / "tasks.json"
    resolve_tasks_to_json({"suite": "builtin", "ids": ["relu"]}, path)
    return path


def run_remote(url: str, tasks: Path, out: Path, k: int, adapter: Path | None = None) -> None:
    from vegtts.sampling.stage import sample_with_backend

    sample_with_backend("openai", tasks, "relu", {"k": k, "max_new_tokens": 40, "seed": 0},
                        {"base_url": url, "model": "m", "backoff_s": 0.0}, "unused", out,
                        adapter_path=adapter, tokenizer=CountingCharTokenizer())


def _adapter(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 4, "peft_type": "LORA"}))
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    write_dir_manifest(path)  # the CLI reads adapters verified, as TTT writes them
    return path


def _lora_server(server_factory, echo_model: bool = True):
    loaded: dict[str, str] = {}

    def respond(conn, req):
        if req["path"].endswith("/load_lora_adapter"):
            loaded[req["body"]["lora_name"]] = req["body"]["lora_path"]
            data = b"Success: LoRA adapter added successfully."
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
            return
        model = req["body"]["model"] if echo_model else "m"
        send_json(conn, good_answer(req["body"], model=model))

    return server_factory(respond), loaded


def test_a_ttt_step_sampled_remotely_asks_for_its_adapter(server_factory, tmp_path, tasks_json):
    server, loaded = _lora_server(server_factory)
    adapter = _adapter(tmp_path / "ttt" / "c1" / "adapter")
    run_remote(server.url, tasks_json, tmp_path / "s.parquet", k=2, adapter=adapter)
    [(name, path)] = loaded.items()
    assert path == str(adapter.resolve()) and name.startswith("vegtts-lora-")
    completions = [r["body"]["model"] for r in server.requests if r["path"].endswith("/completions")]
    assert completions == [name, name]  # never the base model "m"
    import pandas as pd

    assert set(pd.read_parquet(tmp_path / "s.parquet")["model_id"]) == {f"openai:m+{name}"}


def test_a_server_that_answers_as_the_base_model_is_an_error(server_factory, tmp_path, tasks_json):
    server, _ = _lora_server(server_factory, echo_model=False)
    with pytest.raises(BadAnswerError, match="would not come from the checkpoint"):
        run_remote(server.url, tasks_json, tmp_path / "s.parquet", k=1, adapter=_adapter(tmp_path / "a"))


def test_the_sample_cli_passes_the_adapter_to_remote_backends(server_factory, tmp_path, monkeypatch, tasks_json):
    """`vegtts sample --adapter` (what the workflow runs for a TTT step) with the openai backend: the
    requests name the adapter. Before the fix the CLI dropped --adapter for remote backends and the
    step's samples silently came from the base model."""
    import vegtts.sampling.stage as stage
    from vegtts.cli import main

    server, loaded = _lora_server(server_factory)
    monkeypatch.setattr(stage, "_load_tokenizer", lambda path: CountingCharTokenizer())
    tasks = tasks_json
    adapter = _adapter(tmp_path / "adapter")
    settings_json = json.dumps({"backend": "openai", "k": 1, "max_new_tokens": 40,
                                "openai": {"base_url": server.url, "model": "m", "backoff_s": 0.0}})
    rc = main(["sample", "--tasks", str(tasks), "--task", "relu", "--seed", "0", "--policy", "ttt-seed0-step1",
               "--model", "unused", "--settings", settings_json, "--adapter", str(adapter), "--out", str(tmp_path / "o.parquet")])
    assert rc == 0 and len(loaded) == 1
    assert [r["body"]["model"] for r in server.requests if r["path"].endswith("/completions")] == list(loaded)


def test_a_non_finite_logprob_never_becomes_a_record():
    """Any backend (the transformers one included): a NaN log-prob stops the sample, it is not stored."""
    from vegtts.sampling.transformers_backend import RawSample, _to_record
    from vegtts.tasks import load_tasks

    raw = RawSample(token_ids=[120, 49], token_logprobs=[-0.5, math.nan], text="x1", finish_reason="stop", done=True)
    with pytest.raises(RuntimeError, match="token 1 has log-prob nan"):
        _to_record(raw, 0, load_tasks({"suite": "builtin", "ids": ["relu"]})[0], SamplerSettings(k=1), 0, "base", "sha", 1, "m",
                   CountingCharTokenizer())
