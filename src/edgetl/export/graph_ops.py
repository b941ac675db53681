"""Surgery on exported ONNX graphs: pruning to some outputs, cutting a taps
graph down to one tap (the backbone truncated after that layer), or joining
all its taps into one feature vector."""

from __future__ import annotations

import onnx

from ..zoo.registry import ALL_TAPS
from .backbone_onnx import FEATURES_NAME, FINAL_TAP, TAP_PREFIX, tap_output_name


def prune_graph(graph: onnx.GraphProto, keep_outputs: set[str]) -> None:
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


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for value in list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def truncate_to_tap(taps_onnx_path: str, tap_name: str) -> onnx.ModelProto:
    """The backbone cut after tap ``tap_name`` of a taps graph
    (``export_backbone(..., taps=True)``): its only output is that tap's pooled
    features, named ``features``; every node and initializer computed after
    the tap is gone. ``"final"`` gives the whole feature model; ``"all"``
    (``zoo.ALL_TAPS``) the whole model with every tap's output concatenated,
    in output order, into ``features``."""
    model = onnx.load(taps_onnx_path)
    graph = model.graph
    if tap_name == ALL_TAPS:
        return _join_taps(model)
    wanted = tap_output_name(tap_name)
    outputs = [o.name for o in graph.output]
    if wanted not in outputs:
        taps = [FINAL_TAP if n == FEATURES_NAME else n.split(":", 1)[-1] for n in outputs]
        raise KeyError(f"{taps_onnx_path} has no tap {tap_name!r}; its taps: {taps}")
    prune_graph(graph, {wanted})
    live = {name for node in graph.node for name in node.output}
    kept = [v for v in graph.value_info if v.name in live]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    if wanted != FEATURES_NAME:
        if FEATURES_NAME in live:  # never expected: the exporter names intermediates otherwise
            raise ValueError(f"{taps_onnx_path}: an intermediate value is already named {FEATURES_NAME!r}")
        _rename_value(graph, wanted, FEATURES_NAME)
    graph.name = f"{graph.name or 'backbone'}_to_{tap_name}"
    onnx.checker.check_model(model)
    return model


def _join_taps(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (a taps graph) with one output ``features``: the Concat of
    all its outputs along the channels, in output order (the row layout of
    the feature cache)."""
    from onnx import TensorProto, helper

    graph = model.graph
    outputs = list(graph.output)
    if len(outputs) < 2:
        raise KeyError(f"{graph.name or 'the graph'} has no taps to join")
    final_alias = TAP_PREFIX + FINAL_TAP
    _rename_value(graph, FEATURES_NAME, final_alias)
    names = [final_alias if o.name == FEATURES_NAME else o.name for o in outputs]
    width = 0
    for o in outputs:
        dims = o.type.tensor_type.shape.dim
        width += int(dims[1].dim_value) if len(dims) == 2 and dims[1].HasField("dim_value") else 0
    graph.node.append(helper.make_node("Concat", names, [FEATURES_NAME], axis=1, name="join_taps"))
    del graph.output[:]
    batch = outputs[0].type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param or (batch.dim_value if batch.HasField("dim_value") else "N")
    graph.output.append(helper.make_tensor_value_info(FEATURES_NAME, TensorProto.FLOAT, [batch_dim, width or None]))
    graph.name = f"{graph.name or 'backbone'}_{ALL_TAPS}_taps"
    onnx.checker.check_model(model)
    return model
