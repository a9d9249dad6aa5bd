"""The shared evaluation cache under many concurrent writers and readers.

Snakemake runs several `vegtts evaluate` jobs at once (locally, or on many cluster nodes sharing one
filesystem), and inside each job a thread pool stores verdicts. Here several processes, each with
several threads, write and read the same few cache entries as fast as they can: every read must be
either a miss or one complete record that some writer stored, never a mix or a torn file; nothing is
left behind but complete entries with the permissions a plain open() would give.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import stat
import threading
import time
from pathlib import Path

from vegtts.evaluate import cache as eval_cache
from vegtts.records import EvalRecord, from_row, to_row

N_PROCESSES = 4
N_THREADS = 3
N_PATHS = 4
SECONDS = 3.0  # each worker stops after this long or MAX_OPS operations, whichever is first
MAX_OPS = 4000


def _record(writer: str, i: int, program: str) -> EvalRecord:
    # a large error text widens the window in which a non-atomic write would be seen half done; the
    # entry's program is the file's name (a cache entry must claim the program it is filed under)
    tag = f"{writer}:{i}"
    return EvalRecord(task_id="t", code_sha256=program, status="ok", correct=True, error=(tag + ";") * 4000,
                      guard=tag, speedup=float(i), n_timing_rounds=i)


def _consistent(record: EvalRecord) -> bool:
    tag = record.guard
    return record.error == (tag + ";") * 4000 and record.n_timing_rounds == int(tag.rsplit(":", 1)[1]) == record.speedup


def _hammer(cache_dir: str, worker: int) -> tuple[int, int, int]:
    """Store and load random entries from N_THREADS threads; returns (writes, good reads, bad reads)."""
    paths = [Path(cache_dir) / "hw" / "settings" / "task" / f"{n}.json" for n in range(N_PATHS)]
    totals = [0, 0, 0]
    lock = threading.Lock()

    def loop(thread: int) -> None:
        rng = random.Random(worker * 100 + thread)
        writes = good = bad = 0
        deadline = time.monotonic() + SECONDS
        for i in range(MAX_OPS):
            if time.monotonic() > deadline:
                break
            path = rng.choice(paths)
            if rng.random() < 0.5:
                eval_cache.store(path, _record(f"w{worker}.{thread}", i, path.stem))
                writes += 1
            else:
                got = eval_cache.load(path)
                if got is not None:
                    good, bad = (good + 1, bad) if _consistent(got) else (good, bad + 1)
        with lock:
            for k, v in enumerate((writes, good, bad)):
                totals[k] += v

    threads = [threading.Thread(target=loop, args=(t,)) for t in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tuple(totals)


def test_concurrent_writers_and_readers_never_see_a_torn_entry(tmp_path: Path):
    umask = os.umask(0o022)
    os.umask(umask)
    with multiprocessing.get_context("fork").Pool(N_PROCESSES) as pool:
        results = pool.starmap(_hammer, [(str(tmp_path), w) for w in range(N_PROCESSES)])
    writes = sum(r[0] for r in results)
    good = sum(r[1] for r in results)
    bad = sum(r[2] for r in results)
    print(f"{writes} writes, {good} reads of complete entries, {bad} torn reads")
    assert writes > 100 and good > 100, results  # the test really raced
    assert bad == 0
    entries = list(tmp_path.rglob("*"))
    files = [p for p in entries if p.is_file()]
    assert sorted(p.name for p in files) == sorted(f"{n}.json" for n in range(N_PATHS)), "left-over temp files"
    for path in files:
        assert _consistent(from_row(EvalRecord, json.loads(path.read_text())))
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, oct(path.stat().st_mode)
    for folder in (p for p in entries if p.is_dir()):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask, (folder, oct(folder.stat().st_mode))


def test_a_damaged_entry_is_a_miss_and_is_replaced(tmp_path: Path):
    path = tmp_path / "e.json"
    good = _record("w", 7, "e")
    eval_cache.store(path, good)
    text = path.read_text()
    for damaged in (text[: len(text) // 2], "", "[1, 2]"):
        path.write_text(damaged)
        assert eval_cache.load(path) is None
    eval_cache.store(path, good)
    assert json.dumps(to_row(eval_cache.load(path))) == json.dumps(to_row(good))  # NaN != NaN, so compare JSON
