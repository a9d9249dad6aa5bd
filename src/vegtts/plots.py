"""Figures from the analysis tables (never from raw samples), as PNG and PDF.

One style for every figure: Okabe-Ito colours (colour-blind safe), a fixed colour per rule,
serif-free fonts at print size.  PDF/PNG metadata carry no timestamps, so reruns are byte-stable.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from vegtts.analysis.constants import DEFAULT_VARIANT  # noqa: E402
from vegtts.analysis.rules import RULES  # noqa: E402
from vegtts.analysis.rules.base import KINDS  # noqa: E402
from vegtts.analysis.selection import NO_VARIANT, RULE_ORDER  # noqa: E402
from vegtts.analysis.tables import read_table  # noqa: E402
from vegtts.outputs import ANALYSIS_TABLES, TTT_TABLES  # noqa: E402

log = logging.getLogger(__name__)

STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.6,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF
}

RULE_STYLE: dict[str, dict[str, str]] = {r.name: {"color": r.color, "marker": r.marker, "label": r.label} for r in RULES}
CURVE_COLOR = "#4D4D4D"
OTHER_POLICY_COLORS = ("#009E73", "#CC79A7", "#56B4E9", "#E69F00")
TEASER_RULES = ("oracle", "surprisal_top3", "surprisal", "random", "most_confident", "resid_surprisal", "tail_confident")


def rule_label(rule: str) -> str:
    return RULE_STYLE.get(rule, {"label": rule})["label"]


def _percent(y: float, _pos: Any = None) -> str:
    return f"{100 * y:.0f}%"


def _primary(header: dict[str, str], table: pd.DataFrame) -> tuple[str, str]:
    variant = header.get("settings.primary_variant", DEFAULT_VARIANT)
    policies = sorted(table["policy"].astype(str).unique())
    policy = header.get("settings.primary_policy") or ("base" if "base" in policies else policies[0])
    return policy, variant


def primary_rules(selection: pd.DataFrame, policy: str, variant: str, kinds: tuple[str, ...] = ("main",)) -> pd.DataFrame:
    """One row per rule: the primary variant for NLL rules, '-' for the others, in display order."""
    pol = selection[(selection["policy"].astype(str) == policy) & selection["kind"].isin(kinds)]
    pol = pol[(pol["variant"] == variant) | (pol["variant"] == NO_VARIANT)]
    order = {r: i for i, r in enumerate(RULE_ORDER)}
    return pol.assign(_o=pol["rule"].map(order)).sort_values("_o").drop(columns="_o").reset_index(drop=True)


def _save(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    fig.savefig(png, dpi=200, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(fig)
    return [png, pdf]


def scaling_figure(scaling: pd.DataFrame, selection: pd.DataFrame, policy: str, variant: str) -> plt.Figure:
    """Best-of-N fast_1@k (task success of the oracle among k samples) with the rules at k = K."""
    s = scaling[(scaling["policy"].astype(str) == policy) & (scaling["metric"] == "fast_p@k")]
    fast1 = s[np.isclose(s["p"], 1.0)].sort_values("k")
    fast0 = s[np.isclose(s["p"], 0.0)].sort_values("k")
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.plot(fast1["k"], fast1["value"], color=CURVE_COLOR, marker=".", label="Best-of-N fast$_1$@k (oracle)")
    if fast1["ci_lo"].notna().any():
        ax.fill_between(fast1["k"], fast1["ci_lo"], fast1["ci_hi"], color=CURVE_COLOR, alpha=0.15, lw=0,
                        label="95% CI (tasks resampled)")
    ax.plot(fast0["k"], fast0["value"], color=CURVE_COLOR, ls="--", lw=1.2, label="correct@k (fast$_0$@k)")
    big_k = int(fast1["K"].max()) if len(fast1) else 1
    rules = primary_rules(selection, policy, variant)
    # Spread coincident markers sideways a little so that none hides another.
    offsets = np.linspace(-0.12, 0.12, max(len(rules), 1)) if len(rules) > 1 else [0.0]
    for off, (_, r) in zip(offsets, rules.iterrows()):
        st = RULE_STYLE.get(r["rule"], {"color": "C0", "marker": "o", "label": r["rule"]})
        x = big_k * 2 ** off
        ax.plot([x], [r["success_rate"]], ls="none", marker=st["marker"], color=st["color"], ms=8 if st["marker"] == "*" else 6,
                markeredgecolor="white", markeredgewidth=0.5, label=f"{st['label']} at k=K")
    ax.set_xscale("log", base=2)
    ks = sorted(set(fast1["k"].astype(int)))
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(-0.02, 1.04)
    ax.yaxis.set_major_formatter(FuncFormatter(_percent))
    ax.set_xlabel("samples per task k (log$_2$)")
    ax.set_ylabel("task success (mean over tasks)")
    n_tasks = int(fast1["n_tasks"].max()) if len(fast1) else 0
    ax.set_title(f"Best-of-N scaling and selection rules (policy {policy}, n = {n_tasks} tasks, K = {big_k})")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, title=f"NLL variant: {variant}")
    return fig


def selection_figure(selection: pd.DataFrame, policy: str, variant: str) -> plt.Figure:
    """Task success with bootstrap CIs, and the geometric-mean selected speedup (log axis)."""
    rules = primary_rules(selection, policy, variant, kinds=("main", "control"))
    labels = [RULE_STYLE.get(r, {"label": r})["label"] for r in rules["rule"]]
    colors = [RULE_STYLE.get(r, {"color": "C0"})["color"] for r in rules["rule"]]
    hatches = ["//" if k == "control" else "" for k in rules["kind"]]
    x = np.arange(len(rules))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.0, 3.6))
    rate = rules["success_rate"].to_numpy(dtype=float)
    lo, hi = rules["success_lo"].to_numpy(dtype=float), rules["success_hi"].to_numpy(dtype=float)
    yerr = np.vstack([np.clip(rate - lo, 0, None), np.clip(hi - rate, 0, None)]) if np.isfinite(lo).any() else None
    bars = ax1.bar(x, rate, color=colors, edgecolor="black", linewidth=0.5, hatch=None)
    for b, h in zip(bars, hatches):
        b.set_hatch(h)
    if yerr is not None:
        ax1.errorbar(x, rate, yerr=np.nan_to_num(yerr), fmt="none", ecolor="black", elinewidth=0.8, capsize=2.5)
    ax1.set_ylim(0, 1.05)
    ax1.yaxis.set_major_formatter(FuncFormatter(_percent))
    ax1.set_ylabel("task success (selected sample fast$_1$)")
    ax1.set_title("Task success (95% CI, tasks resampled)")
    geo = rules["geomean_speedup_solvable"].to_numpy(dtype=float)
    bars2 = ax2.bar(x, np.where(np.isfinite(geo), geo, np.nan), color=colors, edgecolor="black", linewidth=0.5)
    for b, h in zip(bars2, hatches):
        b.set_hatch(h)
    ax2.set_yscale("log")
    ax2.axhline(1.0, color="black", lw=0.8, ls="--")
    finite = geo[np.isfinite(geo) & (geo > 0)]
    if finite.size:
        lo_y, hi_y = min(finite.min(), 1.0), max(finite.max(), 1.0)
        ax2.set_ylim(lo_y / 1.5, hi_y * 1.5)
    ax2.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax2.yaxis.set_major_formatter(FuncFormatter(lambda y, _p: f"{y:g}×"))
    ax2.yaxis.set_minor_formatter(NullFormatter())
    n_solv = int(rules["n_units_solvable"].max()) if len(rules) else 0
    ax2.set_ylabel(f"selected speedup (geo. mean over the\n{n_solv} units with a correct sample)")
    ax2.set_title("Geometric-mean selected speedup")
    for ax in (ax1, ax2):
        ax.set_xticks(x, labels, rotation=35, ha="right")
        ax.grid(axis="x", visible=False)
    n_tasks = int(rules["n_tasks"].max()) if len(rules) else 0
    fig.suptitle(f"Selection among correct samples (policy {policy}, NLL variant {variant}, n = {n_tasks} tasks; "
                 "hatched = control)", fontsize=9.5)
    fig.tight_layout(w_pad=2.5)
    return fig


def placeholder_figure(title: str, reason: str) -> plt.Figure:
    """A figure that says why there is nothing to draw, so every declared figure exists."""
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, f"Nothing to draw: {reason}.", ha="center", va="center", wrap=True)
    return fig


def _optional_table(tables_dir: Path, name: str) -> pd.DataFrame | None:
    path = tables_dir / ANALYSIS_TABLES[name]
    if not path.exists():
        log.warning("figures: table %s is missing; its figure is skipped", path.name)
        return None
    df, _ = read_table(path)
    return df


def _band(ax: plt.Axes, d: pd.DataFrame, color: str) -> None:
    if d["ci_lo"].notna().any():
        ax.fill_between(d["k"], d["ci_lo"], d["ci_hi"], color=color, alpha=0.15, lw=0)


def _log2_k_axis(ax: plt.Axes, ks: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _rules_at_k(ax: plt.Axes, rules: pd.DataFrame, big_k: int, value: str, lo: str, hi: str) -> None:
    offsets = np.linspace(-0.18, 0.18, len(rules)) if len(rules) > 1 else [0.0]
    for off, (_, r) in zip(offsets, rules.iterrows()):
        st = RULE_STYLE.get(r["rule"], {"color": "C0", "marker": "o", "label": r["rule"]})
        x = big_k * 2 ** off
        y = float(r[value])
        if lo in r and np.isfinite(r[lo]):
            ax.errorbar([x], [y], yerr=[[max(y - r[lo], 0)], [max(r[hi] - y, 0)]], fmt="none", ecolor=st["color"],
                        elinewidth=0.9, capsize=2)
        ax.plot([x], [y], ls="none", marker=st["marker"], color=st["color"], ms=8 if st["marker"] == "*" else 6,
                markeredgecolor="black", markeredgewidth=0.4, label=st["label"])


def teaser_figure(scaling: pd.DataFrame, selection: pd.DataFrame, policy: str, variant: str) -> plt.Figure:
    """Best-of-N fast_1@k and expected best speedup@k (with bands), rules at K with their CIs; other
    policies (e.g. TTT checkpoints) as dotted curves."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.6))
    s = scaling[scaling["policy"].astype(str) == policy]
    fast1 = s[(s["metric"] == "fast_p@k") & np.isclose(s["p"].astype(float), 1.0)].sort_values("k")
    best = s[s["metric"] == "expected_best_speedup@k"].sort_values("k")
    ax1.plot(fast1["k"], fast1["value"], color=CURVE_COLOR, marker=".", label="Best-of-N (oracle) fast$_1$@k")
    _band(ax1, fast1, CURVE_COLOR)
    ax2.plot(best["k"], best["value"], color=CURVE_COLOR, marker=".", label="Best-of-N E[best speedup]@k")
    _band(ax2, best, CURVE_COLOR)
    others = sorted(set(scaling["policy"].astype(str)) - {policy})
    for color, other in zip(OTHER_POLICY_COLORS, others):
        o = scaling[scaling["policy"].astype(str) == other]
        of1 = o[(o["metric"] == "fast_p@k") & np.isclose(o["p"].astype(float), 1.0)].sort_values("k")
        ob = o[o["metric"] == "expected_best_speedup@k"].sort_values("k")
        ax1.plot(of1["k"], of1["value"], color=color, ls=":", marker=".", label=f"policy {other}")
        ax2.plot(ob["k"], ob["value"], color=color, ls=":", marker=".", label=f"policy {other}")
    big_k = int(fast1["K"].max()) if len(fast1) else 1
    rules = primary_rules(selection, policy, variant, kinds=KINDS)
    rules = rules[rules["rule"].isin(TEASER_RULES)]
    _rules_at_k(ax1, rules, big_k, "success_rate", "success_lo", "success_hi")
    _rules_at_k(ax2, rules, big_k, "mean_speedup", "", "")
    ks = sorted(set(fast1["k"].astype(int)) | set(scaling["k"].astype(int)))
    for ax in (ax1, ax2):
        _log2_k_axis(ax, ks)
        ax.set_xlabel("samples per task k (log$_2$)")
    ax1.set_ylim(-0.02, 1.04)
    ax1.yaxis.set_major_formatter(FuncFormatter(_percent))
    ax1.set_ylabel("task success")
    ax1.set_title("Task success: Best-of-N vs rules at k = K")
    ax2.axhline(1.0, color="black", lw=0.7, ls="--")
    ax2.set_ylabel("mean selected speedup (failures = 0)")
    ax2.set_title("Speedup: expected best of k vs rules at K")
    handles, labels = ax1.get_legend_handles_labels()
    n_tasks = int(fast1["n_tasks"].max()) if len(fast1) else 0
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               title=f"NLL variant {variant}")
    fig.suptitle(f"Policy {policy}: n = {n_tasks} tasks, K = {big_k}; bands and bars: 95% CI, tasks resampled",
                 fontsize=9.5)
    fig.tight_layout(w_pad=2.0)
    return fig


