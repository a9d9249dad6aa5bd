"""What a run's tables support, in plain sentences: the report's first screen and the README's
measured section are both built from these functions, so the two cannot say different things.

Rules of the language (issue 12):
- every headline number comes with its unit (samples, distinct programs, tasks) and its 95% interval;
- a rule "beats" another only when the paired task-clustered interval of the difference excludes 0
  (1 for speedup ratios); otherwise the two tie, and the text says so;
- floors and exclusions are stated where the number is (the 0.001 floor of unsolvable tasks in
  geometric means, tasks left out by analysis.exclude_flagged);
- correlations are over distinct programs, with task-clustered intervals, and the length verdict
  reads the signs of the raw and the length-controlled association.

Sentences are plain text with **bold** marks; the report escapes them and turns the marks into <b>.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from vegtts.analysis.constants import GEOMEAN_EPS
from vegtts.analysis.statistics import A_BETTER, B_BETTER

HEADLINE_RULES = ("oracle", "surprisal_top3", "surprisal", "random", "most_confident")
LABELS = {
    "oracle": "oracle", "surprisal_top3": "surprisal top-3", "surprisal": "surprisal", "random": "random (exact)",
    "most_confident": "most confident", "random_top3": "random top-3", "shortest": "shortest", "longest": "longest",
    "resid_surprisal": "length-resid. surprisal", "resid_confident": "length-resid. confident",
    "tail_confident": "tail confident (DeepConf)", "tail_surprisal": "tail surprisal",
    "shortest_top3": "shortest top-3", "longest_top3": "longest top-3",
}


def label(rule: str) -> str:
    return LABELS.get(rule, rule)


def is_true(v: Any) -> bool:
    return str(v).strip().lower() == "true"


def finite(*xs: Any) -> bool:
    try:
        return all(x is not None and np.isfinite(float(x)) for x in xs)
    except (TypeError, ValueError):
        return False


def pct(x: float, digits: int = 0) -> str:
    return f"{100 * float(x):.{digits}f}%" if finite(x) else "n/a"


def pct_ci(value: float, lo: float, hi: float, digits: int = 0) -> str:
    """"45.8% [38.0, 53.1]" (the interval only when it is there)."""
    if not finite(value):
        return "n/a"
    text = pct(value, digits)
    return text + (f" [{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]" if finite(lo, hi) else " (no interval)")


def times_ci(value: float, lo: float, hi: float) -> str:
    if not finite(value):
        return "n/a"
    return f"{value:.2f}x" + (f" [{lo:.2f}, {hi:.2f}]" if finite(lo, hi) else " (no interval)")


def rho_ci(value: float, lo: float, hi: float) -> str:
    if not finite(value):
        return "undefined"
    return f"{value:+.2f}" + (f" [{lo:+.2f}, {hi:+.2f}]" if finite(lo, hi) else " (no interval)")


def excludes(lo: float, hi: float, null: float) -> bool:
    return finite(lo, hi) and (lo > null or hi < null)


def primary_of(header: Mapping[str, str], selection: pd.DataFrame) -> tuple[str, str]:
    """(policy, variant) the headline is about: the analysis settings, else base / mean_code."""
    variant = header.get("settings.primary_variant", "mean_code")
    policies = sorted(selection["policy"].astype(str).unique()) if not selection.empty else ["base"]
    policy = header.get("settings.primary_policy") or ("base" if "base" in policies else policies[0])
    return policy, variant


def _rules(selection: pd.DataFrame, policy: str, variant: str) -> pd.DataFrame:
    sel = selection[(selection["policy"].astype(str) == policy) & selection["variant"].isin([variant, "-"])]
    return sel.drop_duplicates("rule").set_index("rule")


# ---------------------------------------------------------------- provenance


def provenance_line(header: Mapping[str, str]) -> str:
    """Config hash, code version and store keys, as the tables' headers carry them."""
    commit = header.get("code.git_commit", "unavailable")
    dirty = " with uncommitted changes" if is_true(header.get("code.git_dirty", "")) else ""
    store = ", ".join(f"{k[len('store.'):]} {v}" for k, v in header.items() if k.startswith("store.") and v)
    parts = [f"config hash {header.get('config_hash', 'unavailable') or 'unavailable'}",
             f"code: git commit {commit[:12]}{dirty}, package fingerprint {header.get('code.package_fingerprint', 'unavailable')}"]
    if store:
        parts.append(f"store keys: {store}")
    return "Provenance: " + "; ".join(parts) + "."


