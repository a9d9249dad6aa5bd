"""One self-contained HTML report per experiment, built from the analysis tables and figures.

Figures are embedded as base64 PNG, the CSS is inline, nothing is fetched.  Every string that
comes from data, config or provenance goes through html.escape (completions may contain HTML).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from vegtts.analysis.definitions import DEFINITIONS
from vegtts.analysis.run import TABLE_FILES
from vegtts.analysis.tables import flatten, read_table
from vegtts.io import write_text
from vegtts.plots import RULE_STYLE, _primary, primary_rules

log = logging.getLogger(__name__)

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0}th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr:nth-child(even) td{background:#fafafa}
.pass{color:#1a7f37;font-weight:bold}.fail{color:#b42318;font-weight:bold}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.8em}dt{font-weight:bold;margin-top:.4em}dd{margin-left:1.5em}
.scroll{overflow-x:auto}.note{color:#555;font-size:.9em}
"""

FIGURE_CAPTIONS = {
    "scaling": "Best-of-N: task success of the best of k samples (fast_1@k, unbiased estimator, mean over tasks; "
               "band: 95% CI resampling tasks), correct@k dashed, and the selection rules' task success at k = K.",
    "selection": "Selection rules among correct samples: task success with task-clustered bootstrap 95% CIs (left) and "
                 "geometric-mean selected speedup over units with a correct sample (right, log axis). "
                 "Hatched bars are controls.",
    "teaser": "Best-of-N fast_1@k and expected best speedup@k of the oracle among k samples (bands: 95% CI, tasks "
              "resampled) against each selection rule at k = K (bars: 95% CI); other policies dotted.",
    "surprisal_quartiles": "Correct samples by NLL quartile (Q1 most confident .. Q4 most surprising), quartiles cut "
                           "within each task and globally: share fast_1 and geometric-mean speedup.",
    "length_speedup": "Speedup of correct samples against length and NLL, with Spearman rho and the partial rho of NLL "
                      "and speedup given length.",
    "rule_wins": "Per task: each rule's selected speedup relative to the oracle (grey: no correct sample); dots mark "
                 "the best non-oracle rule(s) of the task.",
}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.0f}%"