def quartiles_figure(quartiles: pd.DataFrame, policy: str, variant: str) -> plt.Figure:
    """Share fast_1 and geometric-mean speedup of correct samples per NLL quartile, both schemes."""
    q = quartiles[(quartiles["policy"].astype(str) == policy) & (quartiles["variant"] == variant)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.0, 3.2))
    width = 0.38
    for i, (scheme, color, hatch) in enumerate((("per_task", "#E69F00", ""), ("global", "#0072B2", "//"))):
        d = q[q["scheme"] == scheme].sort_values("quartile")
        if d.empty:
            continue
        x = d["quartile"].to_numpy(int) + (i - 0.5) * width
        label = "quartiles within each task" if scheme == "per_task" else "global quartiles"
        ax1.bar(x, d["share_fast_1"], width, color=color, hatch=hatch, edgecolor="black", lw=0.5, label=label)
        ax2.bar(x, d["geomean_speedup"], width, color=color, hatch=hatch, edgecolor="black", lw=0.5, label=label)
        for xi, n in zip(x, d["n_samples"]):
            ax1.text(xi, 0.01, f"n={int(n)}", ha="center", va="bottom", fontsize=6.5, rotation=90)
    labels = ["Q1\nmost\nconfident", "Q2", "Q3", "Q4\nmost\nsurprising"]
    for ax in (ax1, ax2):
        ax.set_xticks([1, 2, 3, 4], labels)
        ax.grid(axis="x", visible=False)
        ax.set_xlabel(f"NLL quartile ({variant}) among correct samples")
    ax1.set_ylim(0, 1.05)
    ax1.yaxis.set_major_formatter(FuncFormatter(_percent))
    ax1.set_ylabel("share fast$_1$")
    ax1.legend(frameon=False, loc="upper left")
    ax2.set_yscale("log")
    ax2.axhline(1.0, color="black", lw=0.8, ls="--")
    ax2.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax2.yaxis.set_major_formatter(FuncFormatter(lambda y, _p: f"{y:g}×"))
    ax2.yaxis.set_minor_formatter(NullFormatter())
    ax2.set_ylabel("geometric-mean speedup")
    fig.suptitle(f"Does surprisal predict speed? Correct samples by NLL quartile (policy {policy})", fontsize=9.5)
    fig.tight_layout(w_pad=2.0)
    return fig


