"""One-line definitions stored in every table header and printed in the report.

Keep each definition to one line: table headers are `# definition.<name>: <text>` comments.
"""

from __future__ import annotations

# Failures (no correct sample, so no selected speedup) enter geometric means at this floor.
GEOMEAN_EPS = 1e-3

SURPRISAL_VARIANTS = ("mean_code", "sum_code", "mean_all", "sum_all")
DEFAULT_VARIANT = "mean_code"

DEFINITIONS: dict[str, str] = {
    "fast_p": "a sample is fast_p if it is correct and its speedup (reference median time / candidate median time) is > p, strictly",
    "fast_1": "correct and speedup > 1 (strict)",
    "fast_1_sig": "correct and the lower bound of the bootstrap 95% interval of the speedup > 1 (noise-aware fast_1)",
    "task_success": "a selection rule succeeds on a task if the sample it selects is fast_1; a task with no correct sample fails every rule with speedup 0",
    "unit": "one (policy, seed, task) group of samples; rates are means over units, confidence intervals resample tasks (all seeds of a task together)",
    "fast_p@k": "unbiased estimator 1 - C(n-c,k)/C(n,k) of P(at least one of k samples drawn without replacement is fast_p), n samples of which c are fast_p; fast_0@k = correct@k; averaged over units",
    "expected_best_speedup@k": "exact E[max speedup of k samples drawn without replacement] = sum_i s_(i) C(i-1,k-1)/C(n,k), speedups sorted ascending, failures count as 0; averaged over units",
    "surprisal": "negative log-likelihood (NLL) of the sampled tokens under raw (unscaled) model log-probs; variants sum_code/mean_code (over the extracted code's tokens) and sum_all/mean_all (over all completion tokens); NaN when there are no such tokens",
    "rule.oracle": "among correct samples, the fastest (post hoc upper bound; times every correct sample)",
    "rule.random": "a uniformly random correct sample, as an exact expectation (success = share of correct samples that are fast_1, speedup = mean over correct samples, log-speedup = mean of logs), not a draw",
    "rule.most_confident": "among correct samples, the lowest NLL (surprisal variant given in column variant)",
    "rule.surprisal": "among correct samples, the highest NLL (the paper's surprisal-guided rule under variant mean_code)",
    "rule.surprisal_top3": "among correct samples, time the 3 highest-NLL ones and take the fastest (all of them if fewer than 3)",
    "rule.random_top3": "control: time 3 uniformly random correct samples and take the fastest, as an exact expectation",
    "rule.shortest": "control: among correct samples, the fewest code tokens",
    "rule.longest": "control: among correct samples, the most code tokens",
    "tie_breaking": "ties in the ranking key (NLL, speedup, length) go to the smallest sample_idx; samples with NaN NLL rank after all others",
    "geomean_speedup": f"geometric mean over units of the selected speedup, with speedup 0 (no correct sample) floored at {GEOMEAN_EPS:g}; for random rules exp(E[log speedup])",
    "geomean_speedup_solvable": "geometric mean of the selected speedup over units with at least one correct sample only (every rule selects a correct sample there, so no floor is needed)",
    "success_ci": "task-clustered bootstrap 95% percentile interval: resample tasks with replacement (seeded), paired across rules",
    "comparisons": "paired over units: Cohen's h from the pooled success rates; exact one-sided sign test on units where exactly one rule succeeds (H1: rule_a better); two-sided Wilcoxon signed-rank on log(speedup_a/speedup_b), speedup 0 replaced by 1e-6; median_speedup_ratio = exp(median log ratio); uncorrected for the 4 variants x 2 comparisons; seeds of one task count as separate units (as in the paper), so p-values are optimistic when there are several seeds",
    "correlations": "over correct samples with a finite NLL, pooled across tasks: Spearman rho(NLL, speedup); partial rho controlling for length (code tokens for *_code, all tokens for *_all) = Pearson r of rank residuals, p from t(n-3); rho(length, speedup); and the mean of within-unit rhos",
    "n_timed": "candidate timings a rule needs per unit beyond correctness checking (oracle: every correct sample; top3 rules: up to 3; single picks: 1)",
}


def definitions_for(*names: str) -> dict[str, str]:
    """The subset of DEFINITIONS named (prefix match, so "rule." selects every rule)."""
    out: dict[str, str] = {}
    for name in names:
        for key, text in DEFINITIONS.items():
            if key == name or (name.endswith(".") and key.startswith(name)):
                out[key] = text
    return out
