"""The hashing pass's keys and the feature cache's index without a Python
object per image (issue 16): KeyArray reads like the list of bytes/None it
replaces, the passes' questions (distinct keys, keys in a set) are answered
with numpy, the cache's sorted index finds what a dict found (also keys
whose first 8 bytes agree, and the newest row of a key put twice), and the
Ray engine's pass plan holds the chunks the rows used to."""

from __future__ import annotations

import hashlib
import tracemalloc
import types

import numpy as np
import pytest

from edgetl.data.paths import PathList
from edgetl.features.cache import FeatureCache, _KeyIndex
from edgetl.features.extract import _misses, _Pass, _skipped
from edgetl.features.keys import KeyArray


def _key(i, salt: str = "") -> bytes:
    return hashlib.sha256(f"{salt}{i}".encode()).digest()


def test_key_array_reads_like_the_list():
    plain = [_key(0), None, _key(2), _key(0), None, _key(5)]
    keys = KeyArray.of(plain)
    assert len(keys) == 6 and list(keys) == plain and [keys[i] for i in range(6)] == plain
    assert keys[np.int64(2)] == plain[2] and keys[-1] == plain[-1]
    assert keys[1:4] == plain[1:4] and keys[::-2] == plain[::-2] and keys[9:] == []
    keys[1] = _key(1)
    keys[2] = None
    assert list(keys) == [_key(0), _key(1), None, _key(0), None, _key(5)]
    assert list(keys.take([5, 0])) == [_key(5), _key(0)]
    assert keys.first_of_each(np.flatnonzero(keys.known)).tolist() == [0, 1, 5]
    assert keys.where_in({_key(0): "x", _key(9): "y"}).tolist() == [0, 3] and keys.where_in({}).tolist() == []
    with pytest.raises(ValueError):
        keys[0] = b"short"
    assert list(KeyArray(0)) == []


def test_key_array_costs_33_bytes_a_key():
    n = 50_000
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        keys = KeyArray(n)
        for i in range(0, n, 1000):
            keys[i] = _key(i)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (held - base) / n < 34 and len(keys) == n


def test_misses_are_the_first_of_each_key_some_cache_lacks(tmp_path):
    keys = KeyArray.of([_key(0), _key(1), _key(0), None, _key(3), _key(1), _key(4), _key(5)])
    have, lack = FeatureCache(str(tmp_path / "a")), FeatureCache(str(tmp_path / "b"))
    have.put([_key(4)], np.ones((1, 2), np.float32))
    have.flush()
    state = _Pass(keys, failed={_key(3): "not an image"}, lost={1: "gone"})
    one = [types.SimpleNamespace(cache=have)]
    assert _misses(one, state).tolist() == [0, 5, 7]  # 1 lost: its copy at 5 stands in; 4 failed; 6 cached
    both = [*one, types.SimpleNamespace(cache=lack)]
    assert _misses(both, state).tolist() == [0, 5, 6, 7]
    assert state.usable().tolist() == [True, False, True, False, False, True, True, True]
    paths = PathList([f"/d/{i}.png" for i in range(8)])
    assert _skipped(paths, state) == [{"path": "/d/1.png", "reason": "gone"},
                                      {"path": "/d/4.png", "reason": "not an image"}]


def test_cache_index_finds_what_a_dict_found(tmp_path, monkeypatch):
    monkeypatch.setattr(_KeyIndex, "MIN_MERGE", 8)  # merges happen in a small test
    folder = str(tmp_path / "c")
    cache = FeatureCache(folder, flush_rows=5)
    keys = [_key(i) for i in range(60)]
    feats = np.arange(60 * 3, dtype=np.float32).reshape(60, 3)
    for lo in range(0, 60, 7):
        cache.put(keys[lo : lo + 7], feats[lo : lo + 7])
        assert all(k in cache for k in keys[: lo - cache.num_pending()])  # whatever was flushed is found
    cache.flush()
    for c in (cache, FeatureCache(folder)):  # in memory, merged as it grew, and read again from the shards
        assert len(c) == 60 and all(k in c for k in keys) and _key(0, "other") not in c and None not in c
        assert sorted(c._index) == sorted(keys)
        assert c.contains(np.frombuffer(b"".join(keys), np.uint8).reshape(-1, 32)).all()
        order = np.random.default_rng(1).permutation(60)
        np.testing.assert_array_equal(c.get([keys[i] for i in order]), feats[order])
        np.testing.assert_array_equal(c.get(np.stack([np.frombuffer(keys[i], np.uint8) for i in order])),
                                      feats[order])
        assert c.contains([_key(1), _key(1, "x"), _key(59)]).tolist() == [True, False, True]
        with pytest.raises(KeyError):
            c.get([keys[0], _key(0, "missing")])
        assert c.get([]).shape == (0, 0)


