"""Request/response conversion shared by the remote backends (OpenAI-compatible HTTP, vLLM in-process).

Both backends ask for the same thing (n completions of one prompt with a seed, stop strings, a
token cap and the log-prob of every sampled token) and get back the same thing in different
shapes.  Everything between "the backend answered" and "SampleRecords" lives here, so the part
of the vLLM backend that cannot run on CPU machines is the same code the HTTP test exercises.

A backend answer becomes a `Generation` (text, per-token log-probs, token ids and/or token texts,
finish reason); `to_raw_sample` then applies the stop strings client side (servers differ in
whether the stop string and the token that contains it are returned) exactly as the transformers
backend does, and maps token texts to ids with the local tokenizer when the server gave no ids.

Answers are checked before anything is kept (`BadAnswerError`, never journaled): every sampled
token needs a finite log-prob <= 0 (a missing, null, NaN, infinite or positive one is an error, not
a stored NaN), as many log-probs as tokens, at most `max_new_tokens` tokens, a known finish reason.
Text is made valid Unicode (a UTF-16 surrogate pair split over two tokens is joined in the later
token; a lone surrogate becomes U+FFFD), so one odd token cannot fail the parquet write. All of it
is linear in the completion's length (benchmarks/bench_sampling_conversion.py).
"""

from __future__ import annotations

import codecs
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vegtts.sampling.transformers_backend import RawSample, SamplerSettings

TOKEN_ID_PREFIX = "token_id:"
ADAPTER_PREFIX = "vegtts-lora-"  # names of TTT adapters as backends serve them (adapter_name)  # vLLM serve's `return_tokens_as_token_ids` token format


LOGPROB_SLACK = 1e-3  # a log-prob may exceed 0 by rounding, not by more


class BadAnswerError(RuntimeError):
    """A backend's answer breaks the contract (malformed, missing or non-finite log-probs, too many tokens)."""


class NoLogprobsError(BadAnswerError):
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


def adapter_name(adapter_path: Any) -> str:
    """The name a LoRA adapter folder is sampled under (vLLM LoRARequest, a server's model name).

    It hashes the adapter's files, so a retrained adapter at the same path gets a new name and a
    server never keeps serving the old weights under it.
    """
    from pathlib import Path

    from vegtts.io import sha256_file, short_hash

    folder = Path(adapter_path)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith("adapter_")) if folder.is_dir() else []
    if not any(p.name == "adapter_config.json" for p in files):
        raise FileNotFoundError(f"{adapter_path}: not a LoRA adapter folder (no adapter_config.json)")
    return ADAPTER_PREFIX + short_hash({p.name: sha256_file(p) for p in files}, 16)


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
    raise BadAnswerError(f"backend finished a completion with reason {reason!r} (expected 'stop' or 'length')")


def valid_text(text: str) -> str:
    """`text` as valid Unicode: surrogate pairs joined, lone surrogates replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _valid_pieces(pieces: Sequence[str]) -> list[str]:
    """Per-token texts as valid Unicode; a surrogate pair split over two tokens goes to the later one."""
    out = list(pieces)
    for i, piece in enumerate(out):
        if piece and "\ud800" <= piece[-1] <= "\udbff" and i + 1 < len(out) and out[i + 1][:1] and "\udc00" <= out[i + 1][0] <= "\udfff":
            out[i], out[i + 1] = piece[:-1], piece[-1] + out[i + 1]
        out[i] = valid_text(out[i])
    return out


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadAnswerError(f"{what} is {type(value).__name__}, not a string")
    return valid_text(value)


def _logprob(value: Any, where: str) -> float:
    """One sampled token's log-prob: a finite number <= 0 (a little rounding above 0 is clipped)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadAnswerError(f"{where}: log-prob {value!r} is not a number (vegtts needs the log-prob of every sampled token)")
    x = float(value)
    if not math.isfinite(x) or x > LOGPROB_SLACK:
        raise BadAnswerError(f"{where}: log-prob {x!r} is not a finite number <= 0")
    return min(x, 0.0)