def length_speedup_figure(correct: pd.DataFrame, corr: pd.DataFrame, policy: str, variant: str) -> plt.Figure:
    """Speedup of distinct correct programs against length and against NLL (marker area ~ copies),
    with raw and partial Spearman rho and their task-clustered intervals (no p assuming independence)."""
    d = correct[correct["policy"].astype(str) == policy]
    length_col = "n_code_tokens" if variant.endswith("code") else "n_tokens"
    nll = d[f"nll_{variant}"].to_numpy(float)
    sp = np.maximum(d["speedup"].to_numpy(float), 1e-3)
    length = d[length_col].to_numpy(float)
    copies = d["n_copies"].to_numpy(float) if "n_copies" in d else np.ones(len(d))
    size = 10 + 6 * copies
    c = corr[(corr["policy"].astype(str) == policy) & (corr["variant"] == variant)]
    r = c.iloc[0] if len(c) else None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.0, 3.4), sharey=True)
    fast = d["fast_1"].astype(str).str.lower().eq("true").to_numpy()
    for ax, x in ((ax1, length), (ax2, nll)):
        ax.scatter(x[~fast], sp[~fast], s=size[~fast], color="#999999", alpha=0.6, lw=0, label="correct, not fast$_1$")
        ax.scatter(x[fast], sp[fast], s=size[fast], color="#D55E00", alpha=0.7, lw=0, label="fast$_1$")
        ax.axhline(1.0, color="black", lw=0.7, ls="--")
    ax1.set_yscale("log")
    ax1.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax1.yaxis.set_major_formatter(FuncFormatter(lambda y, _p: f"{y:g}×"))
    ax1.yaxis.set_minor_formatter(NullFormatter())
    ax1.set_ylabel("speedup (log)")
    ax1.set_xlabel(f"length ({'code tokens' if length_col == 'n_code_tokens' else 'completion tokens'})")
    ax2.set_xlabel(f"NLL ({variant})")

    def fmt(name: str) -> str:
        rho, lo, hi = (r.get(name, math.nan), r.get(f"{name}_lo", math.nan), r.get(f"{name}_hi", math.nan))
        if not np.isfinite(rho):
            return "undefined"
        return f"{rho:+.2f} [{lo:+.2f}, {hi:+.2f}]" if np.isfinite(lo) and np.isfinite(hi) else f"{rho:+.2f}"

    if r is not None:
        ax1.set_title(f"Spearman ρ(length, speedup) = {fmt('spearman_length_speedup')}", fontsize=8.5)
        ax2.set_title(f"ρ(NLL, speedup) = {fmt('spearman_nll_speedup')}\n"
                      f"partial ρ given length = {fmt('partial_spearman_given_length')}", fontsize=8.5)
    ax1.legend(frameon=False, loc="lower right")
    n_tasks = d["task_id"].nunique()
    fig.suptitle(f"{len(d)} distinct correct programs ({int(copies.sum())} samples; marker area ~ copies) in {n_tasks} "
                 f"tasks, policy {policy}; [95% intervals resample tasks]", fontsize=9)
    fig.tight_layout(w_pad=1.5)
    return fig


