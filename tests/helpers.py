"""Helpers shared by several test files (tests/ is on sys.path: `from helpers import ...`).

Fixtures live in tests/conftest.py; this module holds the plain functions and constants behind them,
so that no test file imports another test file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import torch

from vegtts.evaluate import EvalSettings
from vegtts.io import sha256_text
from vegtts.records import TaskSpec
from vegtts.sampling.prompts import prompt_sha

REPO = Path(__file__).resolve().parents[1]
SHARED_RESOURCES = REPO / "resources"  # the prepared default model, shared by every workdir


# --- workflow runs in a temporary copy of the checkout ----------------------------------------------
def make_workdir(tmp: Path) -> Path:
    """Copy the workflow and the package into `tmp`; `env_for` puts the copy's package first on
    PYTHONPATH, so a test can edit plot code without touching the checkout."""
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, tmp / name)
    shutil.copytree(REPO / "workflow", tmp / "workflow", symlinks=True)
    shutil.copytree(REPO / "src", tmp / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / ".test", tmp / ".test")
    shutil.copytree(REPO / "profiles", tmp / "profiles")  # profiles/default applies to every run
    return tmp


def env_for(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(workdir / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    return env


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env_for(workdir), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def tiny_args(*extra_config: str) -> list[str]:
    return [
        "--configfile",
        ".test/config/tiny.yaml",
        "--config",
        f"resources_dir={SHARED_RESOURCES}",
        *extra_config,
    ]


def clone_run(run: Path, dest: Path) -> Path:
    """A copy of a finished workdir that Snakemake sees as finished too (mtimes and metadata kept)."""
    shutil.copytree(run, dest, symlinks=True, copy_function=shutil.copy2)
    return dest


def job_counts(output: str) -> dict[str, int]:
    """Rule -> planned job count, from the first "Job stats" table Snakemake prints."""
    counts: dict[str, int] = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if not parts[0].startswith("-"):
                counts[parts[0]] = int(parts[1])
    return counts


def plan(workdir: Path, *args: str, env: dict[str, str] | None = None) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job a dry run plans ("localrule all" included)."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "-n", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env or env_for(workdir), capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    jobs: list[tuple[str, list[str]]] = []
    for line in out.splitlines():
        match = re.match(r"\s*(?:local)?rule (\w+):\s*$", line)
        if match:
            jobs.append((match.group(1), []))
        elif line.strip().startswith("output:") and jobs:
            jobs[-1][1].extend(p.strip() for p in line.strip()[len("output:"):].split(","))
    return jobs


def rule_counts(jobs) -> dict[str, int]:
    return dict(Counter(rule for rule, _ in jobs))


# --- damaging stored files --------------------------------------------------------------------------
def flip_bit(path: Path, offset: int | None = None, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 1 << bit
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- evaluator problems -----------------------------------------------------------------------------
PROBLEMS = {
    # small, with weights: checks the state_dict copy and most failure modes quickly
    "scale": '''
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, x):
        return self.lin(x) * 2.0


def get_inputs():
    return [torch.randn(16, 64)]


def get_init_inputs():
    return [64, 32]
''',
    # written-out softmax: a one-call rewrite is several times faster on one thread
    "softmax": '''
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        m = x.max(dim=-1, keepdim=True).values
        e = torch.exp(x - m)
        s = e.sum(dim=-1, keepdim=True)
        return e / s


def get_inputs():
    return [torch.randn(256, 2048) * 3]


def get_init_inputs():
    return []
''',
}

FAST = EvalSettings(correctness_trials=2, timing_rounds=5, calls_per_round=2, warmup_calls=1, bootstrap=200, timeout_s=20)


def spec_of(name: str) -> TaskSpec:
    src = PROBLEMS[name]
    return TaskSpec(task_id=name, name=name, suite="test", source=src, source_sha256=sha256_text(src), forward_args=["x"])


def program(problem: str, body: str) -> str:
    return PROBLEMS[problem] + "\n\n" + body.strip() + "\n"


# --- a tiny random Gemma 3 and a character tokenizer ------------------------------------------------
VOCAB = 97


def tiny_model(seed: int = 0, softcap: float | None = 30.0):
    """A 3-layer Gemma 3 with a sliding window (4) shorter than the test prompts."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=4, max_position_embeddings=256,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"], final_logit_softcapping=softcap,
    )
    return Gemma3ForCausalLM(cfg).eval()


class CharTokenizer:
    """id = 2 + code point mod 95, BOS = 1."""

    bos_token = "<bos>"

    def __call__(self, text, return_tensors="pt", add_special_tokens=True):
        ids = ([1] if add_special_tokens else []) + [2 + ord(c) % 95 for c in text]
        return {"input_ids": torch.tensor([ids])}


PROMPT = "def forward(self, x):\n"  # 22 characters: longer than the sliding window


def samples_frame(rows, prompt=PROMPT, task_id="t", policy="base"):
    n_prompt = CharTokenizer()(prompt)["input_ids"].shape[1]
    return pd.DataFrame(
        {
            "task_id": task_id,
            "policy": policy,
            "seed": 0,
            "sample_idx": list(range(len(rows))),
            "prompt_sha": prompt_sha(prompt),
            "token_ids": rows,
            "code_token_start": [min(1, len(r)) for r in rows],
            "code_token_end": [max(len(r) - 1, 0) for r in rows],
            "n_prompt_tokens": n_prompt,
        }
    )
