"""Spring's Kafka header encoding (``DefaultKafkaHeaderMapper``), both ways.

Outgoing: ``scst_partition`` (JSON digits) first when the producer is partitioned, then
``contentType`` (raw UTF-8), then the user's headers, then ``spring_json_header_types``
naming each header's Java type. Strings travel as raw UTF-8, numbers and structures as JSON,
bytes as they are (and untyped). Incoming: headers typed ``java.lang.String`` become ``str``,
other typed headers are JSON-decoded, untyped ones stay ``bytes``, null values are None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from streamlib.binder import CONTENT_TYPE, PARTITION

JSON_TYPES = "spring_json_header_types"
STRING = "java.lang.String"
_INT32 = range(-(2**31), 2**31)
_CACHE_LIMIT = 256

Headers = list[tuple[str, bytes]]


def _encode_value(value: Any) -> tuple[bytes, str | None]:
    if isinstance(value, str):
        return value.encode("utf-8"), STRING
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), None
    if isinstance(value, bool):
        return (b"true" if value else b"false"), "java.lang.Boolean"
    if isinstance(value, int):
        return str(value).encode(), "java.lang.Integer" if value in _INT32 else "java.lang.Long"
    if isinstance(value, float):
        return orjson.dumps(value), "java.lang.Double"
    if isinstance(value, Mapping):
        return orjson.dumps(value), "java.util.LinkedHashMap"
    if isinstance(value, list | tuple):
        return orjson.dumps(value), "java.util.ArrayList"
    return str(value).encode("utf-8"), STRING


def _encode(headers: Mapping[str, Any], partition: int | None) -> Headers:
    out: Headers = []
    types: dict[str, str] = {}
    if partition is not None:
        out.append((PARTITION, str(partition).encode()))
        types[PARTITION] = "java.lang.Integer"
    content_type = headers.get(CONTENT_TYPE)
    if content_type is not None:
        raw, java_type = _encode_value(content_type)
        out.append((CONTENT_TYPE, raw))
        types[CONTENT_TYPE] = java_type or STRING
    for name, value in headers.items():
        if name in (CONTENT_TYPE, PARTITION, JSON_TYPES):
            continue
        raw, java_type = _encode_value(value)
        out.append((name, raw))
        if java_type is not None:
            types[name] = java_type
    if types:
        out.append((JSON_TYPES, orjson.dumps(types)))
    return out


_simple: dict[tuple[int | None, str], Headers] = {}


def encode_headers(headers: Mapping[str, Any], partition: int | None) -> Headers:
    """Kafka record headers for a message's headers and (for a partitioned producer) partition.

    The common case, only a ``contentType``, is served from a cache: callers must not mutate
    the returned list.
    """
    if len(headers) == 1:
        content_type = headers.get(CONTENT_TYPE)
        if type(content_type) is str:
            key = (partition, content_type)
            cached = _simple.get(key)
            if cached is None:
                cached = _encode(headers, partition)
                if len(_simple) < _CACHE_LIMIT:
                    _simple[key] = cached
            return cached
    return _encode(headers, partition)


_types_cache: dict[bytes, dict[str, str]] = {}


def _types(raw: bytes) -> dict[str, str]:
    types = _types_cache.get(raw)
    if types is None:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        types = {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
        if len(_types_cache) < _CACHE_LIMIT:
            _types_cache[raw] = types
    return types


_decoded_cache: dict[Sequence[tuple[str, bytes | None]], dict[str, Any]] = {}


def decode_headers(raw: Sequence[tuple[str, bytes | None]]) -> dict[str, Any]:
    """Message headers from Kafka record headers (any record, with or without Spring's).

    Records of one producer mostly carry identical headers, so decoded results of hashable
    (tuple) headers are cached; each call returns a fresh dict.
    """
    if not raw:
        return {}
    if type(raw) is tuple:
        cached = _decoded_cache.get(raw)
        if cached is None:
            cached = _decode(raw)
            if len(_decoded_cache) < _CACHE_LIMIT:
                _decoded_cache[raw] = cached
        return dict(cached)
    return _decode(raw)


def _decode(raw: Sequence[tuple[str, bytes | None]]) -> dict[str, Any]:
    types: dict[str, str] | None = None
    for name, value in raw:
        if name == JSON_TYPES and value is not None:
            types = _types(value)
    out: dict[str, Any] = {}
    for name, value in raw:
        java_type = types.get(name) if types else None
        if value is None:
            # A null header (Kafka allows them; Spring writes them for null values).
            if name != JSON_TYPES:
                out[name] = None
        elif java_type is None:
            if name != JSON_TYPES:
                out[name] = value
        elif java_type == STRING:
            out[name] = value.decode("utf-8", "replace")
        else:
            try:
                out[name] = orjson.loads(value)
            except orjson.JSONDecodeError:
                out[name] = value
    return out
