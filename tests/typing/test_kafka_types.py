"""Kafka extras keep their types under mypy --strict."""

from __future__ import annotations

from typing import assert_type

from streamlib_kafka import KafkaAttr

from streamlib import Message


def read_extras(msg: Message[bytes]) -> None:
    assert_type(msg.extra(KafkaAttr.topic), str)
    assert_type(msg.extra(KafkaAttr.partition), int)
    assert_type(msg.extra(KafkaAttr.offset), int)
    assert_type(msg.extra(KafkaAttr.timestamp), int)
    assert_type(msg.extra(KafkaAttr.timestamp_type), str)
    assert_type(msg.extra(KafkaAttr.offset, -1), int)
