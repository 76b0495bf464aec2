"""Outgoing bindings: payload encoding, partition selection, and the bound producer."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from .binder import Producer
from .config import BindingProperties
from .converters import encode
from .errors import ConfigError, MessageConversionError
from .messages import CONTENT_TYPE, Envelope, Message
from .partitioning import PartitionSelector, default_partition_selector, select_partition

KeyExtractor = Callable[[Any, Mapping[str, Any], Any], Any]


def import_object(path: str, key: str) -> Any:
    """``package.module:attribute`` -> the object; ConfigError naming ``key`` otherwise."""
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(key, f"cannot import {path!r}: {exc}") from None
    return obj


def _field(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(name)
    if isinstance(value, str | bytes):
        try:
            return _field(orjson.loads(value), name)
        except orjson.JSONDecodeError:
            return None
    return getattr(value, name, None)


def key_extractor(expression: str | None, key: str) -> KeyExtractor:
    """A function ``(payload, headers, message_key) -> partition key`` for ``expression``.

    ``payload.a.b`` reads a field of the payload (a model, a mapping, or a JSON string),
    ``headers.h`` a header, ``key`` the message key, and ``module:function`` calls a function
    with the payload. Without an expression the message key is used.
    """
    if expression is None or expression == "key":
        return lambda payload, headers, msg_key: msg_key
    if ":" in expression:
        fn = import_object(expression, key)
        if not callable(fn):
            raise ConfigError(key, f"{expression!r} is not callable")
        return lambda payload, headers, msg_key: fn(payload)
    root, *path = expression.split(".")
    if root not in ("payload", "headers") or (root == "headers" and len(path) != 1):
        raise ConfigError(
            key,
            f"{expression!r} is not 'key', 'payload.<field>...', 'headers.<name>' or 'module:fn'",
        )

    def extract(payload: Any, headers: Mapping[str, Any], msg_key: Any) -> Any:
        value: Any = payload if root == "payload" else headers
        for name in path:
            value = _field(value, name)
            if value is None:
                return None
        return value

    return extract


class Output:
    """One output binding: turns payloads into envelopes and hands them to its producer."""

    def __init__(self, name: str, props: BindingProperties, producer: Producer) -> None:
        self.name = name
        self.destination = props.destination or name
        self.producer = producer
        self._content_type = props.content_type
        pprops = props.producer
        self._partition_count = pprops.partition_count
        self._partitioned = pprops.partitioned
        key_path = f"bindings.{name}.producer"
        self._extract = key_extractor(pprops.partition_key, f"{key_path}.partition-key")
        self._selector: PartitionSelector = (
            import_object(pprops.partition_selector, f"{key_path}.partition-selector")
            if pprops.partition_selector
            else default_partition_selector
        )

    def envelope(
        self, payload: Any, key: Any = None, headers: Mapping[str, Any] | None = None
    ) -> Envelope:
        """Encode ``payload`` (or a ``Message``) with its partition and content type."""
        if isinstance(payload, Message):
            headers = {**payload.headers, **(headers or {})}
            key = payload.key if key is None else key
            payload = payload.payload
        body, content_type = encode(payload, self._content_type)
        out_headers: dict[str, Any] = dict(headers) if headers else {}
        out_headers.setdefault(CONTENT_TYPE, content_type)
        partition = None
        if self._partitioned:
            pkey = self._extract(payload, out_headers, key)
            if pkey is None:
                raise MessageConversionError(
                    f"binding {self.name!r} is partitioned but the message has no partition key"
                )
            try:
                partition = select_partition(pkey, self._partition_count, self._selector)
            except TypeError as exc:
                raise MessageConversionError(f"binding {self.name!r}: {exc}") from exc
        wire_key = key.encode() if isinstance(key, str) else key
        if isinstance(wire_key, int):
            wire_key = str(wire_key).encode()
        return Envelope(body, out_headers, wire_key, self.destination, partition)

    async def send(
        self, payload: Any, key: Any = None, headers: Mapping[str, Any] | None = None
    ) -> Awaitable[None]:
        return await self.producer.send(self.envelope(payload, key, headers))
