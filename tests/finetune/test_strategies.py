"""Training beyond the head (issue 5): strategies, the lean backward, the
memory planner against a measured peak, the budget, kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from edgetl.errors import DataError
from edgetl.finetune import auto_candidates, parse_strategy
from edgetl.finetune.lean import LeanMode
from edgetl.finetune.net import build_net
from edgetl.finetune.planner import choose, estimate, plan, profile_strategy
from edgetl.training.rundir import state_dir_for
from edgetl.training import train
from edgetl.zoo import get_spec

BACKBONE = "efficientnet_lite0"
SPEC32 = get_spec(BACKBONE).input_spec.replace(image_size=32)


def digits_folder(root, classes=3, per_class=16) -> str:
    """Real handwritten digits (scikit-learn's scans), one folder per class."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in range(classes):
        os.makedirs(os.path.join(root, str(c)), exist_ok=True)
        for j, i in enumerate(np.flatnonzero(d.target == c)[:per_class]):
            Image.fromarray(np.clip(d.images[i] * 16, 0, 255).astype(np.uint8)).save(
                os.path.join(root, str(c), f"{j}.png"))
    return str(root)


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return digits_folder(tmp_path_factory.mktemp("ft") / "digits")


def test_parse_strategy():
    assert parse_strategy("last-2") == ("last", 2)
    assert parse_strategy("BIAS") == ("bias", 0)
    for bad in ("last-0", "lastK", "everything"):
        with pytest.raises(DataError):
            parse_strategy(bad)
    assert auto_candidates(10)[0] == "head" and auto_candidates(5000)[0] == "full"


@pytest.mark.parametrize("strategy", ["head", "bias", "last-2", "full", "scratch"])
def test_strategy_trains_what_it_says(strategy):
    """One optimizer step: exactly the strategy's parameters move; pretrained
    BatchNorm statistics never do; the prefix + suffix split computes the
    same logits as the whole model."""
    net = build_net(BACKBONE, "default", strategy, 4, SPEC32)
    x = torch.randn(6, 3, 32, 32)
    net.set_mode(False)
    with torch.no_grad():
        assert torch.allclose(net(net.prefix(x)), net.model(x), atol=1e-5)
    before = {k: v.clone() for k, v in net.model.state_dict().items()}
    opt = torch.optim.SGD(net.trainable_parameters(), lr=0.1)
    net.set_mode(True)
    with LeanMode():
        loss = torch.nn.functional.cross_entropy(net(net.prefix(x)), torch.tensor([0, 1, 2, 3, 0, 1]))
    loss.backward()
    opt.step()
    after = net.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    params = dict(net.model.named_parameters())
    trainable = {k for k, p in params.items() if p.requires_grad}
    assert changed & set(params) == trainable
    stats = {k for k in before if k.endswith(("running_mean", "running_var"))}
    if strategy == "scratch":
        assert changed & stats, "from scratch, BatchNorm learns its statistics"
        return
    assert not changed & stats, "pretrained BatchNorm statistics stay frozen (eval mode)"
    head = {k for k in trainable if k.startswith("_fc")}
    expected = {"head": head, "bias": head | {k for k in params if k.endswith("bias")},
                "full": set(params)}.get(strategy)
    if expected is not None:
        assert trainable == expected
    else:  # last-2: the final stage with the 1x1 head convolution, the stage before it, the classifier
        assert "_conv_head.weight" in trainable and "_blocks.15._project_conv.weight" in trainable
        assert "_conv_stem.weight" not in trainable and "_blocks.0._depthwise_conv.weight" not in trainable


def test_last_k_refuses_families_without_stages():
    with pytest.raises(DataError, match="last-K needs a backbone built of stages"):
        build_net("vgg11", None, "last-1", 3, get_spec("vgg11").input_spec.replace(image_size=32))


def test_lean_backward_same_gradients_less_memory():
    """LeanMode: the same forward and gradients (to float rounding), a fraction of the
    memory kept for the backward when only biases train."""
    net = build_net(BACKBONE, "default", "bias", 5, SPEC32.replace(image_size=64))
    net.set_mode(False)
    x = torch.randn(4, 3, 64, 64)
    target = torch.tensor([0, 1, 2, 3])
    results = {}
    weights = {p.untyped_storage().data_ptr() for p in net.model.parameters()}
    for lean in (False, True):
        saved = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in weights:  # activations only
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        net.model.zero_grad()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            if lean:
                with LeanMode():
                    logits = net(x)
            else:
                logits = net(x)
        torch.nn.functional.cross_entropy(logits, target).backward()
        results[lean] = (logits.detach(), [p.grad.clone() for p in net.trainable_parameters()], sum(saved.values()))
    assert torch.allclose(results[False][0], results[True][0], atol=1e-5)
    for a, b in zip(results[False][1], results[True][1]):
        assert float((a - b).abs().max()) <= 2e-3 * float(a.abs().max())
    assert results[True][2] * 5 < results[False][2]


@pytest.mark.slow
def test_planner_orders_strategies_and_scales_with_batch():
    plans = {p.strategy: p for p in plan(BACKBONE, 1000, 10, SPEC32, 32)}
    assert plans["bias"].estimated_mb < plans["full"].estimated_mb
    assert plans["head"].parts_mb["features"] == pytest.approx(3 * 1000 * 1280 * 4 / 1e6)  # kept in RAM
    assert plans["last-1"].estimated_mb < plans["last-2"].estimated_mb < plans["last-3"].estimated_mb
    assert plans["full"].estimated_mb >= 2.5 * plans["head"].estimated_mb
    prof = profile_strategy(BACKBONE, "full", 10, SPEC32)
    small, big = (estimate(prof, b, 800, 200, 1000) for b in (8, 64))
    assert big.parts_mb["activations"] == pytest.approx(8 * small.parts_mb["activations"], rel=0.05)
    assert big.parts_mb["weights"] == small.parts_mb["weights"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy,size,batch", [("full", 32, 32), ("bias", 64, 16)])
def test_planner_within_25_percent_of_measured_peak(strategy, size, batch):
    """The estimate against the peak resident memory of a real training run
    (fresh process, one epoch, VmHWM above the idle footprint)."""
    out = subprocess.run([sys.executable, "-m", "edgetl.finetune.measure", "--strategy", strategy, "--image-size",
                          str(size), "--batch-size", str(batch), "--images", "160"],
                         capture_output=True, text=True, timeout=600, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["measured_mb"] > 20
    assert 0.75 <= m["estimated_mb"] / m["measured_mb"] <= 1.25, m


@pytest.mark.slow
def test_budget_lowers_batch_size_and_refuses_with_what_fits():
    strategy, p = choose(BACKBONE, "full", 1000, 10, SPEC32, 64, None, 0.2)
    assert (strategy, p.batch_size) == ("full", 64)
    budget = p.estimated_mb * 0.6
    strategy, lowered = choose(BACKBONE, "full", 1000, 10, SPEC32, 64, budget, 0.2)
    assert lowered.batch_size < 64 and lowered.estimated_mb <= budget
    # auto with a few photos per class takes the frozen base
    assert choose(BACKBONE, "auto", 50, 5, SPEC32, 32, None, 0.2)[0] == "head"
    head = choose(BACKBONE, "head", 1000, 10, SPEC32, 32, None, 0.2)[1].estimated_mb
    with pytest.raises(DataError) as err:
        choose(BACKBONE, "full", 1000, 10, SPEC32, 32, head + 5, 0.2)
    msg = str(err.value)
    assert "\n" not in msg and "strategies that fit: " in msg and "head" in msg and "full (" not in msg
    with pytest.raises(DataError, match="no strategy fits"):
        choose(BACKBONE, "full", 1000, 10, SPEC32, 32, 1, 0.2)


@pytest.mark.slow  # profiles every strategy first: the full suite
def test_cli_refuses_over_budget_before_any_work(digits_dir, tmp_path):
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "edgetl.cli", "train", digits_dir, "--out", str(out), "--strategy", "full",
                          "--max-memory-mb", "20"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgetl: error: --strategy full needs"), res.stderr
    assert "strategies that fit" in lines[0] or "no strategy fits" in lines[0]
    assert not out.exists() and not os.path.exists(state_dir_for(str(out)))


@pytest.mark.slow  # the plan of every strategy profiled: the full suite (the refusal before work stays)
def test_plan_cli_json(digits_dir):
    res = subprocess.run([sys.executable, "-m", "edgetl.cli", "plan", digits_dir, "--max-memory-mb", "60", "--json"],
                         capture_output=True, text=True, timeout=300, check=True)
    plans = json.loads(res.stdout)
    names = [p["strategy"] for p in plans]
    assert {"head", "bias", "full", "scratch"} <= set(names)
    for p in plans:
        assert p["fits"] == (p["estimated_mb"] <= 60)
        assert p["image_size"] == 32  # 8x8 scans: the smallest size of the ladder
    assert next(p for p in plans if p["strategy"] == "head")["fits"]
    assert not next(p for p in plans if p["strategy"] == "full")["fits"]


@pytest.mark.parametrize("strategy", ["bias", pytest.param("last-2", marks=pytest.mark.slow)])
def test_fine_tuned_bundle_runs_on_the_device_runtime(digits_dir, tmp_path, strategy):
    from edgetl.runtime import Predictor
    from edgetl.runtime.personalize import Personalizer

    out = tmp_path / strategy
    result = train(digits_dir, out, strategy=strategy, epochs=6, patience=6, learning_rate=3e-3)
    m = result.metrics
    assert m["strategy"]["name"] == strategy and m["strategy"]["epochs_run"] == 6
    for name in ("model.onnx", "model.int8.onnx", "features.onnx", "head.safetensors", "train_step.onnx",
                 "labels.txt", "report.html", "README.md", "config.toml"):
        assert (out / name).is_file(), name
    assert not os.path.exists(state_dir_for(str(out))), "the training state is removed once published"
    proba = Predictor(str(out)).predict_proba(result.val_paths)
    acc = float((proba.argmax(1) == result.val_targets).mean())
    assert acc == pytest.approx(m["val_accuracy"], abs=1e-9) and m["agreement_fp32"] == 1.0
    if strategy == "last-2":
        assert m["val_accuracy"] >= 0.8  # three digit classes
    # personalization starts from the fine-tuned features
    p = Personalizer(str(out), str(tmp_path / f"state-{strategy}"))
    assert p.labels == ["0", "1", "2"]


def _train_cmd(data, out, *extra):
    return [sys.executable, "-m", "edgetl.cli", "train", data, "--out", str(out), "--strategy", "full", "--epochs", "6",
            "--batch-size", "8", *extra]


@pytest.mark.slow
def test_kill_and_resume_ends_like_an_uninterrupted_run(digits_dir, tmp_path):
    from safetensors.numpy import load_file

    whole = tmp_path / "whole"
    subprocess.run(_train_cmd(digits_dir, whole), check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    ckpt = os.path.join(state_dir_for(str(killed)), "checkpoint.pt")
    proc = subprocess.Popen(_train_cmd(digits_dir, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not os.path.exists(ckpt) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.exists(ckpt) and not killed.exists(), "killed after the first checkpoint, before publishing"
    done = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= done < 6

    # Starting again without --resume would lose the epochs done: refused.
    res = subprocess.run(_train_cmd(digits_dir, killed), capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "--resume" in res.stderr
    # Resuming with other settings: refused, the checkpoint kept.
    res = subprocess.run(_train_cmd(digits_dir, killed, "--resume", "--seed", "1"), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode != 0 and "other settings" in res.stderr and os.path.exists(ckpt)

    res = subprocess.run(_train_cmd(digits_dir, killed, "--resume"), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"resumed after epoch {done}" in res.stdout
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert b["strategy"]["resumed_after_epoch"] == done
    for ra, rb in zip(a["head"]["history"], b["head"]["history"], strict=True):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)
        assert ra["val_accuracy"] == rb["val_accuracy"]
    ha, hb = load_file(str(whole / "head.safetensors")), load_file(str(killed / "head.safetensors"))
    np.testing.assert_allclose(ha["weight"], hb["weight"], atol=1e-5)
    assert a["val_accuracy"] == b["val_accuracy"]


def test_resume_without_a_checkpoint_and_head_resume_are_refused(digits_dir, tmp_path):
    with pytest.raises(DataError, match="no interrupted run"):
        train(digits_dir, tmp_path / "none", strategy="full", resume=True)
    with pytest.raises(DataError, match="--resume continues a fine-tuning run"):
        train(digits_dir, tmp_path / "none", strategy="head", resume=True)


@pytest.mark.slow  # a whole auto run (~10 s): the full suite
def test_auto_with_few_photos_takes_the_searched_head_path(digits_dir, tmp_path):
    out = tmp_path / "auto"
    result = train(digits_dir, out, strategy="auto", search="off")
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["strategy"]["name"] == "head" and saved["strategy"]["asked"] == "auto"
    assert result.searcher is not None and (out / "model.onnx").is_file()