def exclusion_sentence(header: Mapping[str, str]) -> str:
    excluded = header.get("excluded_tasks", "[]")
    if excluded in ("", "[]"):
        return ""
    return (f"**Left out of every number below** (analysis.exclude_flagged, flagged by the task screen): {excluded}; "
            "sample_stats.csv still lists them.")


# ---------------------------------------------------------------- outcomes


def outcome_sentences(outcomes: pd.DataFrame, policy: str) -> list[str]:
    """Counts with their units and intervals: samples, distinct programs, tasks."""
    o = outcomes[outcomes["policy"].astype(str) == policy].set_index("outcome") if not outcomes.empty else outcomes
    if o.empty:
        return ["No outcome table was produced."]
    first = o.iloc[0]
    out = [f"Policy {policy}: {int(first['n_samples_total'])} samples ({int(first['n_programs_total'])} distinct "
           f"programs) in {int(first['n_tasks_total'])} tasks. Shares are of samples, with task-clustered 95% intervals."]
    parts = []
    for name in ("correct", "fast_1", "fast_1_sig"):
        if name in o.index:
            r = o.loc[name]
            parts.append(f"{r['description']}: {pct_ci(r['share_of_samples'], r['share_lo'], r['share_hi'], 1)} "
                         f"({int(r['n_samples'])} samples, {int(r['n_programs'])} distinct programs, "
                         f"{int(r['n_tasks'])} tasks)")
    out.append("; ".join(parts) + ".")
    if "fast_1_reference_copy" in o.index and "fast_1" in o.index:
        c, f = o.loc["fast_1_reference_copy"], o.loc["fast_1"]
        rc = o.loc["reference_copy"] if "reference_copy" in o.index else c
        if int(rc["n_samples"]):
            out.append(f"{int(rc['n_samples'])} samples ({int(rc['n_programs'])} programs) are verbatim copies of the "
                       f"reference, {int(c['n_samples'])} of the {int(f['n_samples'])} fast_1 samples among them: their "
                       "speedup measures timing noise, not the program.")
        else:
            out.append("No sample is a verbatim copy of the reference.")
    return out


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def rejection_sentence(rejections: pd.DataFrame) -> str:
    """Every task and guard with rejected programs (or that there were none); rejections.csv has each program."""
    if rejections.empty:
        return "No evaluation was rejected by a guard."
    g = rejections.groupby(["task_id", "guard"], sort=True).agg(n=("n_samples", "sum"), p=("n_samples", "size"))
    items = [f"{task} ({guard}: {_n(int(r['n']), 'sample')}, {_n(int(r['p']), 'program')})" for (task, guard), r in g.iterrows()]
    return (f"Rejected by a guard: {_n(int(rejections['n_samples'].sum()), 'sample')}, "
            f"{_n(len(rejections), 'distinct program')}: " + "; ".join(items) + " (rejections.csv).")


def validation_sentence(sample_stats: pd.DataFrame) -> str:
    """Tasks the screen flagged (constant, tiny, identity, ignored input, ...), each with its findings."""
    if sample_stats.empty or "validation" not in sample_stats:
        return ""
    findings = sample_stats["validation"].map(lambda x: x if isinstance(x, str) else "")
    v = sample_stats.assign(validation=findings)[findings.ne("")].drop_duplicates("task_id")
    if v.empty:
        return "The task screen flagged no task."
    items = [f"{r['task_id']}{' (left out)' if is_true(r.get('excluded', False)) else ''}: {r['validation']}"
             for _, r in v.iterrows()]
    return f"The task screen flagged {_n(len(v), 'task')}: " + "; ".join(items) + "."


