"""Backbone graph + trained head -> one classifier ONNX file.

The head is appended to the very graph the features were extracted with
(graph surgery, no re-export), so the bundle computes exactly the features
the head was trained on."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..data.input_spec import InputSpec
from ..runtime.bundle import (FORMAT_VERSION, INPUT_NAME, KEY_BACKBONE, KEY_FORMAT, KEY_LABELS, KEY_SPEC,
                              OUTPUT_NAME)
from .backbone_onnx import FEATURES_NAME


def _prune(graph: onnx.GraphProto, keep_outputs: set[str]) -> None:
    """Drop outputs not in keep_outputs and the nodes only they needed."""
    kept = [o for o in graph.output if o.name in keep_outputs]
    del graph.output[:]
    graph.output.extend(kept)
    needed = set(keep_outputs)
    live = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    used = set(needed)
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def set_metadata(model: onnx.ModelProto, labels: list[str], input_spec: InputSpec, backbone: str) -> None:
    meta = {
        KEY_FORMAT: FORMAT_VERSION,
        KEY_LABELS: json.dumps(list(labels)),
        KEY_SPEC: input_spec.to_json(),
        KEY_BACKBONE: backbone,
    }
    others = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(others)
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)


def fuse_classifier(backbone_onnx: str, weight: np.ndarray, bias: np.ndarray, labels: list[str],
                    input_spec: InputSpec, backbone: str) -> onnx.ModelProto:
    """``weight`` (C x D) and ``bias`` (C) act on the raw pooled features."""
    model = onnx.load(backbone_onnx)
    graph = model.graph
    _prune(graph, {FEATURES_NAME})
    assert graph.input[0].name == INPUT_NAME
    graph.initializer.extend([
        numpy_helper.from_array(np.ascontiguousarray(weight.T, np.float32), "head.weight_t"),
        numpy_helper.from_array(np.asarray(bias, np.float32), "head.bias"),
    ])
    graph.node.extend([
        helper.make_node("Gemm", [FEATURES_NAME, "head.weight_t", "head.bias"], ["logits"], name="head_fc"),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1, name="head_softmax"),
    ])
    del graph.output[:]
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    out = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, len(labels)])
    out.type.tensor_type.shape.dim[0].CopyFrom(batch)
    graph.output.append(out)
    graph.name = f"edgetl_{backbone}_classifier"
    set_metadata(model, labels, input_spec, backbone)
    onnx.checker.check_model(model)
    return model
