"""One-line definitions stored in every table header and printed in the report.

Keep each definition to one line: table headers are `# definition.<name>: <text>` comments. A
selection rule's definition lives with the rule (vegtts.analysis.rules) and appears here as rule.<name>.
"""

from __future__ import annotations

from vegtts.analysis.constants import GEOMEAN_EPS
from vegtts.analysis.rules import RULES

__all__ = ["DEFINITIONS", "definitions_for"]

DEFINITIONS: dict[str, str] = {
    "fast_p": "a sample is fast_p if it is correct and its speedup (reference median time / candidate median time) is > p, strictly",
    "fast_1": "correct and speedup > 1 (strict)",
    "fast_1_sig": "correct and the lower bound of the bootstrap 95% interval of the speedup > 1 (noise-aware fast_1)",
    "task_success": "a selection rule succeeds on a task if the sample it selects is fast_1; a task with no correct sample fails every rule with speedup 0",
    "unit": "one (policy, seed, task) group of samples; rates are means over units, confidence intervals resample tasks (all seeds of a task together); with one sampling seed a unit is a task",
    "fast_p@k": "unbiased estimator 1 - C(n-c,k)/C(n,k) of P(at least one of k samples drawn without replacement is fast_p), n samples of which c are fast_p; fast_0@k = correct@k; averaged over units",
    "expected_best_speedup@k": "exact E[max speedup of k samples drawn without replacement] = sum_i s_(i) C(i-1,k-1)/C(n,k), speedups sorted ascending, failures count as 0; averaged over units",
    "surprisal": "negative log-likelihood (NLL) of the sampled tokens under raw (unscaled) model log-probs; variants sum_code/mean_code (over the extracted code's tokens) and sum_all/mean_all (over all completion tokens); NaN when there are no such tokens",
    **{f"rule.{rule.name}": rule.definition for rule in RULES},  # each rule's own (vegtts.analysis.rules)
    "deployable": "every ranking rule is deployable: rank all samples before correctness is known (samples without extracted code last), check them in rank order until 1 (top3: 3) correct ones are found; this selects the same sample as the rule among correct samples, so success is identical and the cost is n_evaluated",
    "n_evaluated": "correctness checks the deployable variant spends per unit: rank position of the last correct sample it needs (all n if there are fewer); random rules: exact expectation j(n+1)/(c+1) for the j-th correct of c among n; oracle: n",
    "tie_breaking": "ties in the ranking key (NLL, speedup, length) go to the smallest sample_idx; samples with NaN NLL rank after all others",
    "geomean_speedup": f"geometric mean over units of the selected speedup, with speedup 0 (no correct sample) floored at {GEOMEAN_EPS:g}, so that every unsolvable unit pulls it down by a fixed factor set by the floor, not by the data (geomean_speedup_solvable has no floor); for random rules exp(E[log speedup])",
    "geomean_speedup_solvable": "geometric mean of the selected speedup over units with at least one correct sample only (every rule selects a correct sample there, so no floor is needed)",
    "success_ci": "task-clustered 95% interval (anchored Bayesian bootstrap): each draw weights every task by a Gamma(1) variate (all seeds of a task share it; normalised this is Dirichlet(1, ..., 1)) and adds two pseudo-tasks at the ends of the quantity's range with Gamma(0.25) weights (a rate: 0 and 1, a Jeffreys-like interval; a difference of rates: -1 and +1; a log speedup ratio: -+ the largest spread of log speedups among the correct samples of any unit, column log_speedup_spread of selection_per_task), so that tasks that all agree cannot give a zero-width interval; 2.5 and 97.5 percentiles of the draws (seeded); the same draws for every rule of a policy, so differences are paired; coverage checked by simulation (analysis.synthetic.comparison_coverage, tests/test_evidence.py)",
    "geomean_ci": "geomean_lo/hi and geomean_solvable_lo/hi: the same task-clustered Bayesian-bootstrap draws (see success_ci) of the mean log speedup, without anchors (a level, not a difference), exponentiated",
    "comparisons": "paired over units (rule_a vs rule_b under one variant; scope planned = the paper's and each rule's control, all_pairs = every other pair under the primary variant): diff = rate_a - rate_b with its paired task-clustered 95% interval (success_ci: anchored at -1 and +1); geomean_ratio = geomean speedup a / b over all units (failures floored at 1e-3) and geomean_ratio_solvable over units with a correct sample (no floor), each with its paired interval (anchored at -+ the largest spread of log speedups among the correct samples of a unit); Cohen's h with its CI; tests over tasks (per-task means over seeds, tasks are independent, samples and seeds of a task are not): tasks_a_better/tasks_b_better, the exact one-sided sign test and exact McNemar test on tasks where exactly one rule succeeds (only when both rules pick one sample and every task has one unit, else empty: a random rule's success is a probability), and the two-sided Wilcoxon signed-rank test on the per-task difference of E[log speedup] (log of the selected speedup floored at 1e-3, for random rules its exact expectation: the quantity the geometric-mean ratio averages; zero differences dropped; p exact over all sign flips up to 16 tasks, else normal with tie correction); uncorrected for multiple comparisons",
    "correlations": "over distinct correct programs with a finite NLL (copies of one program share one evaluation and timing, so they count once; their NLL and length are averaged), pooled across tasks: Spearman rho(NLL, speedup); partial rho controlling for length (code tokens for *_code, all tokens for *_all) = Pearson r of rank residuals; rho(length, speedup); the mean within-task rho (tasks with >= 3 programs and no constant side); each with a task-clustered bootstrap 95% interval (resample tasks, recompute over their programs); p_within_task_permutation: two-sided p of the mean within-task rho against permutations of speedups within each task (no p-value assuming independent programs is given: programs of one task are not independent); spearman_over_samples counts copies and is given only to show the difference",
    "n_timed": "candidate timings a rule needs per unit beyond correctness checking (oracle: every correct sample; top3 rules: up to 3; single picks: 1)",
    "surprisal_quartiles": "distinct correct programs binned by NLL into quartiles Q1 (lowest NLL, most confident) .. Q4 (highest NLL, most surprising); scheme per_task: quartile cut points within each task (tasks with >= 4 correct programs; ranks, ties by code_sha256); scheme global: cut points over all correct programs of the policy pooled; per bin: program count (and their sample count), share fast_1, median and geometric-mean speedup, mean NLL and mean length",
    "logprob_spread": "per unit and variant, over correct samples: NLL range (max - min) and IQR; rules_can_matter = at least 2 correct samples, NLL range >= threshold (spread_threshold nats per token for mean variants, times the mean token count for sum variants) and the correct samples differ in fast_1; otherwise no log-prob rule can change the unit's task success",
    "distinct_program": "identical candidate code of one task (same code_sha256 of the assembled program) is evaluated once and its copies share that verdict and timing: counts in distinct programs (n_programs) count it once, counts in samples count every copy",
    "reference_copy": "a sample whose program is the reference itself: the evaluator's flag reference_copy, or ModelNew's forward (and __init__, unless inherited from Model) equal to the reference Model's as syntax trees; its speedup measures timing noise, not the program",
    "validation": "findings of the task screen (tasks.json, '<check>: <detail>', e.g. constant_output, tiny_output, ignored_input); analysis.exclude_flagged leaves flagged tasks out of every table but sample_stats (excluded = true, and excluded_tasks in every header)",
    "rejected": "status rejected: a guard of the evaluator fired (column guard names it, error says why); one row per distinct program with the samples it covers",
    "verdict": "task_success_verdict (difference, null 0) and speedup_verdict (geomean_ratio_solvable, null 1): 'a better' or 'b better' only when the paired task-clustered 95% interval excludes the null, 'tie' when it contains it",
    "share_ci": "share_lo/share_hi: task-clustered 95% interval of a share of samples (anchored Bayesian bootstrap as in success_ci, anchors 0 and 1 with the mean number of samples of a task)",
    "saturation_k": "smallest k in 1..K at which the Best-of-N curve reaches its value at K within 2 points (fast_p@k) or within 2% (expected best speedup@k)",
    "k_matched": "smallest integer k in 1..K at which oracle Best-of-N (fast_1@k for task success, expected best speedup@k for mean speedup) reaches the rule's value at K; NaN (shown as > K) if it never does; a rule at the curve's ceiling (within 0.01 of its value at K: points for task success, relative for speedup) gets only a bound, k_matched_text 'at least k' with k where the curve first comes within that tolerance of its ceiling",
}


def definitions_for(*names: str) -> dict[str, str]:
    """The subset of DEFINITIONS named (prefix match, so "rule." selects every rule)."""
    out: dict[str, str] = {}
    for name in names:
        for key, text in DEFINITIONS.items():
            if key == name or (name.endswith(".") and key.startswith(name)):
                out[key] = text
    return out
