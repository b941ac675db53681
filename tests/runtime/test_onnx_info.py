"""The standard-library reader of ONNX files (``runtime.onnx_info``) against
the onnx package's own parser: the same metadata, inputs, outputs and side
files on real bundles and on made-up graphs that hide tensors in every
place a tensor can be; malformed bytes are a WireError, never anything else."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetl.runtime.onnx_info import WireError, parse_model, read_onnx_info


def _reference(model: onnx.ModelProto) -> dict:
    """What the onnx package reads, in OnnxInfo's terms."""

    def values(vs):
        return [(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in vs]

    external = []

    def tensors(graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            yield from attr_tensors(node.attribute)

    def attr_tensors(attributes):
        for attr in attributes:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            for sparse in attr.sparse_tensors:
                yield sparse.values
                yield sparse.indices
            if attr.HasField("g"):
                yield from tensors(attr.g)
            for sub in attr.graphs:
                yield from tensors(sub)

    everything = list(tensors(model.graph))
    for fn in model.functions:
        everything += [t for node in fn.node for t in attr_tensors(node.attribute)]
        everything += list(attr_tensors(fn.attribute_proto))
    for info in model.training_info:
        everything += list(tensors(info.initialization)) + list(tensors(info.algorithm))
    for t in everything:
        if t.data_location == TensorProto.EXTERNAL:
            external.append((t.name, [e.value for e in t.external_data if e.key == "location"]))
    return {"metadata": {p.key: p.value for p in model.metadata_props}, "inputs": values(model.graph.input),
            "outputs": values(model.graph.output), "external": sorted(external)}


def _ours(data: bytes) -> dict:
    info = parse_model(data)
    return {"metadata": info.metadata, "inputs": info.inputs, "outputs": info.outputs,
            "external": sorted(info.external)}


def _varint(value: int) -> bytes:
    out = b""
    while True:
        byte = value & 0x7F
        value >>= 7
        out += bytes([byte | (0x80 if value else 0)])
        if not value:
            return out


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def test_real_bundle_files_read_as_onnx_reads_them(shared_run):
    paths = sorted(glob.glob(os.path.join(shared_run.run_dir, "*.onnx")))
    assert {os.path.basename(p) for p in paths} >= {"model.onnx", "model.int8.onnx", "features.onnx",
                                                     "train_step.onnx"}
    for path in paths:
        info = read_onnx_info(path)
        assert _ours(open(path, "rb").read()) == _reference(onnx.load(path, load_external_data=False)), path
    info = read_onnx_info(os.path.join(shared_run.run_dir, "model.onnx"))
    assert info.inputs[0][0] == "input" and info.inputs[0][1][1:] == [3, 32, 32]
    assert info.inputs[0][1][0] == 0  # the batch dimension is symbolic
    assert info.outputs == [("probabilities", [0, 3])]
    assert set(info.metadata) >= {"edgetl.labels", "edgetl.input_spec", "edgetl.backbone", "edgetl.format_version"}


def _external(name: str, location: str, values=(1.0, 2.0)) -> TensorProto:
    t = numpy_helper.from_array(np.array(values, np.float32), name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def _sub_graph(tensor: TensorProto, out: str = "z") -> onnx.GraphProto:
    return helper.make_graph([helper.make_node("Identity", [tensor.name], [out])], "sub", [],
                             [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2])], [tensor])


def _hiding_model() -> onnx.ModelProto:
    """External tensors in every place a tensor can be."""
    sparse = helper.make_sparse_tensor(_external("sparse_values", "s.bin"),
                                       numpy_helper.from_array(np.array([0], np.int64), "sparse_idx"), [2])
    nodes = [
        helper.make_node("Constant", [], ["c"], value=_external("constant", "../c.bin")),
        helper.make_node("If", ["cond"], ["y"], then_branch=_sub_graph(_external("then_w", "/abs/then.bin")),
                         else_branch=_sub_graph(_external("else_w", "else.bin"))),
        helper.make_node("Custom", [], ["t"], domain="x", many=[_external("listed", "l.bin")]),
        helper.make_node("Loop", [], ["l"], body=_sub_graph(_external("deep", "deep.bin"))),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                     helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 4])],
        [_external("init", "weights.bin"), numpy_helper.from_array(np.zeros(2, np.float32), "inside")],
        sparse_initializer=[sparse])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fn = model.functions.add()
    fn.name, fn.domain = "f", "x"
    fn.node.add().CopyFrom(helper.make_node("Constant", [], ["k"], value=_external("in_function", "f.bin")))
    training = model.training_info.add()
    training.initialization.CopyFrom(_sub_graph(_external("training", "t.bin")))
    for key, value in (("edgetl.labels", '["a"]'), ("k", "first"), ("k", "last")):
        model.metadata_props.add(key=key, value=value)
    return model


