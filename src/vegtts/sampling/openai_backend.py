"""Sampling through an OpenAI-compatible HTTP endpoint (vllm serve, SGLang, llama.cpp's server, hosted APIs).

K samples of a task are split into requests of `n_per_request` completions (llama.cpp's server
returns one choice per request whatever `n` says, so the default is 1); each request carries a
seed derived from (seed, task, request index), so reruns ask for the same samples.  Requests run
in a thread pool of `max_concurrency`; transient failures (connection refused or reset, timeouts,
HTTP 408/409/429/5xx) are retried with exponential backoff, anything else fails at once.

`timeout_s` bounds the whole request (connect, send, headers and body): a watchdog shuts the socket
when it passes, so a server that trickles bytes cannot hold a request longer. Answers over 64 MiB
are refused. Every answer is checked before it is kept (vegtts.sampling.conversion: choices, finite
log-probs, at most max_tokens tokens); a bad answer fails the job at once and is never journaled.

Each finished request is appended to a journal next to the output (`<out>.requests.jsonl`), so a
run that dies (server gone, job killed) keeps every answer it already has: the rerun sends only the
missing requests.  The journal's first line names the server (base URL), model, adapter, prompt and
settings it belongs to; a journal of another server or setting is discarded, not mixed in, and each
replayed answer is checked again (a bad one is dropped and asked for anew).  Answers that name
different served models in one task are an error. The journal is removed once the parquet is written.

TTT checkpoints (LoRA adapters) are sampled by loading the adapter into the server under a name
derived from its content (`POST <base_url>/load_lora_adapter`, vLLM's runtime LoRA API: run
`vllm serve --enable-lora` with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, on a filesystem that sees
the adapter) and asking for that name as the model; an answer that names another model is an error.

The API key is read from the environment variable that `api_key_env` names, sent only in the
Authorization header, and never logged or stored (errors quote the endpoint, never the headers).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from vegtts.config import dataclass_from_settings
from vegtts.sampling.conversion import (
    BadAnswerError,
    Generation,
    adapter_name,
    check_generation,
    generation_from_chat_choice,
    generation_from_completion_choice,
    request_seed,
    request_sizes,
    sampling_params,
)
from vegtts.sampling.transformers_backend import SamplerSettings

# what changes which samples come out; the rest (where the server is, concurrency, timeouts,
# retries, the key's variable name) does not, and never enters a key
IDENTITY_KEYS = ("model", "api", "n_per_request", "token_ids_from_server", "extra_body")

log = logging.getLogger(__name__)

API_KINDS = ("completions", "chat")
TRANSIENT_HTTP = {408, 409, 429, 500, 502, 503, 504}
MAX_ANSWER_BYTES = 64 * 2**20
JOURNAL_FORMAT = 2


@dataclass
class OpenAISettings:
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    api: str = "completions"  # completions | chat
    api_key_env: str | None = None  # NAME of the environment variable holding the key
    n_per_request: int = 1
    max_concurrency: int = 4
    timeout_s: float = 600.0
    max_retries: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    token_ids_from_server: bool = False  # vllm serve: return_tokens_as_token_ids
    extra_body: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpenAISettings:
        s = dataclass_from_settings(cls, d, "sampling.openai")
        if s.api not in API_KINDS:
            raise ValueError(f"config key 'sampling.openai.api': {s.api!r} is not allowed (one of {list(API_KINDS)})")
        if not s.model:
            raise ValueError("config key 'sampling.openai.model' is required with sampling.backend: openai")
        if s.n_per_request < 1 or s.max_concurrency < 1 or s.max_retries < 0:
            raise ValueError("sampling.openai: n_per_request and max_concurrency must be >= 1, max_retries >= 0")
        return s


class EndpointError(RuntimeError):
    """The endpoint failed; `transient` says whether retrying may help."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


