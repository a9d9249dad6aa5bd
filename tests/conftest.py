"""Shared fixtures and the rules of the two test tiers (markers and addopts in pyproject.toml).

`pytest -q` runs the fast tier; `pytest -q -m slow` the slow tier (real model, real workflows,
llama.cpp, vLLM, Slurm). Plain helpers shared by several files are in tests/helpers.py.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
from helpers import make_workdir, snakemake, tiny_args

TIER_OF_THEIR_OWN = ("slurm", "vllm")  # also marked slow, so that the slow tier runs them


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A slurm or vllm test not marked slow would run in neither tier: refuse it."""
    untiered = [item.nodeid for item in items
                if any(item.get_closest_marker(m) for m in TIER_OF_THEIR_OWN) and not item.get_closest_marker("slow")]
    if untiered:
        raise pytest.UsageError(f"marked {' or '.join(TIER_OF_THEIR_OWN)} but not slow: {', '.join(untiered)}")


@pytest.hookimpl(tryfirst=True)  # before fixtures are set up: a fixture may need the package too
def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.needs_package("peft", "ttt")`: skip when the package is missing, with the install
    command as the reason; fail instead when CI is set, since CI installs every extra."""
    for mark in item.iter_markers("needs_package"):
        module, extra = mark.args
        try:
            importlib.import_module(module)
        except ImportError:
            reason = f"needs the Python package {module!r}: pip install -e '.[{extra}]'"
            if os.environ.get("CI"):
                pytest.fail(f"CI must install the {extra!r} extra; {reason}")
            pytest.skip(reason)


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory) -> Path:
    """A workdir (helpers.make_workdir) with the tiny experiment run to the end, shared by the
    workflow, rerun-planning and store fault tests. Never modify it: `helpers.clone_run` gives a
    private copy."""
    workdir = make_workdir(tmp_path_factory.mktemp("tiny-finished"))
    snakemake(workdir, *tiny_args())
    return workdir
