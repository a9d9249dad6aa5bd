"""CSV tables with a provenance header: leading `# key: value` lines, then the CSV.

The first two lines name the table and its unit of evidence (`# unit: distinct correct programs`).

Nested provenance is flattened to dotted keys (`versions.torch: 2.13.0`), definitions become
`definition.<name>: <text>`; values are single lines.  `read_table` returns the frame and the
flat header dict, so a table can never travel without what its columns mean.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from vegtts.io import write_text

HEADER_PREFIX = "# "


def _one_line(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, (list, tuple)):
        text = json.dumps(list(value), default=str)
    else:
        text = str(value)
    return " ".join(text.split())


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{str(key).replace(':', '_').replace(chr(10), ' ').strip()}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = _one_line(value)
    return out


def table_header(name: str, unit: str, definitions: Mapping[str, str], provenance: Mapping[str, Any]) -> dict[str, str]:
    return {"table": name, "unit": unit, **flatten(definitions, "definition."), **flatten(provenance)}


def write_table(
    df: pd.DataFrame,
    path: str | os.PathLike,
    definitions: Mapping[str, str],
    provenance: Mapping[str, Any],
    name: str | None = None,
    *,
    unit: str,
) -> Path:
    """Write `df` as CSV at `path` (atomically) under a `# key: value` header.

    `unit` says what one row, count or test is over (samples, distinct programs, tasks, ...): every
    table states its unit of evidence in the line `# unit: ...` after its name.
    """
    if not unit or not unit.strip():
        raise ValueError(f"table {path}: say what its rows and counts are over (unit=...)")
    path = Path(path)
    header = table_header(name or path.stem, unit, definitions, provenance)
    lines = [f"{HEADER_PREFIX}{k}: {v}" for k, v in header.items()]
    body = df.to_csv(index=False, lineterminator="\n")
    write_text(path, "\n".join(lines) + "\n" + body)
    return path


def read_table(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, str]]:
    """The frame and the flat header dict of a table written by `write_table`."""
    text = Path(path).read_text(encoding="utf-8")
    header: dict[str, str] = {}
    lines = text.split("\n")
    n = 0
    for line in lines:
        if not line.startswith(HEADER_PREFIX.rstrip()):
            break
        key, _, value = line[len(HEADER_PREFIX):].partition(": ")
        header[key] = value
        n += 1
    body = "\n".join(lines[n:])
    df = pd.read_csv(io.StringIO(body), keep_default_na=True) if body.strip() else pd.DataFrame()
    return df, header
