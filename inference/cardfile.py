"""The model card read straight from an ONNX file, without loading the model.

An ONNX file is a protobuf ``ModelProto``; its ``metadata_props`` (field 14) are
``StringStringEntryProto`` messages (key: field 1, value: field 2). Reading them walks
the file's top-level fields and seeks past the others (the graph and its weights), so a
card is read in a few small reads whatever the model's size, and no ONNX Runtime session
(memory, GPU) is made for a page that only shows what the models are.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from inference.card import ModelCard, ModelCardError, parse_card

_METADATA_PROPS = 14
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _varint(read: BinaryIO, source: str) -> int | None:
    """The next varint, or None at the end of the input."""
    value, shift = 0, 0
    while True:
        byte = read.read(1)
        if not byte:
            if shift:
                raise ModelCardError(f"{source}: not an ONNX file (truncated varint)")
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ModelCardError(f"{source}: not an ONNX file (varint too long)")


def _fields(read: BinaryIO, source: str, wanted: int) -> list[bytes]:
    """The contents of every length-delimited field ``wanted`` at this message's level."""
    found = []
    while (key := _varint(read, source)) is not None:
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _varint(read, source)
        elif wire == _FIXED64:
            read.seek(8, 1)
        elif wire == _FIXED32:
            read.seek(4, 1)
        elif wire == _LENGTH:
            size = _varint(read, source)
            if size is None:
                raise ModelCardError(f"{source}: not an ONNX file (truncated field)")
            if number == wanted:
                found.append(read.read(size))
            else:
                read.seek(size, 1)
        else:
            raise ModelCardError(f"{source}: not an ONNX file (wire type {wire})")
    return found


def read_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file at ``path``."""
    props: dict[str, str] = {}
    with path.open("rb") as f:
        for entry in _fields(f, path.name, _METADATA_PROPS):
            parts = {1: "", 2: ""}
            reader = io.BytesIO(entry)
            while (key := _varint(reader, path.name)) is not None:
                size = _varint(reader, path.name) if key & 7 == _LENGTH else None
                if size is None:
                    raise ModelCardError(f"{path.name}: malformed metadata entry")
                parts[key >> 3] = reader.read(size).decode("utf-8", "replace")
            props[parts[1]] = parts[2]
    return props


def read_card(path: Path) -> ModelCard:
    """The card in the ONNX file at ``path``; raises ModelCardError saying why not."""
    return parse_card(read_metadata(path), path.name)
