"""``google.rpc.Status`` error bodies, as OTLP/HTTP answers errors (protobuf or JSON)."""

from __future__ import annotations

import json

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def status_body(content_type: str, code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` error body in ``content_type``'s encoding (protobuf or JSON)."""
    if content_type == PROTOBUF:
        return _status_protobuf(code, message)
    return json.dumps({"code": code, "message": message}).encode()


def _status_protobuf(code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` (field 1: code, field 2: message) in protobuf wire format."""
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
