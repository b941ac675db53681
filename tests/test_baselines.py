"""The raw-pixel baseline every run reports (``edgetl.baselines``: a ridge
classifier on downscaled pixels), on scikit-learn's digits as 8x8 images.
The naive final-layer baseline is asserted on a trained bundle in test_run.py."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgetl.baselines import raw_pixel_baseline


def _digit_images(d, idx):
    # 0..16 ink levels -> 8-bit grey images.
    return [Image.fromarray((d.images[i] * (255 / 16)).round().astype(np.uint8), "L") for i in idx]


def test_raw_pixel_baseline_on_digit_images(digits, tmp_path):
    d, split = digits
    train, val, test = (_digit_images(d, split[k]) for k in ("train", "val", "test"))
    result, clf = raw_pixel_baseline(train, d.target[split["train"]], val, d.target[split["val"]])
    test_acc = clf.score(test, d.target[split["test"]])
    print(f"raw pixels: val {result['val_accuracy']:.4f} test {test_acc:.4f} alpha={result['alpha']}")
    assert result["model"] == "ridge_classifier"
    assert result["image_size"] == 8 and result["grayscale"] is True and result["num_features"] == 64
    assert result["val_accuracy"] >= 0.9 and test_acc >= 0.9
    # Paths work too, and give the same features as the PIL images.
    paths = []
    for i, image in enumerate(test[:20]):
        paths.append(str(tmp_path / f"{i}.png"))
        image.save(paths[-1])
    np.testing.assert_array_equal(clf.features(paths), clf.features(test[:20]))
    small, _ = raw_pixel_baseline(train[:200], d.target[split["train"]][:200], val, d.target[split["val"]],
                                  image_size=8, grayscale=False, alpha=0.1)
    assert small["alpha"] == 0.1 and small["num_features"] == 3 * 64 and small["grayscale"] is False
