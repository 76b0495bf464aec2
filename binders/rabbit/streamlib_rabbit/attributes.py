"""RabbitMQ facts about a received message, read with ``msg.extra(RabbitAttr.routing_key)``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from aiormq.abc import DeliveredMessage

from streamlib.binder import Attribute


class RabbitAttr:
    """Typed keys of the RabbitMQ extras on a received ``Message``."""

    queue: Final[Attribute[str]] = Attribute("rabbit.queue")
    exchange: Final[Attribute[str]] = Attribute("rabbit.exchange")
    routing_key: Final[Attribute[str]] = Attribute("rabbit.routing_key")
    delivery_tag: Final[Attribute[int]] = Attribute("rabbit.delivery_tag")
    redelivered: Final[Attribute[bool]] = Attribute("rabbit.redelivered")
    """True when the broker delivered the message before (requeued or not acknowledged)."""
    message_id: Final[Attribute[str | None]] = Attribute("rabbit.message_id")


_READERS: dict[Attribute[Any], Callable[[DeliveredMessage], Any]] = {
    RabbitAttr.exchange: lambda m: m.delivery.exchange,  # type: ignore[union-attr]
    RabbitAttr.routing_key: lambda m: m.delivery.routing_key,  # type: ignore[union-attr]
    RabbitAttr.delivery_tag: lambda m: m.delivery.delivery_tag,  # type: ignore[union-attr]
    RabbitAttr.redelivered: lambda m: m.delivery.redelivered,  # type: ignore[union-attr]
    RabbitAttr.message_id: lambda m: m.header.properties.message_id,
}


class DeliveryExtras(Mapping[Attribute[Any], Any]):
    """The extras of one delivery, read from it on access (no per-message dict is built)."""

    __slots__ = ("_message", "_queue")

    def __init__(self, message: DeliveredMessage, queue: str) -> None:
        self._message = message
        self._queue = queue

    def __getitem__(self, attribute: Attribute[Any]) -> Any:
        if attribute is RabbitAttr.queue:
            return self._queue
        return _READERS[attribute](self._message)

    def __contains__(self, attribute: object) -> bool:
        return attribute is RabbitAttr.queue or attribute in _READERS

    def __iter__(self) -> Iterator[Attribute[Any]]:
        yield RabbitAttr.queue
        yield from _READERS

    def __len__(self) -> int:
        return len(_READERS) + 1
