"""One self-contained HTML report per experiment, built from the analysis tables and figures.

Figures are embedded as base64 PNG, the CSS is inline, nothing is fetched.  Every string that
comes from data, config or provenance goes through html.escape (completions may contain HTML).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vegtts.analysis import claims
from vegtts.analysis.definitions import DEFINITIONS
from vegtts.analysis.tables import flatten, read_table
from vegtts.io import write_text
from vegtts.outputs import ANALYSIS_TABLES, TTT_TABLES

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
    "length_speedup": "Speedup of distinct correct programs (marker area: copies) against length and NLL, with Spearman "
                      "rho and the partial rho of NLL and speedup given length over programs, each with its task-clustered "
                      "95% interval.",
    "rule_wins": "Per task: each rule's selected speedup relative to the oracle (grey: no correct sample); dots mark "
                 "the best non-oracle rule(s) of the task.",
}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)



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
    path = tables_dir / ANALYSIS_TABLES[name]
    if not path.exists():
        log.warning("report: table %s is missing", path)
        return pd.DataFrame(), {}
    return read_table(path)


def stage_times_from_benchmarks(benchmarks: Mapping[str, list[str]]) -> dict[str, dict[str, float]]:
    """Sum Snakemake benchmark files per stage (vegtts.plan.Plan.stage_benchmarks: stage -> its
    jobs' benchmark files; a file listed under two stages counts once, under the first; a missing
    one, e.g. of an artifact made before benchmarks were kept, counts no job)."""
    totals: dict[str, dict[str, float]] = {}
    seen: set[Path] = set()
    for stage, files in benchmarks.items():
        entry = totals.setdefault(stage, {"jobs": 0, "seconds": 0.0})
        for bench in map(Path, files):
            if bench in seen or not bench.is_file():
                continue
            seen.add(bench)
            with bench.open() as f:
                for row in csv.DictReader(f, delimiter="\t"):
                    entry["jobs"] += 1
                    entry["seconds"] += float(row["s"])
    if any(stage.startswith("ttt_") for stage in totals):
        ttt_total = {"jobs": sum(v["jobs"] for k, v in totals.items() if k.startswith("ttt_")),
                     "seconds": sum(v["seconds"] for k, v in totals.items() if k.startswith("ttt_"))}
        totals["ttt (all)"] = ttt_total
    totals["all"] = {"jobs": sum(v["jobs"] for k, v in totals.items() if k != "ttt (all)"),
                     "seconds": sum(v["seconds"] for k, v in totals.items() if k != "ttt (all)")}
    return totals


def render(sentence: str) -> str:
    """A claims sentence as HTML: escaped, **bold** marks turned into <b>."""
    parts = esc(sentence).split("**")
    return "".join(f"<b>{x}</b>" if i % 2 else x for i, x in enumerate(parts))


def summary_paragraphs(tables: Mapping[str, pd.DataFrame], header: Mapping[str, str]) -> list[str]:
    """The first screen: only what the tables' intervals support (vegtts.analysis.claims)."""
    sel = tables["selection"]
    if sel.empty:
        return ["<p>No selection table was produced.</p>"]
    policy, variant = claims.primary_of(header, sel)
    comp = tables.get("comparisons", pd.DataFrame())
    paras = [f'<p class="note">{render(claims.provenance_line(header))}</p>']
    excluded = claims.exclusion_sentence(header)
    if excluded:
        paras.append(f"<p>{render(excluded)}</p>")
    paras.append("<p>" + " ".join(render(x) for x in claims.outcome_sentences(tables.get("outcomes", pd.DataFrame()), policy))
                 + "</p>")
    screen = [claims.rejection_sentence(tables.get("rejections", pd.DataFrame())),
              claims.validation_sentence(tables.get("sample_stats", pd.DataFrame()))]
    paras.append("<p>" + " ".join(render(x) for x in screen if x) + "</p>")
    signal = claims.signal_sentence(tables.get("signal", pd.DataFrame()))
    if signal:
        marked = render(signal).replace("PASS", '<span class="pass">PASS</span>').replace(
            "FAIL", '<span class="fail">FAIL</span>')
        paras.append(f"<p>{marked}</p>")
    paras.append("<p>" + " ".join(render(x) for x in claims.task_success_sentences(sel, comp, policy, variant)) + "</p>")
    speed = claims.speedup_sentences(sel, comp, policy, variant)
    if speed:
        paras.append("<p>" + " ".join(render(x) for x in speed) + "</p>")
    paras.append(f"<p>Length: {render(claims.length_verdict(tables.get('correlations', pd.DataFrame()), policy, variant))}</p>")
    paras += findings_paragraphs(tables, policy, variant)
    paras.append(f"<p>{render(claims.limits_sentence(sel, policy, variant))}</p>")
    return paras


