"""From a completion to a candidate program.

`extract_code` finds the code in a completion (fenced or not), turns a full `def forward` or
`class ModelNew` into a body when the format is ``body``, and repairs truncated output by
dropping trailing lines until it parses.  `assemble_program` builds the module the evaluator
runs.  `code_token_span` maps the extracted code back to token indices, for the scorer.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vegtts.records import TaskSpec

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?")
_CODE_HINT_RE = re.compile(r"[()=\[\]]|\breturn\b|\bimport\b|\bdef\b|\bclass\b")

REQUIRED_IMPORTS = (
    ("import torch", re.compile(r"^import torch\s*$", re.M)),
    ("import torch.nn as nn", re.compile(r"^import torch\.nn as nn\s*$", re.M)),
    ("import torch.nn.functional as F", re.compile(r"^import torch\.nn\.functional as F\s*$", re.M)),
)


@dataclass(frozen=True)
class Extraction:
    status: str  # ok | no_code | truncated
    code: str
    char_start: int  # [start, end) of the code's region in the completion text
    char_end: int


def _code_region(text: str) -> tuple[int, int]:
    """Character span of the code: the first fenced block, else the text before a stray fence."""
    m = _FENCE_RE.search(text)
    if m is None:
        return 0, len(text)
    if text[: m.start()].strip() == "" or m.group(1):
        # An opening fence (at the start, or with a language tag): its block runs to the next fence.
        start = m.end()
        close = text.find("```", start)
        return start, len(text) if close < 0 else close
    # A closing fence without an opening one: the prompt opened the block.
    return 0, m.start()


def _parses_as_body(code: str) -> bool:
    try:
        ast.parse("def _f():\n" + textwrap.indent(code, "    ") if code.strip() else "pass")
        return True
    except (SyntaxError, ValueError):
        return False


def _parses_as_module(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def _normalise_indent(code: str) -> str:
    """Dedent; also handle a first line at column 0 followed by lines indented as in a method."""
    code = textwrap.dedent(code.strip("\n")).rstrip()
    lines = code.split("\n")
    if len(lines) > 1 and not _parses_as_body(code):
        rest = textwrap.dedent("\n".join(lines[1:]))
        fixed = lines[0] + "\n" + rest
        if _parses_as_body(fixed):
            return fixed
    return code


def _forward_body(tree: ast.Module, code: str) -> str | None:
    """If the code defines `forward` (bare or inside class ModelNew), return its body text."""
    lines = code.split("\n")
    candidates: list[ast.FunctionDef] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "forward":
            candidates.append(node)
        elif isinstance(node, ast.ClassDef) and node.name == "ModelNew":
            candidates += [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "forward"]
    if not candidates:
        return None
    fn = candidates[-1]
    first = fn.body[0]
    start = first.lineno - 1
    if getattr(first, "decorator_list", None):  # a decorated nested def starts at its decorator
        start = first.decorator_list[0].lineno - 1
    end = fn.body[-1].end_lineno or len(lines)
    return textwrap.dedent("\n".join(lines[start:end])).rstrip()


def _drop_trailing_until(code: str, parses) -> str:
    lines = code.split("\n")
    while lines:
        lines.pop()
        candidate = "\n".join(lines).rstrip()
        if candidate.strip() and parses(candidate):
            return candidate
    return ""


def extract(completion: str, fmt: str, finish_reason: str) -> Extraction:
    """Extract the code and where it lies in the completion (see `extract_code`)."""
    if fmt not in ("body", "module"):
        raise ValueError(f"prompt.format={fmt!r} is not one of body, module")
    start, end = _code_region(completion)
    raw = completion[start:end]
    # Trim surrounding blank space from the span so it covers the code itself.
    lead = len(raw) - len(raw.lstrip())
    start, end = start + lead, start + len(raw.rstrip())
    code = raw.translate(_QUOTES)
    if not code.strip() or not _CODE_HINT_RE.search(code):
        return Extraction("no_code", "", start, start)
    parses = _parses_as_body if fmt == "body" else _parses_as_module
    code = _normalise_indent(code) if fmt == "body" else textwrap.dedent(code.strip("\n")).rstrip()
    status = "ok"
    if not parses(code) and finish_reason == "length":
        kept = _drop_trailing_until(code, parses)
        if kept:
            code = kept
        else:
            return Extraction("truncated", code, start, end)
    if fmt == "body" and _parses_as_module(code):
        body = _forward_body(ast.parse(code), code)
        if body is not None:
            code = body
    return Extraction(status, code, start, end)


def extract_code(completion: str, fmt: str, finish_reason: str) -> tuple[str, str]:
    """Return (status, code); status is ok, no_code or truncated (code kept for inspection)."""
    e = extract(completion, fmt, finish_reason)
    return e.status, e.code


def _with_imports(program: str) -> str:
    missing = [line for line, pattern in REQUIRED_IMPORTS if not pattern.search(program)]
    return ("\n".join(missing) + "\n\n" + program) if missing else program


def assemble_program(spec: TaskSpec, fmt: str, code: str) -> str:
    """The full candidate module: reference source + ModelNew ("" if there is no code)."""
    if not code.strip():
        return ""
    reference = spec.source.rstrip() + "\n\n\n"
    if fmt == "body":
        args = ", ".join(["self", *spec.forward_args])
        new = f"class ModelNew(Model):\n    def forward({args}):\n" + textwrap.indent(code.strip("\n"), " " * 8) + "\n"
    elif fmt == "module":
        new = code.strip("\n") + "\n"
    else:
        raise ValueError(f"prompt.format={fmt!r} is not one of body, module")
    return _with_imports(reference + new)


PREFIX_WINDOW = 8  # tokens decoded before each token to measure its length in context
EXACT_PREFIX_LIMIT = 4096  # up to this many tokens, a windowed result that disagrees is redone exactly


def _exact_prefix_lengths(ids: list[int], tokenizer: Any) -> list[int]:
    return [0] + [len(tokenizer.decode(ids[:i], skip_special_tokens=True)) for i in range(1, len(ids) + 1)]


def prefix_char_offsets(token_ids: Sequence[int], tokenizer: Any) -> list[int]:
    """offsets[i] = length of the text decoded from token_ids[:i] (non-decreasing), in linear time.

    Token i adds len(decode(ids[i-W:i+1])) - len(decode(ids[i-W:i])) characters: decoding a few
    tokens before it keeps what depends on context (leading spaces, multi-byte characters split
    over tokens) the same on both sides. If the sum disagrees with the decoded whole, short
    sequences are redone exactly (decoding every prefix, quadratic).
    """
    ids = [int(t) for t in token_ids]
    lengths = [0]
    for i in range(1, len(ids) + 1):
        lo = max(0, i - 1 - PREFIX_WINDOW)
        grown = len(tokenizer.decode(ids[lo:i], skip_special_tokens=True)) - len(tokenizer.decode(ids[lo:i - 1], skip_special_tokens=True))
        lengths.append(lengths[-1] + grown)
    if ids and lengths[-1] != len(tokenizer.decode(ids, skip_special_tokens=True)) and len(ids) <= EXACT_PREFIX_LIMIT:
        lengths = _exact_prefix_lengths(ids, tokenizer)
    offsets = [0]
    for n in lengths[1:]:
        offsets.append(max(n, offsets[-1]))
    return offsets


def code_token_span(token_ids: Sequence[int], tokenizer: Any, char_start: int, char_end: int) -> tuple[int, int]:
    """[start, end) token indices covering the characters [char_start, char_end) of the completion."""
    if char_end <= char_start:
        return 0, 0
    offsets = prefix_char_offsets(token_ids, tokenizer)
    n = len(token_ids)
    start = max(i for i in range(n + 1) if offsets[i] <= char_start)
    end = next((j for j in range(start, n + 1) if offsets[j] >= char_end), n)
    return min(start, n), end
