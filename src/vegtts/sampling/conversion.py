"""Request/response conversion shared by the remote backends (OpenAI-compatible HTTP, vLLM in-process).

Both backends ask for the same thing (n completions of one prompt with a seed, stop strings, a
token cap and the log-prob of every sampled token) and get back the same thing in different
shapes.  Everything between "the backend answered" and "SampleRecords" lives here, so the part
of the vLLM backend that cannot run on CPU machines is the same code the HTTP test exercises.

A backend answer becomes a `Generation` (text, per-token log-probs, token ids and/or token texts,
finish reason); `to_raw_sample` then applies the stop strings client side (servers differ in
whether the stop string and the token that contains it are returned) exactly as the transformers
backend does, and maps token texts to ids with the local tokenizer when the server gave no ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

from vegtts.sampling.transformers_backend import RawSample, SamplerSettings

TOKEN_ID_PREFIX = "token_id:"  # vLLM serve's `return_tokens_as_token_ids` token format


class NoLogprobsError(RuntimeError):
    """The backend answered without per-token log-probs (the analysis cannot work without them)."""


@dataclass
class Generation:
    """One completion as a backend returned it, before stop handling."""

    text: str
    token_logprobs: list[float]
    token_ids: list[int] | None = None  # exact ids (vLLM in-process, or `token_id:N` texts)
    token_texts: list[str] | None = None  # per-token text pieces (OpenAI-style `logprobs.tokens`)
    finish_reason: str = "length"
    extra: dict[str, Any] = field(default_factory=dict)


def request_seed(seed: int, task_id: str, request_index: int) -> int:
    """A stable 31-bit seed for one request (servers such as llama.cpp take a 32-bit seed)."""
    digest = hashlib.sha256(f"{seed}:{task_id}:req{request_index}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def request_sizes(k: int, n_per_request: int) -> list[int]:
    """Split k samples into requests of at most n_per_request completions each."""
    return [min(n_per_request, k - first) for first in range(0, k, n_per_request)]


def sampling_params(s: SamplerSettings, n: int, seed: int) -> dict[str, Any]:
    """OpenAI-style sampling parameters (also the keyword arguments of vllm.SamplingParams, renamed there)."""
    return {
        "n": n,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_tokens": s.max_new_tokens,
        "seed": seed,
        "stop": s.stops(),
    }


def _finish_reason(reason: Any) -> str:
    # "stop" (EOS or a stop string) and "length" are the OpenAI/vLLM values; llama.cpp may say "eos".
    if reason in ("stop", "eos", "stop_sequence", "end_turn"):
        return "stop"
    if reason in ("length", "max_tokens"):
        return "length"
    raise RuntimeError(f"backend finished a completion with reason {reason!r} (expected 'stop' or 'length')")


def _split_token_texts(tokens: Sequence[str]) -> tuple[list[int] | None, list[str]]:
    if tokens and all(isinstance(t, str) and t.startswith(TOKEN_ID_PREFIX) for t in tokens):
        return [int(t[len(TOKEN_ID_PREFIX):]) for t in tokens], []
    return None, list(tokens)


def generation_from_completion_choice(choice: dict[str, Any]) -> Generation:
    """One choice of a `/v1/completions` answer (logprobs: tokens, token_logprobs, ...)."""
    lp = choice.get("logprobs")
    if not lp or lp.get("token_logprobs") is None:
        raise NoLogprobsError(
            "the endpoint returned a completion without log-probs (choices[].logprobs.token_logprobs); "
            "vegtts needs the log-prob of every sampled token: use a server that returns them "
            "(vllm serve, SGLang, llama.cpp) or another api (sampling.openai.api)"
        )
    ids, texts = _split_token_texts(lp.get("tokens") or [])
    logprobs = [float(x) if x is not None else float("nan") for x in lp["token_logprobs"]]
    return Generation(
        text=choice.get("text") or "",
        token_logprobs=logprobs,
        token_ids=ids,
        token_texts=texts if ids is None else None,
        finish_reason=_finish_reason(choice.get("finish_reason")),
    )


def generation_from_chat_choice(choice: dict[str, Any]) -> Generation:
    """One choice of a `/v1/chat/completions` answer (logprobs.content: [{token, logprob, bytes}])."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if content is None:
        raise NoLogprobsError(
            "the endpoint returned a chat completion without log-probs (choices[].logprobs.content); "
            "vegtts needs the log-prob of every sampled token: use a server that returns them, "
            "or sampling.openai.api: completions"
        )
    tokens = [c["token"] for c in content]
    ids, texts = _split_token_texts(tokens)
    if ids is None and all(c.get("bytes") is not None for c in content):
        # bytes are exact where a token is a partial UTF-8 sequence; decode the whole run at the end
        texts = _texts_from_bytes([c["bytes"] for c in content])
    return Generation(
        text=(choice.get("message") or {}).get("content") or "",
        token_logprobs=[float(c["logprob"]) for c in content],
        token_ids=ids,
        token_texts=texts if ids is None else None,
        finish_reason=_finish_reason(choice.get("finish_reason")),
    )


