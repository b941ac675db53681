"""Export a frozen backbone to ONNX once per (backbone, weights, InputSpec)
and keep it in the cache. Feature extraction, ``edgetl imagenet`` and the
exported bundle all run this one file, so the host sees what the phone sees."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache

from .._files import atomic_path, cache_path, open_cache_folder, write_text
from ..data.input_spec import InputSpec
from ..zoo.registry import FINAL_TAP

log = logging.getLogger(__name__)

EXPORT_VERSION = 2  # bump when the exported graph changes (2: the TorchScript exporter)
INPUT_NAME = "input"
FEATURES_NAME = "features"
LOGITS_NAME = "logits"
TAP_PREFIX = "tap:"  # output f"tap:{name}" of a taps graph: the pooled map after tap ``name``


def tap_output_name(tap: str) -> str:
    """The taps graph output holding tap ``tap``."""
    return FEATURES_NAME if tap == FINAL_TAP else TAP_PREFIX + tap


@dataclass(frozen=True)
class BackboneGraph:
    """An exported backbone: where it is and what identifies it."""

    backbone: str
    weights_id: str
    input_spec: InputSpec
    onnx_path: str
    has_logits: bool
    # A taps graph (export_backbone(..., taps=True)): every tap's name in
    # output order, "final" last; () for the plain features graph.
    taps: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Identity of the features this graph produces (keys the cache)."""
        raw = json.dumps(
            {"backbone": self.backbone, "weights": self.weights_id, "spec": self.input_spec.to_json(),
             "tap": list(self.taps) if self.taps else FINAL_TAP, "v": EXPORT_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    @property
    def feature_outputs(self) -> list[str]:
        """The graph outputs a feature row is made of, in row order."""
        return [tap_output_name(t) for t in self.taps] if self.taps else [FEATURES_NAME]

    def tap_dims(self) -> dict[str, int]:
        """``{tap: width}`` in output order, read from the ONNX output shapes
        (``{"final": D}`` for a plain graph)."""
        dims = _output_widths(self.onnx_path, os.path.getmtime(self.onnx_path))
        return {t: dims[tap_output_name(t)] for t in (self.taps or (FINAL_TAP,))}

    def tap_slices(self) -> dict[str, slice]:
        """Where each tap sits in a feature row (the concatenation of the
        outputs in order), e.g. ``row[graph.tap_slices()["block7"]]``."""
        out, start = {}, 0
        for tap, width in self.tap_dims().items():
            out[tap] = slice(start, start + width)
            start += width
        return out


@lru_cache(maxsize=64)
def _output_widths(path: str, mtime: float) -> dict[str, int]:
    import onnx

    widths = {}
    for value in onnx.load(path, load_external_data=False).graph.output:
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 2 or not dims[1].HasField("dim_value"):
            raise ValueError(f"{path}: output {value.name!r} is not (N, C) with a fixed C")
        widths[value.name] = int(dims[1].dim_value)
    return widths


def exportable(model, taps: bool = False):
    """(module, output names) exported for the zoo backbone ``model``: its
    features (+ logits when it has a classifier), or with ``taps`` every
    tap's pooled output, the features last (``module.names`` lists the taps)."""
    import torch

    if taps:
        from ..zoo._taps import TappedFeatures

        wrapper = TappedFeatures(model).eval()
        return wrapper, [tap_output_name(t) for t in wrapper.names]

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            f = self.m.forward_features(x)
            if self.m.num_classes:
                return f, self.m.forward_head(f)
            return (f,)

    return Wrapper(model).eval(), [FEATURES_NAME, LOGITS_NAME] if model.num_classes else [FEATURES_NAME]


TAPS_FILE = "taps.json"  # in the models folder: {backbone: its tap names}, recorded at the first build


def _declared_taps(spec, folder: str, recorded: bool = True) -> tuple[tuple[str, ...], bool]:
    """The taps of ``spec``'s model: recorded in ``folder``/taps.json by an
    earlier run (with ``recorded``; no torch import: a run whose graphs are
    cached needs torch for nothing), else read from a model built on the
    meta device, and recorded; and whether they came from the record. A
    wrong record can only miss the cache (the names are part of the graph's
    key), and a miss checks it (``export_backbone``)."""
    import json

    from .._files import write_json

    record = os.path.join(folder, TAPS_FILE)
    try:
        with open(record, encoding="utf-8") as fh:
            known = json.load(fh)
        names = known.get(f"{spec.name}/v{EXPORT_VERSION}")
        if recorded and isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return tuple(names), True
    except (OSError, ValueError, AttributeError):
        known = {}
    import torch

    from ..zoo._taps import tap_names

    with torch.device("meta"):
        names = tap_names(spec.builder(num_classes=0))
    try:
        write_json(record, {**(known if isinstance(known, dict) else {}), f"{spec.name}/v{EXPORT_VERSION}": list(names)})
    except OSError as exc:  # a read-only cache: build again next time
        log.debug("cannot record the taps of %s: %s", spec.name, exc)
    return names, False


def _from_cache(backbone: str, weights_id: str, input_spec: InputSpec, folder: str,
                tap_names: tuple[str, ...]) -> tuple[str, BackboneGraph | None]:
    """(the graph's path in ``folder``, the cached graph there if it is
    whole, else None; a damaged one is removed)."""
    probe = BackboneGraph(backbone, weights_id, input_spec, "", False, tap_names)
    path = os.path.join(folder, f"{backbone}-{probe.key}.onnx")
    if os.path.isfile(path):
        outputs, damage = _cached_outputs(path, tap_names)
        if outputs is not None:
            return path, BackboneGraph(backbone, weights_id, input_spec, path, LOGITS_NAME in outputs, tap_names)
        log.warning("the cached ONNX graph %s is damaged (%s); removed, exporting it again", path, damage)
        for stale in (path, path + DIGEST_SUFFIX):
            with contextlib.suppress(OSError):
                os.unlink(stale)
    return path, None


def export_backbone(
    backbone: str, weights="default", input_spec: InputSpec | None = None, cache_dir: str | None = None,
    taps: bool = False,
) -> BackboneGraph:
    """The cached ONNX graph of ``backbone``; exported on first use.

    ``taps=True`` gives the taps graph instead: outputs ``tap:{name}`` (the
    globally average-pooled map after each of the backbone's ``tap_points()``,
    N x C_tap) then ``features``, all from one forward pass, no logits. It is
    cached under its own key; ``graph.taps`` lists the taps, "final" last."""
    from ..zoo import create_backbone, get_spec, resolve_weights

    spec = get_spec(backbone)
    input_spec = input_spec or spec.input_spec
    _, weights_id = resolve_weights(backbone, weights)
    folder = open_cache_folder(cache_path(cache_dir, "models"))  # dead exports' .NAME.tmp-PID swept
    tap_names, from_record = _declared_taps(spec, folder) if taps else ((), False)
    path, cached = _from_cache(backbone, weights_id, input_spec, folder, tap_names)
    if cached is not None:
        return cached
    if from_record:  # about to export: the recorded names are checked against a model built now
        built, _ = _declared_taps(spec, folder, recorded=False)
        if built != tap_names:
            tap_names = built
            path, cached = _from_cache(backbone, weights_id, input_spec, folder, tap_names)
            if cached is not None:
                return cached

    model = create_backbone(backbone, weights=weights)
    if input_spec.channels == "L":
        from ..zoo.grayscale import fold_to_grayscale

        fold_to_grayscale(model, spec.stem_conv, spec.input_spec, input_spec)
    wrapper, outputs = exportable(model, taps=bool(tap_names))
    if tap_names and wrapper.names != tap_names:
        raise RuntimeError(f"{backbone}: taps {wrapper.names} differ from the declared {tap_names}")
    log.info("exporting %s%s at %d px to ONNX (once; cached in %s)", backbone, " with taps" if tap_names else "",
             input_spec.image_size, folder)
    export_module(wrapper, input_spec, path, outputs)
    _record_digest(path)
    return BackboneGraph(backbone, weights_id, input_spec, path, LOGITS_NAME in outputs, tap_names)


# A cached graph is trusted only if its bytes are those exported: their sha256 is written beside it.
DIGEST_SUFFIX = ".sha256"


def _file_sha256(path: str) -> tuple[bytes, str]:
    with open(path, "rb") as fh:
        data = fh.read()
    return data, hashlib.sha256(data).hexdigest()


def _record_digest(path: str) -> None:
    try:
        write_text(path + DIGEST_SUFFIX, _file_sha256(path)[1] + "\n")
    except OSError as exc:  # a read-only cache: the graph is checked by ONNX instead, at each use
        log.debug("cannot record the digest of %s: %s", path, exc)


def _cached_outputs(path: str, taps: tuple[str, ...]) -> tuple[list[str] | None, str | None]:
    """(output names, None) of the cached graph at ``path`` when it is whole:
    its sha256 is the one recorded at export (a graph cached before digests
    were recorded must parse, pass ONNX's checker, and then gets one), its
    outputs those of the export. Else (None, what is wrong): a truncated or
    edited file would otherwise fail every run, or compute other features."""
    import onnx

    try:
        data, digest = _file_sha256(path)
        with open(path + DIGEST_SUFFIX, "rb") as fh:
            recorded = fh.read().strip().decode("ascii", "replace")
    except FileNotFoundError:
        recorded = None
    except OSError as exc:
        return None, f"cannot read it: {exc.strerror}"
    if recorded is not None and recorded != digest:
        return None, "its bytes are not those exported"
    try:
        model = onnx.load_model_from_string(data)
        if recorded is None:
            onnx.checker.check_model(model)
    except Exception as exc:  # protobuf's DecodeError, onnx's ValidationError, ...
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else 'unreadable'}"
    outputs = [o.name for o in model.graph.output]
    expected = [tap_output_name(t) for t in taps] if taps else [FEATURES_NAME, LOGITS_NAME][:len(outputs)]
    if outputs != expected or not outputs:
        return None, f"outputs {outputs}, not {expected}"
    if recorded is None:
        _record_digest(path)
    return outputs, None


# The TorchScript exporter: ~1 s per graph where torch.export (dynamo=True)
# took 3-5 s, and the search exports the taps graph at every input size.
# Tracing bakes the TF-"same" padding of EfficientNet-Lite for the traced
# size, which is right: there is one graph per input size anyway. What it
# cannot convert (adaptive pooling to a side that does not divide the map:
# AlexNet and VGG off their nominal size; LocalResponseNorm's shapes) goes
# through torch.export as before.
OPSET = 18


def export_module(module, input_spec: InputSpec, path: str, outputs: list[str]) -> str:
    """Export ``module`` (image batch -> a tuple of ``outputs``) to ONNX at
    ``path`` (written under a temporary name, then renamed), batch dynamic,
    H and W those of ``input_spec``."""
    import torch

    example = torch.zeros(2, input_spec.num_channels, input_spec.image_size, input_spec.image_size)
    # The exporters warn (deprecations, tracer notes) and narrate; keep the user's log readable.
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnx_ir", "onnxscript")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings(), open(os.devnull, "w") as devnull:
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(devnull), torch.no_grad():
                try:
                    with _stdout_fd_silenced(), _one_thread():  # a failed conversion prints the graph from C++
                        _export_torchscript(module.eval(), example, tmp, outputs)
                except Exception as exc:  # torch.onnx's SymbolicValueError, UnsupportedOperatorError, ...
                    log.debug("the TorchScript exporter cannot export it (%s: %s); using torch.export",
                              type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
                    _export_dynamo(module.eval(), example, tmp, outputs)
    finally:
        for q, lvl in zip(quiet, levels):
            q.setLevel(lvl)
    return path


def _export_torchscript(module, example, path: str, outputs: list[str]) -> None:
    import torch

    torch.onnx.export(module, (example,), path, input_names=[INPUT_NAME], output_names=outputs, dynamo=False,
                      opset_version=OPSET, do_constant_folding=True, verbose=False,
                      dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *outputs]})
    _simplify(path)


