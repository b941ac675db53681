"""What an ONNX file declares, read from its protobuf bytes with the standard
library alone: the model's metadata, the graph's inputs and outputs, and
every tensor whose data lives in a side file.

The device runtime checks a bundle with it before ONNX Runtime loads
anything, without the onnx package (and its protobuf runtime). Only the
fields those checks need are decoded; the rest of the file is skipped over
as protobuf's wire format allows. Protobuf's own rules are kept where they
matter for safety: a message field that occurs twice is merged (so a tensor
cannot hide in a second copy of the graph), a field with the wrong wire type
is an unknown field, and malformed bytes raise :class:`WireError`.

Field numbers are those of onnx.proto (ModelProto, GraphProto, NodeProto,
AttributeProto, TensorProto, SparseTensorProto, ValueInfoProto, TypeProto,
TensorShapeProto, FunctionProto, TrainingInfoProto)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

_VARINT, _I64, _LEN, _GROUP_START, _GROUP_END, _I32 = 0, 1, 2, 3, 4, 5
_MAX_DEPTH = 100  # protobuf's own default recursion limit
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass
class OnnxInfo:
    """``metadata``: the model's metadata_props (the last of a repeated key
    wins); ``inputs`` / ``outputs``: the main graph's (name, dims) in order,
    a dim of unknown size is 0 and a value without a tensor shape has no dims;
    ``external``: (tensor name, every ``location`` it names) of each tensor,
    anywhere in the file, whose data lives in a side file."""

    metadata: dict[str, str] = field(default_factory=dict)
    inputs: list[tuple[str, list[int]]] = field(default_factory=list)
    outputs: list[tuple[str, list[int]]] = field(default_factory=list)
    external: list[tuple[str, list[str]]] = field(default_factory=list)


# ---------------------------------------------------------------- the wire format


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def _skip_group(buf: memoryview, pos: int, number: int, depth: int) -> int:
    """The position after the end tag of the group ``number`` started before ``pos``."""
    if depth > _MAX_DEPTH:
        raise WireError("groups nested too deep")
    while True:
        key, pos = _varint(buf, pos)
        if key & 7 == _GROUP_END:
            if key >> 3 != number:
                raise WireError("mismatched end of group")
            return pos
        pos = _skip_value(buf, pos, key, depth + 1)


def _skip_value(buf: memoryview, pos: int, key: int, depth: int = 0) -> int:
    wire = key & 7
    if wire == _VARINT:
        return _varint(buf, pos)[1]
    if wire in (_I64, _I32):
        end = pos + (8 if wire == _I64 else 4)
    elif wire == _LEN:
        size, pos = _varint(buf, pos)
        end = pos + size
    elif wire == _GROUP_START:
        return _skip_group(buf, pos, key >> 3, depth)
    else:
        raise WireError(f"wire type {wire} where a field starts")
    if end > len(buf):
        raise WireError("field runs past the end of the message")
    return end


def fields(chunks) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)`` of a message given as one or more
    chunks (the occurrences of a message field, which protobuf merges): a
    varint's value is its unsigned integer, a length-delimited field's its
    bytes (a view, not a copy); fixed-width fields and groups are skipped."""
    for buf in chunks:
        buf = memoryview(buf)
        pos = 0
        while pos < len(buf):
            key, pos = _varint(buf, pos)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise WireError("field number 0")
            if wire == _VARINT:
                value, pos = _varint(buf, pos)
                yield number, wire, value
            elif wire == _LEN:
                size, start = _varint(buf, pos)
                pos = start + size
                if pos > len(buf):
                    raise WireError("field runs past the end of the message")
                yield number, wire, buf[start:pos]
            else:
                pos = _skip_value(buf, pos, key)


def _text(value: memoryview) -> str:
    return bytes(value).decode("utf-8", "surrogateescape")


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _messages(chunks, wanted: dict[int, str]) -> dict[str, list[memoryview]]:
    """The occurrences of the length-delimited fields ``wanted`` (number -> name)."""
    found: dict[str, list[memoryview]] = {name: [] for name in wanted.values()}
    for number, wire, value in fields(chunks):
        if wire == _LEN and number in wanted:
            found[wanted[number]].append(value)
    return found


# ---------------------------------------------------------------- ONNX messages


def _entry(chunks) -> tuple[str, str]:
    """A StringStringEntryProto: (key, value)."""
    key = value = ""
    for number, wire, data in fields(chunks):
        if wire == _LEN and number == 1:
            key = _text(data)
        elif wire == _LEN and number == 2:
            value = _text(data)
    return key, value


