"""Tap points: globally average-pooled features of intermediate layers.

Every backbone declares where it can be tapped with ``tap_points()``: ordered
``(tap_name, module_path)`` pairs, earliest first, at the ends of its stages
or block groups. That declaration is all a family provides; capturing is done
here, one way for every family: a forward hook on each tap module pools its
output over H and W while ``forward_features`` runs, so every tap and the
final features come out of one forward pass.

The final features are always the tap named ``"final"``
(``forward_features(x)``, already pooled); ``tap_points()`` never lists it,
nor a module whose pooled output *is* the final features (ResNet's
``layer4``, for instance), nor stem-only maps (too early to be useful).

Not a family module (the leading underscore keeps the registry from
importing it as one)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .registry import FINAL_TAP

FINAL = FINAL_TAP


def pool(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C) global average; (N, C) passes through."""
    return x.mean(dim=(2, 3)) if x.dim() == 4 else x.flatten(1)


def tap_points(model: nn.Module) -> list[tuple[str, str]]:
    """The model's declared taps, checked: names unique, not ``"final"``,
    every path a real submodule."""
    points = [(str(n), str(p)) for n, p in model.tap_points()]
    names = [n for n, _ in points]
    if len(set(names)) != len(names) or FINAL in names:
        raise ValueError(f"{type(model).__name__}.tap_points() names must be unique and not {FINAL!r}: {names}")
    for _, path in points:
        model.get_submodule(path)  # raises AttributeError naming the bad path
    return points


def tap_names(model: nn.Module) -> tuple[str, ...]:
    """All taps of ``model`` in output order: the declared ones, then ``"final"``."""
    return tuple(n for n, _ in tap_points(model)) + (FINAL,)


@contextlib.contextmanager
def capture(model: nn.Module, points: list[tuple[str, str]] | None = None, on_tap=None) -> Iterator[dict]:
    """While active, every forward through ``model`` fills the yielded dict
    with ``{tap_name: pooled output}`` of each tap module (hooks registered
    now, after any other hooks on the same modules, so those fire first);
    ``on_tap(name, output)`` is called too when given."""
    points = tap_points(model) if points is None else points
    store: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(module, inputs, output):
            if name in store:
                raise RuntimeError(f"tap {name!r} fired twice in one forward pass")
            store[name] = pool(output)
            if on_tap is not None:
                on_tap(name, output)

        return hook

    handles = [model.get_submodule(path).register_forward_hook(hook_for(name)) for name, path in points]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def tapped_features(model: nn.Module, x: torch.Tensor,
                    points: list[tuple[str, str]] | None = None) -> dict[str, torch.Tensor]:
    """``{tap_name: (N, C_tap)}`` for every tap, earliest first, then
    ``"final"`` (``forward_features(x)``), from one forward pass."""
    points = tap_points(model) if points is None else points
    with capture(model, points) as store:
        final = model.forward_features(x)
    missing = [n for n, _ in points if n not in store]
    if missing:
        raise RuntimeError(f"taps {missing} did not run in forward_features")
    out = {name: store[name] for name, _ in points}
    out[FINAL] = final
    return out


class TappedFeatures(nn.Module):
    """``forward(x)`` -> a tuple of the pooled taps, in ``tap_names`` order
    (``"final"`` last): the module the taps graph is exported from."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model
        self.points = tap_points(model)
        self.names = tuple(n for n, _ in self.points) + (FINAL,)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = tapped_features(self.m, x, self.points)
        return tuple(out[n] for n in self.names)
