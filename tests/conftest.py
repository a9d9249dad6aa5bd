"""Shared fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory) -> Path:
    """A workdir (tests/test_workflow.make_workdir) with the tiny experiment run to the end, shared by
    the rerun-planning and store fault tests. Never modify it: `clone_run` gives a private copy."""
    from test_workflow import make_workdir, snakemake, tiny_args

    workdir = make_workdir(tmp_path_factory.mktemp("tiny-finished"))
    snakemake(workdir, *tiny_args())
    return workdir


def clone_run(run: Path, dest: Path) -> Path:
    """A copy of a finished workdir that Snakemake sees as finished too (mtimes and metadata kept)."""
    shutil.copytree(run, dest, symlinks=True, copy_function=shutil.copy2)
    return dest