def test_every_hidden_external_tensor_is_found():
    model = _hiding_model()
    ours = _ours(model.SerializeToString())
    assert ours == _reference(model)
    assert {name for name, _ in ours["external"]} == {
        "constant", "then_w", "else_w", "listed", "deep", "init", "sparse_values", "in_function", "training"}
    assert ours["metadata"]["k"] == "last"
    assert ours["inputs"] == [("cond", []), ("input", [0, 3, 8, 8])]


def test_a_message_field_given_twice_is_merged_as_protobuf_does():
    """Protobuf merges two copies of the graph field: a tensor in either one is seen."""
    first = helper.make_model(helper.make_graph([], "a", [], [], [_external("first", "a.bin")]))
    second = onnx.ModelProto()
    second.graph.initializer.add().CopyFrom(_external("second", "../b.bin"))
    data = first.SerializeToString() + second.SerializeToString()
    merged = onnx.load_from_string(data)
    assert len(merged.graph.initializer) == 2
    assert _ours(data) == _reference(merged)
    # A Constant's tensor given twice (merged): data_location is the last one set.
    external = onnx.AttributeProto(name="value", type=onnx.AttributeProto.TENSOR)
    external.t.CopyFrom(_external("w", "../w.bin"))
    local = onnx.AttributeProto()
    local.t.data_location = TensorProto.DEFAULT
    for chunks, found in (((external, local), []), ((local, external), [("w", ["../w.bin"])])):
        attribute = b"".join(a.SerializeToString() for a in chunks)
        node = _len_field(2, b"c") + _len_field(4, b"Constant") + _len_field(5, attribute)
        data = _len_field(7, _len_field(1, node))
        assert _ours(data)["external"] == _reference(onnx.load_from_string(data))["external"] == found


def test_dims_follow_protobuf_oneof_and_sign():
    value = helper.make_tensor_value_info("input", TensorProto.FLOAT, [-1, "n", 5])
    model = helper.make_model(helper.make_graph([], "g", [value], []))
    assert _ours(model.SerializeToString())["inputs"] == [("input", [-1, 0, 5])] == _reference(model)["inputs"]


# ---------------------------------------------------------------- malformed bytes


@pytest.mark.parametrize("data", [
    b"\x3a",  # graph field, no length
    b"\x3a\x05ab",  # graph field longer than the file
    b"\x3a\x80",  # truncated varint
    b"\x08" + b"\xff" * 11,  # varint over 10 bytes
    b"\x07",  # wire type 7
    b"\x00\x00",  # field number 0
    _key(9, 3) + _key(10, 4),  # group ended by another number
    _key(9, 3) + b"\x08\x01",  # group never ended
    b"\x09\x01\x02",  # fixed64 cut short
])
def test_malformed_bytes_are_a_wire_error(data):
    with pytest.raises(WireError):
        parse_model(data)


def test_unknown_fields_and_groups_are_skipped():
    model = helper.make_model(helper.make_graph([], "g", [], []))
    model.metadata_props.add(key="k", value="v")
    data = (_key(9, 3) + b"\x08\x01" + _key(2, 5) + b"1234" + _key(9, 4)  # a group holding a varint and a fixed32
            + _key(30, 1) + b"12345678"  # an unknown fixed64
            + b"\x38\x05"  # field 7 (graph) as a varint: protobuf keeps it as an unknown field
            + model.SerializeToString())
    assert _ours(data)["metadata"] == {"k": "v"}


def test_graphs_nested_too_deep_are_refused():
    graph = b""
    for _ in range(150):  # graph -> node -> attribute.g -> graph ...
        graph = _len_field(1, _len_field(5, _len_field(6, graph)))
    with pytest.raises(WireError, match="too deep"):
        parse_model(_len_field(7, graph))


def test_damaged_copies_of_a_real_model_never_raise_anything_else(shared_run):
    data = open(os.path.join(shared_run.run_dir, "model.int8.onnx"), "rb").read()
    rng = np.random.default_rng(0)
    outcomes = set()
    for i in range(300):
        damaged = bytearray(data[: int(rng.integers(0, len(data)))] if i % 3 == 0 else data)
        for pos in rng.integers(0, len(damaged), 4) if damaged and i % 3 else []:
            damaged[pos] = int(rng.integers(0, 256))
        try:
            ours = _ours(bytes(damaged))
        except WireError:
            outcomes.add("refused")
            continue
        outcomes.add("read")
        try:
            reference = _reference(onnx.load_from_string(bytes(damaged)))
        except Exception:  # onnx refuses what the reader let through: ONNX Runtime refuses it too
            continue
        assert ours["external"] == reference["external"]
    assert outcomes == {"refused", "read"}


def test_the_runtime_imports_neither_torch_nor_onnx():
    code = ("import sys, edgetl.runtime, edgetl.runtime.personalize, edgetl.runtime.predictor, "
            "edgetl.runtime.bundle, edgetl.runtime.onnx_info; "
            "print(sorted(m for m in ('torch', 'onnx', 'google.protobuf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