def public_url(url: str) -> str:
    """The URL without user:password@ (safe to log and store)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def api_key(settings: OpenAISettings) -> str | None:
    if not settings.api_key_env:
        return None
    key = os.environ.get(settings.api_key_env)
    if not key:
        raise ValueError(
            f"config key 'sampling.openai.api_key_env' names the environment variable "
            f"{settings.api_key_env!r}, which is not set (export it; vegtts never reads keys from config files)"
        )
    return key


def _connection(url: str, timeout_s: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection for `url` (through the environment's proxy, if one applies) and the request target."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"config key 'sampling.openai.base_url': {public_url(url)!r} is not an http(s) URL")
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        pp = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(pp.hostname or "", pp.port or 80, timeout=timeout_s)
            conn.set_tunnel(host, port)
        else:
            conn = http.client.HTTPConnection(pp.hostname or "", pp.port or 80, timeout=timeout_s)
            target = urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path or "/", parts.query, ""))
        return conn, target
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(host, port, timeout=timeout_s), target


def _read_capped(resp: http.client.HTTPResponse, limit: int, where: str) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = resp.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise EndpointError(f"{where} answered with more than {limit // 2**20} MiB; refused", transient=False)
        chunks.append(chunk)


def post_raw(url: str, body: dict[str, Any], key: str | None, timeout_s: float) -> bytes:
    """POST `body` and return the body of a 200 answer, all within `timeout_s` seconds (not per socket read)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode()
    where = public_url(url)
    conn, target = _connection(url, timeout_s)
    expired = threading.Event()

    def cut() -> None:  # the deadline: unblock whatever read or write is in progress
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(timeout_s, cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.connect()
        if expired.is_set():
            raise TimeoutError("deadline passed while connecting")
        conn.request("POST", target, body=data, headers=headers)
        resp = conn.getresponse()
        raw = _read_capped(resp, MAX_ANSWER_BYTES, where)
        status = resp.status
        if expired.is_set():  # the watchdog cut the answer short (a cut read looks like the end)
            raise TimeoutError("deadline passed while reading")
        if resp.length:  # fewer bytes than Content-Length said
            raise http.client.IncompleteRead(raw, resp.length)
    except EndpointError:
        raise
    except (http.client.HTTPException, OSError, ValueError) as e:  # incl. a cut-off answer
        if expired.is_set():
            raise EndpointError(f"{where}: no complete answer within sampling.openai.timeout_s = {timeout_s:g} s "
                                "(a deadline for the whole request)", transient=True) from None
        raise EndpointError(f"{where} unreachable: {e}", transient=True) from None
    finally:
        watchdog.cancel()
        conn.close()
    if status != 200:
        detail = raw.decode("utf-8", errors="replace")[:500]
        raise EndpointError(f"{where} answered HTTP {status}: {detail}", transient=status in TRANSIENT_HTTP)
    return raw


def post_json(url: str, body: dict[str, Any], key: str | None, timeout_s: float) -> dict[str, Any]:
    """POST `body` and return the JSON object answered, all within `timeout_s` seconds."""
    raw = post_raw(url, body, key, timeout_s)
    where = public_url(url)
    try:
        answer = json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as e:
        raise EndpointError(f"{where} answered with invalid JSON: {e}", transient=True) from None
    if not isinstance(answer, dict):
        raise EndpointError(f"{where} answered with JSON that is not an object", transient=False)
    return answer


def post_with_retries(url: str, body: dict[str, Any], key: str | None, s: OpenAISettings, sleep=time.sleep) -> dict[str, Any]:
    """POST with exponential backoff (with jitter) on transient errors; the last error is raised."""
    for attempt in range(s.max_retries + 1):
        try:
            return post_json(url, body, key, s.timeout_s)
        except EndpointError as e:
            if not e.transient or attempt == s.max_retries:
                tries = f"after {attempt + 1} attempt(s)"
                raise EndpointError(f"{e} ({tries})", transient=e.transient) from None
            delay = min(s.backoff_max_s, s.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
            log.warning("%s; retry %d/%d in %.1f s", e, attempt + 1, s.max_retries, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def request_body(prompt: str, settings: SamplerSettings, o: OpenAISettings, n: int, seed: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": o.model, **sampling_params(settings, n, seed)}
    if o.api == "completions":
        body["prompt"] = prompt
        body["logprobs"] = 0  # the sampled token's log-prob (plus 0 alternatives)
        body["echo"] = False
    else:
        body["messages"] = [{"role": "user", "content": prompt}]
        body["logprobs"] = True
        body["top_logprobs"] = 0
    if o.token_ids_from_server:
        body["return_tokens_as_token_ids"] = True
    body.update(o.extra_body or {})
    return body


def generations_of(answer: dict[str, Any], o: OpenAISettings, n: int, max_new_tokens: int | None = None) -> list[Generation]:
    """The n generations of one answer, checked (BadAnswerError / EndpointError when it breaks the contract)."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise BadAnswerError("the answer has no list of choices")
    choices = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c.get("index", 0), int) else 0)
    if len(choices) != n:
        raise EndpointError(
            f"asked for n={n} completions, got {len(choices)}: this server ignores `n`; "
            "set sampling.openai.n_per_request: 1",
            transient=False,
        )
    convert = generation_from_completion_choice if o.api == "completions" else generation_from_chat_choice
    gens = [convert(c) for c in choices]
    if max_new_tokens is not None:
        for g in gens:
            check_generation(g, max_new_tokens)
    return gens


def load_adapter(o: OpenAISettings, key: str | None, name: str, adapter_path: str | Path) -> None:
    """Ask the server to serve the LoRA adapter at `adapter_path` as model `name` (vLLM's runtime LoRA API)."""
    url = o.base_url.rstrip("/") + "/load_lora_adapter"
    body = {"lora_name": name, "lora_path": str(Path(adapter_path).resolve())}
    try:
        post_raw(url, body, key, o.timeout_s)
    except EndpointError as e:
        if "already been loaded" in str(e) or "already loaded" in str(e):
            return
        raise EndpointError(
            f"{e}. Sampling a TTT checkpoint through sampling.backend: openai loads its LoRA adapter into the "
            "server (POST /v1/load_lora_adapter): run `vllm serve <model> --enable-lora --max-lora-rank R` with "
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True on a machine that sees the adapter folder",
            transient=False,
        ) from None
    log.info("loaded LoRA adapter %s into %s as %r", adapter_path, public_url(o.base_url), name)


class RequestJournal:
    """Append-only JSON lines: a header {"journal": identity}, then {"key": ..., "answer": ...} per request.

    A journal whose header names another identity (server, model, adapter, prompt, settings), or has
    none, is discarded; `valid(answer)` is checked on every replayed answer and bad ones are dropped.
    """

    def __init__(self, path: Path, identity: dict[str, Any] | None = None, valid: Any = None):
        self.path = path
        self.identity = {"format": JOURNAL_FORMAT, **(identity or {})}
        self.done: dict[str, dict[str, Any]] = {}
        if path.exists():
            self._load(valid)

    def _load(self, valid: Any) -> None:
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        header = _json_line(lines[0]) if lines else None
        if not isinstance(header, dict) or header.get("journal") != self.identity:
            log.warning("%s: journal of another server, model or setting (or of an older vegtts); discarding its "
                        "%d answers, not mixing them in", self.path, max(len(lines) - 1, 0))
            self.path.unlink(missing_ok=True)
            return
        for n, line in enumerate(lines[1:], 2):
            item = _json_line(line)
            if not isinstance(item, dict) or "key" not in item or not isinstance(item.get("answer"), dict):
                continue  # a line cut by a kill: that request is sent again
            if valid is not None:
                try:
                    valid(item["answer"])
                except (BadAnswerError, EndpointError) as e:
                    log.warning("%s line %d: dropping a bad journaled answer (%s); it is asked for again", self.path, n, e)
                    continue
            self.done[item["key"]] = item["answer"]

    def add(self, key: str, answer: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", encoding="utf-8") as f:
            if new:
                f.write(json.dumps({"journal": self.identity}) + "\n")
            f.write(json.dumps({"key": key, "answer": answer}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[key] = answer

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _json_line(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def check_answer(
    answer: dict[str, Any], o: OpenAISettings, max_new_tokens: int, n: int | None = None, adapter: bool = False
) -> list[Generation]:
    """The generations of one answer, or BadAnswerError; with an adapter (`o.model` is its name) the
    answer must name that model, or its samples may come from the base model."""
    if not isinstance(answer, dict):
        raise BadAnswerError("the answer is not a JSON object")
    gens = generations_of(answer, o, len(answer.get("choices") or []) if n is None else n, max_new_tokens)
    if adapter and answer.get("model") != o.model:
        raise BadAnswerError(f"asked for the LoRA adapter {o.model!r}, the server answered as model "
                             f"{answer.get('model')!r}: the samples would not come from the checkpoint")
    return gens


def journal_identity(prompt: str, settings: SamplerSettings, o: OpenAISettings, adapter_path: str | Path | None) -> dict[str, Any]:
    """What a journal's answers belong to: the server, the model (or adapter), the prompt and every setting."""
    from vegtts.io import sha256_text

    return {
        "base_url": public_url(o.base_url),
        "model": o.model,
        "adapter": str(Path(adapter_path).resolve()) if adapter_path else None,
        "api": o.api,
        "backend": {k: getattr(o, k) for k in IDENTITY_KEYS},
        "prompt_sha256": sha256_text(prompt),
        "settings": settings.to_dict(),
    }


def sample_remote(
    prompt: str,
    task_id: str,
    settings: SamplerSettings,
    o: OpenAISettings,
    journal_file: str | Path,
    progress: Any = None,
    adapter_path: str | Path | None = None,
) -> tuple[list[Generation], dict[str, Any]]:
    """All K generations of one task in sample order, and what the server said about itself.

    With `adapter_path` (a TTT checkpoint) the adapter is loaded into the server and asked for by name.
    """
    from vegtts.io import short_hash

    key = api_key(o)
    if adapter_path is not None:
        o = replace(o, model=adapter_name(adapter_path))
    url = o.base_url.rstrip("/") + ("/completions" if o.api == "completions" else "/chat/completions")
    sizes = request_sizes(settings.k, o.n_per_request)
    bodies = [request_body(prompt, settings, o, n, request_seed(settings.seed, task_id, i)) for i, n in enumerate(sizes)]
    keys = [short_hash(b, 24) for b in bodies]
    journal = RequestJournal(Path(journal_file), journal_identity(prompt, settings, o, adapter_path),
                             valid=lambda answer: check_answer(answer, o, settings.max_new_tokens, adapter=adapter_path is not None))
    answers: dict[int, dict[str, Any]] = {i: journal.done[k] for i, k in enumerate(keys) if k in journal.done}
    if answers:
        log.info("%s: reusing %d of %d finished requests from %s", task_id, len(answers), len(bodies), journal.path)
        if progress is not None:
            progress.update(sum(sizes[i] for i in answers))
    todo = [i for i in range(len(bodies)) if i not in answers]
    if todo and adapter_path is not None:
        load_adapter(o, key, o.model, adapter_path)
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=o.max_concurrency) as pool:
        futures = {pool.submit(post_with_retries, url, bodies[i], key, o): i for i in todo}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                answer = fut.result()
                check_answer(answer, o, settings.max_new_tokens, sizes[i], adapter_path is not None)  # never journal a bad one
            except BaseException as e:  # keep journaling the requests still in flight, then raise
                if failure is None:
                    failure = e
                    for other in futures:
                        other.cancel()
                continue
            journal.add(keys[i], answer)
            answers[i] = answer
            if progress is not None:
                progress.update(sizes[i])
    if failure is not None:
        log.error("%s: %d of %d requests finished and are kept in %s; rerun to send the rest",
                  task_id, len(answers), len(bodies), journal.path)
        if isinstance(failure, BadAnswerError):
            raise BadAnswerError(f"{public_url(url)} gave a bad answer for task {task_id}: {failure}") from None
        raise failure
    served = {answers[i].get("model") for i in answers}
    if len(served) > 1:
        raise BadAnswerError(f"the answers for task {task_id} name different served models {sorted(map(str, served))}: "
                             "one artifact must come from one model (is a load balancer mixing servers?)")
    gens: list[Generation] = []
    for i in range(len(bodies)):
        gens.extend(check_answer(answers[i], o, settings.max_new_tokens, sizes[i], adapter_path is not None))
    first = answers[0] if answers else {}
    server = {"model": first.get("model"), "system_fingerprint": first.get("system_fingerprint"),
              "n_requests": len(bodies), "adapter": o.model if adapter_path is not None else None}
    return gens, server
