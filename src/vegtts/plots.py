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

from vegtts.analysis.definitions import DEFAULT_VARIANT  # noqa: E402
from vegtts.analysis.run import TABLE_FILES  # noqa: E402
from vegtts.analysis.selection import NO_VARIANT, RULE_ORDER  # noqa: E402
from vegtts.analysis.tables import read_table  # noqa: E402

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

RULE_STYLE: dict[str, dict[str, str]] = {
    "oracle": {"color": "#000000", "marker": "*", "label": "oracle"},
    "surprisal_top3": {"color": "#D55E00", "marker": "D", "label": "surprisal top-3"},
    "surprisal": {"color": "#E69F00", "marker": "o", "label": "surprisal"},
    "random": {"color": "#999999", "marker": "s", "label": "random (exact)"},
    "most_confident": {"color": "#0072B2", "marker": "v", "label": "most confident"},
    "random_top3": {"color": "#56B4E9", "marker": "P", "label": "random top-3"},
    "shortest": {"color": "#009E73", "marker": "<", "label": "shortest"},
    "longest": {"color": "#CC79A7", "marker": ">", "label": "longest"},
}
CURVE_COLOR = "#4D4D4D"
FIGURE_NAMES = ("scaling", "selection")


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


def make_figures(tables_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write scaling.{png,pdf} and selection.{png,pdf} from the CSV tables; return their paths."""
    tables_dir, out_dir = Path(tables_dir), Path(out_dir)
    selection, header = read_table(tables_dir / TABLE_FILES["selection"])
    scaling, _ = read_table(tables_dir / TABLE_FILES["scaling"])
    policy, variant = _primary(header, selection)
    written: list[Path] = []
    with plt.rc_context(STYLE):
        written += _save(scaling_figure(scaling, selection, policy, variant), out_dir, "scaling")
        written += _save(selection_figure(selection, policy, variant), out_dir, "selection")
    log.info("figures: %s", ", ".join(p.name for p in written))
    return written
