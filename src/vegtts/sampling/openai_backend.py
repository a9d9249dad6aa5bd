"""Sampling through an OpenAI-compatible HTTP endpoint (vllm serve, SGLang, llama.cpp's server, hosted APIs).

K samples of a task are split into requests of `n_per_request` completions (llama.cpp's server
returns one choice per request whatever `n` says, so the default is 1); each request carries a
seed derived from (seed, task, request index), so reruns ask for the same samples.  Requests run
in a thread pool of `max_concurrency`; transient failures (connection refused or reset, timeouts,
HTTP 408/409/429/5xx) are retried with exponential backoff, anything else fails at once.

Each finished request is appended to a journal next to the output (`<out>.requests.jsonl`), so a
run that dies (server gone, job killed) keeps every answer it already has: the rerun sends only the
missing requests.  The journal is removed once the parquet is written.

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
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from vegtts.config import dataclass_from_settings
from vegtts.sampling.conversion import (
    Generation,
    generation_from_chat_choice,
    generation_from_completion_choice,
    request_seed,
    request_sizes,
    sampling_params,
)
from vegtts.sampling.transformers_backend import SamplerSettings

log = logging.getLogger(__name__)

API_KINDS = ("completions", "chat")
TRANSIENT_HTTP = {408, 409, 429, 500, 502, 503, 504}
# settings that change which samples come out (the rest, e.g. concurrency or the key, do not)
IDENTITY_KEYS = ("model", "api", "n_per_request", "extra_body")


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
    def from_dict(cls, d: dict[str, Any]) -> "OpenAISettings":
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


def post_json(url: str, body: dict[str, Any], key: str | None, timeout_s: float) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    where = public_url(url)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", errors="replace")[:500]
        raise EndpointError(f"{where} answered HTTP {e.code}: {detail}", transient=e.code in TRANSIENT_HTTP) from None
    except (urllib.error.URLError, http.client.HTTPException, socket.timeout, TimeoutError, OSError) as e:  # incl. a cut-off answer
        reason = getattr(e, "reason", e)
        raise EndpointError(f"{where} unreachable: {reason}", transient=True) from None
    except json.JSONDecodeError as e:
        raise EndpointError(f"{where} answered with invalid JSON: {e}", transient=True) from None


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


def generations_of(answer: dict[str, Any], o: OpenAISettings, n: int) -> list[Generation]:
    choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
    if len(choices) != n:
        raise EndpointError(
            f"asked for n={n} completions, got {len(choices)}: this server ignores `n`; "
            "set sampling.openai.n_per_request: 1",
            transient=False,
        )
    convert = generation_from_completion_choice if o.api == "completions" else generation_from_chat_choice
    return [convert(c) for c in choices]


class RequestJournal:
    """Append-only JSON lines of finished requests: {"key": ..., "answer": ...}."""

    def __init__(self, path: Path):
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: that request is sent again
                    continue
                self.done[item["key"]] = item["answer"]

    def add(self, key: str, answer: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "answer": answer}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[key] = answer

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def sample_remote(
    prompt: str,
    task_id: str,
    settings: SamplerSettings,
    o: OpenAISettings,
    journal: RequestJournal,
    progress: Any = None,
) -> tuple[list[Generation], dict[str, Any]]:
    """All K generations of one task in sample order, and what the server said about itself."""
    from vegtts.io import short_hash

    url = o.base_url.rstrip("/") + ("/completions" if o.api == "completions" else "/chat/completions")
    key = api_key(o)
    sizes = request_sizes(settings.k, o.n_per_request)
    bodies = [request_body(prompt, settings, o, n, request_seed(settings.seed, task_id, i)) for i, n in enumerate(sizes)]
    keys = [short_hash(b, 24) for b in bodies]
    answers: dict[int, dict[str, Any]] = {i: journal.done[k] for i, k in enumerate(keys) if k in journal.done}
    if answers:
        log.info("%s: reusing %d of %d finished requests from %s", task_id, len(answers), len(bodies), journal.path)
        if progress is not None:
            progress.update(sum(sizes[i] for i in answers))
    todo = [i for i in range(len(bodies)) if i not in answers]
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=o.max_concurrency) as pool:
        futures = {pool.submit(post_with_retries, url, bodies[i], key, o): i for i in todo}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                answer = fut.result()
                generations_of(answer, o, sizes[i])  # validate before journaling
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
        raise failure
    gens: list[Generation] = []
    for i in range(len(bodies)):
        gens.extend(generations_of(answers[i], o, sizes[i]))
    first = answers[0] if answers else {}
    server = {"model": first.get("model"), "system_fingerprint": first.get("system_fingerprint"), "n_requests": len(bodies)}
    return gens, server