def _label(rule: str) -> str:
    return claims.label(rule)


def _p(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2g}"


def _is_true(v: Any) -> bool:
    return claims.is_true(v)


VERDICT_TEXT = {"a better": "first better (interval excludes the null)", "b better": "second better (interval excludes the null)",
                "tie": "tie (interval includes the null)", "": "no interval"}


def comparison_sentences(comp: pd.DataFrame, policy: str, variant: str) -> list[str]:
    """One escaped sentence per planned paired comparison under the primary variant (or with no variant)."""
    out = []
    c = comp[(comp["policy"].astype(str) == policy) & comp["variant"].isin([variant, "-"])]
    if "scope" in c:
        c = c[c["scope"] == "planned"]
    for _, r in c.iterrows():
        s = (f"{esc(_label(r['rule_a']))} vs {esc(_label(r['rule_b']))}: task success {100 * r['diff']:+.0f} points")
        if np.isfinite(r.get("diff_lo", math.nan)):
            s += (f" [{100 * r['diff_lo']:+.0f}, {100 * r['diff_hi']:+.0f}] &mdash; "
                  f"{esc(VERDICT_TEXT.get(str(r.get('task_success_verdict', '')), ''))}")
        if np.isfinite(r.get("mcnemar_exact_p", math.nan)):
            s += (f"; {int(r['tasks_a_better'])} vs {int(r['tasks_b_better'])} tasks favour each (exact McNemar "
                  f"p = {_p(r['mcnemar_exact_p'])})")
        if np.isfinite(r.get("geomean_ratio_solvable_lo", math.nan)):
            s += (f"; speedup ratio over solvable units {r['geomean_ratio_solvable']:.2f}x "
                  f"[{r['geomean_ratio_solvable_lo']:.2f}, {r['geomean_ratio_solvable_hi']:.2f}] &mdash; "
                  f"{esc(VERDICT_TEXT.get(str(r.get('speedup_verdict', '')), ''))}")
        if np.isfinite(r.get("wilcoxon_p_two_sided", math.nan)):
            s += f" (Wilcoxon over tasks on E[log speedup], p = {_p(r['wilcoxon_p_two_sided'])})"
        out.append(s)
    return out


def findings_paragraphs(tables: Mapping[str, pd.DataFrame], policy: str, variant: str) -> list[str]:
    """Below the headline: each planned comparison, the log-prob spread and the Best-of-N budget."""
    paras: list[str] = []
    comp = tables.get("comparisons", pd.DataFrame())
    if not comp.empty:
        items = comparison_sentences(comp, policy, variant)
        if items:
            paras.append("<p>Planned paired comparisons (rule A minus rule B over tasks; paired task-clustered 95% "
                         "intervals; not corrected for multiplicity):</p><ul>" + "".join(f"<li>{s}</li>" for s in items)
                         + "</ul>")
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
    budget = claims.equivalent_k_sentence(tables.get("scaling_summary", pd.DataFrame()),
                                          tables.get("equivalent_k", pd.DataFrame()), policy, variant)
    if budget:
        paras.append(f"<p>{render(budget)}</p>")
    return paras


REPORT_TABLES = (
    ("outcomes", "Outcomes: samples, distinct programs, tasks"),
    ("selection", "Selection rules"), ("comparisons", "Paired rule comparisons"), ("signal", "Signal check"),
    ("sample_stats", "Per task: samples, programs, statuses, rejected guards, task screen"),
    ("rejections", "Rejected evaluations, with the guard that fired"),
    ("scaling", "Best-of-N scaling"),
    ("correlations", "Surprisal vs speedup among distinct correct programs"),
    ("surprisal_quartiles", "Surprisal quartiles (distinct correct programs)"),
    ("logprob_spread", "Log-prob spread per unit"),
    ("scaling_summary", "Best-of-N saturation"),
    ("equivalent_k", "Best-of-N budget matching each rule"),
)


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
    read = {name: _read(tables_dir, name) for name in ANALYSIS_TABLES}
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
    for name, heading in REPORT_TABLES:
        df = tables[name]
        unit = read[name][1].get("unit", "")
        parts.append(f'<h3>{esc(heading)} <span class="note">({esc(ANALYSIS_TABLES[name])}; unit: {esc(unit)})</span></h3>')
        if name == "rejections" and df.empty:
            parts.append('<p class="note">No evaluation was rejected by a guard.</p>')
            continue
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
    parts.append(f"<p>{render(claims.provenance_line(sel_header))}</p>")
    analysis_prov = {f"analysis.{k}": v for k, v in sel_header.items()
                     if k.split(".")[0] in ("config_hash", "store", "code", "excluded_tasks", "n_samples", "versions")}
    report_prov = {f"report.{k}": v for k, v in flatten(provenance).items()}
    prov_rows = pd.DataFrame(sorted({**analysis_prov, **report_prov}.items()), columns=["key", "value"])
    parts.append(html_table(prov_rows))
    if stage_times:
        # Values are seconds, or dicts such as {"jobs": 12, "seconds": 340.2} (summed benchmark files).
        times = pd.DataFrame([{"stage": k, **v} if isinstance(v, Mapping) else {"stage": k, "seconds": float(v)}
                              for k, v in stage_times.items()])
        parts.append('<h3>Wall time per stage</h3><p class="note">Summed Snakemake benchmark files of the jobs that '
                     "made this run's artifacts (stages named ttt_* are the test-time training part; artifacts reused "
                     "from an earlier run keep that run's times).</p>" + html_table(times))
    parts.append("</body></html>")
    write_text(out_html, "\n".join(parts) + "\n")
    log.info("report: %s", out_html)
    return out_html