def test_cache_index_keys_sharing_their_first_8_bytes_and_a_key_put_twice(tmp_path):
    base = _key(7)
    twins = [base[:8] + _key(i, "t")[8:] for i in range(5)]  # the same 8-byte prefix, other keys
    cache = FeatureCache(str(tmp_path / "c"), flush_rows=1)
    for i, key in enumerate(twins[:4]):
        cache.put([key], np.full((1, 2), i, np.float32))
    cache.put([twins[1]], np.full((1, 2), 9, np.float32))  # the same key again: the newest row wins
    assert cache.get(twins[:4])[:, 0].tolist() == [0, 9, 2, 3]
    again = FeatureCache(str(tmp_path / "c"))  # shards are read in the order of their (random) names: either row
    assert again.get(twins[:4])[:, 0].tolist() in ([0, 9, 2, 3], [0, 1, 2, 3])
    for c in (cache, again):
        c._index.merge()
        assert [k in c for k in twins] == [True, True, True, True, False]
        assert c.contains(twins).tolist() == [True, True, True, True, False] and len(c) == 4
    assert cache.get(twins[:4])[:, 0].tolist() == [0, 9, 2, 3]


def test_cache_index_costs_far_less_than_a_dict(tmp_path):
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 256, (20_000, 32), dtype=np.uint8)
    index = _KeyIndex()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        index.build([(keys, 0)])
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (held - base) / len(keys) <= 32 + 8 + 8 + 1  # key, its prefix, its row (a dict of bytes: ~190)
    assert (index.find_many(keys) == np.arange(len(keys))).all()


def test_ray_pass_plan_holds_the_chunk_rows(tmp_path):
    """The Ray engine's plan gives each actor the row the driver used to
    build for it (positions, paths, keys as listed, a bit per graph holding
    it), chunk by chunk, and pickles without the rest of the listing."""
    import pickle

    from edgetl.features.ray_engine import _chunk_rows, _pass_plan

    plain = [f"/data/c{i % 3}/{i:03d}.png" for i in range(11)]
    keys = KeyArray.of([_key(i) for i in range(11)])
    held = FeatureCache(str(tmp_path / "h"))
    held.put([_key(2), _key(9)], np.zeros((2, 1), np.float32))
    held.flush()
    empty = FeatureCache(str(tmp_path / "e"))
    graphs = [types.SimpleNamespace(cache=held, batch_size=4), types.SimpleNamespace(cache=empty)]
    state = _Pass(keys)
    for paths in (PathList(plain, "/data/"), plain):
        for misses in (np.arange(11), np.array([1, 2, 5, 9, 10])):
            plan = _pass_plan(graphs, paths, misses, state)
            rows = list(_chunk_rows(plan))
            assert len(plan) == len(rows) == -(-len(misses) // 4)
            m = misses.tolist()
            assert rows == [{"i": m[s : s + 4], "path": [plain[i] for i in m[s : s + 4]],
                             "key": [_key(i) for i in m[s : s + 4]],
                             "have": [1 if i in (2, 9) else 0 for i in m[s : s + 4]]} for s in range(0, len(m), 4)]
            again = pickle.loads(pickle.dumps(plan, protocol=5))
            assert list(_chunk_rows(again)) == rows
            assert again.paths.nbytes() <= sum(len(plain[i]) - len("/data/") + 8 for i in m) + 8 + len("/data/")
