"""Deterministic weights for parity tests against torchvision.

torchvision cannot be imported on this project's machines, so its outputs
were recorded once at development time (``tests/zoo/torchvision/NAME.npz``:
state-dict keys and shapes, and the logits for ``oracle_input``) with weights
from :func:`deterministic_state`, which depends only on each key's name and
shape. Loading the same deterministic weights into our model must reproduce
those logits."""

from __future__ import annotations

import json
import os
import zlib

import numpy as np
import torch

DATA_DIR = os.path.join(os.path.dirname(__file__), "zoo", "torchvision")


def deterministic_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Weights that keep activations in a sane range, a pure function of
    (key, shape)."""
    state = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            state[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        if leaf == "running_var":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "running_mean":
            value = rng.normal(0.0, 0.1, shape)
        elif len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        elif leaf == "weight":  # norm layers' scale
            value = 1.0 + rng.normal(0.0, 0.1, shape)
        else:
            value = rng.normal(0.0, 0.05, shape)
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    return state


def oracle_input(size: int) -> torch.Tensor:
    rng = np.random.default_rng(1234)
    return torch.from_numpy(rng.normal(0.0, 1.0, (2, 3, size, size)).astype(np.float32))


def fixture_path(name: str) -> str:
    return os.path.join(DATA_DIR, f"{name}.npz")


def save_fixture(name: str, model: torch.nn.Module, size: int) -> None:
    """Development time only: ``model`` is torchvision's, in eval mode."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(deterministic_state(shapes), strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(oracle_input(size))
    os.makedirs(DATA_DIR, exist_ok=True)
    np.savez_compressed(
        fixture_path(name), shapes=np.asarray(json.dumps(shapes)), size=np.asarray(size),
        logits=logits.numpy().astype(np.float32),
    )


def load_fixture(name: str):
    with np.load(fixture_path(name), allow_pickle=False) as data:
        shapes = {k: tuple(v) for k, v in json.loads(str(data["shapes"])).items()}
        return shapes, int(data["size"]), data["logits"]