def rule_wins_figure(per_unit: pd.DataFrame, policy: str, variant: str) -> plt.Figure:
    """Per task: each rule's selected speedup relative to the oracle's (mean over seeds); the best
    non-oracle rule(s) of a task are marked; grey rows are tasks without a correct sample."""
    d = per_unit[(per_unit["policy"].astype(str) == policy) &
                 ((per_unit["variant"] == variant) | (per_unit["variant"] == NO_VARIANT))]
    oracle = d[d["rule"] == "oracle"].set_index(["task_id", "seed"])["selected_speedup"]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = d.assign(rel=d["selected_speedup"].to_numpy(float) /
                     oracle.reindex(pd.MultiIndex.from_frame(d[["task_id", "seed"]])).to_numpy(float))
    rules = [r for r in RULE_ORDER if r in set(d["rule"]) and r != "oracle"]
    d = d.assign(task_id=d["task_id"].astype(str))
    grid = d.pivot_table(index="task_id", columns="rule", values="rel", aggfunc="mean").reindex(columns=rules)
    grid = grid.reindex(sorted(d["task_id"].astype(str).unique()))
    values = grid.to_numpy(float)
    fig_h = max(2.4, 0.22 * len(grid) + 1.6)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.45 * len(rules) + 2.5), fig_h))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    for i in range(values.shape[0]):
        row = values[i]
        if np.isfinite(row).any():
            for j in np.flatnonzero(np.isclose(row, np.nanmax(row))):
                ax.plot(j, i, marker="o", ms=3.5, color="white", markeredgecolor="black", markeredgewidth=0.4)
    ax.set_xticks(range(len(rules)), [rule_label(r) for r in rules], rotation=40, ha="right")
    ax.set_yticks(range(len(grid)), [str(t) for t in grid.index])
    ax.grid(False)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("selected speedup / oracle speedup")
    ax.set_title(f"Which rule wins per task (policy {policy}, NLL variant {variant}; dot = best non-oracle rule)",
                 fontsize=9)
    return fig


