"""The ONNX operators edgetl's classifiers use, each as a torch function:
``OPS[op_type](args, attrs)``. Arguments that are numpy arrays are the
graph's integer / quantized constants (folded when traced); the others are
tensors. QuantizeLinear / DequantizeLinear become
``torch.ops.quantized_decomposed`` ops, the representation PT2E quantization
produces, so converters see ONNX Runtime's calibrated scales."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BundleError

try:  # registers torch.ops.quantized_decomposed (moved to torchao in later torch releases)
    import torch.ao.quantization.fx._decomposed  # noqa: F401
except ImportError:  # pragma: no cover - depends on the torch release
    import torchao.quantization.pt2e  # noqa: F401

OpFn = Callable[[list, dict], object]
OPS: dict[str, OpFn] = {}


def op(*names: str) -> Callable[[OpFn], OpFn]:
    """Register a handler for the ONNX operators ``names``."""

    def register(fn: OpFn) -> OpFn:
        for name in names:
            OPS[name] = fn
        return fn

    return register


def T(v):
    """A tensor from a tensor or a numpy constant."""
    return v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))


def _opt(a: list, i: int):
    """Optional input ``i`` (None when absent or empty)."""
    return a[i] if len(a) > i and a[i] is not None else None


# ---------------------------------------------------------------- convolution, pooling, linear


@op("Conv")
def _conv(a, at):
    w, b = T(a[1]), (T(a[2]) if _opt(a, 2) is not None else None)
    pads = at.get("pads", [0, 0, 0, 0])
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise BundleError("Conv with auto_pad is not supported by the TFLite/Core ML export")
    x = a[0]
    if pads[0] != pads[2] or pads[1] != pads[3]:
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        pad = 0
    else:
        pad = (pads[0], pads[1])
    return F.conv2d(x, w, b, stride=tuple(at.get("strides", [1, 1])), padding=pad,
                    dilation=tuple(at.get("dilations", [1, 1])), groups=at.get("group", 1))


@op("GlobalAveragePool")
def _global_average_pool(a, at):
    return torch.mean(a[0], dim=(2, 3), keepdim=True)


@op("GlobalMaxPool")
def _global_max_pool(a, at):
    return torch.amax(a[0], dim=(2, 3), keepdim=True)


@op("MaxPool")
def _max_pool(a, at):
    k, s = tuple(at["kernel_shape"]), tuple(at.get("strides", [1, 1]))
    pads, x = at.get("pads", [0, 0, 0, 0]), a[0]
    if pads[0] != pads[2] or pads[1] != pads[3]:
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]), value=float("-inf"))
        pads = [0, 0, 0, 0]
    return F.max_pool2d(x, k, s, (pads[0], pads[1]), ceil_mode=bool(at.get("ceil_mode", 0)))


@op("AveragePool")
def _average_pool(a, at):
    k, s = tuple(at["kernel_shape"]), tuple(at.get("strides", [1, 1]))
    pads = at.get("pads", [0, 0, 0, 0])
    return F.avg_pool2d(a[0], k, s, (pads[0], pads[1]), ceil_mode=bool(at.get("ceil_mode", 0)),
                        count_include_pad=bool(at.get("count_include_pad", 0)))


@op("Gemm")
def _gemm(a, at):
    x, w = a[0], T(a[1])
    if at.get("transA", 0):
        x = x.t()
    w = w if at.get("transB", 0) else w.t()
    y = torch.matmul(x, w.t()) * at.get("alpha", 1.0)
    if _opt(a, 2) is not None:
        y = y + T(a[2]) * at.get("beta", 1.0)
    return y


@op("MatMul")
def _matmul(a, at):
    return torch.matmul(T(a[0]), T(a[1]))


@op("LRN")
def _lrn(a, at):
    return F.local_response_norm(a[0], at["size"], at.get("alpha", 1e-4), at.get("beta", 0.75), at.get("bias", 1.0))


@op("BatchNormalization")
def _batch_norm(a, at):
    return F.batch_norm(a[0], T(a[3]), T(a[4]), T(a[1]), T(a[2]), False, 0.0, at.get("epsilon", 1e-5))


# ---------------------------------------------------------------- element-wise


@op("Relu")
def _relu(a, at):
    return F.relu(a[0])


@op("Clip")
def _clip(a, at):
    lo = float(np.asarray(a[1])) if _opt(a, 1) is not None else at.get("min", None)
    hi = float(np.asarray(a[2])) if _opt(a, 2) is not None else at.get("max", None)
    if lo == 0.0 and hi == 6.0:
        return F.relu6(a[0])
    return torch.clamp(a[0], lo, hi)


@op("Sigmoid")
def _sigmoid(a, at):
    return torch.sigmoid(a[0])


@op("HardSigmoid")
def _hard_sigmoid(a, at):
    return torch.clamp(a[0] * at.get("alpha", 0.2) + at.get("beta", 0.5), 0.0, 1.0)


@op("HardSwish")
def _hard_swish(a, at):
    return F.hardswish(a[0])


@op("Tanh")
def _tanh(a, at):
    return torch.tanh(a[0])


_ARITHMETIC = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}
for _name, _fn in _ARITHMETIC.items():
    OPS[_name] = lambda a, at, _fn=_fn: _fn(T(a[0]), T(a[1]))


@op("Softmax")
def _softmax(a, at):
    return torch.softmax(a[0], dim=at.get("axis", -1))


@op("ReduceMean")
def _reduce_mean(a, at):
    axes = at.get("axes")
    if axes is None and _opt(a, 1) is not None:
        axes = np.asarray(a[1]).tolist()
    return torch.mean(a[0], dim=tuple(axes), keepdim=bool(at.get("keepdims", 1)))


@op("Identity", "Dropout")
def _identity(a, at):
    return a[0]


@op("Where")
def _where(a, at):
    return torch.where(T(a[0]), T(a[1]), T(a[2]))


# ---------------------------------------------------------------- shapes and indexing


@op("Flatten")
def _flatten(a, at):
    axis = at.get("axis", 1)
    return torch.flatten(a[0], start_dim=axis) if axis == 1 else a[0].reshape(int(np.prod(a[0].shape[:axis])), -1)


@op("Reshape")
def _reshape(a, at):
    shape = np.asarray(a[1]).tolist()
    shape = [a[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return torch.reshape(a[0], tuple(shape))


@op("Concat")
def _concat(a, at):
    return torch.cat([T(v) for v in a], dim=at["axis"])


@op("Pad")
def _pad(a, at):
    pads = np.asarray(a[1]).tolist() if len(a) > 1 else at["pads"]
    n = len(pads) // 2
    if any(pads[i] or pads[i + n] for i in range(n - 2)):
        raise BundleError("Pad on batch/channel axes is not supported by the TFLite/Core ML export")
    value = float(np.asarray(a[2])) if _opt(a, 2) is not None else 0.0
    mode = at.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    return F.pad(a[0], (pads[n - 1], pads[2 * n - 1], pads[n - 2], pads[2 * n - 2]), mode=mode,
                 value=value if mode == "constant" else None)


@op("Squeeze")
def _squeeze(a, at):
    axes = np.asarray(a[1]).tolist() if len(a) > 1 else at.get("axes")
    return torch.squeeze(a[0], dim=tuple(axes)) if axes is not None else torch.squeeze(a[0])


@op("Unsqueeze")
def _unsqueeze(a, at):
    axes = np.asarray(a[1]).tolist() if len(a) > 1 else at["axes"]
    x = a[0]
    for ax in sorted(axes):
        x = torch.unsqueeze(x, ax)
    return x


@op("Transpose")
def _transpose(a, at):
    return a[0].permute(*at["perm"])


@op("Gather")
def _gather(a, at):
    axis = at.get("axis", 0)
    x, idx = T(a[0]), np.asarray(a[1]).astype(np.int64)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    if idx.ndim == 0:
        return x.select(axis, int(idx))
    flat = torch.index_select(x, axis, torch.from_numpy(idx.ravel()))
    return flat.reshape(tuple(x.shape[:axis]) + idx.shape + tuple(x.shape[axis + 1:]))


@op("GatherND")
def _gather_nd(a, at):
    if at.get("batch_dims", 0):
        raise BundleError("GatherND with batch_dims is not supported by the TFLite/Core ML export")
    x, idx = T(a[0]), np.asarray(a[1]).astype(np.int64)
    return x[tuple(torch.from_numpy(idx[..., i].copy()) for i in range(idx.shape[-1]))]


# ---------------------------------------------------------------- int8: QDQ

_TORCH_DTYPE = {np.dtype(np.int8): torch.int8, np.dtype(np.uint8): torch.uint8, np.dtype(np.int32): torch.int32}


def _qrange(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _act_qparams(a):
    """Activation scale/zero point; uint8 becomes the equivalent int8
    (zero point - 128): TFLite's int8 kernels take int8 activations."""
    scale = float(np.asarray(a[1]))
    zp = np.asarray(a[2]) if _opt(a, 2) is not None else np.zeros((), np.uint8)
    if zp.dtype == np.uint8:
        return scale, int(zp) - 128, -128, 127, torch.int8
    lo, hi = _qrange(zp.dtype)
    return scale, int(zp), lo, hi, _TORCH_DTYPE[zp.dtype]


