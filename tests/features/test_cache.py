"""features.cache: whole shards on disk, found again by the next run; what a
killed writer left half-written is swept, what a live one writes is not."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from edgetl.errors import StorageError
from edgetl.features.cache import FeatureCache, sweep_dead_writers


def _keys(n: int, salt: str = "") -> list[bytes]:
    return [hashlib.sha256(f"{salt}{i}".encode()).digest() for i in range(n)]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_rows_survive_a_reopen(tmp_path):
    folder = str(tmp_path / "cache")
    cache = FeatureCache(folder, flush_rows=4)
    keys = _keys(6)
    feats = np.arange(6 * 3, dtype=np.float32).reshape(6, 3)
    cache.put(keys[:4], feats[:4])  # reaches flush_rows: one shard written
    assert len([n for n in os.listdir(folder) if n.startswith("shard-")]) == 1
    cache.put(keys[4:], feats[4:])
    cache.flush()
    shards = sorted(n for n in os.listdir(folder) if n.startswith("shard-"))
    assert len(shards) == 2 and all(n.endswith(".npz") for n in shards)
    assert not [n for n in os.listdir(folder) if n.startswith(".")]  # no temporary file left
    again = FeatureCache(folder)
    assert len(again) == 6 and keys[5] in again and _keys(1, "other")[0] not in again
    np.testing.assert_array_equal(again.get([keys[5], keys[0]]), feats[[5, 0]])
    assert again.get([]).shape == (0, 0)


def test_unreadable_shard_is_a_miss(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "shard-broken.npz").write_bytes(b"not a zip")
    cache = FeatureCache(str(folder))
    assert len(cache) == 0


def test_dead_writers_are_swept_live_ones_kept(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    dead = folder / f".shard-{'a' * 32}.{_dead_pid()}.tmp.npz"
    live = folder / f".shard-{'b' * 32}.{os.getpid()}.tmp.npz"
    nameless = folder / ".shard-c.tmp.npz"  # no PID: nobody can be writing it
    for path in (dead, live, nameless):
        path.write_bytes(b"half a shard")
    assert sweep_dead_writers(str(folder)) == 2
    assert sorted(os.listdir(folder)) == [live.name]
    FeatureCache(str(folder))  # opening a cache sweeps too
    assert sorted(os.listdir(folder)) == [live.name]


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    folder = str(tmp_path / "cache")
    cache = FeatureCache(folder)

    def full_disk(path, **arrays):
        with open(path, "wb") as fh:
            fh.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    cache.put(_keys(2), np.zeros((2, 3), np.float32))
    with pytest.raises(StorageError, match="disk is full"):
        cache.flush()
    assert os.listdir(folder) == []
