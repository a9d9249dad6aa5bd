"""Synthetic samples and evaluations with the real record schemas, for tests and benchmarks, and a
simulation check of the rule comparisons' intervals.

Nothing here is a result: it exercises the analysis, figures and report without a model, and
`comparison_coverage` measures how often the paired task-clustered intervals contain a planted
truth when samples repeat programs as real runs do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
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


# ---------------------------------------------------------------- coverage of the rule comparisons


@dataclass(frozen=True)
class RepeatedProgramDesign:
    """Tasks whose samples repeat a few distinct programs, as the default run's do (its 88 correct
    samples are 21 programs in 11 tasks, most of them copied many times).

    Per task: 1 + Poisson(programs_mean) distinct programs; each is correct with the task's
    probability (Beta(1, 1)) and has a log speedup = task centre N(0, 0.3) + program noise N(0, 0.3);
    its NLL (mean_code, shared by its copies) = N(0.5, 0.2) + effect x log speedup, so `effect` > 0
    plants "more surprising programs are faster", effect 0 plants nothing.  Samples draw programs
    with Gamma(copy_shape) weights (small shape: a few programs take most samples), independent
    of speed; every seed of a task draws from the same programs (copies across seeds).
    """

    n_tasks: int = 12
    n_samples: int = 16
    n_seeds: int = 1
    programs_mean: float = 2.0
    copy_shape: float = 0.5
    effect: float = 0.0


def _task_programs(rng: np.random.Generator, design: RepeatedProgramDesign) -> dict[str, np.ndarray]:
    m = 1 + int(rng.poisson(design.programs_mean))
    log_s = rng.normal(0.0, 0.3) + rng.normal(0.0, 0.3, m)
    return {
        "correct": rng.random(m) < rng.beta(1.0, 1.0),
        "log_speedup": log_s,
        "nll": rng.normal(0.5, 0.2, m) + design.effect * log_s,
        "weights": rng.gamma(design.copy_shape, 1.0, m) + 1e-12,
    }


def repeated_program_samples(design: RepeatedProgramDesign, rng: np.random.Generator) -> pd.DataFrame:
    """Merged-sample rows (the columns the selection rules read) for one simulated experiment."""
    rows = []
    for t in range(design.n_tasks):
        prog = _task_programs(rng, design)
        p = prog["weights"] / prog["weights"].sum()
        for s in range(design.n_seeds):
            picks = rng.choice(len(p), size=design.n_samples, p=p)
            for i, j in enumerate(picks):
                correct = bool(prog["correct"][j])
                speedup = float(np.exp(prog["log_speedup"][j])) if correct else 0.0
                rows.append({"policy": "base", "seed": s, "task_id": f"task{t:03d}", "sample_idx": i,
                             "code_sha256": f"t{t}p{j}", "correct": correct, "speedup": speedup,
                             "fast_1": correct and speedup > 1.0, "has_code": True,
                             "n_code_tokens": 10, "n_tokens": 12, "nll_mean_code": float(prog["nll"][j])})
    return pd.DataFrame(rows)


def true_surprisal_vs_random(design: RepeatedProgramDesign, n_tasks: int = 20000, seed: int = 0) -> dict[str, float]:
    """Population values (Monte Carlo over `n_tasks` simulated tasks, one seed each) of the paired
    difference surprisal - random in task success, and of the log geometric-mean ratio over tasks
    with a correct sample: what the rule comparison's intervals estimate."""
    rng = np.random.default_rng(seed)
    diffs, log_ratios = [], []
    for _ in range(n_tasks):
        prog = _task_programs(rng, design)
        picks = rng.choice(len(prog["weights"]), size=design.n_samples, p=prog["weights"] / prog["weights"].sum())
        ok = prog["correct"][picks]
        if not ok.any():
            diffs.append(0.0)
            continue
        chosen = picks[ok]
        fast = prog["log_speedup"][chosen] > 0
        # surprisal: highest NLL among correct samples (copies tie on NLL: same program either way)
        best = chosen[int(np.argmax(prog["nll"][chosen]))]
        diffs.append(float(prog["log_speedup"][best] > 0) - float(fast.mean()))
        log_ratios.append(float(prog["log_speedup"][best] - prog["log_speedup"][chosen].mean()))
    return {"diff": float(np.mean(diffs)), "log_geomean_ratio_solvable": float(np.mean(log_ratios))}


