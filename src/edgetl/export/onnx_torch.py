"""An ONNX classifier graph as a ``torch.nn.Module``, op by op.

The TFLite and Core ML converters take torch models; the bundle holds ONNX.
Rebuilding the network from the zoo would tie the export to the training
code of the day (backbone, tap point, head); running the bundle's own graph
in torch keeps the export working from the run folder alone and makes the
converted model *the same function* as model.onnx.

Only the operators edgetl's exported classifiers use are supported (standard
CNN layers, the head, softmax); anything else is a one-line ``BundleError``.
For a QDQ int8 graph (``model.int8.onnx``) QuantizeLinear/DequantizeLinear
become ``torch.ops.quantized_decomposed`` ops, the representation PT2E
quantization produces, so converters see ONNX Runtime's calibrated scales.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import BundleError

_SUPPORTED = {
    "Conv", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Add", "Sub", "Mul", "Div",
    "ReduceMean", "GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool", "Gemm", "MatMul",
    "Softmax", "Flatten", "Reshape", "Concat", "LRN", "BatchNormalization", "Identity", "Dropout", "Pad",
    "Constant", "QuantizeLinear", "DequantizeLinear", "Squeeze", "Unsqueeze", "Transpose",
    "Gather", "GatherND", "Where",  # adaptive pooling to a fixed grid (AlexNet, VGG) exports as these
}


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def check_supported(model: onnx.ModelProto, path: str = "the model") -> None:
    unknown = sorted({n.op_type for n in model.graph.node if n.op_type not in _SUPPORTED})
    if unknown:
        raise BundleError(
            f"{path} uses ONNX operators the TFLite/Core ML export does not translate ({', '.join(unknown)}); "
            f"export model.onnx from a supported backbone (see 'edgetl models')"
        )


class OnnxModule:
    """Factory: ``OnnxModule.build(model_proto)`` returns an ``nn.Module``
    whose ``forward(x)`` computes the graph's single output."""

    @staticmethod
    def build(model: onnx.ModelProto, path: str = "the model"):
        import torch

        check_supported(model, path)
        return _GraphModule(model)