def _split_token_texts(tokens: Sequence[str]) -> tuple[list[int] | None, list[str]]:
    if tokens and all(isinstance(t, str) and t.startswith(TOKEN_ID_PREFIX) for t in tokens):
        try:
            return [int(t[len(TOKEN_ID_PREFIX):]) for t in tokens], []
        except ValueError as e:
            raise BadAnswerError(f"malformed token id in the answer: {e}") from None
    for t in tokens:
        if not isinstance(t, str):
            raise BadAnswerError(f"a token is {type(t).__name__}, not a string")
    return None, list(tokens)  # made valid Unicode by _valid_pieces (which joins split surrogate pairs first)


def generation_from_completion_choice(choice: dict[str, Any]) -> Generation:
    """One choice of a `/v1/completions` answer (logprobs: tokens, token_logprobs, ...)."""
    if not isinstance(choice, dict):
        raise BadAnswerError(f"a choice is {type(choice).__name__}, not an object")
    lp = choice.get("logprobs")
    if not isinstance(lp, dict) or lp.get("token_logprobs") is None:
        raise NoLogprobsError(
            "the endpoint returned a completion without log-probs (choices[].logprobs.token_logprobs); "
            "vegtts needs the log-prob of every sampled token: use a server that returns them "
            "(vllm serve, SGLang, llama.cpp) or another api (sampling.openai.api)"
        )
    tokens, values = lp.get("tokens"), lp["token_logprobs"]
    if not isinstance(tokens, list) or not isinstance(values, list):
        raise BadAnswerError("choices[].logprobs.tokens and .token_logprobs must be lists")
    ids, texts = _split_token_texts(tokens)
    logprobs = [_logprob(x, f"token {i}") for i, x in enumerate(values)]
    return Generation(
        text=_string(choice.get("text") or "", "choices[].text"),
        token_logprobs=logprobs,
        token_ids=ids,
        token_texts=_valid_pieces(texts) if ids is None else None,
        finish_reason=_finish_reason(choice.get("finish_reason")),
    )


def generation_from_chat_choice(choice: dict[str, Any]) -> Generation:
    """One choice of a `/v1/chat/completions` answer (logprobs.content: [{token, logprob, bytes}])."""
    if not isinstance(choice, dict):
        raise BadAnswerError(f"a choice is {type(choice).__name__}, not an object")
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if content is None:
        raise NoLogprobsError(
            "the endpoint returned a chat completion without log-probs (choices[].logprobs.content); "
            "vegtts needs the log-prob of every sampled token: use a server that returns them, "
            "or sampling.openai.api: completions"
        )
    if not isinstance(content, list) or not all(isinstance(c, dict) for c in content):
        raise BadAnswerError("choices[].logprobs.content must be a list of objects")
    tokens = [c.get("token") for c in content]
    ids, texts = _split_token_texts(tokens)
    if ids is None and all(isinstance(c.get("bytes"), list) for c in content):
        # bytes are exact where a token is a partial UTF-8 sequence; decode the whole run at the end
        try:
            texts = _texts_from_bytes([c["bytes"] for c in content])
        except (TypeError, ValueError) as e:
            raise BadAnswerError(f"choices[].logprobs.content[].bytes are not bytes: {e}") from None
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    return Generation(
        text=_string(message.get("content") or "", "choices[].message.content"),
        token_logprobs=[_logprob(c.get("logprob"), f"token {i}") for i, c in enumerate(content)],
        token_ids=ids,
        token_texts=_valid_pieces(texts) if ids is None else None,
        finish_reason=_finish_reason(choice.get("finish_reason")),
    )


