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
    "rule.resid_surprisal": "length control: among correct samples, the highest length-residualised NLL = NLL minus its least-squares fit a + b * length over all samples with code of the unit (length: code tokens for *_code variants, all tokens for *_all)",
    "rule.resid_confident": "length control: among correct samples, the lowest length-residualised NLL (see rule.resid_surprisal)",
    "rule.tail_confident": "DeepConf-style: among correct samples, the highest tail confidence = lowest tail NLL, the NLL of the lowest 10% of token log-probs (at least 1 token; mean or sum by variant, over code or all tokens)",
    "rule.tail_surprisal": "among correct samples, the lowest tail confidence (highest tail NLL, see rule.tail_confident)",
    "rule.shortest": "control: among correct samples, the fewest code tokens",
    "rule.shortest_top3": "control: time the 3 correct samples with the fewest code tokens, take the fastest",
    "rule.longest": "control: among correct samples, the most code tokens",
    "rule.longest_top3": "control: time the 3 correct samples with the most code tokens, take the fastest",
    "deployable": "every ranking rule is deployable: rank all samples before correctness is known (samples without extracted code last), check them in rank order until 1 (top3: 3) correct ones are found; this selects the same sample as the rule among correct samples, so success is identical and the cost is n_evaluated",
    "n_evaluated": "correctness checks the deployable variant spends per unit: rank position of the last correct sample it needs (all n if there are fewer); random rules: exact expectation j(n+1)/(c+1) for the j-th correct of c among n; oracle: n",
    "tie_breaking": "ties in the ranking key (NLL, speedup, length) go to the smallest sample_idx; samples with NaN NLL rank after all others",
    "geomean_speedup": f"geometric mean over units of the selected speedup, with speedup 0 (no correct sample) floored at {GEOMEAN_EPS:g}; for random rules exp(E[log speedup])",
    "geomean_speedup_solvable": "geometric mean of the selected speedup over units with at least one correct sample only (every rule selects a correct sample there, so no floor is needed)",
    "success_ci": "task-clustered bootstrap 95% percentile interval: resample tasks with replacement (all seeds of a task together; seeded), the same draws for every rule, so differences are paired",
    "geomean_ci": "geomean_lo/hi and geomean_solvable_lo/hi: task-clustered bootstrap 95% percentile interval of the geometric mean (mean log speedup resampled, then exponentiated)",
    "comparisons": "paired over units (rule_a vs rule_b under one variant): diff = rate_a - rate_b with a paired task-clustered bootstrap 95% CI; geomean_ratio = geomean speedup a / b (failures floored at 1e-3) with CI; Cohen's h = 2 asin(sqrt(rate_a)) - 2 asin(sqrt(rate_b)) with its bootstrap CI; exact sign test on discordant units (one-sided, H1: a better) and exact McNemar (two-sided binomial on discordant units); two-sided Wilcoxon signed-rank on log(speedup_a/speedup_b) with speedup 0 replaced by epsilon 1e-6 and zero differences dropped (Wilcox); random rules succeed with a probability, so sign/McNemar tests against them have no discordant units and are empty (use the CI); uncorrected for multiple comparisons; seeds of one task count as separate units for the tests (as in the paper), so their p-values are optimistic with several seeds, the bootstrap CIs are not",
    "correlations": "over correct samples with a finite NLL, pooled across tasks: Spearman rho(NLL, speedup); partial rho controlling for length (code tokens for *_code, all tokens for *_all) = Pearson r of rank residuals, p from t(n-3); rho(length, speedup); and the mean of within-unit rhos",
    "n_timed": "candidate timings a rule needs per unit beyond correctness checking (oracle: every correct sample; top3 rules: up to 3; single picks: 1)",
    "surprisal_quartiles": "correct samples binned by NLL into quartiles Q1 (lowest NLL, most confident) .. Q4 (highest NLL, most surprising); scheme per_task: quartile cut points within each unit (units with >= 4 correct samples; ranks, ties by sample_idx); scheme global: cut points over all correct samples of the policy pooled; per bin: sample count, share fast_1, median and geometric-mean speedup, mean NLL and mean length",
    "logprob_spread": "per unit and variant, over correct samples: NLL range (max - min) and IQR; rules_can_matter = at least 2 correct samples, NLL range >= threshold (spread_threshold nats per token for mean variants, times the mean token count for sum variants) and the correct samples differ in fast_1; otherwise no log-prob rule can change the unit's task success",
    "saturation_k": "smallest k in 1..K at which the Best-of-N curve reaches its value at K within 2 points (fast_p@k) or within 2% (expected best speedup@k)",
    "k_matched": "smallest integer k in 1..K at which oracle Best-of-N (fast_1@k for task success, expected best speedup@k for mean speedup) reaches the rule's value at K; NaN (shown as > K) if it never does",
}


def definitions_for(*names: str) -> dict[str, str]:
    """The subset of DEFINITIONS named (prefix match, so "rule." selects every rule)."""
    out: dict[str, str] = {}
    for name in names:
        for key, text in DEFINITIONS.items():
            if key == name or (name.endswith(".") and key.startswith(name)):
                out[key] = text
    return out