def signal_sentence(signal: pd.DataFrame) -> str:
    if signal.empty:
        return ""
    items = []
    for _, r in signal.iterrows():
        share = r["check"] == "share_correct"
        value = pct(r["value"]) if share else str(int(r["value"]))
        target = pct(r["target"]) if share else str(int(r["target"]))
        items.append(f"{r['description']}: {value} (target at least {target}) {'PASS' if is_true(r['pass']) else 'FAIL'}")
    verdict = ("the experiment has enough signal for selection to matter" if signal["pass"].map(is_true).all()
               else "the signal check fails: selection results from this run carry little information")
    return "Signal check: " + "; ".join(items) + f". So {verdict}."


# ---------------------------------------------------------------- rules


def _primary_comparisons(comp: pd.DataFrame, policy: str, variant: str) -> pd.DataFrame:
    if comp.empty:
        return comp
    return comp[(comp["policy"].astype(str) == policy) & comp["variant"].isin([variant, "-"])]


def beats(comp: pd.DataFrame, verdict_column: str, lo: str, hi: str, value: str) -> list[tuple[str, str, float, float, float]]:
    """(winner, loser, value, lo, hi) for every pair whose verdict is not a tie (value oriented winner - loser)."""
    out = []
    for _, r in comp.iterrows():
        v = str(r.get(verdict_column, ""))
        if v == A_BETTER:
            out.append((r["rule_a"], r["rule_b"], float(r[value]), float(r[lo]), float(r[hi])))
        elif v == B_BETTER:
            if value.startswith("geomean"):
                out.append((r["rule_b"], r["rule_a"], 1 / float(r[value]), 1 / float(r[hi]), 1 / float(r[lo])))
            else:
                out.append((r["rule_b"], r["rule_a"], -float(r[value]), -float(r[hi]), -float(r[lo])))
    return out


def _headline_first(wins: list[tuple[str, str, float, float, float]]) -> tuple[list, int]:
    """The verdicts between two headline rules (all of them when there are few), and how many are left."""
    if len(wins) <= 4:
        return wins, 0
    shown = [w for w in wins if w[0] in HEADLINE_RULES and w[1] in HEADLINE_RULES]
    return shown, len(wins) - len(shown)


def task_success_sentences(selection: pd.DataFrame, comp: pd.DataFrame, policy: str, variant: str) -> list[str]:
    """Headline rates with intervals, then which rule beats which (paired intervals) and the ties."""
    rules = _rules(selection, policy, variant)
    if rules.empty:
        return ["No selection results."]
    n_tasks = int(rules["n_tasks"].max())
    shown = [r for r in HEADLINE_RULES if r in rules.index]
    rates = ", ".join(f"{label(r)} {pct_ci(rules.loc[r, 'success_rate'], rules.loc[r, 'success_lo'], rules.loc[r, 'success_hi'])}"
                      for r in shown)
    out = [f"Task success (the selected sample is fast_1), over {n_tasks} tasks (surprisal variant {variant}; "
           f"95% intervals resample tasks): {rates}."]
    c = _primary_comparisons(comp, policy, variant)
    if c.empty or "task_success_verdict" not in c or not c["task_success_verdict"].astype(str).ne("").any():
        out.append("No paired intervals were computed (analysis.bootstrap), so no rule is said to beat another.")
        return out
    others = c[(c["rule_a"] != "oracle") & (c["rule_b"] != "oracle")]
    non_oracle = sorted(set(others["rule_a"]) | set(others["rule_b"]), key=lambda r: list(LABELS).index(r) if r in LABELS else 99)
    wins = beats(others, "task_success_verdict", "diff_lo", "diff_hi", "diff")
    if not wins:
        out.append(f"**No rule beats another on task success**: the paired interval of every difference between the "
                   f"{len(non_oracle)} non-oracle rules ({len(others)} pairs) includes 0, so they tie.")
    else:
        beaten = {loser for _, loser, *_ in wins}
        unbeaten = [r for r in non_oracle if r not in beaten]
        shown, rest = _headline_first(wins)
        out.append("Paired differences whose interval excludes 0: " + "; ".join(
            f"**{label(w)} beats {label(lo_)}** by {100 * d:+.0f} points [{100 * a:+.0f}, {100 * b:+.0f}]"
            for w, lo_, d, a, b in shown) + (f"; and {rest} more involving controls (comparisons.csv)" if rest else "")
            + ". Every other pair of non-oracle rules ties. Not beaten by any rule: "
            + ", ".join(label(r) for r in unbeaten) + " (these tie with each other).")
    oracle = c[(c["rule_a"] == "oracle") | (c["rule_b"] == "oracle")]
    if oracle.empty:
        return out
    oracle_wins = [x for x in beats(oracle, "task_success_verdict", "diff_lo", "diff_hi", "diff") if x[0] == "oracle"]
    beaten_by_oracle = {x[1] for x in oracle_wins}
    tied = [r for r in non_oracle if r not in beaten_by_oracle]
    out.append(("The oracle (post hoc, times every correct sample) beats " + ", ".join(label(r) for r in sorted(beaten_by_oracle, key=non_oracle.index))
                if beaten_by_oracle else "The oracle (post hoc) beats no rule")
               + ("; it ties with " + ", ".join(label(r) for r in tied) if tied else "") + ".")
    n_pairs = len(c)
    out.append(f"{n_pairs} pairs were compared without correction for multiplicity: about {0.05 * n_pairs:.0f} "
               "could exclude 0 by chance at 95%.")
    return out


