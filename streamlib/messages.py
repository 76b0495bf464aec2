"""Messages as handlers see them, and as binders move them.

``Message[T]`` is the user-facing message: a decoded payload, headers, key and read-only
delivery facts. ``Envelope`` is the broker-neutral raw form a binder receives and sends:
bytes, headers, key, and where it came from.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")
D = TypeVar("D")

CONTENT_TYPE = "contentType"
"""Header that carries a message's MIME type (Spring Cloud Stream's ``contentType``)."""
PARTITION = "scst_partition"
"""Header in which a partitioned producer states the chosen partition (Kafka)."""
X_EXCEPTION_FQCN = "x-exception-fqcn"
X_EXCEPTION_MESSAGE = "x-exception-message"
X_EXCEPTION_STACKTRACE = "x-exception-stacktrace"

APPLICATION_JSON = "application/json"
TEXT_PLAIN = "text/plain"
OCTET_STREAM = "application/octet-stream"


class Attribute(Generic[T]):
    """A typed key for broker-specific facts on a message (``msg.extra(KafkaAttr.offset)``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Attribute({self.name!r})"


_EMPTY: Mapping[Attribute[Any], Any] = MappingProxyType({})
_MISSING: Any = object()


@dataclass(slots=True)
class Envelope:
    """A message in wire form.

    ``offset`` is the Kafka offset or the RabbitMQ delivery tag; ``timestamp`` is in epoch
    seconds; ``message_id`` is the broker's message id where it has one (the AMQP property).
    Binders fill in what they know; the core reads ``headers[CONTENT_TYPE]``.
    """

    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    key: bytes | str | None = None
    destination: str = ""
    partition: int | None = None
    offset: int | None = None
    timestamp: float | None = None
    extras: Mapping[Attribute[Any], Any] | None = None
    message_id: str | None = None


class Message(Generic[T]):
    """A payload with its headers and key; received messages also carry delivery facts.

    Return a ``Message`` from a processor (or pass one to ``app.send``) to set headers, the key
    or a different destination for the output.
    """

    __slots__ = (
        "_attempt",
        "_envelope",
        "destination",
        "headers",
        "key",
        "payload",
    )

    def __init__(
        self,
        payload: T,
        *,
        headers: Mapping[str, Any] | None = None,
        key: bytes | str | int | None = None,
        destination: str | None = None,
    ) -> None:
        self.payload = payload
        self.headers: dict[str, Any] = dict(headers) if headers else {}
        self.key = key
        self.destination = destination
        self._envelope: Envelope | None = None
        self._attempt = 0

    @classmethod
    def _received(cls, payload: T, envelope: Envelope, attempt: int) -> Message[T]:
        msg = cls.__new__(cls)
        msg.payload = payload
        msg.headers = envelope.headers
        msg.key = envelope.key
        msg.destination = envelope.destination
        msg._envelope = envelope
        msg._attempt = attempt
        return msg

    @property
    def partition(self) -> int | None:
        """Partition the message was consumed from, if the broker has partitions."""
        return self._envelope.partition if self._envelope else None

    @property
    def offset(self) -> int | None:
        """Deprecated: it meant the Kafka offset or the RabbitMQ delivery tag. Read
        ``msg.extra(KafkaAttr.offset)`` or ``msg.extra(RabbitAttr.delivery_tag)``."""
        warnings.warn(
            "Message.offset is deprecated: read msg.extra(KafkaAttr.offset) "
            "(streamlib_kafka) or msg.extra(RabbitAttr.delivery_tag) (streamlib_rabbit)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._envelope.offset if self._envelope else None

    @property
    def timestamp(self) -> float | None:
        """Broker timestamp (epoch seconds) of a received message, when known."""
        return self._envelope.timestamp if self._envelope else None

    @property
    def attempt(self) -> int:
        """1 for the first delivery to the handler, 2 for the first retry, and so on."""
        return self._attempt

    @property
    def body(self) -> bytes | None:
        """The raw body as received, before decoding."""
        return self._envelope.body if self._envelope else None

    @overload
    def extra(self, attribute: Attribute[D]) -> D: ...
    @overload
    def extra(self, attribute: Attribute[D], default: D) -> D: ...
    def extra(self, attribute: Attribute[D], default: Any = _MISSING) -> Any:
        """A broker-specific fact; raises KeyError when absent and no default is given."""
        extras = (self._envelope.extras if self._envelope else None) or _EMPTY
        if attribute in extras:
            return extras[attribute]
        if default is not _MISSING:
            return default
        raise KeyError(attribute.name)

    def __repr__(self) -> str:
        return (
            f"Message(payload={self.payload!r}, headers={self.headers!r}, key={self.key!r}, "
            f"destination={self.destination!r})"
        )