def make_figures(tables_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write every figure in FIGURES as .png and .pdf from the CSV tables; return their paths.

    scaling and selection need only selection.csv and scaling.csv; when another figure's table is
    missing or empty (e.g. no correct samples), a placeholder saying so is written in its place, so
    every declared figure exists.
    """
    tables_dir, out_dir = Path(tables_dir), Path(out_dir)
    selection, header = read_table(tables_dir / ANALYSIS_TABLES["selection"])
    scaling, _ = read_table(tables_dir / ANALYSIS_TABLES["scaling"])
    policy, variant = _primary(header, selection)
    written: list[Path] = []
    with plt.rc_context(STYLE):
        written += _save(scaling_figure(scaling, selection, policy, variant), out_dir, "scaling")
        written += _save(selection_figure(selection, policy, variant), out_dir, "selection")
        written += _save(teaser_figure(scaling, selection, policy, variant), out_dir, "teaser")
        quartiles = _optional_table(tables_dir, "surprisal_quartiles")
        correct = _optional_table(tables_dir, "correct_programs")
        corr = _optional_table(tables_dir, "correlations")
        per_unit = _optional_table(tables_dir, "selection_per_task")
        optional = [
            ("surprisal_quartiles", "Surprisal quartiles", "no correct samples with log-probs to split into quartiles",
             quartiles is not None and not quartiles.empty, lambda: quartiles_figure(quartiles, policy, variant)),
            ("length_speedup", "Length vs speedup", "no correct samples",
             correct is not None and corr is not None and not correct.empty,
             lambda: length_speedup_figure(correct, corr, policy, variant)),
            ("rule_wins", "Rule wins per task", "no per-task selection results",
             per_unit is not None and not per_unit.empty, lambda: rule_wins_figure(per_unit, policy, variant)),
        ]
        for name, title, reason, drawable, draw in optional:
            written += _save(draw() if drawable else placeholder_figure(title, reason), out_dir, name)
    log.info("figures: %s", ", ".join(p.name for p in written))
    return written


# ---------------------------------------------------------------- test-time training

SEED_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")


def ttt_trajectory_figure(traj: pd.DataFrame, selection: pd.DataFrame, curve: pd.DataFrame, k: int) -> plt.Figure:
    """Left: per-sample fast_1 rate per step (train batch solid, heldout dashed), one colour per
    seed, the in-sample Best-of-Adaptation step starred, the base per-sample rate as reference.
    Right: task success (Best-of-K from the step's checkpoint) with Best-of-N at equal budget."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    bon = dict(zip(curve["k"].astype(int), curve["fast_1_at_k"]))
    base_rate = traj[(traj["step"] == 0)]["fast_1_rate"].mean()
    for i, (seed, d) in enumerate(traj.groupby("ttt_seed", sort=True)):
        color = SEED_COLORS[i % len(SEED_COLORS)]
        for batch, ls in (("train", "-"), ("heldout", "--")):
            b = d[d["batch"] == batch].sort_values("step")
            ax1.plot(b["step"], b["fast_1_rate"], ls, color=color, marker="o", ms=3,
                     label=f"seed {seed} ({batch})")
            ax2.plot(b["step"], b["task_success"], ls, color=color, marker="o", ms=3)
        chosen = selection[(selection["ttt_seed"].astype(str) == str(seed)) & (selection["rule"] == "boa_in_sample")]
        if len(chosen):
            s = int(chosen["chosen_step"].iloc[0])
            row = d[(d["batch"] == "train") & (d["step"] == s)]
            ax1.plot([s], row["fast_1_rate"], "*", color=color, ms=13, mec="black", mew=0.6)
    ax1.axhline(base_rate, color=CURVE_COLOR, lw=1, ls=":", label="base per-sample rate (step 0)")
    steps = sorted(traj["step"].unique())
    ref = [(s, bon.get((int(s) + 1) * k)) for s in steps]
    ref = [(s, v) for s, v in ref if v is not None and not pd.isna(v)]
    if ref:
        ax2.plot([s for s, _ in ref], [v for _, v in ref], color=CURVE_COLOR, marker="s", ms=4,
                 label="Best-of-N, N = (s+1)K (equal rollouts)")
    if k in bon:
        ax2.axhline(bon[k], color=CURVE_COLOR, lw=1, ls=":", label=f"Best-of-N, N = K = {k}")
    ax1.set(xlabel="TTT step (0 = base)", ylabel="fast_1 rate (per sample)", title="Per-sample fast_1 (star: BoA in-sample)")
    ax2.set(xlabel="TTT step (0 = base)", ylabel="task success", title="Task success (Best-of-K per step)")
    for ax in (ax1, ax2):
        ax.set_xticks(steps)
        ax.yaxis.set_major_formatter(FuncFormatter(_percent))
        ax.set_ylim(-0.02, 1.02)
    ax1.legend(loc="best", fontsize=7)
    ax2.legend(loc="best", fontsize=7)
    fig.tight_layout()
    return fig


def ttt_rho_figure(probe: pd.DataFrame) -> plt.Figure:
    """rho(NLL, speedup) over distinct probe programs per step and subset, with task-clustered
    intervals, one colour per seed; mean NLL on the right."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    styles = {"all": ("-", "o"), "correct": ("--", "s"), "slowest_quartile_of_correct": (":", "^")}
    for i, (seed, d) in enumerate(probe.groupby("ttt_seed", sort=True)):
        color = SEED_COLORS[i % len(SEED_COLORS)]
        for subset, (ls, marker) in styles.items():
            b = d[d["subset"] == subset].sort_values("step")
            if b.empty:
                continue
            n = int(b["n_programs"].max())
            rho = b["rho"].to_numpy(float)
            ax1.plot(b["step"], rho, ls, color=color, marker=marker, ms=3,
                     label=f"seed {seed}: {subset.replace('_', ' ')} ({n} programs)")
            lo, hi = b["rho_lo"].to_numpy(float), b["rho_hi"].to_numpy(float)
            ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(rho)
            if ok.any():
                ax1.vlines(b["step"].to_numpy(float)[ok] + 0.04 * i, lo[ok], hi[ok], color=color, lw=0.8, alpha=0.6)
        a = d[d["subset"] == "all"].sort_values("step")
        ax2.plot(a["step"], a["mean_nll"], color=color, marker="o", ms=3, label=f"seed {seed}")
    ax1.axhline(0, color=CURVE_COLOR, lw=0.8)
    ax1.set(xlabel="TTT step (0 = base)", ylabel="Spearman rho(NLL, speedup)",
            title="Over-sharpening probe (programs; bars: 95%, tasks resampled)", ylim=(-1.05, 1.05))
    ax2.set(xlabel="TTT step (0 = base)", ylabel="mean NLL per code token", title="Mean NLL of the probe programs")
    steps = sorted(probe["step"].unique()) if len(probe) else [0]
    for ax in (ax1, ax2):
        ax.set_xticks(steps)
    ax1.legend(loc="best", fontsize=6)
    ax2.legend(loc="best", fontsize=7)
    fig.tight_layout()
    return fig


def make_ttt_figures(tables_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """ttt_trajectory and ttt_rho (PNG + PDF) from the ttt_*.csv tables."""
    tables_dir, out_dir = Path(tables_dir), Path(out_dir)
    traj, header = read_table(tables_dir / TTT_TABLES["trajectory"])
    selection, _ = read_table(tables_dir / TTT_TABLES["selection"])
    curve, _ = read_table(tables_dir / TTT_TABLES["bon_curve"])
    probe, _ = read_table(tables_dir / TTT_TABLES["probe"])
    k = int(header.get("ttt_k", 0))
    written: list[Path] = []
    with plt.rc_context(STYLE):
        written += _save(ttt_trajectory_figure(traj, selection, curve, k), out_dir, "ttt_trajectory")
        rho = ttt_rho_figure(probe) if not probe.empty else placeholder_figure("Over-sharpening probe", "probe disabled (ttt.probe: false)")
        written += _save(rho, out_dir, "ttt_rho")
    log.info("ttt figures: %s", ", ".join(p.name for p in written))
    return written