def _fmt_cell(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "" if np.isnan(v) else str(v)
        return f"{v:.4g}"
    return v


def html_table(df: pd.DataFrame, max_rows: int = 500) -> str:
    """An escaped HTML table (floats at 4 significant digits)."""
    shown = df.head(max_rows).map(_fmt_cell) if len(df) else df
    out = shown.to_html(index=False, escape=True, border=0, na_rep="")
    if len(df) > max_rows:
        out += f'<p class="note">{len(df) - max_rows} more rows in the CSV.</p>'
    return f'<div class="scroll">{out}</div>'


def _embed_png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{esc(path.stem)}" src="data:image/png;base64,{data}">'


def _read(tables_dir: Path, name: str) -> tuple[pd.DataFrame, dict[str, str]]:
    path = tables_dir / TABLE_FILES[name]
    if not path.exists():
        log.warning("report: table %s is missing", path)
        return pd.DataFrame(), {}
    return read_table(path)


def summary_paragraphs(tables: Mapping[str, pd.DataFrame], header: Mapping[str, str]) -> list[str]:
    """Plain-language findings computed from the tables (returned as escaped HTML paragraphs)."""
    sel, stats, signal = tables["selection"], tables["sample_stats"], tables["signal"]
    paras: list[str] = []
    if sel.empty:
        return ["<p>No selection table was produced.</p>"]
    policy, variant = _primary(dict(header), sel)
    pstats = stats[stats["policy"].astype(str) == policy] if not stats.empty else stats
    if not pstats.empty:
        n = pstats["n_samples"].sum()
        w = pstats["n_samples"] / n
        paras.append(
            f"<p>Policy <b>{esc(policy)}</b>: {int(n)} samples over {len(pstats)} tasks; "
            f"{_pct(float((w * pstats['share_correct']).sum()))} correct, "
            f"{_pct(float((w * pstats['share_fast_1']).sum()))} fast_1 (correct and faster than the reference), "
            f"{_pct(float((w * pstats['share_fast_1_sig']).sum()))} fast_1_sig (faster beyond timing noise).</p>")

    rules = primary_rules(sel, policy, variant)
    rate = dict(zip(rules["rule"], rules["success_rate"]))
    n_tasks = int(rules["n_tasks"].max())
    contenders = rules[rules["rule"] != "oracle"].sort_values("success_rate", ascending=False, kind="mergesort")
    if not contenders.empty:
        best = contenders.iloc[0]
        ties = contenders[np.isclose(contenders["success_rate"], best["success_rate"])]["rule"].tolist()
        names = " and ".join(RULE_STYLE.get(r, {"label": r})["label"] for r in ties)
        ci = (f" (95% CI {_pct(best['success_lo'])} to {_pct(best['success_hi'])})"
              if np.isfinite(best["success_lo"]) else "")
        text = (f"On task success (surprisal variant {esc(variant)}), the best non-oracle rule is <b>{esc(names)}</b> "
                f"with {_pct(best['success_rate'])}{esc(ci)}; the oracle reaches {_pct(rate.get('oracle', math.nan))}, "
                f"the exact random-correct expectation {_pct(rate.get('random', math.nan))}, "
                f"most-confident {_pct(rate.get('most_confident', math.nan))} and surprisal "
                f"{_pct(rate.get('surprisal', math.nan))}.")
        sig = contenders[np.isfinite(contenders["diff_lo"]) & ((contenders["diff_lo"] > 0) | (contenders["diff_hi"] < 0))]
        sig = sig[sig["rule"] != "random"]
        if len(sig):
            text += " Differences to random whose paired 95% CI excludes 0: " + ", ".join(
                f"{esc(RULE_STYLE.get(r['rule'], {'label': r['rule']})['label'])} "
                f"({100 * r['diff_vs_random']:+.0f} points)" for _, r in sig.iterrows()) + "."
        elif contenders["diff_lo"].notna().any():
            text += " No rule's paired 95% CI of the difference to random excludes 0."
        paras.append(f"<p>{text}</p>")

    if not signal.empty:
        items = []
        for _, r in signal.iterrows():
            ok = str(r["pass"]).lower() == "true"
            value = f"{100 * r['value']:.0f}%" if r["check"] == "share_correct" else f"{int(r['value'])}"
            target = f"{100 * r['target']:.0f}%" if r["check"] == "share_correct" else f"{int(r['target'])}"
            items.append(f"{esc(r['description'])}: {value} (target &ge; {target}) "
                         f"<span class=\"{'pass' if ok else 'fail'}\">{'PASS' if ok else 'FAIL'}</span>")
        all_ok = signal["pass"].astype(str).str.lower().eq("true").all()
        verdict = ("The experiment has enough signal for selection to matter." if all_ok else
                   "The signal check fails: selection results from this run carry little information.")
        paras.append("<p>Signal check: " + "; ".join(items) + f". {verdict}</p>")

    half = rules["diff_hi"] - rules["diff_lo"]
    half = half[(rules["rule"] != "random") & np.isfinite(half)] / 2
    if len(half):
        resolution = float(np.median(half))
        how = (f"the paired bootstrap CIs of rule-vs-random differences have a median half-width of about "
               f"{100 * resolution:.0f} points")
    else:  # no bootstrap: 1.96 * sqrt(2 * 0.25 / n), the half-width for two independent rates near 50%
        resolution = 1.39 / math.sqrt(max(n_tasks, 1))
        how = f"a normal approximation puts the 95% half-width of a difference at about {100 * resolution:.0f} points"
    limits = [
        f"with n = {n_tasks} tasks, one task moves a success rate by {100 / max(n_tasks, 1):.0f} points, and {how}, "
        f"so differences under ~{100 * resolution:.0f} points are not distinguishable (percentile bootstrap "
        "intervals are optimistic at small n)",
        "every rule, random included, picks among samples already known to be correct, so it presupposes checking every "
        "sample; the oracle and top-3 rules also time several candidates (column mean_n_timed)",
        "the four surprisal variants are four looks at the same data: a single variant that beats random is weak "
        "evidence unless the primary variant was fixed in advance (it is: " + esc(variant) + ")",
    ]
    if not pstats.empty:
        f1 = float((pstats["share_fast_1"] * pstats["n_samples"]).sum())
        f1s = float((pstats["share_fast_1_sig"] * pstats["n_samples"]).sum())
        if f1 > 0:
            limits.append(f"{_pct(1 - f1s / f1)} of the fast_1 samples are not faster beyond timing noise "
                          "(fast_1 but not fast_1_sig), so part of any fast_1 rate is noise")
    paras += findings_paragraphs(tables, policy, variant, n_tasks)
    paras.append("<p>What this data does <b>not</b> support: " + "; ".join(limits) + ".</p>")
    return paras


def _label(rule: str) -> str:
    return RULE_STYLE.get(rule, {"label": rule})["label"]


def _p(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2g}"


def _is_true(v: Any) -> bool:
    return str(v).lower() == "true"


def comparison_sentences(comp: pd.DataFrame, policy: str, variant: str, n_tasks: int) -> list[str]:
    """One escaped sentence per paired comparison under the primary variant (or with no variant)."""
    out = []
    c = comp[(comp["policy"].astype(str) == policy) & comp["variant"].isin([variant, "-"])]
    for _, r in c.iterrows():
        has_ci = np.isfinite(r.get("diff_lo", math.nan))
        s = (f"{esc(_label(r['rule_a']))} vs {esc(_label(r['rule_b']))}: {100 * r['diff']:+.0f} points")
        if has_ci:
            s += f" (95% CI {100 * r['diff_lo']:+.0f} to {100 * r['diff_hi']:+.0f})"
            s += f", Cohen's h {r['cohens_h']:+.2f} [{r['h_lo']:+.2f}, {r['h_hi']:+.2f}]"
        disc = int(r["a_wins"]) + int(r["b_wins"])
        if disc:
            s += (f", {int(r['a_wins'])} of {disc} discordant units favour the first (sign test one-sided "
                  f"p = {_p(r['sign_test_p_one_sided'])}, McNemar p = {_p(r['mcnemar_exact_p'])})")
        if has_ci:
            excludes = r["diff_lo"] > 0 or r["diff_hi"] < 0
            s += (" &mdash; task-success difference <b>significant</b> (CI excludes 0)" if excludes
                  else f" &mdash; task-success difference not significant at n = {n_tasks} tasks")
        if np.isfinite(r.get("geomean_ratio_lo", math.nan)):
            lo, hi = r["geomean_ratio_lo"], r["geomean_ratio_hi"]
            s += (f"; geometric-mean speedup ratio {r['geomean_ratio']:.2f}× [{lo:.2f}, {hi:.2f}]"
                  + (" (<b>CI excludes 1</b>)" if lo > 1 or hi < 1 else " (CI includes 1)"))
        out.append(s)
    return out


def length_verdict(corr: pd.DataFrame, sel_rules: pd.DataFrame, policy: str, variant: str) -> str:
    """Does length explain the surprisal-speedup association?  From correlations and the residual rule."""
    c = corr[(corr["policy"].astype(str) == policy) & (corr["variant"] == variant)] if not corr.empty else corr
    if c.empty:
        return "No correlation table: the length question cannot be answered."
    r = c.iloc[0]
    rho, p, prho, pp = r["spearman_nll_speedup"], r["p"], r["partial_spearman_given_length"], r["p_partial"]
    lrho, lp = r["spearman_length_speedup"], r["p_length"]
    text = (f"Over {int(r['n_correct_samples'])} correct samples, Spearman rho(NLL, speedup) = {rho:+.2f} "
            f"(p = {_p(p)}); controlling for length, partial rho = {prho:+.2f} (p = {_p(pp)}); "
            f"rho(length, speedup) = {lrho:+.2f} (p = {_p(lp)}). ")
    if not (np.isfinite(p) and np.isfinite(pp)):
        text += "Too few correct samples to decide whether length explains the association."
    elif p < 0.05 and pp >= 0.05:
        text += "<b>Length explains it</b>: the association is significant raw but not once length is controlled."
    elif pp < 0.05:
        text += "<b>The association survives length control</b> (partial rho significant at 0.05)."
    else:
        text += "No association is detectable at this sample size, with or without length control."
    rate = dict(zip(sel_rules["rule"], sel_rules["success_rate"]))
    if "resid_surprisal" in rate and "surprisal" in rate:
        text += (f" As a rule, length-residualised surprisal reaches {_pct(rate['resid_surprisal'])} task success "
                 f"vs {_pct(rate['surprisal'])} for raw surprisal.")
    return text


def findings_paragraphs(tables: Mapping[str, pd.DataFrame], policy: str, variant: str, n_tasks: int) -> list[str]:
    """Winner, each difference with its interval, length, spread, scaling: what the data supports."""
    sel = tables["selection"]
    paras: list[str] = []
    rules = primary_rules(sel, policy, variant, kinds=("main", "length_controlled", "tail", "control"))
    cont = rules[rules["rule"] != "oracle"].sort_values(["success_rate", "geomean_speedup"], ascending=False,
                                                        kind="mergesort")
    if not cont.empty:
        w = cont.iloc[0]
        ci = f" (95% CI {_pct(w['success_lo'])} to {_pct(w['success_hi'])})" if np.isfinite(w["success_lo"]) else ""
        geo = (f", geometric-mean speedup {w['geomean_speedup']:.2f}× [{w['geomean_lo']:.2f}, {w['geomean_hi']:.2f}]"
               if "geomean_lo" in w and np.isfinite(w["geomean_lo"]) else "")
        cost = (f"; deployed, it checks {w['mean_n_evaluated']:.1f} of {w['mean_n_samples']:.0f} samples per task "
                f"on average and times {w['mean_n_timed']:.1f}" if "mean_n_evaluated" in w else "")
        tied = cont[np.isclose(cont["success_rate"], w["success_rate"]) & (cont["rule"] != w["rule"])]["rule"]
        tie_text = (f" Tied on task success: {esc(', '.join(_label(r) for r in tied))}; only the speedup separates them."
                    if len(tied) else "")
        paras.append(f"<p>Winning rule (highest task success, ties broken by geometric-mean speedup, all rules and "
                     f"controls under variant {esc(variant)}): <b>{esc(_label(w['rule']))}</b> with "
                     f"{_pct(w['success_rate'])}{esc(ci)}{esc(geo)}{esc(cost)}.{tie_text}</p>")
    comp = tables.get("comparisons", pd.DataFrame())
    if not comp.empty:
        items = comparison_sentences(comp, policy, variant, n_tasks)
        if items:
            paras.append(f"<p>Paired differences (task success, rule A minus rule B; paired task-clustered bootstrap; "
                         f"{len(items)} comparisons, not corrected for multiplicity, so about {0.05 * len(items):.1f} "
                         "would look significant by chance):</p><ul>" + "".join(f"<li>{s}</li>" for s in items) + "</ul>")
    paras.append(f"<p>Length: {length_verdict(tables.get('correlations', pd.DataFrame()), rules, policy, variant)}</p>")
    spread = tables.get("logprob_spread", pd.DataFrame())
    if not spread.empty:
        s = spread[(spread["policy"].astype(str) == policy) & (spread["variant"] == variant)]
        if len(s):
            cannot = int((~s["rules_can_matter"].map(_is_true)).sum())
            flat = int((~s["spread_ok"].map(_is_true)).sum())
            same = int((~s["outcome_mixed"].map(_is_true)).sum())
            paras.append(f"<p>Log-prob spread: in {cannot} of {len(s)} units with a correct sample no log-prob rule can "
                         f"change task success ({flat} have fewer than 2 correct samples or an NLL range below "
                         f"{esc(s['threshold'].iloc[0] if variant.startswith('mean') else 'the threshold')} "
                         f"(nats/token for mean variants), {same} have correct samples that are all fast_1 or all "
                         f"not). Rule differences come from the remaining {len(s) - cannot}.</p>")
    sat, eq = tables.get("scaling_summary", pd.DataFrame()), tables.get("equivalent_k", pd.DataFrame())
    if not sat.empty:
        f1 = sat[(sat["policy"].astype(str) == policy) & (sat["metric"] == "fast_p@k") & np.isclose(sat["p"], 1.0)]
        if len(f1):
            r = f1.iloc[0]
            text = (f"Best-of-N fast_1@k rises from {_pct(r['value_at_1'])} at k = 1 to {_pct(r['value_at_K'])} at "
                    f"K = {int(r['K'])} and saturates (within 2 points of K) at k = {int(r['saturation_k'])}.")
            if not eq.empty:
                e = eq[(eq["policy"].astype(str) == policy) & (eq["measure"] == "task_success") &
                       eq["variant"].isin([variant, "-"]) & (eq["rule"] != "oracle")]
                parts = [f"{esc(_label(x['rule']))} k = {int(x['k_matched'])}" if np.isfinite(x["k_matched"])
                         else f"{esc(_label(x['rule']))} k &gt; K" for _, x in e.iterrows()]
                if parts:
                    text += " Oracle Best-of-N matches each rule's task success at: " + ", ".join(parts) + "."
            paras.append(f"<p>{text}</p>")
    return paras


def _definitions(headers: list[Mapping[str, str]]) -> dict[str, str]:
    defs: dict[str, str] = {}
    for h in headers:
        for k, v in h.items():
            if k.startswith("definition."):
                defs[k[len("definition."):]] = v
    for k, v in DEFINITIONS.items():
        defs.setdefault(k, v)
    order = list(DEFINITIONS)
    return dict(sorted(defs.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def _config_text(config: Mapping[str, Any]) -> str:
    try:
        import yaml

        return yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False)
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        return json.dumps(config, indent=2, default=str)


def make_report(
    tables_dir: str | Path,
    figures_dir: str | Path,
    config: Mapping[str, Any],
    provenance: Mapping[str, Any],
    stage_times: Mapping[str, float | Mapping[str, float]] | None,
    out_html: str | Path,
    ttt: bool = False,
) -> Path:
    """Write the self-contained report to `out_html` (atomically) and return its path.

    `ttt`: add the test-time training section from the ttt_*.csv tables and ttt_*.png figures
    (without it, a note says TTT was not run)."""
    tables_dir, figures_dir, out_html = Path(tables_dir), Path(figures_dir), Path(out_html)
    read = {name: _read(tables_dir, name) for name in TABLE_FILES}
    tables = {name: df for name, (df, _) in read.items()}
    sel_header = read["selection"][1]
    title = f"vegtts report: {config.get('experiment', config.get('name', 'experiment'))}"

    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    parts.append("<h2>Summary</h2>")
    parts += summary_paragraphs(tables, sel_header)

    parts.append("<h2>Figures</h2>")
    for name, caption in FIGURE_CAPTIONS.items():
        png = figures_dir / f"{name}.png"
        if png.exists():
            parts.append(f"<figure>{_embed_png(png)}<figcaption>{esc(caption)}</figcaption></figure>")
        else:
            parts.append(f'<p class="note">Figure {esc(name)} is missing.</p>')
    # Any other PNG (a figure added later) is embedded too, under its file name.
    shown = set(FIGURE_CAPTIONS) | set(TTT_FIGURE_CAPTIONS)  # TTT figures only in their section (stale ones never)
    extra = sorted(p for p in figures_dir.glob("*.png") if p.stem not in shown) if figures_dir.is_dir() else []
    for png in extra:
        parts.append(f"<figure>{_embed_png(png)}<figcaption>{esc(png.stem)}</figcaption></figure>")

    parts.append("<h2>Tables</h2>")
    for name, heading in (("selection", "Selection rules"), ("signal", "Signal check"),
                          ("sample_stats", "Sample statistics per task"), ("scaling", "Best-of-N scaling"),
                          ("comparisons", "Paired rule comparisons"),
                          ("correlations", "Surprisal vs speedup among correct samples"),
                          ("surprisal_quartiles", "Surprisal quartiles (correct samples)"),
                          ("logprob_spread", "Log-prob spread per unit"),
                          ("scaling_summary", "Best-of-N saturation"),
                          ("equivalent_k", "Best-of-N budget matching each rule")):
        df = tables[name]
        parts.append(f"<h3>{esc(heading)} <span class=\"note\">({esc(TABLE_FILES[name])})</span></h3>")
        parts.append(html_table(df) if not df.empty else '<p class="note">missing</p>')

    ttt_headers: list[Mapping[str, str]] = []
    if ttt:
        ttt_parts, ttt_headers = ttt_section(tables_dir, figures_dir)
        parts += ttt_parts
    else:
        parts.append('<h2>Test-time training</h2><p class="note">Not run in this experiment (config key '
                     "'ttt.enabled' is false).</p>")

    parts.append("<h2>Definitions</h2><dl>")
    for key, text in _definitions([h for _, h in read.values()] + ttt_headers).items():
        parts.append(f"<dt>{esc(key)}</dt><dd>{esc(text)}</dd>")
    parts.append("</dl>")

    parts.append("<h2>Configuration</h2>")
    parts.append(f"<pre>{esc(_config_text(config))}</pre>")

    parts.append("<h2>Provenance</h2>")
    prov_rows = pd.DataFrame(sorted(flatten(provenance).items()), columns=["key", "value"])
    parts.append(html_table(prov_rows))
    if stage_times:
        # Values are seconds, or dicts such as {"jobs": 12, "seconds": 340.2} (summed benchmark files).
        times = pd.DataFrame([{"stage": k, **v} if isinstance(v, Mapping) else {"stage": k, "seconds": float(v)}
                              for k, v in stage_times.items()])
        parts.append("<h3>Wall time per stage</h3>" + html_table(times))
    parts.append("</body></html>")
    write_text(out_html, "\n".join(parts) + "\n")
    log.info("report: %s", out_html)
    return out_html


TTT_FIGURE_CAPTIONS = {
    "ttt_trajectory": "TTT trajectory. Left: per-sample fast_1 rate per step, one colour per TTT seed (solid: train "
                      "batch, dashed: the fresh heldout batch); star: the step Best-of-Adaptation picks in-sample; dotted: "
                      "the base policy's per-sample rate. Right: task success (at least one fast_1 among the K samples of "
                      "the step) against Best-of-N with the same rollouts per task, N = (s+1)K.",
    "ttt_rho": "Over-sharpening probe: Spearman rho(NLL, speedup) of the fixed base Best-of-N samples scored under each "
               "checkpoint (all samples, correct only, slowest quartile of correct), and their mean NLL per step.",
}


def _fmt_ratio(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):.0f}%"


def ttt_summary(selection: pd.DataFrame, equal: pd.DataFrame) -> list[str]:
    """One paragraph per headline rule, averaged over seeds, with the like-for-like comparison."""
    out = []
    mean = selection[selection["ttt_seed"].astype(str) == "mean"].set_index("rule")
    eq = equal[equal["ttt_seed"].astype(str) == "mean"].set_index("rule")
    if mean.empty:
        return ['<p class="note">No TTT selection results.</p>']
    for rule in ("boa_in_sample", "boa_held_out"):
        if rule not in mean.index:
            continue
        r, e = mean.loc[rule], eq.loc[rule] if rule in eq.index else None
        text = (f"<b>{esc(rule)}</b> (mean over seeds): per-sample fast_1 {_fmt_ratio(r['fast_1_rate'])} "
                f"(train batch {_fmt_ratio(r['fast_1_rate_train'])}, heldout {_fmt_ratio(r['fast_1_rate_heldout'])}), "
                f"task success {_fmt_ratio(r['task_success'])}.")
        if e is not None:
            text += (f" Like for like: base per-sample fast_1 {_fmt_ratio(e['base_fast_1_rate'])}; Best-of-N task success "
                     f"at the same {int(e['budget_rollouts_per_task'])} rollouts per task "
                     f"{_fmt_ratio(e['bon_task_success_at_budget'])}; equivalent K (task success vs task success) "
                     f"{esc(e['equivalent_k_text'])}; the paper's mixed comparison (per-sample rate vs task success) "
                     f"would give {esc(e['equivalent_k_paper_mixed_text'])}.")
        out.append(f"<p>{text}</p>")
    return out


def ttt_section(tables_dir: Path, figures_dir: Path) -> tuple[list[str], list[Mapping[str, str]]]:
    from vegtts.analysis.ttt import TTT_TABLES

    read = {name: read_table(tables_dir / file) for name, file in TTT_TABLES.items()}
    t = {name: df for name, (df, _) in read.items()}
    parts = ["<h2>Test-time training</h2>"]
    parts += ttt_summary(t["selection"], t["equal_budget"])
    for name, caption in TTT_FIGURE_CAPTIONS.items():
        png = figures_dir / f"{name}.png"
        parts.append(f"<figure>{_embed_png(png)}<figcaption>{esc(caption)}</figcaption></figure>" if png.exists()
                     else f'<p class="note">Figure {esc(name)} is missing.</p>')
    sel, traj = t["selection"], t["trajectory"]
    for seed in sorted(traj["ttt_seed"].unique()) if not traj.empty else []:
        parts.append(f"<h3>TTT seed {esc(seed)} <span class=\"note\">(ttt_selection.csv, ttt_trajectory.csv)</span></h3>")
        parts.append(html_table(sel[sel["ttt_seed"].astype(str) == str(seed)]))
        parts.append(html_table(traj[traj["ttt_seed"] == seed]))
    for name, heading in (("selection", "Checkpoint selection, all seeds and their mean"),
                          ("equal_budget", "TTT against Best-of-N at equal budget, equivalent K"),
                          ("probe", "Over-sharpening probe"), ("compute", "Compute accounting"),
                          ("bon_curve", "Best-of-N reference curve (base pool)")):
        df = t[name]
        parts.append(f"<h3>{esc(heading)} <span class=\"note\">({esc(TTT_TABLES[name])})</span></h3>")
        parts.append(f'<div class="scroll">{html_table(df)}</div>' if not df.empty else '<p class="note">empty</p>')
    return parts, [h for _, h in read.values()]


COMPARE_TABLES: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("signal", "Signal check", None),
    ("selection", "Selection rules (primary variant)",
     ("policy", "rule", "variant", "kind", "n_tasks", "success_rate", "success_lo", "success_hi", "diff_vs_random",
      "diff_lo", "diff_hi", "geomean_speedup", "geomean_lo", "geomean_hi", "mean_n_evaluated", "mean_n_timed")),
    ("comparisons", "Paired comparisons (primary variant)",
     ("policy", "variant", "rule_a", "rule_b", "n_tasks", "diff", "diff_lo", "diff_hi", "cohens_h", "h_lo", "h_hi",
      "a_wins", "b_wins", "sign_test_p_one_sided", "mcnemar_exact_p", "geomean_ratio", "wilcoxon_p_two_sided")),
    ("correlations", "Surprisal vs speedup", None),
    ("scaling_summary", "Best-of-N saturation", None),
)


