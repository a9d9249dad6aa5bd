"""The store never serves wrong data: digests on every artifact, verified reads, cache entries that
must prove their key, content keys for problem files and model folders, and the store check that
moves corrupt and stale artifacts aside.  Fast unit tests; the workflow-level fault injection
(a finished tiny run damaged and repaired) is in tests/test_store_faults.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import FAST, flip_bit, program, spec_of, truncate

from vegtts import io as vio
from vegtts.evaluate import cache as eval_cache
from vegtts.identity import cached_sha256, folder_fingerprint, hub_fingerprint, task_keys
from vegtts.io import (
    CorruptArtifactError,
    atomic_path,
    digest_of,
    manifest_path,
    read_parquet,
    verify_artifact,
    write_dir_manifest,
    write_parquet,
)
from vegtts.records import EvalRecord
from vegtts.store import check_planned, verify_store

REPO = Path(__file__).resolve().parents[1]


def a_parquet(path: Path, n: int = 8) -> Path:
    df = pd.DataFrame({"sample_idx": range(n), "speedup": [1.5 + i for i in range(n)],
                       "completion": [f"return x * {i}" for i in range(n)]})
    write_parquet(path, df, metadata={"settings": {"k": n}})
    return path


# --- digests on every artifact ------------------------------------------------------------------
def test_a_parquet_carries_its_digest_and_reads_back_verified(tmp_path):
    path = a_parquet(tmp_path / "store/samples/k/s0/t.key.parquet")
    entry = json.loads(manifest_path(path).read_text())
    assert entry["bytes"] == path.stat().st_size and len(entry["sha256"]) == 64
    assert read_parquet(path)["speedup"].tolist()[:2] == [1.5, 2.5]
    assert digest_of(path) == entry["sha256"]


@pytest.mark.parametrize("damage", ["bit_flip_data", "bit_flip_footer", "truncate", "no_manifest", "append"])
def test_every_damage_is_refused_naming_the_file_and_the_repair(tmp_path, damage):
    path = a_parquet(tmp_path / "results/store/samples/k/s0/t.key.parquet")
    if damage == "bit_flip_data":
        flip_bit(path, offset=40)
    elif damage == "bit_flip_footer":
        flip_bit(path, offset=path.stat().st_size - 30)
    elif damage == "truncate":
        truncate(path)
    elif damage == "no_manifest":
        manifest_path(path).unlink()
    else:
        path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(CorruptArtifactError) as info:
        read_parquet(path)
    message = str(info.value)
    assert str(path) in message
    assert f"vegtts store verify {tmp_path / 'results'}" in message and "rerun snakemake" in message


def test_every_single_bit_flip_is_caught(tmp_path):
    """The issue: ~9% of random single-bit flips read back without error and changed values."""
    path = a_parquet(tmp_path / "a.parquet", n=4)
    original = path.read_bytes()
    for offset in range(0, len(original), max(1, len(original) // 97)):
        flip_bit(path, offset=offset, bit=offset % 8)
        with pytest.raises(CorruptArtifactError):
            verify_artifact(path)
        path.write_bytes(original)
    verify_artifact(path)


def test_a_folder_artifact_is_verified_file_by_file(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"\1" * 1000)
    (folder / "adapter_config.json").write_text("{}")
    write_dir_manifest(folder)
    verify_artifact(folder)
    flip_bit(folder / "adapter_model.safetensors")
    with pytest.raises(CorruptArtifactError, match="adapter_model.safetensors"):
        verify_artifact(folder)
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(CorruptArtifactError, match="missing"):
        verify_artifact(folder)


def test_an_artifact_is_fsynced_before_the_rename_and_its_folder_after(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src, dst):
        events.append(f"replace:{Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_path(tmp_path / "x.json", manifest=True) as tmp:
        tmp.write_text("{}")
    # the artifact's bytes reach the disk, then its manifest is written (fsynced and renamed),
    # then the artifact is renamed into place and the folder entry made durable
    assert events == ["fsync-file", "fsync-file", "replace:x.json.manifest.json", "fsync-dir",
                      "replace:x.json", "fsync-dir"]


# --- the evaluation cache ------------------------------------------------------------------------
def _entry(tmp_path: Path, code: str = "a" * 64) -> Path:
    return tmp_path / "evalcache" / "hw12" / "settings1234" / "source123456" / f"{code}.json"


def _verdict(code: str = "a" * 64, **kw) -> EvalRecord:
    fields = dict(task_id="t", code_sha256=code, status="incorrect", correct=False, error="mismatch", speedup=0.0)
    fields.update(kw)
    return EvalRecord(**fields)


def test_a_sound_cache_entry_is_served(tmp_path):
    path = _entry(tmp_path)
    eval_cache.store(path, _verdict())
    assert eval_cache.load(path).status == "incorrect"
    assert eval_cache.entry_problem(path) is None


@pytest.mark.parametrize("poison", ["wrong_verdict", "other_program", "moved_to_other_settings", "no_digest",
                                    "contradiction_with_recomputed_digest", "truncated"])
def test_a_poisoned_cache_entry_is_discarded_with_a_clear_log_line(tmp_path, caplog, poison):
    path = _entry(tmp_path)
    eval_cache.store(path, _verdict())
    row = json.loads(path.read_text())
    if poison == "wrong_verdict":  # valid JSON, an incorrect sample made "ok" at 42x (the case)
        row.update(status="ok", correct=True, speedup=42.0)
        path.write_text(json.dumps(row))
    elif poison == "other_program":  # a verdict on another program filed under this one
        other = _entry(tmp_path, "b" * 64)
        eval_cache.store(other, _verdict("b" * 64, status="ok", correct=True, speedup=3.0))
        path.write_text(other.read_text())
    elif poison == "moved_to_other_settings":
        moved = tmp_path / "evalcache" / "hw12" / "othersetting" / "source123456" / path.name
        moved.parent.mkdir(parents=True)
        moved.write_text(path.read_text())
        path = moved
    elif poison == "no_digest":
        del row["entry_digest"]
        path.write_text(json.dumps(row))
    elif poison == "contradiction_with_recomputed_digest":
        row.update(status="incorrect", correct=True)
        row["entry_digest"] = eval_cache._digest(row)
        path.write_text(json.dumps(row))
    else:
        truncate(path)
    with caplog.at_level(logging.WARNING, logger="vegtts.evaluate.cache"):
        assert eval_cache.load(path) is None
    assert f"evaluation cache: discarding {path}" in caplog.text and "evaluated again" in caplog.text
    assert eval_cache.entry_problem(path)


def test_the_runner_reevaluates_a_poisoned_entry(tmp_path, caplog):
    """End to end through evaluate_task: a forged "ok" verdict is not used, the real one replaces it."""
    from vegtts.evaluate import evaluate_task
    from vegtts.io import sha256_text

    spec = spec_of("scale")
    wrong = program("scale", "class ModelNew(Model):\n    def forward(self, x):\n        return x")
    sha = sha256_text(wrong)
    cache = tmp_path / "cache"
    first = evaluate_task(spec, [(sha, wrong)], FAST, cache)[0]
    assert first.status == "incorrect"
    entry = eval_cache.record_path(cache, spec, FAST, sha)
    row = json.loads(entry.read_text())
    row.update(status="ok", correct=True, speedup=42.0)
    entry.write_text(json.dumps(row))
    with caplog.at_level(logging.WARNING):
        again = evaluate_task(spec, [(sha, wrong)], FAST, cache)[0]
    assert again.status == "incorrect" and not again.cached and "discarding" in caplog.text
    assert eval_cache.load(entry).status == "incorrect"


# --- the store check -----------------------------------------------------------------------------
def _store_with_evaluations(tmp_path: Path) -> tuple[Path, Path, Path]:
    store = tmp_path / "results" / "store"
    sample = a_parquet(store / "samples/skey/s0/t.tkey.parquet")
    evaluation = store / "evaluations/skey/ekey/s0/t.tkey.parquet"
    write_parquet(evaluation, pd.DataFrame({"status": ["ok"]}), inputs={"samples": digest_of(sample)})
    return store, sample, evaluation


def test_the_store_check_moves_corrupt_and_stale_artifacts_aside(tmp_path):
    store, sample, evaluation = _store_with_evaluations(tmp_path)
    other = a_parquet(store / "samples/skey/s0/u.tkey.parquet")
    report = check_planned([str(sample), str(evaluation), str(other), str(store / "samples/skey/s0/gone.parquet")])
    assert report.corrupt == {} and report.stale == {} and report.missing == [str(store / "samples/skey/s0/gone.parquet")]
    assert report.hashed == 3

    # a second check trusts what it verified (nothing changed): nothing is hashed again
    assert check_planned([str(sample), str(evaluation), str(other)]).hashed == 0

    truncate(other)
    a_parquet(sample, n=5)  # the samples were regenerated: the evaluation no longer belongs to them
    report = check_planned([str(sample), str(evaluation), str(other)])
    assert set(report.corrupt) == {str(other)} and "truncated" in report.corrupt[str(other)]
    assert set(report.stale) == {str(evaluation)}
    assert not other.exists() and not evaluation.exists() and not manifest_path(evaluation).exists()
    moved = Path(report.moved_to)
    assert (moved / "samples/skey/s0/u.tkey.parquet").exists()
    assert (moved / "evaluations/skey/ekey/s0/t.tkey.parquet.manifest.json").exists()
    assert any("rerun snakemake" in line for line in report.lines())


def test_the_cheap_check_still_sees_a_rewritten_file(tmp_path):
    store, sample, evaluation = _store_with_evaluations(tmp_path)
    check_planned([str(sample)])
    data = bytearray(sample.read_bytes())
    data[40] ^= 1
    sample.write_bytes(bytes(data))  # same size, new mtime
    assert set(check_planned([str(sample)]).corrupt) == {str(sample)}


def test_store_verify_hashes_everything_and_checks_cache_entries(tmp_path):
    store, sample, evaluation = _store_with_evaluations(tmp_path)
    check_planned([str(sample), str(evaluation)])
    # a bit flip that keeps size and mtime (disk rot) passes the cheap check, not verify
    stat = sample.stat()
    flip_bit(sample, offset=30)
    os.utime(sample, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert check_planned([str(sample)]).corrupt == {}
    good = store / "evalcache/hw/set/src/" / ("c" * 64 + ".json")
    eval_cache.store(good, _verdict("c" * 64))
    bad = store / "evalcache/hw/set/src/" / ("d" * 64 + ".json")
    eval_cache.store(bad, _verdict("d" * 64))
    bad.write_text(bad.read_text().replace('"incorrect"', '"ok"'))
    report = verify_store(tmp_path / "results", repair=False)
    assert set(report.corrupt) == {str(sample)} and set(report.bad_cache_entries) == {str(bad)}
    assert sample.exists()  # repair=False moves nothing
    report = verify_store(tmp_path / "results")
    assert not sample.exists() and not bad.exists() and good.exists()
    assert verify_store(tmp_path / "results").whole


@pytest.mark.slow
def test_store_verify_cli_exit_status(tmp_path):
    store, sample, evaluation = _store_with_evaluations(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "vegtts.cli", "store", "verify", str(tmp_path / "results")]
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "the store is whole" in ok.stdout
    truncate(evaluation)
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and f"{evaluation} is corrupt" in bad.stdout and "moved" in bad.stdout


# --- content keys of inputs ------------------------------------------------------------------------
PROBLEM = '''import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x):
        return torch.relu(x)


def get_inputs():
    return [torch.randn(64)]


def get_init_inputs():
    return []
'''


@pytest.mark.parametrize("layout", ["dir", "kernelbench"])
def test_task_keys_follow_the_content_of_each_problem_file(tmp_path, layout):
    folder = tmp_path / ("KernelBench/level1" if layout == "kernelbench" else "problems")
    folder.mkdir(parents=True)
    (folder / "1_relu.py").write_text(PROBLEM)
    (folder / "2_other.py").write_text(PROBLEM.replace("relu", "tanh"))
    suite = ({"suite": "kernelbench", "path": str(tmp_path), "level": 1} if layout == "kernelbench"
             else {"suite": "dir", "path": str(folder)})
    ids = ["kb1_1", "kb1_2"] if layout == "kernelbench" else ["1_relu", "2_other"]
    before = task_keys(suite, ids)
    (folder / "1_relu.py").write_text(PROBLEM.replace("torch.relu(x)", "torch.nn.functional.leaky_relu(x)"))
    after = task_keys(suite, ids)
    assert after[ids[0]] != before[ids[0]] and after[ids[1]] == before[ids[1]]
    # moving the whole checkout does not change any key
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    tmp_path.rename(moved)
    suite["path"] = suite["path"].replace(str(tmp_path), str(moved))
    assert task_keys(suite, ids) == after


def test_builtin_task_keys_change_only_for_the_edited_problem(tmp_path, monkeypatch):
    import shutil

    import vegtts.tasks.suites.builtin as builtin

    copy = tmp_path / "builtin"
    shutil.copytree(builtin.BUILTIN_DIR, copy)
    monkeypatch.setattr(builtin, "BUILTIN_DIR", copy)
    ids = ["relu_where", "sigmoid_exp"]
    before = task_keys({"suite": "builtin"}, ids)
    (copy / "relu_where.py").write_text((copy / "relu_where.py").read_text() + "\n# edited\n")
    after = task_keys({"suite": "builtin"}, ids)
    assert after["relu_where"] != before["relu_where"] and after["sigmoid_exp"] == before["sigmoid_exp"]


def test_a_model_folder_fingerprint_covers_weights_and_tokenizer_and_is_cached(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(os.urandom(1 << 16))
    (model / "tokenizer.json").write_text('{"vocab": 1}')
    cache = tmp_path / "digests"
    first = folder_fingerprint(model, cache)
    calls = []
    real = vio.sha256_file
    monkeypatch.setattr("vegtts.identity.sha256_file", lambda p: calls.append(p) or real(p))
    assert folder_fingerprint(model, cache) == first and calls == []  # path + size + mtime: no hashing
    (model / "model.safetensors").write_bytes(os.urandom(1 << 16))
    second = folder_fingerprint(model, cache)
    assert second != first and [Path(c).name for c in calls] == ["model.safetensors"]
    (model / "tokenizer.json").write_text('{"vocab": 2}')
    assert folder_fingerprint(model, cache) != second


def test_a_hub_snapshot_fingerprint_follows_its_blobs(tmp_path):
    repo = tmp_path / "models--org--tiny"
    blobs, snap = repo / "blobs", repo / "snapshots" / "rev1"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for name, blob in (("config.json", "aaa"), ("model.safetensors", "bbb")):
        (blobs / blob).write_text(blob)
        (snap / name).symlink_to(Path("../../blobs") / blob)
    first = hub_fingerprint(snap, None)
    (blobs / "ccc").write_text("ccc")
    (snap / "model.safetensors").unlink()
    (snap / "model.safetensors").symlink_to(Path("../../blobs/ccc"))
    assert hub_fingerprint(snap, None) != first


def test_the_digest_cache_survives_a_read_only_store(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 100)
    monkeypatch.setattr("vegtts.identity.write_json", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "ro")))
    assert cached_sha256(f, tmp_path / "cache") == vio.sha256_file(f)


# --- hardware is not part of any key --------------------------------------------------------------
def test_keys_do_not_depend_on_the_machine_that_parses(monkeypatch):
    from vegtts.config import validate_config
    from vegtts.io import hardware_key
    from vegtts.plan import build_plan

    cfg = validate_config({"tasks": {"ids": ["relu_where"]}})
    ident = {"test": "model"}
    here = build_plan(cfg, ["relu_where"], "m", model_ident=ident)
    key_here = hardware_key()
    monkeypatch.setenv(vio.HARDWARE_OVERRIDE_ENV, "node-b")
    assert hardware_key() != key_here  # the override is a different identity for the cache and records
    there = build_plan(cfg, ["relu_where"], "m", model_ident=ident)
    assert (there.base_sample_key, there.base_eval_key, there.base_eval_files()) == \
        (here.base_sample_key, here.base_eval_key, here.base_eval_files())


def test_plan_and_evaluator_agree_on_what_is_not_a_verdicts_identity():
    from vegtts.evaluate.settings import _CUDA_NOT_IN_CACHE_KEY, _CUDA_ONLY, _NOT_IN_CACHE_KEY
    from vegtts.plan import EVAL_CUDA_NOT_IDENTITY, EVAL_CUDA_ONLY, EVAL_NOT_IDENTITY

    assert (EVAL_NOT_IDENTITY, EVAL_CUDA_ONLY, EVAL_CUDA_NOT_IDENTITY) == (_NOT_IN_CACHE_KEY, _CUDA_ONLY, _CUDA_NOT_IN_CACHE_KEY)


# --- a full disk is named ------------------------------------------------------------------------------
def test_a_full_disk_is_named_in_the_log_and_on_the_callers_stderr(tmp_path):
    """A job that hits ENOSPC says so in its log (when a line still fits) and in one line on the
    stderr Snakemake shows; the real-tmpfs version of this is in tests/test_store_faults.py."""
    log = tmp_path / "job.log"
    script = (
        "import errno, sys, vegtts.cli as cli, vegtts.cli_analysis as commands\n"
        "def full(args):\n"
        f"    raise OSError(errno.ENOSPC, 'No space left on device', {str(tmp_path / 'x.parquet')!r})\n"
        "commands.cmd_figures = full\n"
        f"sys.exit(cli.main(['--log', {str(log)!r}, 'figures', '--tables', 't', '--out', 'o']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "No space left on device" in log.read_text()
    assert "vegtts figures: No space left on device writing" in proc.stderr and f"(log: {log})" in proc.stderr
    assert proc.stdout == ""
