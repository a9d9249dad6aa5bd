"""Atomic writes and content hashes."""

import os
import stat

import pandas as pd
import pytest

from vegtts.io import atomic_path, read_parquet_metadata, short_hash, write_parquet, write_text


def test_a_failed_write_leaves_neither_target_nor_temp_file(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_a_write_replaces_the_target_with_ordinary_permissions(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "old")
    write_text(target, "new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_parquet_metadata_round_trips(tmp_path):
    path = tmp_path / "t.parquet"
    write_parquet(path, pd.DataFrame({"a": [1, 2]}), metadata={"settings": {"k": 4}})
    assert read_parquet_metadata(path) == {"settings": {"k": 4}}
    assert pd.read_parquet(path)["a"].tolist() == [1, 2]


def test_short_hash_ignores_key_order_but_not_values():
    assert short_hash({"a": 1, "b": 2}) == short_hash({"b": 2, "a": 1})
    assert short_hash({"a": 1}) != short_hash({"a": 2})


def test_sibling_temp_dir_has_plain_mkdir_permissions(tmp_path):
    from vegtts.io import sibling_temp_dir

    old = os.umask(0o022)
    try:
        tmp = sibling_temp_dir(tmp_path / "adapter")
    finally:
        os.umask(old)
    assert tmp.parent == tmp_path and tmp.name.startswith(".adapter.") and tmp.name.endswith(".tmp")
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o755
