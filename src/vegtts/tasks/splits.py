"""The paper's KernelBench task splits, by name (`tasks.ids: paper_seed42_eval`).

The study (arXiv 2602.07670, released code `scripts/make_split.py`) shuffles the sorted
problem ids 1..100 of a KernelBench level with `random.Random(seed)` and takes the last 20% as
the evaluation split, the rest as training, each sorted.  Its level-1 splits l1_seed42/43/44 use
seeds 42, 43 and 44; "Subset 1" and "Subset 2" are the first and second five evaluation ids of
seed 42 and the "extended" set the remaining ten (../shared/reference/paper.md section 1; the
exact ids are checked in tests/test_tasks.py).
"""

from __future__ import annotations

import random

PAPER_LEVEL = 1
PAPER_PROBLEMS = range(1, 101)  # the HF dataset's level_1 problem ids
EVAL_SHARE = 0.2


def seeded_split(seed: int, problems: range = PAPER_PROBLEMS) -> tuple[list[int], list[int]]:
    """(train, eval) problem numbers, each sorted, as the paper's make_split.py draws them."""
    ids = list(problems)
    random.Random(seed).shuffle(ids)
    cut = len(ids) - int(round(len(ids) * EVAL_SHARE))
    return sorted(ids[:cut]), sorted(ids[cut:])


def _paper_splits() -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for seed in (42, 43, 44):
        train, evaluation = seeded_split(seed)
        out[f"paper_seed{seed}_eval"] = evaluation
        out[f"paper_seed{seed}_train"] = train
    evaluation = out["paper_seed42_eval"]
    out["paper_subset1"] = evaluation[:5]
    out["paper_subset2"] = evaluation[5:10]
    out["paper_extended"] = evaluation[10:]
    return out


SPLITS: dict[str, list[int]] = _paper_splits()
SPLIT_NAMES: tuple[str, ...] = tuple(SPLITS)


def split_problem_numbers(name: str, level: int) -> list[int]:
    """KernelBench problem numbers of a named split; ValueError for an unknown name or level."""
    if name not in SPLITS:
        raise ValueError(f"unknown task split {name!r}; allowed: {list(SPLIT_NAMES)}")
    if level != PAPER_LEVEL:
        raise ValueError(f"task split {name!r} is a split of KernelBench level {PAPER_LEVEL} (the paper's); tasks.level is {level}")
    return list(SPLITS[name])
