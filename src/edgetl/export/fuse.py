"""Backbone graph + trained head -> one classifier ONNX file.

The head is appended to the very graph the features were extracted with
(graph surgery, no re-export), so the bundle computes exactly the features
the head was trained on."""

from __future__ import annotations

import json

import onnx
from onnx import TensorProto, helper

from ..data.input_spec import InputSpec
from ..runtime.bundle import (FORMAT_VERSION, INPUT_NAME, KEY_BACKBONE, KEY_FORMAT, KEY_LABELS, KEY_SPEC,
                              OUTPUT_NAME)
from .backbone_onnx import FEATURES_NAME, FINAL_TAP
from .graph_ops import truncate_to_tap


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


def feature_model(backbone_onnx: str, labels: list[str], input_spec: InputSpec, backbone: str,
                  tap: str = FINAL_TAP) -> onnx.ModelProto:
    """The frozen feature model of a bundle (``features.onnx``): the backbone
    graph the head was trained on, cut after ``tap`` (nothing computed after
    it is kept; ``"all"``: every tap joined), with the single output ``features``."""
    model = truncate_to_tap(backbone_onnx, tap)
    assert model.graph.input[0].name == INPUT_NAME
    model.graph.name = f"edgetl_{backbone}_features" + ("" if tap == FINAL_TAP else f"_to_{tap}")
    set_metadata(model, labels, input_spec, backbone)
    return model


def append_head(features: onnx.ModelProto, head) -> onnx.ModelProto:
    """A copy of feature model ``features`` (fp32 or int8) with ``head`` (any
    ``edgetl.heads`` head, fitted: its standardisation folded into the first
    layer) on top; the output is ``probabilities``. Metadata is kept."""
    model = onnx.ModelProto()
    model.CopyFrom(features)
    graph = model.graph
    nodes, inits = head.onnx_head(FEATURES_NAME, "logits", prefix="head", fold=True)
    graph.initializer.extend(inits)
    graph.node.extend(nodes)
    graph.node.append(helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1, name="head_softmax"))
    num_classes = len(head._layers()[-1][1])
    del graph.output[:]
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    out = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, num_classes])
    out.type.tensor_type.shape.dim[0].CopyFrom(batch)
    graph.output.append(out)
    graph.name = graph.name.replace("_features", "_classifier")
    onnx.checker.check_model(model)
    return model
