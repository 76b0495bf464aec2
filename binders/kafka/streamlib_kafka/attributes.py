"""Kafka facts about a received message, read with ``msg.extra(KafkaAttr.offset)``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from streamlib.binder import Attribute

CREATE_TIME = "CreateTime"
LOG_APPEND_TIME = "LogAppendTime"


class KafkaAttr:
    """Typed keys of the Kafka extras on a received ``Message``."""

    topic: Final[Attribute[str]] = Attribute("kafka.topic")
    partition: Final[Attribute[int]] = Attribute("kafka.partition")
    offset: Final[Attribute[int]] = Attribute("kafka.offset")
    timestamp: Final[Attribute[int]] = Attribute("kafka.timestamp")
    """Record timestamp in epoch milliseconds, as Kafka stores it."""
    timestamp_type: Final[Attribute[str]] = Attribute("kafka.timestamp_type")
    """``CreateTime`` or ``LogAppendTime``."""


_FIELDS: dict[Attribute[Any], str] = {
    KafkaAttr.topic: "topic",
    KafkaAttr.partition: "partition",
    KafkaAttr.offset: "offset",
    KafkaAttr.timestamp: "timestamp",
    KafkaAttr.timestamp_type: "timestamp_type",
}


def timestamp_type_name(code: int) -> str:
    return LOG_APPEND_TIME if code == 1 else CREATE_TIME


class RecordExtras(Mapping[Attribute[Any], Any]):
    """The extras of one record, read from it on access (no per-message dict is built)."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getitem__(self, attribute: Attribute[Any]) -> Any:
        name = _FIELDS[attribute]
        value = getattr(self._record, name)
        return timestamp_type_name(value) if name == "timestamp_type" else value

    def __contains__(self, attribute: object) -> bool:
        return attribute in _FIELDS

    def __iter__(self) -> Iterator[Attribute[Any]]:
        return iter(_FIELDS)

    def __len__(self) -> int:
        return len(_FIELDS)