TTT_FIGURE_CAPTIONS = {
    "ttt_trajectory": "TTT trajectory. Left: per-sample fast_1 rate per step, one colour per TTT seed (solid: train "
                      "batch, dashed: the fresh heldout batch); star: the step Best-of-Adaptation picks in-sample; dotted: "
                      "the base policy's per-sample rate. Right: task success (at least one fast_1 among the K samples of "
                      "the step) against Best-of-N with the same rollouts per task, N = (s+1)K.",
    "ttt_rho": "Over-sharpening probe: Spearman rho(NLL, speedup) over the distinct programs of base samples no TTT "
               "update trained on (own sampling seed), scored under each checkpoint (all, correct only, slowest quartile "
               "of correct; bars: task-clustered 95% intervals), and their mean NLL per step.",
}


def ttt_section(tables_dir: Path, figures_dir: Path) -> tuple[list[str], list[Mapping[str, str]]]:
    read = {name: read_table(tables_dir / file) for name, file in TTT_TABLES.items()}
    t = {name: df for name, (df, _) in read.items()}
    parts = ["<h2>Test-time training</h2>"]
    parts += [f"<p>{render(x)}</p>" for x in claims.ttt_sentences(t["selection"], t["equal_budget"], t["probe"])]
    if not t["selection"].empty:
        parts.append(f'<p class="note">{render(claims.provenance_line(read["selection"][1]))}</p>')
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
        unit = read[name][1].get("unit", "")
        parts.append(f'<h3>{esc(heading)} <span class="note">({esc(TTT_TABLES[name])}; unit: {esc(unit)})</span></h3>')
        parts.append(f'<div class="scroll">{html_table(df)}</div>' if not df.empty else '<p class="note">empty</p>')
    return parts, [h for _, h in read.values()]


COMPARE_TABLES: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("signal", "Signal check", None),
    ("selection", "Selection rules (primary variant)",
     ("policy", "rule", "variant", "kind", "n_tasks", "success_rate", "success_lo", "success_hi", "diff_vs_random",
      "diff_lo", "diff_hi", "geomean_speedup", "geomean_lo", "geomean_hi", "mean_n_evaluated", "mean_n_timed")),
    ("comparisons", "Paired comparisons (primary variant)",
     ("policy", "variant", "rule_a", "rule_b", "n_tasks", "diff", "diff_lo", "diff_hi", "cohens_h", "h_lo", "h_hi",
      "task_success_verdict", "tasks_a_better", "tasks_b_better", "mcnemar_exact_p", "geomean_ratio_solvable",
      "geomean_ratio_solvable_lo", "geomean_ratio_solvable_hi", "speedup_verdict", "wilcoxon_p_two_sided")),
    ("correlations", "Surprisal vs speedup", None),
    ("scaling_summary", "Best-of-N saturation", None),
)


def experiment_tables(exp_dir: Path) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    read = {name: _read(exp_dir / "tables", name) for name in ANALYSIS_TABLES}
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
    loaded = {name: experiment_tables(d) for name, d in zip(names, exp_dirs)}
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
        policy, variant = claims.primary_of(header, sel)
        variants[name] = variant
        ts = " ".join(render(x) for x in claims.task_success_sentences(sel, tables["comparisons"], policy, variant))
        text = f"<b>{esc(name)}</b> (policy {esc(policy)}): {ts}"
        parts.append(f"<li>{text}</li>")
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
        parts.append(f"<h3>{esc(heading)} <span class=\"note\">({esc(ANALYSIS_TABLES[table])})</span></h3>")
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


# ---------------------------------------------------------------- README's measured section
