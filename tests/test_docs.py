"""The manual stays true to the code: docs/configuration.md is what the schema gives, every stored
column is documented, and every relative link of the README and docs/ resolves."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import pytest

from vegtts.config import load_schema
from vegtts.docs_config import main, render_configuration, write_configuration

REPO = Path(__file__).resolve().parents[1]
CONFIG_DOC = REPO / "docs" / "configuration.md"


def schema_keys(properties: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, node in properties.items():
        keys.append(prefix + name)
        keys += schema_keys(node.get("properties", {}), f"{prefix}{name}.")
    return keys


def test_configuration_page_is_what_the_schema_gives():
    assert not write_configuration(CONFIG_DOC, check=True), (
        "docs/configuration.md is out of date with src/vegtts/schemas/config.schema.yaml: "
        "run `python -m vegtts.docs_config`")


def test_every_schema_key_has_a_row_in_schema_order():
    schema = load_schema()
    page = render_configuration(schema)
    rows = re.findall(r"^\| `([^`]+)` \|", page, re.M)
    sections = [name for name, node in schema["properties"].items() if "properties" in node]
    keys = [k for k in schema_keys(schema["properties"]) if k not in sections]
    assert sorted(rows) == sorted(keys)
    assert [k for k in rows if "." in k] == [k for k in keys if "." in k]  # in the schema's order
    assert re.findall(r"^## `([^`]+)`$", page, re.M) == sections


def test_a_schema_change_changes_the_page():
    schema = copy.deepcopy(load_schema())
    before = render_configuration(schema)
    schema["properties"]["sampling"]["properties"]["backend"]["enum"].append("my_backend")
    schema["properties"]["sampling"]["properties"]["k"]["default"] = 7
    after = render_configuration(schema)
    assert after != before
    row = next(line for line in after.splitlines() if line.startswith("| `sampling.backend`"))
    assert "`my_backend`" in row
    assert "| `sampling.k` | integer | `7` |" in after


def test_check_mode_fails_on_a_stale_page_and_writes_nothing(tmp_path: Path):
    page = tmp_path / "configuration.md"
    page.write_text("stale\n")
    assert main(["--check", "--out", str(page)]) == 1
    assert page.read_text() == "stale\n"
    assert main(["--out", str(page)]) == 0
    assert main(["--check", "--out", str(page)]) == 0
    assert page.read_text() == render_configuration(load_schema())


def test_cells_escape_pipes_and_html_like_text():
    from vegtts.docs_config import allowed, cell, type_of

    assert cell("a | b\n  c") == "a \\| b c"
    assert cell("results/<experiment>/ and `x<y>`; k <= 4") == "results/&lt;experiment>/ and `x<y>`; k <= 4"
    assert type_of({"type": "array", "items": {"type": ["string", "integer"]}}) == "list of (string or integer)"
    assert allowed({"type": "integer", "minimum": 1, "maximum": 8}) == ">= 1, <= 8"


@pytest.mark.parametrize("record", ["SampleRecord", "EvalRecord"])
def test_every_stored_column_is_documented(record: str):
    from vegtts import records

    page = (REPO / "docs" / "outputs.md").read_text()
    missing = [f.name for f in dataclasses.fields(getattr(records, record)) if f"`{f.name}`" not in page]
    assert not missing, f"docs/outputs.md does not describe the {record} columns {missing}"


def test_every_derived_column_and_table_is_documented():
    from vegtts.analysis.surprisal import NLL_COLUMNS, TAIL_COLUMNS
    from vegtts.analysis.ttt import TTT_TABLES
    from vegtts.outputs import ANALYSIS_TABLES

    page = (REPO / "docs" / "outputs.md").read_text()
    names = [*NLL_COLUMNS, *TAIL_COLUMNS, "n_code_tokens", "reference_copy", "fast_1", "fast_1_sig", "has_code",
             *ANALYSIS_TABLES.values(), *TTT_TABLES.values()]
    assert [n for n in names if f"`{n}`" not in page] == []


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (doc.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{doc.name} links to missing files: {broken}"


def test_the_readme_keeps_the_blocks_that_tools_read():
    readme = (REPO / "README.md").read_text()
    for marker in ("test-command", "cluster-profile-command"):
        assert re.search(rf"<!-- {marker} -->\s*```bash\n.+?```", readme, re.S), marker