def _make_graph_module_class():
    import torch
    import torch.nn.functional as F

    try:  # registers torch.ops.quantized_decomposed (moved to torchao in later torch releases)
        import torch.ao.quantization.fx._decomposed  # noqa: F401
    except ImportError:
        import torchao.quantization.pt2e  # noqa: F401

    class GraphModule(torch.nn.Module):
        def __init__(self, model: onnx.ModelProto):
            super().__init__()
            graph = model.graph
            self._consts: dict[str, str] = {}
            self._arrays: dict[str, np.ndarray] = {}
            for i, init in enumerate(graph.initializer):
                arr = numpy_helper.to_array(init)
                self._arrays[init.name] = arr
            for node in graph.node:
                if node.op_type == "Constant":
                    self._arrays[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
            # Integer/quantized arrays stay numpy (folded at trace time); float
            # ones become buffers so torch.export sees real weights.
            static = {n for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                      for n in node.input[1:]}
            for i, (name, arr) in enumerate(self._arrays.items()):
                if arr.dtype == np.float32 and arr.ndim > 0 and name not in static:
                    key = f"c{i}"
                    self.register_buffer(key, torch.from_numpy(arr.copy()))
                    self._consts[name] = key
            self._nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in graph.node
                           if n.op_type != "Constant"]
            # Per-channel weight scales must be module buffers (placeholders in
            # torch.export): converters read them as constants from there.
            for k, (op, ins, outs, at) in enumerate(self._nodes):
                if op == "DequantizeLinear" and ins[0] in self._arrays and self._arrays[ins[0]].dtype != np.int32 \
                        and np.asarray(self._arrays[ins[1]]).ndim:
                    scale = np.asarray(self._arrays[ins[1]], np.float32)
                    zp = self._arrays[ins[2]] if len(ins) > 2 and ins[2] else np.zeros(scale.shape, np.int64)
                    w = self._arrays[ins[0]]
                    shape = [1] * w.ndim
                    shape[at.get("axis", 1)] = -1
                    wf = (w.astype(np.float32) - np.asarray(zp, np.float32).reshape(shape)) * scale.reshape(shape)
                    self.register_buffer(f"qw{k}", torch.from_numpy(wf.astype(np.float32)))
                    self.register_buffer(f"qs{k}", torch.from_numpy(scale.copy()))
                    self.register_buffer(f"qz{k}", torch.from_numpy(np.asarray(zp).astype(np.int64)))
                    at["_buffers"] = (f"qs{k}", f"qz{k}", f"qw{k}")
            inits = {init.name for init in graph.initializer}
            self._input = [i.name for i in graph.input if i.name not in inits][0]
            self._output = graph.output[0].name
            self._dequantized: set[str] = set()

        def _get(self, env, name):
            if name == "":
                return None
            if name in env:
                return env[name]
            if name in self._consts:
                return getattr(self, self._consts[name])
            return self._arrays[name]

        def forward(self, x):
            env = {self._input: x}
            for op, ins, outs, at in self._nodes:
                args = [self._get(env, n) for n in ins]
                env[outs[0]] = self._run(op, args, at, ins)
            return env[self._output]

        # One function per op family; numpy arrays are compile-time constants.
        def _run(self, op, a, at, names):
            T = lambda v: v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))  # noqa: E731
            if op == "Conv":
                w, b = T(a[1]), (T(a[2]) if len(a) > 2 and a[2] is not None else None)
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
            if op == "Relu":
                return F.relu(a[0])
            if op == "Clip":
                lo = float(np.asarray(a[1])) if len(a) > 1 and a[1] is not None else at.get("min", None)
                hi = float(np.asarray(a[2])) if len(a) > 2 and a[2] is not None else at.get("max", None)
                if lo == 0.0 and hi == 6.0:
                    return F.relu6(a[0])
                return torch.clamp(a[0], lo, hi)
            if op == "Sigmoid":
                return torch.sigmoid(a[0])
            if op == "HardSigmoid":
                return torch.clamp(a[0] * at.get("alpha", 0.2) + at.get("beta", 0.5), 0.0, 1.0)
            if op == "HardSwish":
                return F.hardswish(a[0])
            if op == "Tanh":
                return torch.tanh(a[0])
            if op in ("Add", "Sub", "Mul", "Div"):
                x, y = T(a[0]), T(a[1])
                return {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}[op](x, y)
            if op == "ReduceMean":
                axes = at.get("axes")
                if axes is None and len(a) > 1 and a[1] is not None:
                    axes = np.asarray(a[1]).tolist()
                return torch.mean(a[0], dim=tuple(axes), keepdim=bool(at.get("keepdims", 1)))
            if op == "GlobalAveragePool":
                return torch.mean(a[0], dim=(2, 3), keepdim=True)
            if op == "GlobalMaxPool":
                return torch.amax(a[0], dim=(2, 3), keepdim=True)
            if op in ("AveragePool", "MaxPool"):
                k = tuple(at["kernel_shape"])
                s = tuple(at.get("strides", [1, 1]))
                pads = at.get("pads", [0, 0, 0, 0])
                x = a[0]
                if op == "MaxPool":
                    if pads[0] != pads[2] or pads[1] != pads[3]:
                        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]), value=float("-inf"))
                        pads = [0, 0, 0, 0]
                    return F.max_pool2d(x, k, s, (pads[0], pads[1]), ceil_mode=bool(at.get("ceil_mode", 0)))
                return F.avg_pool2d(x, k, s, (pads[0], pads[1]), ceil_mode=bool(at.get("ceil_mode", 0)),
                                    count_include_pad=bool(at.get("count_include_pad", 0)))
            if op == "Gemm":
                x, w = a[0], T(a[1])
                if at.get("transA", 0):
                    x = x.t()
                w = w if at.get("transB", 0) else w.t()
                y = torch.matmul(x, w.t()) * at.get("alpha", 1.0)
                if len(a) > 2 and a[2] is not None:
                    y = y + T(a[2]) * at.get("beta", 1.0)
                return y
            if op == "MatMul":
                return torch.matmul(T(a[0]), T(a[1]))
            if op == "Softmax":
                return torch.softmax(a[0], dim=at.get("axis", -1))
            if op == "Flatten":
                axis = at.get("axis", 1)
                return torch.flatten(a[0], start_dim=axis) if axis == 1 else a[0].reshape(
                    int(np.prod(a[0].shape[:axis])), -1)
            if op == "Reshape":
                shape = np.asarray(a[1]).tolist()
                shape = [a[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
                return torch.reshape(a[0], tuple(shape))
            if op == "Concat":
                return torch.cat([T(v) for v in a], dim=at["axis"])
            if op == "LRN":
                return F.local_response_norm(a[0], at["size"], at.get("alpha", 1e-4), at.get("beta", 0.75),
                                             at.get("bias", 1.0))
            if op == "BatchNormalization":
                return F.batch_norm(a[0], T(a[3]), T(a[4]), T(a[1]), T(a[2]), False, 0.0, at.get("epsilon", 1e-5))
            if op in ("Identity", "Dropout"):
                return a[0]
            if op == "Pad":
                pads = np.asarray(a[1]).tolist() if len(a) > 1 else at["pads"]
                n = len(pads) // 2
                if any(pads[i] or pads[i + n] for i in range(n - 2)):
                    raise BundleError("Pad on batch/channel axes is not supported by the TFLite/Core ML export")
                value = float(np.asarray(a[2])) if len(a) > 2 and a[2] is not None else 0.0
                mode = at.get("mode", b"constant")
                mode = mode.decode() if isinstance(mode, bytes) else mode
                return F.pad(a[0], (pads[n - 1], pads[2 * n - 1], pads[n - 2], pads[2 * n - 2]), mode=mode,
                             value=value if mode == "constant" else None)
            if op == "Squeeze":
                axes = np.asarray(a[1]).tolist() if len(a) > 1 else at.get("axes")
                return torch.squeeze(a[0], dim=tuple(axes)) if axes is not None else torch.squeeze(a[0])
            if op == "Unsqueeze":
                axes = np.asarray(a[1]).tolist() if len(a) > 1 else at["axes"]
                x = a[0]
                for ax in sorted(axes):
                    x = torch.unsqueeze(x, ax)
                return x
            if op == "Transpose":
                return a[0].permute(*at["perm"])
            if op == "Gather":
                axis = at.get("axis", 0)
                x, idx = T(a[0]), np.asarray(a[1]).astype(np.int64)
                idx = np.where(idx < 0, idx + x.shape[axis], idx)
                if idx.ndim == 0:
                    return x.select(axis, int(idx))
                flat = torch.index_select(x, axis, torch.from_numpy(idx.ravel()))
                return flat.reshape(tuple(x.shape[:axis]) + idx.shape + tuple(x.shape[axis + 1:]))
            if op == "GatherND":
                if at.get("batch_dims", 0):
                    raise BundleError("GatherND with batch_dims is not supported by the TFLite/Core ML export")
                x, idx = T(a[0]), np.asarray(a[1]).astype(np.int64)
                return x[tuple(torch.from_numpy(idx[..., i].copy()) for i in range(idx.shape[-1]))]
            if op == "Where":
                return torch.where(T(a[0]), T(a[1]), T(a[2]))
            if op == "QuantizeLinear":
                return _quantize(a, at)
            if op == "DequantizeLinear":
                if "_buffers" in at:
                    x = a[0]
                    lo, hi = _qrange(x.dtype)
                    # Float weights re-quantized in the graph (exact: w = q * scale),
                    # the pattern PT2E emits without folding and converters fuse.
                    s_, z_, w_ = (getattr(self, b) for b in at["_buffers"])
                    qargs = (s_, z_, at.get("axis", 1), lo, hi, _TORCH_DTYPE[x.dtype])
                    q = torch.ops.quantized_decomposed.quantize_per_channel(w_, *qargs)
                    return torch.ops.quantized_decomposed.dequantize_per_channel(q, *qargs)
                return _dequantize(a, at)
            raise BundleError(f"ONNX operator {op} is not supported by the TFLite/Core ML export")

    def _qrange(dtype):
        info = np.iinfo(dtype)
        return int(info.min), int(info.max)

    _TORCH_DTYPE = {np.dtype(np.int8): torch.int8, np.dtype(np.uint8): torch.uint8, np.dtype(np.int32): torch.int32}

    def _act_qparams(a):
        """Activation scale/zero point; uint8 becomes the equivalent int8
        (zero point - 128): TFLite's int8 kernels take int8 activations."""
        scale = float(np.asarray(a[1]))
        zp = np.asarray(a[2]) if len(a) > 2 and a[2] is not None else np.zeros((), np.uint8)
        if zp.dtype == np.uint8:
            return scale, int(zp) - 128, -128, 127, torch.int8
        lo, hi = _qrange(zp.dtype)
        return scale, int(zp), lo, hi, _TORCH_DTYPE[zp.dtype]

    def _quantize(a, at):
        return torch.ops.quantized_decomposed.quantize_per_tensor(a[0], *_act_qparams(a))

    def _dequantize(a, at):
        x = a[0]
        scale = np.asarray(a[1], np.float32)
        zp = np.asarray(a[2]) if len(a) > 2 and a[2] is not None else None
        if isinstance(x, np.ndarray):
            # A quantized constant (weights, bias): int32 biases are folded to
            # float, the converter re-quantizes them from the tensors' scales;
            # int8 weights stay int8 so the converter keeps ONNX Runtime's scales.
            if x.dtype == np.int32 or x.dtype not in _TORCH_DTYPE:
                axis = at.get("axis", 1)
                zpf = zp.astype(np.float32) if zp is not None else np.float32(0)
                if scale.ndim:
                    shape = [1] * x.ndim
                    shape[axis] = -1
                    return torch.from_numpy(((x.astype(np.float32) - zpf.reshape(shape) if zp is not None and zp.ndim
                                              else x.astype(np.float32) - zpf) * scale.reshape(shape)).astype(np.float32))
                return torch.from_numpy(((x.astype(np.float32) - zpf) * scale).astype(np.float32))
            lo, hi = _qrange(x.dtype)
            q = torch.from_numpy(x.copy())
            if scale.ndim:
                zps = torch.from_numpy((zp if zp is not None else np.zeros_like(scale, np.int64)).astype(np.int64))
                return torch.ops.quantized_decomposed.dequantize_per_channel(
                    q, torch.from_numpy(scale.copy()), zps, at.get("axis", 1), lo, hi, _TORCH_DTYPE[x.dtype])
            return torch.ops.quantized_decomposed.dequantize_per_tensor(
                q, float(scale), int(zp) if zp is not None else 0, lo, hi, _TORCH_DTYPE[x.dtype])
        return torch.ops.quantized_decomposed.dequantize_per_tensor(x, *_act_qparams(a))

    return GraphModule


_GRAPH_MODULE = None


def _GraphModule(model):
    global _GRAPH_MODULE
    if _GRAPH_MODULE is None:
        _GRAPH_MODULE = _make_graph_module_class()
    return _GRAPH_MODULE(model)


def load_torch_model(onnx_path: str):
    """The graph in ``onnx_path`` as an eval-mode ``nn.Module``."""
    import os

    if not os.path.isfile(onnx_path):
        raise BundleError(f"{onnx_path} is missing: pass a run folder written by 'edgetl train'")
    model = onnx.load(onnx_path)
    module = OnnxModule.build(model, os.path.basename(onnx_path))
    return module.eval()