def _experiment_tables(exp_dir: Path) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    read = {name: _read(exp_dir / "tables", name) for name in TABLE_FILES}
    return {n: df for n, (df, _) in read.items()}, read["selection"][1]


def _primary_only(df: pd.DataFrame, variant: str) -> pd.DataFrame:
    return df[df["variant"].isin([variant, "-"])] if "variant" in df and not df.empty else df


def compare_experiments(exp_dirs: list[Path], out_html: Path) -> Path:
    """One HTML report with two or more experiments (results/<exp>/ with tables/ and figures/) side by side.

    Key tables are stacked with an `experiment` column (the directory name), restricted to each
    experiment's primary surprisal variant; figures of the same name sit next to each other.
    """
    exp_dirs = [Path(d) for d in exp_dirs]
    if len(exp_dirs) < 2:
        raise ValueError("compare needs at least two experiment directories")
    names = [d.name for d in exp_dirs]
    if len(set(names)) < len(names):  # same leaf name in different places: use the whole path
        names = [str(d) for d in exp_dirs]
    loaded = {name: _experiment_tables(d) for name, d in zip(names, exp_dirs)}
    title = "vegtts comparison: " + " vs ".join(names)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
             f"<style>{CSS}.row{{display:flex;gap:.6em}}.row figure{{flex:1;min-width:0}}</style></head><body>",
             f"<h1>{esc(title)}</h1>", "<h2>Summary</h2><ul>"]
    variants: dict[str, str] = {}
    for name, (tables, header) in loaded.items():
        sel = tables["selection"]
        if sel.empty:
            parts.append(f"<li>{esc(name)}: no selection table.</li>")
            continue
        policy, variant = _primary(dict(header), sel)
        variants[name] = variant
        rules = primary_rules(sel, policy, variant, kinds=("main", "length_controlled", "tail", "control"))
        rate = dict(zip(rules["rule"], rules["success_rate"]))
        cont = rules[rules["rule"] != "oracle"].sort_values("success_rate", ascending=False, kind="mergesort")
        best = cont.iloc[0] if len(cont) else None
        text = (f"<b>{esc(name)}</b> (policy {esc(policy)}, variant {esc(variant)}, n = {int(rules['n_tasks'].max())} "
                f"tasks): oracle {_pct(rate.get('oracle', math.nan))}, random {_pct(rate.get('random', math.nan))}, "
                f"surprisal {_pct(rate.get('surprisal', math.nan))}, most-confident "
                f"{_pct(rate.get('most_confident', math.nan))}")
        if best is not None:
            text += f"; best non-oracle rule {esc(_label(best['rule']))} {_pct(best['success_rate'])}"
            if np.isfinite(best.get("success_lo", math.nan)):
                text += f" (95% CI {_pct(best['success_lo'])} to {_pct(best['success_hi'])})"
        parts.append(f"<li>{text}.</li>")
    parts.append("</ul>")

    parts.append("<h2>Figures</h2>")
    fig_names = list(FIGURE_CAPTIONS)
    for d in exp_dirs:
        fig_dir = d / "figures"
        if fig_dir.is_dir():
            fig_names += [p.stem for p in sorted(fig_dir.glob("*.png")) if p.stem not in fig_names]
    for fig in fig_names:
        cells = []
        for name, d in zip(names, exp_dirs):
            png = d / "figures" / f"{fig}.png"
            cells.append(f"<figure>{_embed_png(png)}<figcaption>{esc(name)}</figcaption></figure>" if png.exists()
                         else f'<figure><p class="note">{esc(name)}: no {esc(fig)} figure</p></figure>')
        parts.append(f"<h3>{esc(fig)}</h3><p class=\"note\">{esc(FIGURE_CAPTIONS.get(fig, ''))}</p>"
                     f"<div class=\"row\">{''.join(cells)}</div>")

    parts.append("<h2>Tables</h2>")
    for table, heading, columns in COMPARE_TABLES:
        frames = []
        for name, (tables, _) in loaded.items():
            df = tables.get(table, pd.DataFrame())
            if df.empty:
                continue
            df = _primary_only(df, variants.get(name, "mean_code")) if table in ("selection", "comparisons", "correlations") else df
            if columns:
                df = df[[c for c in columns if c in df.columns]]
            frames.append(df.assign(experiment=name)[["experiment", *df.columns]])
        parts.append(f"<h3>{esc(heading)} <span class=\"note\">({esc(TABLE_FILES[table])})</span></h3>")
        parts.append(html_table(pd.concat(frames, ignore_index=True)) if frames else '<p class="note">missing</p>')

    parts.append("<h2>Definitions</h2><dl>")
    for key, text in _definitions([]).items():
        parts.append(f"<dt>{esc(key)}</dt><dd>{esc(text)}</dd>")
    parts.append("</dl><h2>Experiments</h2><ul>")
    for name, d in zip(names, exp_dirs):
        parts.append(f"<li>{esc(name)}: {esc(d)}</li>")
    parts.append("</ul></body></html>")
    write_text(out_html, "\n".join(parts) + "\n")
    log.info("comparison report: %s", out_html)
    return Path(out_html)
