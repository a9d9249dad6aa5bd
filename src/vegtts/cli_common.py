"""What every `vegtts` command module shares: JSON arguments, sub-command registration, input checks."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text[:200]}") from None


def add_command(sub: Any, name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=func)
    return parser


def verified(*paths: str | Path) -> None:
    """Check input artifacts against their digests before a stage reads them."""
    from .io import verify_artifact

    for path in paths:
        if path:
            verify_artifact(path)
