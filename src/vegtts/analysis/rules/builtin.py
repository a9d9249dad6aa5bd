"""The selection rules of the paper and their controls, registered in display order."""

from __future__ import annotations

import numpy as np

from vegtts.analysis.estimators import expected_max_at_k, fast_p_at_k
from vegtts.analysis.rules.base import (
    RULES,
    TOP_N,
    Pick,
    RankBy,
    SelectionRule,
    UnitSamples,
    expected_position_of_jth_success,
    log_floor,
    no_pick,
    rank,
)


def oracle(unit: UnitSamples, variant: str) -> Pick:
    n, nc = unit.n, unit.n_correct
    if nc == 0:
        return no_pick(n)
    ci = np.flatnonzero(unit.correct)
    best = ci[rank(unit.speedup[ci], unit.sample_idx[ci], descending=True)[0]]
    s = float(unit.speedup[best])
    return Pick(int(unit.sample_idx[best]), float(bool(unit.fast_1[best])), s, float(log_floor(s)), nc, n)


def random_correct(unit: UnitSamples, variant: str) -> Pick:
    n, nc = unit.n, unit.n_correct
    if nc == 0:
        return no_pick(n, expected=True)
    sp, fast = unit.speedup[unit.correct], unit.fast_1[unit.correct]
    return Pick(-1, float(fast.mean()), float(sp.mean()), float(np.mean(log_floor(sp))), 1,
                expected_position_of_jth_success(n, nc, 1), True)


def random_top3(unit: UnitSamples, variant: str) -> Pick:
    n, nc = unit.n, unit.n_correct
    if nc == 0:
        return no_pick(n, expected=True)
    sp, fast = unit.speedup[unit.correct], unit.fast_1[unit.correct]
    m = min(TOP_N, nc)
    return Pick(-1, fast_p_at_k(nc, int(fast.sum()), m), expected_max_at_k(sp, m), expected_max_at_k(log_floor(sp), m), m,
                expected_position_of_jth_success(n, nc, m) if nc >= TOP_N else n, True)


for rule in (
    SelectionRule("oracle", "main", "among correct samples, the fastest (post hoc upper bound; times every correct sample)",
                  "oracle", "#000000", "*", oracle),
    SelectionRule("surprisal_top3", "main",
                  "among correct samples, time the 3 highest-NLL ones and take the fastest (all of them if fewer than 3)",
                  "surprisal top-3", "#D55E00", "D", RankBy("nll", True, TOP_N), per_variant=True),
    SelectionRule("surprisal", "main",
                  "among correct samples, the highest NLL (the paper's surprisal-guided rule under variant mean_code)",
                  "surprisal", "#E69F00", "o", RankBy("nll", True), per_variant=True),
    SelectionRule("random", "main",
                  "a uniformly random correct sample, as an exact expectation (success = share of correct samples that "
                  "are fast_1, speedup = mean over correct samples, log-speedup = mean of logs), not a draw",
                  "random (exact)", "#999999", "s", random_correct),
    SelectionRule("most_confident", "main", "among correct samples, the lowest NLL (surprisal variant given in column variant)",
                  "most confident", "#0072B2", "v", RankBy("nll", False), per_variant=True),
    SelectionRule("resid_surprisal", "length_controlled",
                  "length control: among correct samples, the highest length-residualised NLL = NLL minus its "
                  "least-squares fit a + b * length over all samples with code of the unit (length: code tokens for "
                  "*_code variants, all tokens for *_all)",
                  "length-resid. surprisal", "#F0E442", "h", RankBy("resid", True), per_variant=True),
    SelectionRule("resid_confident", "length_controlled",
                  "length control: among correct samples, the lowest length-residualised NLL (see rule.resid_surprisal)",
                  "length-resid. confident", "#8C6D1F", "H", RankBy("resid", False), per_variant=True),
    SelectionRule("tail_confident", "tail",
                  "DeepConf-style: among correct samples, the highest tail confidence = lowest tail NLL, the NLL of the "
                  "lowest 10% of token log-probs (at least 1 token; mean or sum by variant, over code or all tokens)",
                  "tail confident (DeepConf)", "#332288", "^", RankBy("tail", False), per_variant=True),
    SelectionRule("tail_surprisal", "tail",
                  "among correct samples, the lowest tail confidence (highest tail NLL, see rule.tail_confident)",
                  "tail surprisal", "#AA4499", "X", RankBy("tail", True), per_variant=True),
    SelectionRule("random_top3", "control",
                  "control: time 3 uniformly random correct samples and take the fastest, as an exact expectation",
                  "random top-3", "#56B4E9", "P", random_top3),
    SelectionRule("shortest", "control", "control: among correct samples, the fewest code tokens",
                  "shortest", "#009E73", "<", RankBy("length", False)),
    SelectionRule("shortest_top3", "control", "control: time the 3 correct samples with the fewest code tokens, take the fastest",
                  "shortest top-3", "#117733", "<", RankBy("length", False, TOP_N)),
    SelectionRule("longest", "control", "control: among correct samples, the most code tokens",
                  "longest", "#CC79A7", ">", RankBy("length", True)),
    SelectionRule("longest_top3", "control", "control: time the 3 correct samples with the most code tokens, take the fastest",
                  "longest top-3", "#882255", ">", RankBy("length", True, TOP_N)),
):
    RULES.register(rule)