@op("QuantizeLinear")
def _quantize(a, at):
    return torch.ops.quantized_decomposed.quantize_per_tensor(a[0], *_act_qparams(a))


def _folded_constant(x: np.ndarray, scale: np.ndarray, zp, axis: int):
    """A dequantized constant folded to float (int32 biases: the converter
    re-quantizes them from the tensors' scales)."""
    zpf = zp.astype(np.float32) if zp is not None else np.float32(0)
    if scale.ndim:
        shape = [1] * x.ndim
        shape[axis] = -1
        centred = x.astype(np.float32) - zpf.reshape(shape) if zp is not None and zp.ndim else x.astype(np.float32) - zpf
        return torch.from_numpy((centred * scale.reshape(shape)).astype(np.float32))
    return torch.from_numpy(((x.astype(np.float32) - zpf) * scale).astype(np.float32))


def _dequantize_constant(x: np.ndarray, scale: np.ndarray, zp, axis: int):
    """A quantized constant (weights, bias): int8 weights stay int8 so the
    converter keeps ONNX Runtime's scales."""
    if x.dtype == np.int32 or x.dtype not in _TORCH_DTYPE:
        return _folded_constant(x, scale, zp, axis)
    lo, hi = _qrange(x.dtype)
    q = torch.from_numpy(x.copy())
    if scale.ndim:
        zps = torch.from_numpy((zp if zp is not None else np.zeros_like(scale, np.int64)).astype(np.int64))
        return torch.ops.quantized_decomposed.dequantize_per_channel(
            q, torch.from_numpy(scale.copy()), zps, axis, lo, hi, _TORCH_DTYPE[x.dtype])
    return torch.ops.quantized_decomposed.dequantize_per_tensor(
        q, float(scale), int(zp) if zp is not None else 0, lo, hi, _TORCH_DTYPE[x.dtype])


@op("DequantizeLinear")
def _dequantize(a, at):
    x = a[0]
    if isinstance(x, np.ndarray):
        zp = np.asarray(a[2]) if _opt(a, 2) is not None else None
        return _dequantize_constant(x, np.asarray(a[1], np.float32), zp, at.get("axis", 1))
    return torch.ops.quantized_decomposed.dequantize_per_tensor(x, *_act_qparams(a))


def requantized_weight(dtype, scale, zero_point, weight, axis: int):
    """Float weights re-quantized in the graph (exact: w = q * scale), the
    pattern PT2E emits without folding and converters fuse; ``scale``,
    ``zero_point`` and ``weight`` are module buffers, ``dtype`` the ONNX
    weights' numpy dtype."""
    lo, hi = _qrange(dtype)
    qargs = (scale, zero_point, axis, lo, hi, _TORCH_DTYPE[np.dtype(dtype)])
    q = torch.ops.quantized_decomposed.quantize_per_channel(weight, *qargs)
    return torch.ops.quantized_decomposed.dequantize_per_channel(q, *qargs)
