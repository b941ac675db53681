"""Surgery on exported ONNX graphs: pruning to some outputs, and cutting a
taps graph down to one tap (the backbone truncated after that layer)."""

from __future__ import annotations

import onnx

from .backbone_onnx import FEATURES_NAME, FINAL_TAP, tap_output_name


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
    the tap is gone. ``"final"`` gives the whole feature model."""
    model = onnx.load(taps_onnx_path)
    graph = model.graph
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
