"""Prompts for the two action spaces.

- ``body`` (the paper's action space): the model writes only the body of ``ModelNew.forward``;
  ``ModelNew`` subclasses the reference ``Model`` and so inherits ``__init__`` and the weights.
- ``module``: the model writes a complete KernelBench-style module with ``class ModelNew(nn.Module)``.

Two styles: ``completion`` (few-shot text for base models, ending in an open code fence) and
``chat`` (the same instruction and examples as a user turn, through the tokenizer's chat template).
The few-shot examples are the project's own: short, PyTorch-only, a naive module and its fast version.
The prompt sha is the sha256 of the final prompt text, so any change to the wording changes it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from vegtts.io import sha256_text
from vegtts.records import TaskSpec

PROMPT_FORMATS = ("body", "module")
PROMPT_STYLES = ("completion", "chat")
PROMPT_REFERENCES = ("code", "full")

FENCE = "```"
OPEN_FENCE = "```python\n"


@dataclass(frozen=True)
class FewShotExample:
    reference: str  # a naive reference module (the Model class only)
    body: str  # a faster body of ModelNew.forward
    module: str  # the same rewrite as a complete ModelNew module


# A small model copies the pattern of the LAST shot most (recency), so the last one is the
# one-call idiom (F.<op>) that transfers to the elementwise tasks.  n_shots keeps the LAST n.
# None of them is a built-in task: the model must transfer the idea, not copy an answer.
FEW_SHOT_EXAMPLES: tuple[FewShotExample, ...] = (
    FewShotExample(
        reference='class Model(nn.Module):\n    def __init__(self, dim: int):\n        super().__init__()\n        self.scale = nn.Parameter(torch.randn(dim))\n        self.shift = nn.Parameter(torch.randn(dim))\n\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        return x * self.scale + self.shift',
        body='return torch.addcmul(self.shift, x, self.scale)',
        module='class ModelNew(nn.Module):\n    def __init__(self, dim: int):\n        super().__init__()\n        self.scale = nn.Parameter(torch.randn(dim))\n        self.shift = nn.Parameter(torch.randn(dim))\n\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        return torch.addcmul(self.shift, x, self.scale)',
    ),
    FewShotExample(
        reference='class Model(nn.Module):\n    def __init__(self):\n        super().__init__()\n\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        mu = x.mean(dim=-1, keepdim=True)\n        return ((x - mu) ** 2).mean(dim=-1, keepdim=True)',
        body='return torch.var(x, dim=-1, keepdim=True, unbiased=False)',
        module='class ModelNew(nn.Module):\n    def __init__(self):\n        super().__init__()\n\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        return torch.var(x, dim=-1, keepdim=True, unbiased=False)',
    ),
    FewShotExample(
        reference='class Model(nn.Module):\n    def __init__(self):\n        super().__init__()\n\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        return 1.0 / torch.sqrt(x)',
        body='return torch.rsqrt(x)',
        module='class ModelNew(nn.Module):\n    def __init__(self):\n        super().__init__()\n\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        return torch.rsqrt(x)',
    ),
    FewShotExample(
        reference='class Model(nn.Module):\n    def __init__(self):\n        super().__init__()\n\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        return x.sum(dim=1) / x.shape[1]',
        body='return x.mean(dim=1)',
        module='class ModelNew(nn.Module):\n    def __init__(self):\n        super().__init__()\n\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        return x.mean(dim=1)',
    ),
    FewShotExample(
        reference='class Model(nn.Module):\n    def __init__(self):\n        super().__init__()\n\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        return torch.log(1 + torch.exp(x))',
        body='return F.softplus(x)',
        module='class ModelNew(nn.Module):\n    def __init__(self):\n        super().__init__()\n\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        return F.softplus(x)',
    ),
)

MAX_SHOTS = len(FEW_SHOT_EXAMPLES)

_INSTRUCTION = {
    "body": (
        "# Each PyTorch Model below is rewritten as a faster ModelNew with identical outputs.\n"
        "# ModelNew subclasses Model, so it has the same __init__ and parameters (self.<name>).\n"
        "# Only the body of ModelNew.forward is written, using torch, nn and F.\n"
    ),
    "module": (
        "# Each PyTorch Model below is rewritten as a faster module ModelNew with identical outputs.\n"
        "# ModelNew is a complete nn.Module with the same __init__ arguments and parameters as Model.\n"
        "# torch, nn and F are already imported.\n"
    ),
}

_ANSWER_HEADER = {"body": "## ModelNew.forward body", "module": "## ModelNew"}
_REFERENCE_HEADER = "## Model"

# Strings that end a completion.  The completion prompt leaves a code fence open, so the
# closing fence ends the answer; a new section header is a fallback for models that skip it.
STOP_SEQUENCES: dict[str, list[str]] = {
    "body": [FENCE, "\n## ", "\nclass ", "\nif __name__"],
    "module": [FENCE, "\n## ", "\nif __name__", "\ndef get_inputs"],
}


def stop_sequences(fmt: str) -> list[str]:
    _check(fmt, PROMPT_FORMATS, "prompt.format")
    return list(STOP_SEQUENCES[fmt])


def _check(value: str, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def _section(header: str, code: str) -> str:
    return f"{header}\n{FENCE}python\n{code.rstrip()}\n{FENCE}\n"


def _shots_text(fmt: str, n_shots: int) -> str:
    parts = []
    for ex in FEW_SHOT_EXAMPLES[len(FEW_SHOT_EXAMPLES) - n_shots :]:
        answer = ex.body if fmt == "body" else ex.module
        parts.append(_section(_REFERENCE_HEADER, ex.reference) + "\n" + _section(_ANSWER_HEADER[fmt], answer))
    return "\n".join(parts)


def reference_text(spec: TaskSpec, reference: str = "code") -> str:
    """The reference as shown to the model.

    ``full``: the whole source.  ``code``: only the classes and functions the model rewrites
    (no imports, docstrings, harness metadata or get_inputs/get_init_inputs), plus the
    module-level constants they use, so the task looks like the few-shot examples; a small
    model otherwise copies prose or input generators.
    """
    _check(reference, PROMPT_REFERENCES, "prompt.reference")
    if reference == "full":
        return spec.source.strip()
    tree = ast.parse(spec.source)
    lines = spec.source.split("\n")
    keep_defs = [
        n for n in tree.body
        if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name not in ("get_inputs", "get_init_inputs")
    ]
    used = {n.id for d in keep_defs for n in ast.walk(d) if isinstance(n, ast.Name)}
    consts = [
        n for n in tree.body
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id in used for t in n.targets)
    ]
    parts = ["\n".join(lines[n.lineno - 1 : n.end_lineno]) for n in consts]
    text = ("\n".join(parts) + "\n\n\n") if parts else ""
    text += "\n\n\n".join(_strip_docstring(lines, d) for d in keep_defs)
    return text.strip()


def _strip_docstring(lines: list[str], node: ast.ClassDef | ast.FunctionDef) -> str:
    start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
    drop: set[int] = set()
    for sub in ast.walk(node):
        body = getattr(sub, "body", None)
        if isinstance(sub, (ast.ClassDef, ast.FunctionDef)) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            drop.update(range(body[0].lineno - 1, body[0].end_lineno or body[0].lineno))
    kept = [lines[i] for i in range(start, node.end_lineno or start + 1) if i not in drop]
    return "\n".join(line for line in kept if not line.lstrip().startswith("#"))


def _task_text(spec: TaskSpec, fmt: str, reference: str) -> str:
    return _section(_REFERENCE_HEADER, reference_text(spec, reference)) + "\n" + f"{_ANSWER_HEADER[fmt]}\n{OPEN_FENCE}"


def build_prompt(
    spec: TaskSpec, fmt: str, style: str, n_shots: int, tokenizer=None, reference: str = "code"
) -> str:
    """The prompt text for one task.  It ends in an open ```python fence in both styles."""
    _check(fmt, PROMPT_FORMATS, "prompt.format")
    _check(style, PROMPT_STYLES, "prompt.style")
    if not 0 <= n_shots <= MAX_SHOTS:
        raise ValueError(f"prompt.n_shots={n_shots} must be between 0 and {MAX_SHOTS}")
    shots = _shots_text(fmt, n_shots)
    body = _INSTRUCTION[fmt] + "\n" + (shots + "\n" if shots else "") + _task_text(spec, fmt, reference)
    if style == "completion":
        return body
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt.style='chat' needs a model whose tokenizer has a chat template; use 'completion'")
    # The user turn holds everything but the open fence; the assistant turn starts the code block.
    messages = [{"role": "user", "content": chat_user_turn(body)}]
    templated = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return templated + OPEN_FENCE


def chat_user_turn(completion_prompt: str) -> str:
    """The user message of the chat style, made from the completion-style prompt (which ends in the open fence)."""
    return completion_prompt[: -len(OPEN_FENCE)].rstrip() + "\nAnswer with one python code block."


def prompt_sha(prompt: str) -> str:
    return sha256_text(prompt)