def _tensor(chunks, info: OnnxInfo) -> None:
    """A TensorProto: recorded in ``info.external`` if its data is in a side file."""
    name, location, places = "", 0, []
    for number, wire, value in fields(chunks):
        if wire == _LEN and number == 8:
            name = _text(value)
        elif wire == _LEN and number == 13:
            key, place = _entry([value])
            if key == "location":
                places.append(place)
        elif wire == _VARINT and number == 14 and value in (0, _EXTERNAL):
            location = value
    if location == _EXTERNAL:
        info.external.append((name, places))


def _sparse_tensor(chunks, info: OnnxInfo) -> None:
    parts = _messages(chunks, {1: "values", 2: "indices"})
    for part in parts.values():
        if part:
            _tensor(part, info)


def _attribute(chunks, info: OnnxInfo, depth: int) -> None:
    parts = _messages(chunks, {5: "t", 6: "g", 10: "tensors", 11: "graphs", 22: "sparse_tensor",
                               23: "sparse_tensors"})
    if parts["t"]:
        _tensor(parts["t"], info)
    for tensor in parts["tensors"]:
        _tensor([tensor], info)
    if parts["sparse_tensor"]:
        _sparse_tensor(parts["sparse_tensor"], info)
    for sparse in parts["sparse_tensors"]:
        _sparse_tensor([sparse], info)
    if parts["g"]:
        _graph(parts["g"], info, depth + 1)
    for graph in parts["graphs"]:
        _graph([graph], info, depth + 1)


def _node(chunks, info: OnnxInfo, depth: int) -> None:
    for attribute in _messages(chunks, {5: "attribute"})["attribute"]:
        _attribute([attribute], info, depth)


def _dims(chunks) -> list[int]:
    """A ValueInfoProto's tensor dims (0: unknown size)."""
    types = _messages(chunks, {2: "type"})["type"]
    tensor = _messages(types, {1: "tensor_type"})["tensor_type"]
    shape = _messages(tensor, {2: "shape"})["shape"]
    dims = []
    for dim in _messages(shape, {1: "dim"})["dim"]:
        size = 0
        for number, wire, value in fields([dim]):
            if number == 1 and wire == _VARINT:
                size = _int64(value)
            elif number == 2 and wire == _LEN:
                size = 0  # dim_param: one of the two, the last one set wins
        dims.append(size)
    return dims


def _value(chunks) -> tuple[str, list[int]]:
    name = ""
    for number, wire, value in fields(chunks):
        if number == 1 and wire == _LEN:
            name = _text(value)
    return name, _dims(chunks)


def _graph(chunks, info: OnnxInfo, depth: int, main: bool = False) -> None:
    if depth > _MAX_DEPTH:
        raise WireError("graphs nested too deep")
    parts = _messages(chunks, {1: "node", 5: "initializer", 15: "sparse_initializer", 11: "input", 12: "output"})
    for tensor in parts["initializer"]:
        _tensor([tensor], info)
    for sparse in parts["sparse_initializer"]:
        _sparse_tensor([sparse], info)
    for node in parts["node"]:
        _node([node], info, depth)
    if main:
        info.inputs = [_value([v]) for v in parts["input"]]
        info.outputs = [_value([v]) for v in parts["output"]]


def parse_model(data: bytes) -> OnnxInfo:
    """The :class:`OnnxInfo` of a serialized ModelProto (WireError if malformed)."""
    info = OnnxInfo()
    parts = _messages([data], {7: "graph", 14: "metadata_props", 20: "training_info", 25: "functions"})
    for entry in parts["metadata_props"]:
        key, value = _entry([entry])
        info.metadata[key] = value
    _graph(parts["graph"], info, 0, main=True)
    for function in parts["functions"]:
        found = _messages([function], {7: "node", 11: "attribute_proto"})
        for node in found["node"]:
            _node([node], info, 1)
        for attribute in found["attribute_proto"]:
            _attribute([attribute], info, 1)
    for training in parts["training_info"]:
        for graphs in _messages([training], {1: "initialization", 2: "algorithm"}).values():
            if graphs:
                _graph(graphs, info, 1)
    return info


def read_onnx_info(path: str) -> OnnxInfo:
    """The :class:`OnnxInfo` of the ONNX file at ``path`` (OSError, WireError)."""
    with open(path, "rb") as fh:
        return parse_model(fh.read())
