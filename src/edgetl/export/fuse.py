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
from .graph_ops import prune_graph as _prune


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


def feature_model(backbone_onnx: str, labels: list[str], input_spec: InputSpec, backbone: str) -> onnx.ModelProto:
    """The frozen feature model of a bundle (``features.onnx``): the backbone
    graph the head was trained on, with only its ``features`` output."""
    model = onnx.load(backbone_onnx)
    _prune(model.graph, {FEATURES_NAME})
    assert model.graph.input[0].name == INPUT_NAME
    model.graph.name = f"edgetl_{backbone}_features"
    set_metadata(model, labels, input_spec, backbone)
    return model


def append_head(features: onnx.ModelProto, weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """A copy of feature model ``features`` (fp32 or int8) with the head on top:
    ``weight`` (C x D) and ``bias`` (C) act on the raw pooled features; the
    output is ``probabilities``. Metadata (labels, InputSpec) is kept."""
    model = onnx.ModelProto()
    model.CopyFrom(features)
    graph = model.graph
    graph.initializer.extend([
        numpy_helper.from_array(np.ascontiguousarray(np.asarray(weight, np.float32).T), "head.weight_t"),
        numpy_helper.from_array(np.asarray(bias, np.float32), "head.bias"),
    ])
    graph.node.extend([
        helper.make_node("Gemm", [FEATURES_NAME, "head.weight_t", "head.bias"], ["logits"], name="head_fc"),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1, name="head_softmax"),
    ])
    del graph.output[:]
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    out = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, len(bias)])
    out.type.tensor_type.shape.dim[0].CopyFrom(batch)
    graph.output.append(out)
    graph.name = graph.name.replace("_features", "_classifier")
    onnx.checker.check_model(model)
    return model


def fuse_classifier(backbone_onnx: str, weight: np.ndarray, bias: np.ndarray, labels: list[str],
                    input_spec: InputSpec, backbone: str) -> onnx.ModelProto:
    """``weight`` (C x D) and ``bias`` (C) act on the raw pooled features."""
    return append_head(feature_model(backbone_onnx, labels, input_spec, backbone), weight, bias)