def percentile_bootstrap_row(per_unit: pd.DataFrame, n_boot: int, rng: np.random.Generator) -> dict[str, float]:
    """The intervals the analysis used before its anchored Bayesian bootstrap, for comparison:
    tasks resampled with replacement (multinomial), 2.5/97.5 percentiles, surprisal - random."""
    from vegtts.analysis.selection import bootstrap_counts, percentile_ci

    wide = per_unit.pivot_table(index="task_id", columns="rule", values=["success", "selected_log_speedup", "n_correct"])
    d = (wide["success"]["surprisal"] - wide["success"]["random"]).to_numpy(float)
    solv = (wide["n_correct"]["random"] > 0).to_numpy()
    lr = (wide["selected_log_speedup"]["surprisal"] - wide["selected_log_speedup"]["random"]).to_numpy(float)
    counts = bootstrap_counts(len(d), n_boot, rng)
    lo, hi = percentile_ci((counts @ d) / counts.sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rlo, rhi = percentile_ci((counts @ (lr * solv)) / (counts @ solv.astype(float)))
    return {"diff_lo": lo, "diff_hi": hi, "geomean_ratio_solvable_lo": math.exp(rlo) if np.isfinite(rlo) else math.nan,
            "geomean_ratio_solvable_hi": math.exp(rhi) if np.isfinite(rhi) else math.nan}


def comparison_coverage(design: RepeatedProgramDesign, truth: Mapping[str, float], n_reps: int = 200,
                        n_boot: int = 400, seed: int = 0, cluster: str = "task",
                        method: str = "analysis") -> dict[str, float]:
    """Share of simulated experiments whose paired 95% intervals (surprisal vs random, the
    analysis's own paired_comparisons) contain the true difference and the true geometric-mean
    ratio over solvable tasks.  cluster="unit" resamples (seed, task) units as if they were
    independent (the wrong unit when seeds share programs): a negative control.  method="percentile"
    measures the plain percentile bootstrap over tasks the analysis used before, for comparison."""
    from vegtts.analysis.selection import select_all
    from vegtts.analysis.statistics import paired_comparisons

    if cluster not in ("task", "unit"):
        raise ValueError(f"cluster must be 'task' or 'unit', got {cluster!r}")
    if method not in ("analysis", "percentile"):
        raise ValueError(f"method must be 'analysis' or 'percentile', got {method!r}")
    rng = np.random.default_rng(seed)
    hit_diff = hit_ratio = n_ratio = 0
    widths = []
    for rep in range(n_reps):
        samples = repeated_program_samples(design, rng)
        if cluster == "unit":
            samples["task_id"] = samples["task_id"] + "/s" + samples["seed"].astype(str)
        per_unit = select_all(samples, variants=("mean_code",))
        if method == "percentile":
            row = percentile_bootstrap_row(per_unit, n_boot, rng)
        else:
            row = paired_comparisons(per_unit, n_boot=n_boot, seed=seed + rep, pairs=(("surprisal", "random"),)).iloc[0]
        hit_diff += row["diff_lo"] - 1e-12 <= truth["diff"] <= row["diff_hi"] + 1e-12
        widths.append((row["diff_hi"] - row["diff_lo"]) / 2)
        lo, hi = row["geomean_ratio_solvable_lo"], row["geomean_ratio_solvable_hi"]
        if np.isfinite(lo) and np.isfinite(hi):
            n_ratio += 1
            hit_ratio += np.log(lo) - 1e-12 <= truth["log_geomean_ratio_solvable"] <= np.log(hi) + 1e-12
    return {"coverage_diff": hit_diff / n_reps, "coverage_geomean_ratio": hit_ratio / max(n_ratio, 1),
            "mean_halfwidth_diff": float(np.mean(widths)), "n_reps": n_reps}
