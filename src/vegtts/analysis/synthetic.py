"""Synthetic samples and evaluations with the real record schemas, for tests and benchmarks.

Nothing here is a result: it exercises the analysis, figures and report without a model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from vegtts.io import sha256_text, write_parquet
from vegtts.records import EvalRecord, SampleRecord, to_row


def synthetic_records(
    n_tasks: int = 6, n_samples: int = 16, seeds: tuple[int, ...] = (0,), policy: str = "base", seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(samples, evaluations) frames; per task a random correctness rate and speedup spread."""
    rng = np.random.default_rng(seed)
    samples, evals = [], []
    for t in range(n_tasks):
        task_id = f"task{t:02d}"
        p_correct = rng.uniform(0.0, 1.0) if t else 0.0  # task00 never has a correct sample
        log_center = rng.normal(0.0, 0.3)
        for s in seeds:
            for i in range(n_samples):
                n_tok = int(rng.integers(8, 40))
                start = int(rng.integers(0, 4))
                end = start + int(rng.integers(0, n_tok - start + 1)) if rng.random() > 0.1 else start
                lps = (-rng.exponential(0.8, n_tok)).tolist()
                has_code = end > start
                code = f"return x * {i}" if has_code else ""
                program = f"# {task_id} {s} {i}\n{code}" if has_code else ""
                sha = sha256_text(program) if has_code else ""
                samples.append(to_row(SampleRecord(
                    task_id=task_id, policy=policy, seed=s, sample_idx=i, prompt_sha="p" * 8, prompt_format="body",
                    completion=code + " <script>alert(1)</script>", token_ids=list(range(n_tok)), token_logprobs=lps,
                    code_token_start=start, code_token_end=end, n_tokens=n_tok, n_prompt_tokens=100,
                    finish_reason="stop", extract_status="ok" if has_code else "no_code", code=code, program=program,
                    code_sha256=sha, model_id="synthetic", temperature=0.5, top_p=1.0, max_new_tokens=64,
                )))
                correct = has_code and rng.random() < p_correct
                status = "ok" if correct else ("no_code" if not has_code else str(rng.choice(["incorrect", "runtime_error"])))
                speedup = float(np.exp(log_center + rng.normal(0, 0.4))) if correct else 0.0
                half = float(rng.uniform(0.02, 0.3)) if correct else 0.0
                row = to_row(EvalRecord(task_id=task_id, code_sha256=sha, status=status, correct=correct,
                                        speedup=speedup, speedup_lo=speedup * (1 - half), speedup_hi=speedup * (1 + half)))
                row.update(policy=policy, seed=s, sample_idx=i)
                evals.append(row)
    return pd.DataFrame(samples), pd.DataFrame(evals)


def write_synthetic_run(out_dir: str | os.PathLike, **kwargs) -> tuple[list[Path], list[Path]]:
    """Write one samples and one evaluations parquet per task; return their paths."""
    out = Path(out_dir)
    samples, evals = synthetic_records(**kwargs)
    sample_paths, eval_paths = [], []
    for task_id, g in samples.groupby("task_id"):
        p = out / "samples" / f"{task_id}.parquet"
        write_parquet(p, g.reset_index(drop=True))
        sample_paths.append(p)
        q = out / "evaluations" / f"{task_id}.parquet"
        write_parquet(q, evals[evals["task_id"] == task_id].reset_index(drop=True))
        eval_paths.append(q)
    return sample_paths, eval_paths