def _export_dynamo(module, example, path: str, outputs: list[str]) -> None:
    import torch

    torch.onnx.export(module, (example,), path, input_names=[INPUT_NAME], output_names=outputs, dynamo=True,
                      external_data=False, verbose=False,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},))


@contextlib.contextmanager
def _one_thread():
    """Torch on one thread meanwhile: tracing runs the network once on a
    batch of two, ~60 ms on one core, but with two OpenMP threads on a busy
    machine a step waits for the descheduled thread, and the export took
    1-4 s instead of a steady 0.8 s (measured on this 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _stdout_fd_silenced():
    """File descriptor 1 to /dev/null meanwhile (C++ code writes there, past sys.stdout)."""
    import sys

    try:
        fd = sys.__stdout__.fileno() if sys.__stdout__ else 1
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):  # no real stdout (embedded, closed): nothing to silence
        yield
        return
    try:
        with contextlib.suppress(Exception):
            sys.__stdout__.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _simplify(path: str) -> None:
    """Fold what the tracer left computed at run time (the pads of F.pad, as
    Shape/ConstantOfShape/Slice chains) and fuse constant pads into the
    convolutions, BatchNorm into Conv: the graph torch.export's optimiser
    gives, made only of the operators the TFLite/Core ML export translates."""
    import onnx
    import onnxscript.optimizer as optimizer
    import onnxscript.rewriter as rewriter
    from onnxscript import ir

    proto = onnx.load(path)
    _name_initializers(proto.graph)  # while nodes still carry the tracer's scope names
    model = ir.from_proto(proto)
    # ConstantOfShape is kept by default (it could grow the file); here it is a handful of zeros.
    optimizer.fold_constants_ir(model, should_fold=lambda node: True if node.op_type == "ConstantOfShape" else None)
    optimizer.optimize(model)
    rewriter.rewrite(model)
    optimizer.optimize(model)
    onnx.save(ir.to_proto(model), path)


def _name_initializers(graph) -> None:
    """Initializers the exporter named ``onnx::Conv_963`` (BatchNorm folded
    into the convolution) get the name of the layer that reads them,
    ``_blocks.3._depthwise_conv.weight``: a graph one can read, and cut."""
    readers: dict[str, list] = {}
    for node in graph.node:
        for pos, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, pos))
    taken = {t.name for t in graph.initializer} | {v for n in graph.node for v in n.output}
    for init in graph.initializer:
        uses = readers.get(init.name, [])
        if not init.name.startswith("onnx::") or len(uses) != 1 or "/" not in uses[0][0].name:
            continue
        node, pos = uses[0]
        layer = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
        role = {1: "weight", 2: "bias"}.get(pos, str(pos)) if node.op_type in ("Conv", "Gemm") else str(pos)
        new = f"{layer}.{role}"
        if new in taken:
            continue
        taken.add(new)
        node.input[pos] = new
        init.name = new


def features_module(model):
    """``model`` (a zoo backbone) as a module with one output: its pooled
    features (what a bundle's ``features.onnx`` computes)."""
    import torch

    class Features(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return (self.m.forward_features(x),)

    return Features(model).eval()
