"""What an exported ONNX file says about itself, read without torch and without the onnx package.

The graph's names and the ``imageclf.*`` metadata keys written by :mod:`imageclf.modelfile.onnx`
live here, with :func:`read_onnx_metadata`, which reads a file's ``metadata_props`` straight
from its protobuf bytes (ModelProto field 14, each entry a key / value pair): the runtimes
that load the file (ONNX Runtime, OpenVINO) need the metadata before they build a session,
and importing ``onnx`` costs a second that ``imageclf predict RUN x.png`` should not pay.
"""

from __future__ import annotations

import json

from imageclf.core.errors import ModelFileError
from imageclf.modelfile.config import ModelConfig, parse_config

ONNX_FILE = "model.onnx"  # RUN/model.onnx: picked up by the graph backends while current
INT8_FILE = "model.int8.onnx"  # RUN/model.int8.onnx: the int8 graph (imageclf export RUN --int8)
INPUT_NAME = "input"
OUTPUT_NAMES = ("probs", "logits")
OOD_OUTPUT = "ood"
OPSET = 17
META_PREFIX = "imageclf."
_METADATA_FIELD = 14  # ModelProto.metadata_props (repeated StringStringEntryProto)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes):
    """(field number, payload) of each length-delimited field of one protobuf message;
    other wire types are skipped."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            yield number, data[pos:pos + size]
            pos += size
        else:
            raise ValueError(f"wire type {wire}")
    if pos != len(data):
        raise ValueError("truncated message")


def metadata_props(data: bytes) -> dict[str, str]:
    """All ``metadata_props`` of an ONNX file's bytes; ValueError when they are not protobuf."""
    props = {}
    for number, payload in _fields(data):
        if number == _METADATA_FIELD:
            entry = dict(_fields(payload))
            props[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
    return props


def read_onnx_metadata(data: bytes, where: str) -> dict[str, str]:
    """The ``imageclf.*`` metadata of an ONNX file's bytes (keys without the prefix)."""
    try:
        props = metadata_props(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{where}: not a valid ONNX file ({exc})") from None
    meta = {k[len(META_PREFIX):]: v for k, v in props.items() if k.startswith(META_PREFIX)}
    if "config" not in meta:
        raise ModelFileError(f"{where}: not exported by imageclf (no imageclf.config metadata)")
    return meta


def config_from_metadata(meta: dict[str, str], where: str) -> ModelConfig:
    """The model config an exported file carries (its ``imageclf.config``), checked as config.json is."""
    try:
        return parse_config(json.loads(meta["config"]), f"{where} (imageclf.config)")
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{where}: imageclf.config metadata is not JSON ({exc})") from None


def same_config(meta: dict[str, str], config: ModelConfig) -> bool:
    """Whether an exported file was written from exactly this config (weights' hash, threshold,
    temperature and everything else in config.json)."""
    try:
        return json.loads(meta["config"]) == json.loads(json.dumps(config.to_dict()))
    except (KeyError, ValueError):
        return False