def _texts_from_bytes(chunks: Sequence[Sequence[int]]) -> list[str]:
    """Per-token texts whose concatenation is the decoded byte string (split UTF-8 goes to the later token)."""
    texts: list[str] = []
    buf = b""
    done = ""
    for chunk in chunks:
        buf += bytes(chunk)
        full = buf.decode("utf-8", errors="ignore")
        texts.append(full[len(done):])
        done = full
    return texts


def generation_from_vllm_output(output: Any) -> Generation:
    """A vllm CompletionOutput (text, token_ids, logprobs: list of {token_id: Logprob}, finish_reason)."""
    if output.logprobs is None:
        raise NoLogprobsError("vLLM returned no log-probs: SamplingParams must set logprobs=0")
    ids = [int(t) for t in output.token_ids]
    logprobs = [float(step[tok].logprob) for tok, step in zip(ids, output.logprobs)]
    return Generation(text=output.text, token_logprobs=logprobs, token_ids=ids, finish_reason=_finish_reason(output.finish_reason))


def chosen_prompt_logprobs(prompt_logprobs: Sequence[Any], token_ids: Sequence[int], start: int) -> list[float]:
    """Log-probs of token_ids[start:] from vLLM `prompt_logprobs` (position 0 is None: no context)."""
    out: list[float] = []
    for pos in range(start, len(token_ids)):
        step = prompt_logprobs[pos]
        if step is None or token_ids[pos] not in step:
            raise NoLogprobsError(f"vLLM prompt_logprobs has no entry for token {pos}")
        out.append(float(step[token_ids[pos]].logprob))
    return out


def _token_ids_for_texts(texts: Sequence[str], tokenizer: Any) -> list[int]:
    """Map a server's token texts to ids with the local tokenizer; raise when they do not line up."""
    joined = "".join(texts)
    ids = tokenizer.encode(joined, add_special_tokens=False)
    if len(ids) == len(texts) and [tokenizer.decode([i]) for i in ids] == list(texts):
        return [int(i) for i in ids]
    # a sampled sequence need not be the canonical tokenization: look each piece up on its own
    out: list[int] = []
    for piece in texts:
        piece_ids = tokenizer.encode(piece, add_special_tokens=False)
        if len(piece_ids) != 1 or tokenizer.decode(piece_ids) != piece:
            raise RuntimeError(
                f"cannot map the server's token {piece!r} to one token id of the local tokenizer: "
                "model.source must name the model the server runs (its tokenizer), or the server "
                "must return token ids (vllm serve: sampling.openai.token_ids_from_server: true)"
            )
        out.extend(int(i) for i in piece_ids)
    return out


def to_raw_sample(gen: Generation, stops: Sequence[str], tokenizer: Any) -> RawSample:
    """Apply the stop strings client side and resolve token ids, keeping tokens and log-probs aligned."""
    if gen.token_ids is None and gen.token_texts is None:
        raise NoLogprobsError("the backend returned neither token ids nor token texts")
    ids = gen.token_ids if gen.token_ids is not None else _token_ids_for_texts(gen.token_texts or [], tokenizer)
    if len(ids) != len(gen.token_logprobs):
        raise RuntimeError(f"backend returned {len(ids)} tokens but {len(gen.token_logprobs)} log-probs")
    pieces = gen.token_texts if gen.token_texts is not None else [tokenizer.decode([i], skip_special_tokens=True) for i in ids]
    eos = set(getattr(tokenizer, "all_special_ids", []) or [])
    raw = RawSample(finish_reason=gen.finish_reason, done=True)
    text = ""
    for tok, lp, piece in zip(ids, gen.token_logprobs, pieces):
        if tok in eos:  # EOS is not part of the completion (the transformers backend drops it too)
            raw.finish_reason = "stop"
            break
        raw.token_ids.append(int(tok))
        raw.token_logprobs.append(float(lp))
        text += piece
        hit = _first_stop(text, stops)
        if hit >= 0:
            _truncate_pieces(raw, pieces, hit)
            text = text[:hit]
            raw.finish_reason = "stop"
            break
    raw.text = text
    return raw


def _first_stop(text: str, stops: Sequence[str]) -> int:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else -1


def _truncate_pieces(raw: RawSample, pieces: Sequence[str], pos: int) -> None:
    """Keep the fewest tokens whose text still covers the first `pos` characters."""
    covered = 0
    for i, piece in enumerate(pieces[: len(raw.token_ids)]):
        if covered >= pos:
            raw.token_ids = raw.token_ids[:i]
            raw.token_logprobs = raw.token_logprobs[:i]
            return
        covered += len(piece)
