"""Figures are non-empty PNG/PDF drawn from the tables; the report is self-contained and escaped."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pytest

from vegtts.analysis import run_analysis
from vegtts.analysis.definitions import DEFINITIONS
from vegtts.analysis.synthetic import synthetic_records
from vegtts.plots import make_figures
from vegtts.report import make_report

EVIL = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    samples, evals = synthetic_records(n_tasks=6, n_samples=8, seeds=(0, 1), seed=7)
    # A hostile task id travels through every table into the report.
    for df in (samples, evals):
        df.loc[df["task_id"] == "task01", "task_id"] = f"task01{EVIL}"
    samples.to_parquet(d / "samples.parquet")
    evals.to_parquet(d / "evals.parquet")
    run_analysis([d / "samples.parquet"], [d / "evals.parquet"], {"bootstrap": 200}, {"config_hash": "cafe"},
                 d / "tables")
    return d


@pytest.mark.slow
def test_figures_are_written_as_png_and_pdf(analysed: Path):
    paths = make_figures(analysed / "tables", analysed / "figures")
    names = sorted(p.name for p in paths)
    from vegtts.outputs import FIGURES

    assert names == sorted(f"{n}.{ext}" for n in FIGURES for ext in ("png", "pdf"))
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 5000
        assert data[:8] == b"\x89PNG\r\n\x1a\n" if p.suffix == ".png" else data[:5] == b"%PDF-"


@pytest.mark.slow
def test_figures_read_only_tables(analysed: Path, tmp_path: Path):
    """Figures must not need the per-sample data: copy only the CSVs elsewhere and draw from there."""
    tables = tmp_path / "tables"
    tables.mkdir()
    for csv in (analysed / "tables").glob("*.csv"):
        (tables / csv.name).write_bytes(csv.read_bytes())
    paths = make_figures(tables, tmp_path / "fig")
    assert all(p.stat().st_size > 0 for p in paths)


@pytest.mark.slow
def test_figures_are_byte_stable(analysed: Path, tmp_path: Path):
    a = make_figures(analysed / "tables", tmp_path / "a")
    b = make_figures(analysed / "tables", tmp_path / "b")
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes(), pa.name


@pytest.mark.slow
def test_report_is_self_contained_and_escaped(analysed: Path):
    make_figures(analysed / "tables", analysed / "figures")
    out = make_report(analysed / "tables", analysed / "figures",
                      {"experiment": "demo", "note": EVIL, "sampling": {"k": 8}},
                      {"config_hash": "cafe", "versions": {"torch": "2.x"}, "hardware": {"cpu": EVIL}},
                      {"sample": 12.5, "evaluate": {"jobs": 6, "seconds": 3.25}}, analysed / "report.html")
    text = out.read_text()
    # both figures embedded, and they decode to the PNGs on disk
    from vegtts.outputs import FIGURES

    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) == len(FIGURES)
    assert base64.b64decode(imgs[0]) == (analysed / "figures" / "scaling.png").read_bytes()
    # nothing external
    assert not re.search(r'(src|href)="(https?:)?//', text)
    # definitions section with every rule and the estimators
    for key in ("fast_1", "fast_1_sig", "task_success", "fast_p@k", "expected_best_speedup@k", "surprisal",
                "rule.oracle", "rule.random", "rule.most_confident", "rule.surprisal", "rule.surprisal_top3"):
        assert f"<dt>{key}</dt>" in text
    assert "1 - C(n-c,k)/C(n,k)" in text
    # hostile strings from data, config and provenance are escaped everywhere
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert text.count("&lt;script&gt;") >= 3
    # summary, signal check, provenance and stage times are present
    assert "Signal check" in text and ("PASS" in text or "FAIL" in text)
    assert "not</b> support" in text and "with 6 tasks" in text
    assert "cafe" in text and "evaluate" in text and "3.25" in text
    # tables rendered from the CSVs, each with its unit
    for name in ("selection.csv", "sample_stats.csv", "scaling.csv", "signal.csv", "outcomes.csv", "rejections.csv"):
        assert name in text
    assert "unit: distinct correct programs" in text
    assert "<td>task02</td>" in text and "<td>surprisal_top3</td>" in text
    # the findings: no winner by point estimate, each difference with its interval and verdict, length, spread
    assert "Winning rule" not in text
    assert re.search(r"No rule beats another|beats", text)
    assert "surprisal vs most confident" in text
    assert re.search(r"tie \(interval includes the null\)|better \(interval excludes the null\)", text)
    assert "Length: Over" in text and "distinct correct programs" in text
    assert "Log-prob spread" in text and "within 2 points" in text


def test_report_embeds_any_extra_png(analysed: Path, tmp_path: Path):
    figs = tmp_path / "figs"
    figs.mkdir()
    src = next((analysed / "figures").glob("*.png"), None) if (analysed / "figures").exists() else None
    if src is None:
        src = make_figures(analysed / "tables", figs)[0]
    (figs / "ttt_curve.png").write_bytes(src.read_bytes())
    text = make_report(analysed / "tables", figs, {}, {}, None, tmp_path / "r.html").read_text()
    assert "<figcaption>ttt_curve</figcaption>" in text


def test_report_tolerates_missing_figures(analysed: Path, tmp_path: Path):
    out = make_report(analysed / "tables", tmp_path / "nofigs", {}, {}, None, tmp_path / "r.html")
    text = out.read_text()
    assert "Figure scaling is missing" in text and "data:image/png" not in text
    for definition in ("fast_1_sig",):
        assert html.escape(DEFINITIONS[definition]) in text


@pytest.mark.slow
def test_compare_experiments_side_by_side(analysed: Path, tmp_path: Path):
    from vegtts.report import compare_experiments

    make_figures(analysed / "tables", analysed / "figures")
    exps = []
    for name, seed in (("temp05", 7), ("temp10<b>", 8)):
        d = tmp_path / name
        samples, evals = synthetic_records(n_tasks=5, n_samples=8, seed=seed)
        samples.to_parquet(tmp_path / f"{seed}_s.parquet")
        evals.to_parquet(tmp_path / f"{seed}_e.parquet")
        run_analysis([tmp_path / f"{seed}_s.parquet"], [tmp_path / f"{seed}_e.parquet"], {"bootstrap": 50}, {},
                     d / "tables")
        exps.append(d)
    (exps[0] / "figures").mkdir()
    (exps[0] / "figures" / "selection.png").write_bytes((analysed / "figures" / "selection.png").read_bytes())
    exps.append(analysed)  # a third experiment with every figure and a hostile task id
    text = compare_experiments(exps, tmp_path / "cmp.html").read_text()
    assert "<td>temp05</td>" in text and "<td>temp10&lt;b&gt;</td>" in text  # the experiment column, escaped
    assert "temp10<b>" not in text
    assert text.count("data:image/png") >= 2 and "temp10&lt;b&gt;: no selection figure" in text
    assert "Selection rules (primary variant)" in text and "<td>oracle</td>" in text
    with pytest.raises(ValueError):
        compare_experiments(exps[:1], tmp_path / "x.html")


def test_every_figure_exists_even_without_correct_samples(tmp_path: Path):
    """An experiment where nothing is correct still gets every declared figure (placeholders say why)."""
    from vegtts.outputs import FIGURES

    samples, evals = synthetic_records(n_tasks=2, n_samples=4, seeds=(0,), seed=3)
    evals["correct"] = False
    evals["status"] = "incorrect"
    for col in ("speedup", "speedup_lo", "speedup_hi"):
        evals[col] = 0.0
    samples.to_parquet(tmp_path / "samples.parquet")
    evals.to_parquet(tmp_path / "evals.parquet")
    run_analysis([tmp_path / "samples.parquet"], [tmp_path / "evals.parquet"], {"bootstrap": 100}, {}, tmp_path / "t")
    names = {p.name for p in make_figures(tmp_path / "t", tmp_path / "f")}
    assert names == {f"{n}.{ext}" for n in FIGURES for ext in ("png", "pdf")}


def test_every_declared_figure_has_a_report_caption_and_a_snakemake_caption():
    from vegtts.outputs import FIGURES, TTT_FIGURES
    from vegtts.report import FIGURE_CAPTIONS, TTT_FIGURE_CAPTIONS

    assert set(FIGURE_CAPTIONS) == set(FIGURES) and set(TTT_FIGURE_CAPTIONS) == set(TTT_FIGURES)
    report_dir = Path(__file__).resolve().parents[1] / "workflow" / "report"
    assert all((report_dir / f"{name}.rst").is_file() for name in FIGURES + TTT_FIGURES)