def _texts_from_bytes(chunks: Sequence[Sequence[int]]) -> list[str]:
    """Per-token texts whose concatenation is the decoded byte string (split UTF-8 goes to the later token)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    texts = [decoder.decode(bytes(chunk)) for chunk in chunks]
    if texts:
        texts[-1] += decoder.decode(b"", final=True)
    return texts


def check_generation(gen: Generation, max_new_tokens: int) -> Generation:
    """Raise BadAnswerError unless `gen` keeps the contract: one finite log-prob per token, at most the cap."""
    n_tokens = len(gen.token_ids) if gen.token_ids is not None else len(gen.token_texts or [])
    if gen.token_ids is None and gen.token_texts is None:
        raise NoLogprobsError("the backend returned neither token ids nor token texts")
    if n_tokens != len(gen.token_logprobs):
        raise BadAnswerError(f"backend returned {n_tokens} tokens but {len(gen.token_logprobs)} log-probs")
    if n_tokens > max_new_tokens:
        raise BadAnswerError(
            f"backend returned {n_tokens} tokens for a completion capped at {max_new_tokens} "
            "(sampling.max_new_tokens); the server ignored max_tokens"
        )
    for i, x in enumerate(gen.token_logprobs):
        _logprob(x, f"token {i}")
    return gen


def generation_from_vllm_output(output: Any) -> Generation:
    """A vllm CompletionOutput (text, token_ids, logprobs: list of {token_id: Logprob}, finish_reason)."""
    if output.logprobs is None:
        raise NoLogprobsError("vLLM returned no log-probs: SamplingParams must set logprobs=0")
    ids = [int(t) for t in output.token_ids]
    if len(output.logprobs) != len(ids):
        raise BadAnswerError(f"vLLM returned {len(ids)} tokens but {len(output.logprobs)} log-prob steps")
    logprobs = [_logprob(step[tok].logprob, f"token {i}") for i, (tok, step) in enumerate(zip(ids, output.logprobs))]
    return Generation(text=valid_text(output.text), token_logprobs=logprobs, token_ids=ids, finish_reason=_finish_reason(output.finish_reason))


def chosen_prompt_logprobs(prompt_logprobs: Sequence[Any], token_ids: Sequence[int], start: int) -> list[float]:
    """Log-probs of token_ids[start:] from vLLM `prompt_logprobs` (position 0 is None: no context)."""
    out: list[float] = []
    for pos in range(start, len(token_ids)):
        step = prompt_logprobs[pos]
        if step is None or token_ids[pos] not in step:
            raise NoLogprobsError(f"vLLM prompt_logprobs has no entry for token {pos}")
        out.append(_logprob(step[token_ids[pos]].logprob, f"prompt token {pos}"))
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


def to_raw_sample(gen: Generation, stops: Sequence[str], tokenizer: Any, max_new_tokens: int | None = None) -> RawSample:
    """Apply the stop strings client side and resolve token ids, keeping tokens and log-probs aligned.

    Checks the answer first (`check_generation`, with the token cap when given). Linear in the
    completion's length: each token's text is searched for a stop string only together with the
    few characters before it that a stop string could start in.
    """
    if max_new_tokens is not None:
        check_generation(gen, max_new_tokens)
    if gen.token_ids is None and gen.token_texts is None:
        raise NoLogprobsError("the backend returned neither token ids nor token texts")
    ids = gen.token_ids if gen.token_ids is not None else _token_ids_for_texts(gen.token_texts or [], tokenizer)
    if len(ids) != len(gen.token_logprobs):
        raise BadAnswerError(f"backend returned {len(ids)} tokens but {len(gen.token_logprobs)} log-probs")
    pieces = gen.token_texts if gen.token_texts is not None else [valid_text(tokenizer.decode([i], skip_special_tokens=True)) for i in ids]
    eos = set(getattr(tokenizer, "all_special_ids", []) or [])
    stops = [s for s in stops if s]
    keep = max((len(s) for s in stops), default=1) - 1  # characters a stop string may reach back
    raw = RawSample(finish_reason=gen.finish_reason, done=True)
    parts: list[str] = []
    length = 0  # characters in parts
    tail = ""  # the last `keep` characters of the text so far
    for tok, lp, piece in zip(ids, gen.token_logprobs, pieces):
        if tok in eos:  # EOS is not part of the completion (the transformers backend drops it too)
            raw.finish_reason = "stop"
            break
        raw.token_ids.append(int(tok))
        raw.token_logprobs.append(float(lp))
        window = tail + piece
        hit = _first_stop(window, stops)
        if hit >= 0:
            pos = length - len(tail) + hit  # where the stop string starts in the whole text
            parts.append(piece)
            _truncate_pieces(raw, pieces, pos)
            raw.text = "".join(parts)[:pos]
            raw.finish_reason = "stop"
            return raw
        parts.append(piece)
        length += len(piece)
        tail = window[-keep:] if keep else ""
    raw.text = "".join(parts)
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
