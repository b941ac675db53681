"""finetune.engine, .store and .stages on tiny backbones (milliseconds): the
row store, the atomic checkpoint, a resumed run ending exactly like an
uninterrupted one, and the block groups ``last-K`` splits a backbone into.
(tests/finetune/test_strategies.py runs the real networks end to end.)"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch

from edgetl.errors import DataError
from edgetl.finetune.engine import CHECKPOINT, cache_prefix, finetune, load_checkpoint
from edgetl.finetune.net import Net
from edgetl.finetune.stages import feature_stages
from edgetl.finetune.store import RowStore
from edgetl.zoo import create_tiny

SIZE = 32
CLASSES = 3
STAGELESS = {"vgg11": "VGG", "alexnet": "AlexNet", "googlenet": "GoogLeNet", "inception_v3": "InceptionV3"}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _images(folder, rows: int = 12) -> tuple[RowStore, np.ndarray]:
    store = RowStore(os.path.join(folder, "images.f32"), (3, SIZE, SIZE), rows)
    writer = store.writer()
    rng = np.random.default_rng(0)
    writer.write(rng.normal(size=(rows, 3, SIZE, SIZE)).astype(np.float32))
    writer.finish()
    return store, np.arange(rows) % CLASSES


def _net(strategy: str = "last-2") -> Net:
    return Net(create_tiny("resnet18", num_classes=CLASSES), strategy)


# ------------------------------------------------------------------ RowStore


def test_row_store_complete_only_once_finished(tmp_path):
    store = RowStore(str(tmp_path / "rows.f32"), (2, 3), 4)
    assert not store.complete
    writer = store.writer()
    rows = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    writer.write(rows[:3])
    assert not store.complete
    writer.write(rows[3:])
    writer.finish()
    assert store.complete
    assert json.load(open(tmp_path / "rows.f32.json")) == {"shape": [2, 3], "rows": 4}
    assert sorted(os.listdir(tmp_path)) == ["rows.f32", "rows.f32.json"]  # no temporary file left
    np.testing.assert_array_equal(store.read([3, 0]), rows[[3, 0]])
    assert not RowStore(str(tmp_path / "rows.f32"), (2, 3), 5).complete  # another size: not this store


# ------------------------------------------------------------------- stages


@pytest.mark.parametrize("name", sorted(STAGELESS))
def test_last_k_refuses_families_without_stages(name):
    with pytest.raises(DataError) as info:
        Net(create_tiny(name, num_classes=CLASSES), "last-1")
    message = str(info.value)
    match = re.fullmatch(r"--strategy last-K needs a backbone built of stages \((.+)\); (\w+) is not: "
                         r"use bias, full or head", message)
    assert match and match.group(2) == STAGELESS[name], message
    # the families with stage groups, from the registry (a new one joins the list by itself)
    assert {"efficientnet_lite*", "mobilenet_*", "resnet*"} <= set(match.group(1).split(", "))


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v3_small", "resnet18"])
def test_prefix_then_suffix_is_the_model(name):
    model = create_tiny(name, num_classes=CLASSES)
    groups = feature_stages(model)
    net = Net(model, "last-2")
    assert net.cut == len(groups) - 2
    with pytest.raises(DataError, match=f"has {len(groups)} block groups"):
        Net(create_tiny(name, num_classes=CLASSES), f"last-{len(groups)}")
    x = torch.randn(2, 3, SIZE, SIZE)
    net.set_mode(False)
    with torch.no_grad():
        torch.testing.assert_close(net(net.prefix(x)), model(x))
    trainable = {id(p) for p in net.trainable_parameters()}
    assert {id(p) for g in groups[-2:] for p in g.parameters()} <= trainable
    assert not {id(p) for p in groups[0].parameters()} & trainable


# ------------------------------------------------------- checkpoint, resume


def _train(net, store, y, state_dir, **kw):
    os.makedirs(state_dir, exist_ok=True)
    config = {"backbone": "resnet18-tiny", "strategy": net.strategy}
    return finetune(net, store, y, np.arange(9), np.arange(9, 12), epochs=3, batch_size=4, learning_rate=1e-2,
                    patience=5, seed=7, state_dir=str(state_dir), config=config, **kw)


def test_resumed_run_ends_like_an_uninterrupted_one(tmp_path):
    images, y = _images(tmp_path)
    straight = _net()
    cached = cache_prefix(straight, images, str(tmp_path), key="k")
    assert cached.complete and cached.shape != images.shape
    assert cache_prefix(_net(), images, str(tmp_path), key="k").path == cached.path  # reused
    whole = _train(straight, cached, y, tmp_path / "a")
    assert whole.epochs_run == 3 and whole.resumed_from == 0
    assert sorted(os.listdir(tmp_path / "a")) == [CHECKPOINT]  # written under a temporary name, renamed

    class Killed(Exception):
        pass

    def kill_after_first(record):
        if record["epoch"] == 1:
            raise Killed  # after the checkpoint of epoch 1 was written

    with pytest.raises(Killed):
        _train(_net(), cached, y, tmp_path / "b", on_epoch=kill_after_first)
    assert load_checkpoint(str(tmp_path / "b"))["epoch"] == 1
    resumed_net = _net()
    resumed = _train(resumed_net, cached, y, tmp_path / "b", resume=True)
    assert resumed.resumed_from == 1 and [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert [r["train_loss"] for r in resumed.history] == pytest.approx([r["train_loss"] for r in whole.history])
    assert resumed.best_epoch == whole.best_epoch and resumed.val_accuracy == whole.val_accuracy
    for (k, a), b in zip(straight.model.state_dict().items(), resumed_net.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_resume_with_other_settings_and_damaged_checkpoints_are_refused(tmp_path):
    images, y = _images(tmp_path)
    net = _net("bias")
    _train(net, images, y, tmp_path)
    with pytest.raises(DataError, match="other settings"):
        finetune(_net("bias"), images, y, np.arange(9), np.arange(9, 12), epochs=3, batch_size=4,
                 learning_rate=1e-2, patience=5, seed=7, state_dir=str(tmp_path), config={"other": 1}, resume=True)
    (tmp_path / CHECKPOINT).write_bytes(b"half a checkpoint")
    with pytest.raises(DataError, match="cannot be read"):
        load_checkpoint(str(tmp_path))
    torch.save({"format": "something else"}, tmp_path / CHECKPOINT)
    with pytest.raises(DataError, match="not an edgetl checkpoint"):
        load_checkpoint(str(tmp_path))
    assert load_checkpoint(str(tmp_path / "nowhere")) is None
