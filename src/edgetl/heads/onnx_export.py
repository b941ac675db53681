"""A head as standard ONNX: the standardisation (explicit, or folded into
the first Gemm), then one Gemm per layer with a ReLU between consecutive
layers. Works on any head that describes itself as ``_layers()``."""

from __future__ import annotations

import numpy as np


def fold_standardization(W: np.ndarray, b: np.ndarray, mean: np.ndarray,
                         scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) on standardised features -> the same layer on raw features."""
    W = (W / scale).astype(np.float32)
    b = (b - W @ mean).astype(np.float32)
    return W, b


def layers_onnx(layers: list[tuple[np.ndarray, np.ndarray]], mean: np.ndarray, scale: np.ndarray,
                features_name: str, logits_name: str, prefix: str = "head", fold: bool = False) -> tuple[list, list]:
    """Nodes and initializers computing ``layers`` (acting on standardised
    features) from the RAW features ``features_name`` into ``logits_name``;
    see :meth:`edgetl.heads.base.Head.onnx_head`."""
    from onnx import helper, numpy_helper

    layers = [(np.asarray(W, np.float32), np.asarray(b, np.float32)) for W, b in layers]
    nodes, inits = [], []

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), f"{prefix}.{name}"))
        return inits[-1].name

    x = features_name
    if fold:
        layers[0] = fold_standardization(*layers[0], mean, scale)
    else:
        nodes.append(helper.make_node("Sub", [x, init("mean", mean)], [f"{prefix}.centered"], name=f"{prefix}_sub"))
        nodes.append(helper.make_node("Div", [nodes[-1].output[0], init("scale", scale)],
                                      [f"{prefix}.standardized"], name=f"{prefix}_div"))
        x = nodes[-1].output[0]
    for i, (W, b) in enumerate(layers, start=1):
        tag = "fc" if len(layers) == 1 else f"fc{i}"
        if i > 1:
            nodes.append(helper.make_node("Relu", [x], [f"{prefix}.relu{i - 1}"], name=f"{prefix}_relu{i - 1}"))
            x = nodes[-1].output[0]
        out = logits_name if i == len(layers) else f"{prefix}.{tag}.out"
        nodes.append(helper.make_node("Gemm", [x, init(f"{tag}.weight", W), init(f"{tag}.bias", b)], [out],
                                      transB=1, name=f"{prefix}_{tag}"))
        x = out
    return nodes, inits


def head_model(head, num_features: int, features_name: str = "features", logits_name: str = "logits",
               fold: bool = False, opset: int = 17):
    """A stand-alone ONNX model of a fitted ``head``: ``features`` (N x D) -> ``logits`` (N x C)."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inits = head.onnx_head(features_name, logits_name, fold=fold)
    num_classes = len(head._layers()[-1][1])
    graph = helper.make_graph(
        nodes, "edgetl_head",
        [helper.make_tensor_value_info(features_name, TensorProto.FLOAT, [None, num_features])],
        [helper.make_tensor_value_info(logits_name, TensorProto.FLOAT, [None, num_classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model
