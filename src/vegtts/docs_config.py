"""docs/configuration.md, generated from the config schema (the only place keys are declared).

Every key of `src/vegtts/schemas/config.schema.yaml` becomes one table row, in the schema's order:
its dotted name, type, default, allowed values and description.  Regenerate after editing the
schema; `--check` only says whether the file is current (tests/test_docs.py runs it):

    python -m vegtts.docs_config            # rewrite docs/configuration.md
    python -m vegtts.docs_config --check    # exit 1 if it differs from what the schema gives
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vegtts.config import load_schema

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("docs") / "configuration.md"
SCHEMA_FILE = "src/vegtts/schemas/config.schema.yaml"
BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))
TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
TABLE_HEAD = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]


def flow(value: Any) -> str:
    """A value as YAML flow text: what a user writes in a config file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    return str(value)


def code(text: str) -> str:
    """Inline code that survives a markdown table cell."""
    return f"`{text}`".replace("|", "\\|")


def cell(text: str) -> str:
    """Free text as one markdown line (a table cell): pipes escaped, and angle brackets outside code
    spans where markdown would take them for an HTML tag (`results/<experiment>/`)."""
    spans = " ".join(str(text).split()).replace("|", "\\|").split("`")
    return "`".join(s if i % 2 else TAG_START.sub("&lt;", s) for i, s in enumerate(spans))


def type_of(node: dict[str, Any]) -> str:
    """The value's type in words: `integer`, `string or null`, `list of string`, `map of (...)`."""
    if "oneOf" in node:
        return " or ".join(dict.fromkeys(type_of(alt) for alt in node["oneOf"]))
    kinds = node.get("type", [])
    words = []
    for kind in kinds if isinstance(kinds, list) else [kinds]:
        if kind == "array" and isinstance(node.get("items"), dict):
            words.append(f"list of {grouped(type_of(node['items']))}")
        elif kind == "object" and isinstance(node.get("additionalProperties"), dict):
            words.append(f"map of {grouped(type_of(node['additionalProperties']))}")
        else:
            words.append(kind)
    return " or ".join(words) or "any"


def grouped(words: str) -> str:
    """An inner type in parentheses where it has alternatives: `list of (string or integer)`."""
    return f"({words})" if " or " in words else words


def constraints(node: dict[str, Any]) -> list[str]:
    """What a value of `node` must satisfy, besides its type."""
    out = []
    if "enum" in node:
        out.append("one of " + ", ".join(code(flow(v)) for v in node["enum"]))
    bounds = [f"{op} {flow(node[key])}" for key, op in BOUNDS if key in node]
    if bounds:
        out.append(", ".join(bounds))
    if node.get("minLength"):
        out.append("not empty")
    if "pattern" in node:
        out.append(f"matches {code(node['pattern'])}")
    if node.get("minItems"):
        out.append(f"at least {node['minItems']} item" + ("s" if node["minItems"] > 1 else ""))
    if node.get("uniqueItems"):
        out.append("no repeats")
    if isinstance(node.get("items"), dict):
        inner = constraints(node["items"])
        if inner:
            out.append("each item " + "; ".join(inner))
    if isinstance(node.get("additionalProperties"), dict):
        inner = constraints(node["additionalProperties"])
        if inner:
            out.append("each value " + "; ".join(inner))
    return out


def allowed(node: dict[str, Any]) -> str:
    """The allowed-values cell: the constraints, per alternative where the key takes several types."""
    if "oneOf" in node:
        parts = [f"{type_of(alt)}: " + "; ".join(constraints(alt)) for alt in node["oneOf"] if constraints(alt)]
        return cell("; ".join(parts + constraints({k: v for k, v in node.items() if k != "oneOf"})))
    return cell("; ".join(constraints(node)))


def is_section(node: dict[str, Any]) -> bool:
    return node.get("type") == "object" and "properties" in node


def rows(properties: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """One table row per key, depth first, in the schema's order (a nested block's row precedes its keys)."""
    for name, node in properties.items():
        key = prefix + name
        if is_section(node):
            yield f"| {code(key)} | object | | | {cell(node.get('description', ''))} |"
            yield from rows(node["properties"], key + ".")
            continue
        default = code(flow(node["default"])) if "default" in node else ""
        yield f"| {code(key)} | {cell(type_of(node))} | {default} | {allowed(node)} | {cell(node.get('description', ''))} |"


def render_configuration(schema: dict[str, Any]) -> str:
    """docs/configuration.md: an introduction, the top-level keys, then one section per block."""
    props = schema["properties"]
    top = {name: node for name, node in props.items() if not is_section(node)}
    lines = [
        "# Configuration",
        "",
        f"<!-- generated by `python -m vegtts.docs_config` from {SCHEMA_FILE}; edit the schema, not this file -->",
        "",
        cell(schema.get("description", "")),
        "",
        "An experiment is one YAML file (`snakemake --configfile my.yaml`; `config.yaml` is the embedded "
        "default). A key left out takes its default. Unknown keys and bad values stop the run before anything "
        "executes, with a message naming the key, the value and what is allowed; `vegtts config check my.yaml "
        "--print` validates a file (naming the line of a YAML syntax error) and prints it with every default "
        "filled in.",
        "",
        "Types are JSON Schema's: `integer`, `number` (integer or decimal), `string`, `boolean`, `null`, "
        f"`list of ...`, `map of ...`. The schema itself: `{SCHEMA_FILE}`.",
        "",
        "## Top level",
        "",
        *TABLE_HEAD,
        *rows(top),
    ]
    for name, node in props.items():
        if is_section(node):
            lines += ["", f"## `{name}`", ""]
            if node.get("description"):
                lines += [cell(node["description"]), ""]
            lines += [*TABLE_HEAD, *rows(node["properties"], name + ".")]
    return "\n".join(lines) + "\n"


def write_configuration(out: Path, check: bool = False) -> bool:
    """Regenerate `out` from the packaged schema; return whether it changed (with `check`: would change)."""
    text = render_configuration(load_schema())
    current = out.read_text(encoding="utf-8") if out.exists() else None
    if current == text:
        return False
    if not check:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vegtts.docs_config", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the page to write (default: {DEFAULT_OUT})")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    changed = write_configuration(args.out, check=args.check)
    if args.check and changed:
        log.error("%s is out of date with the config schema: run `python -m vegtts.docs_config`", args.out)
        return 1
    log.info("%s %s", args.out, "rewritten" if changed and not args.check else "is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