def speedup_sentences(selection: pd.DataFrame, comp: pd.DataFrame, policy: str, variant: str) -> list[str]:
    """Geometric-mean selected speedup over solvable tasks (no floor), the paired verdicts, and the
    floored all-task figure with its floor stated."""
    rules = _rules(selection, policy, variant)
    if rules.empty or "geomean_speedup_solvable" not in rules:
        return []
    shown = [r for r in HEADLINE_RULES if r in rules.index]
    n_units = int(rules["n_units"].max()) if "n_units" in rules else int(rules["n_tasks"].max())
    unit_word = "tasks" if n_units == int(rules["n_tasks"].max()) else "units (task, seed)"
    n_solv = int(rules["n_units_solvable"].max()) if "n_units_solvable" in rules else n_units
    vals = ", ".join(f"{label(r)} {times_ci(rules.loc[r, 'geomean_speedup_solvable'], rules.loc[r, 'geomean_solvable_lo'], rules.loc[r, 'geomean_solvable_hi'])}"
                     for r in shown)
    out = [f"Selected speedup, geometric mean over the {n_solv} {unit_word} with a correct sample (no floor): "
           f"{vals}."]
    c = _primary_comparisons(comp, policy, variant)
    if not c.empty and "speedup_verdict" in c and c["speedup_verdict"].astype(str).ne("").any():
        others = c[(c["rule_a"] != "oracle") & (c["rule_b"] != "oracle")]
        wins = beats(others, "speedup_verdict", "geomean_ratio_solvable_lo", "geomean_ratio_solvable_hi",
                     "geomean_ratio_solvable")
        if wins:
            shown, rest = _headline_first(wins)
            out.append("Paired speedup ratios whose interval excludes 1: " + "; ".join(
                f"**{label(w)} over {label(lo_)}** {r:.2f}x [{a:.2f}, {b:.2f}]" for w, lo_, r, a, b in shown)
                + (f"; and {rest} more involving controls (comparisons.csv)" if rest else "")
                + ". Every other pair of non-oracle rules ties on speedup.")
        else:
            out.append("**No rule's selected speedup differs from another's**: every paired ratio interval between "
                       "non-oracle rules includes 1 (ties).")
    unsolvable = n_units - n_solv
    if unsolvable > 0 and "random" in rules.index:
        r = rules.loc["random"]
        out.append(f"Over all {n_units} {unit_word}, the {unsolvable} without a correct sample enter at the floor {GEOMEAN_EPS:g}x, "
                   f"which sets that figure (random: {times_ci(r['geomean_speedup'], r['geomean_lo'], r['geomean_hi'])}; "
                   "column geomean_speedup of selection.csv).")
    return out


