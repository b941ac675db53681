"""An ONNX classifier graph as a ``torch.nn.Module``, op by op.

The TFLite and Core ML converters take torch models; the bundle holds ONNX.
Rebuilding the network from the zoo would tie the export to the training
code of the day (backbone, tap point, head); running the bundle's own graph
in torch keeps the export working from the run folder alone and makes the
converted model *the same function* as model.onnx.

Only the operators edgetl's exported classifiers use are supported (the
handlers in ``onnx_ops``: standard CNN layers, the head, softmax, QDQ);
anything else is a one-line ``BundleError``. For a QDQ int8 graph
(``model.int8.onnx``) the converters see ONNX Runtime's calibrated scales.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..errors import BundleError
from .onnx_ops import OPS, requantized_weight

_SUPPORTED = set(OPS) | {"Constant"}  # Constant nodes are folded when the graph is read


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def check_supported(model: onnx.ModelProto, path: str = "the model") -> None:
    unknown = sorted({n.op_type for n in model.graph.node if n.op_type not in _SUPPORTED})
    if unknown:
        raise BundleError(
            f"{path} uses ONNX operators the TFLite/Core ML export does not translate ({', '.join(unknown)}); "
            f"export model.onnx from a supported backbone (see 'edgetl models')"
        )


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and Constant nodes' values, by name."""
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            arrays[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
    return arrays


class GraphModule(torch.nn.Module):
    """The graph's nodes run in order; ``forward(x)`` returns its single output.

    Integer/quantized constants stay numpy (folded at trace time); float ones
    become buffers so torch.export sees real weights."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        graph = model.graph
        self._arrays = _constants(graph)
        self._consts: dict[str, str] = {}
        static = {n for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                  for n in node.input[1:]}
        for i, (name, arr) in enumerate(self._arrays.items()):
            if arr.dtype == np.float32 and arr.ndim > 0 and name not in static:
                self.register_buffer(f"c{i}", torch.from_numpy(arr.copy()))
                self._consts[name] = f"c{i}"
        self._nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in graph.node
                       if n.op_type != "Constant"]
        for k, (op, ins, _outs, at) in enumerate(self._nodes):
            if op == "DequantizeLinear" and self._is_weight(ins):
                self._register_weight(k, ins, at)
        inits = {init.name for init in graph.initializer}
        self._input = [i.name for i in graph.input if i.name not in inits][0]
        self._output = graph.output[0].name

    def _is_weight(self, ins: list[str]) -> bool:
        """A per-channel int8 constant (a layer's weights), not an int32 bias."""
        return (ins[0] in self._arrays and self._arrays[ins[0]].dtype != np.int32
                and bool(np.asarray(self._arrays[ins[1]]).ndim))

    def _register_weight(self, k: int, ins: list[str], at: dict) -> None:
        """Per-channel weight scales must be module buffers (placeholders in
        torch.export): converters read them as constants from there."""
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

    def _get(self, env, name):
        if name == "":
            return None
        if name in env:
            return env[name]
        if name in self._consts:
            return getattr(self, self._consts[name])
        return self._arrays[name]

    def _run(self, op: str, args: list, at: dict):
        if "_buffers" in at:
            scale, zero_point, weight = (getattr(self, b) for b in at["_buffers"])
            return requantized_weight(args[0].dtype, scale, zero_point, weight, at.get("axis", 1))
        handler = OPS.get(op)
        if handler is None:
            raise BundleError(f"ONNX operator {op} is not supported by the TFLite/Core ML export")
        return handler(args, at)

    def forward(self, x):
        env = {self._input: x}
        for op, ins, outs, at in self._nodes:
            env[outs[0]] = self._run(op, [self._get(env, n) for n in ins], at)
        return env[self._output]


class OnnxModule:
    """Factory: ``OnnxModule.build(model_proto)`` returns an ``nn.Module``
    whose ``forward(x)`` computes the graph's single output."""

    @staticmethod
    def build(model: onnx.ModelProto, path: str = "the model") -> GraphModule:
        check_supported(model, path)
        return GraphModule(model)


def load_torch_model(onnx_path: str) -> GraphModule:
    """The graph in ``onnx_path`` as an eval-mode ``nn.Module``."""
    if not os.path.isfile(onnx_path):
        raise BundleError(f"{onnx_path} is missing: pass a run folder written by 'edgetl train'")
    model = onnx.load(onnx_path)
    return OnnxModule.build(model, os.path.basename(onnx_path)).eval()