def length_verdict(corr: pd.DataFrame, policy: str, variant: str) -> str:
    """Does length account for the surprisal-speedup association?  Read from the signs and intervals."""
    c = corr[(corr["policy"].astype(str) == policy) & (corr["variant"] == variant)] if not corr.empty else corr
    if c.empty:
        return "No correlation table: the length question cannot be answered."
    r = c.iloc[0]
    rho, lo, hi = r["spearman_nll_speedup"], r["spearman_nll_speedup_lo"], r["spearman_nll_speedup_hi"]
    prho, plo, phi = (r["partial_spearman_given_length"], r["partial_spearman_given_length_lo"],
                      r["partial_spearman_given_length_hi"])
    lrho, llo, lhi = r["spearman_length_speedup"], r["spearman_length_speedup_lo"], r["spearman_length_speedup_hi"]
    text = (f"Over {int(r['n_programs'])} distinct correct programs in {int(r['n_tasks'])} tasks "
            f"({int(r['n_samples'])} samples; copies count once), Spearman rho(NLL, speedup) = {rho_ci(rho, lo, hi)}, "
            f"controlling for length {rho_ci(prho, plo, phi)}, rho(length, speedup) = {rho_ci(lrho, llo, lhi)} "
            "(task-clustered 95% intervals). ")
    if not finite(rho, prho):
        return text + "Too few programs to say whether length accounts for the association."
    raw_sig, part_sig = excludes(lo, hi, 0.0), excludes(plo, phi, 0.0)
    same_sign = np.sign(rho) == np.sign(prho)
    if part_sig and not same_sign:
        text += ("**The association reverses sign once length is controlled**: the raw association is not evidence "
                 "that surprisal tracks speed beyond length." if raw_sig else
                 "Controlling for length, an association of the opposite sign to the raw one appears; the raw one is "
                 "not distinguishable from 0.")
    elif part_sig:
        text += ("**The association survives length control** (same sign, interval excludes 0)." if raw_sig else
                 "Only the length-controlled association is distinguishable from 0 (same sign as the raw one).")
    elif raw_sig:
        text += ("**Length accounts for it**: the raw interval excludes 0, the length-controlled one includes 0.")
    else:
        text += "No association is distinguishable from 0 at this number of programs, with or without length control."
    p = r.get("p_within_task_permutation", math.nan)
    if finite(p):
        text += (f" Within tasks: mean rho {rho_ci(r['mean_within_task_spearman'], r['mean_within_task_spearman_lo'], r['mean_within_task_spearman_hi'])} "
                 f"over {int(r['n_tasks_with_within_rho'])} tasks with at least 3 programs, permutation p = {p:.2g}.")
    return text


def limits_sentence(selection: pd.DataFrame, policy: str, variant: str) -> str:
    rules = _rules(selection, policy, variant)
    n = int(rules["n_tasks"].max()) if not rules.empty else 0
    items = [
        f"with {n} tasks one task moves a success rate by {100 / max(n, 1):.0f} points; the intervals are built to "
        "err wide at this size (simulated coverage: benchmarks/bench_coverage.py), so a tie means the data cannot "
        "tell the rules apart, not that they are equal",
        "every rule, random included, picks among samples already known to be correct, so it presupposes checking "
        "every sample; the oracle and top-3 rules also time several candidates (column mean_n_timed)",
        f"the four surprisal variants are four looks at the same data; the primary variant ({variant}) was fixed in "
        "the config before the run",
    ]
    return "What this data does **not** support: " + "; ".join(items) + "."


def equivalent_k_sentence(scaling_summary: pd.DataFrame, eq: pd.DataFrame, policy: str, variant: str) -> str:
    if scaling_summary.empty:
        return ""
    f1 = scaling_summary[(scaling_summary["policy"].astype(str) == policy) & (scaling_summary["metric"] == "fast_p@k")
                         & np.isclose(scaling_summary["p"].astype(float), 1.0)]
    if f1.empty:
        return ""
    r = f1.iloc[0]
    text = (f"Best-of-N fast_1@k (unbiased, over samples drawn, mean over units) rises from {pct(r['value_at_1'])} at "
            f"k = 1 to {pct(r['value_at_K'])} at K = {int(r['K'])} and is within 2 points of that at "
            f"k = {int(r['saturation_k'])}.")
    if not eq.empty and "k_matched_text" in eq:
        e = eq[(eq["policy"].astype(str) == policy) & (eq["measure"] == "task_success")
               & eq["variant"].isin([variant, "-"]) & eq["rule"].isin(HEADLINE_RULES) & (eq["rule"] != "oracle")]
        if len(e):
            text += " Oracle Best-of-N matches each rule's task success at k = " + ", ".join(
                f"{label(x['rule'])} {x['k_matched_text']}" for _, x in e.iterrows()) + "."
    return text


# ---------------------------------------------------------------- TTT


def ttt_sentences(selection: pd.DataFrame, equal: pd.DataFrame, probe: pd.DataFrame) -> list[str]:
    """Held-out Best-of-Adaptation against Best-of-N like for like, and the probe in programs."""
    out: list[str] = []
    if selection.empty:
        return out
    mean = selection[selection["ttt_seed"].astype(str) == "mean"].set_index("rule")
    eq = equal[equal["ttt_seed"].astype(str) == "mean"].set_index("rule") if not equal.empty else equal
    seeds = sorted(s for s in selection["ttt_seed"].astype(str).unique() if s != "mean")
    for rule in ("boa_in_sample", "boa_held_out"):
        if rule not in mean.index:
            continue
        r = mean.loc[rule]
        text = (f"TTT {rule} (mean over {len(seeds)} seeds, {int(r['n_tasks'])} tasks, {int(r['n_samples'])} samples "
                f"per batch): per-sample fast_1 {pct(r['fast_1_rate'])} (train batch {pct(r['fast_1_rate_train'])}, "
                f"heldout {pct(r['fast_1_rate_heldout'])}), task success {pct(r['task_success'])}.")
        if not eq.empty and rule in eq.index:
            e = eq.loc[rule]
            text += (f" Like for like: base per-sample fast_1 {pct(e['base_fast_1_rate'])}; Best-of-N task success at "
                     f"the same {int(e['budget_rollouts_per_task'])} rollouts per task {pct(e['bon_task_success_at_budget'])}; "
                     f"equivalent K (task success vs task success) {e['equivalent_k_text']}.")
        out.append(text)
    if len(seeds) < 3:
        out.append(f"{len(seeds)} TTT seed(s) give no interval: compare seeds, not the mean.")
    if not probe.empty and "subset" in probe:
        correct = probe[probe["subset"] == "correct"]
        p0 = correct[correct["step"] == 0]
        if len(p0):
            x = p0.iloc[0]

            def rho_text(r: pd.Series) -> str:
                note = str(r.get("note", "") or "")
                if note and note != "nan":
                    return note
                return rho_ci(r["rho"], r["rho_lo"], r["rho_hi"])

            last = correct.sort_values("step").groupby("ttt_seed").tail(1)
            per_seed = "; ".join(f"seed {r['ttt_seed']} step {int(r['step'])}: {rho_text(r)}" for _, r in last.iterrows()
                                 if int(r["step"]) > 0)
            out.append(f"Over-sharpening probe ({int(x['n_probe_samples'])} base samples no TTT update trained on; "
                       f"{int(x['n_programs'])} distinct correct programs in {int(x['n_tasks'])} tasks): Spearman "
                       f"rho(NLL, speedup) over correct programs at step 0 {rho_text(x)}"
                       + (f"; {per_seed}" if per_seed else "") + " (task-clustered 95% intervals; ttt_probe.csv).")
    return out
