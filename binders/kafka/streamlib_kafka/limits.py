"""What the broker will refuse in a record, checked before the record is sent.

The broker refuses a record batch larger than the topic's ``max.message.bytes``, and the
producer a request larger than its ``max-request-size``. A refused batch costs more than the
record: it leaves a gap in the idempotent producer's sequence. So a record that cannot fit
fails here, as a non-retriable ``PublishError`` of that message naming the topic, its size
and the limit. Sizes are aiokafka's upper bound of a one-record batch, uncompressed; with
``compression-type`` set only ``max-request-size`` is checked here, since the broker compares
the compressed size. A compacted topic (``cleanup.policy`` with ``compact``) refuses a record
without a key, which the broker reports only as an unknown error; that fails here too.
"""

from __future__ import annotations

from aiokafka.record.default_records import (  # type: ignore[import-untyped]
    DefaultRecordBatchBuilder,
)

from streamlib.binder import PublishError

Headers = list[tuple[str, bytes]]


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Bytes of a batch holding only this record (an upper bound, within ~20 bytes)."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
    return size


class RecordLimits:
    """The limits a record must fit: the producer's, and each known topic's."""

    compacted: set[str]
    """Topics whose cleanup.policy includes compact."""

    def __init__(self, max_request_size: int, compressed: bool) -> None:
        self.max_request_size = max_request_size
        self._compressed = compressed
        self._topics: dict[str, int] = {}
        self.compacted = set()

    def learn(self, topic: str, max_message_bytes: int) -> None:
        """Remember ``topic``'s ``max.message.bytes`` (as described by the broker)."""
        self._topics[topic] = max_message_bytes

    def limit(self, topic: str) -> tuple[int, str]:
        """The largest record ``topic`` takes, in bytes, and the setting that says so."""
        topic_limit = None if self._compressed else self._topics.get(topic)
        if topic_limit is not None and topic_limit < self.max_request_size:
            return topic_limit, "the topic's max.message.bytes"
        return self.max_request_size, "producer.max-request-size"

    def check(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Raise a non-retriable PublishError when ``topic`` would refuse the record."""
        if key is None and topic in self.compacted:
            raise PublishError(
                f"publishing to {topic!r}: the topic is compacted (cleanup.policy compact) "
                "and refuses a record without a key",
                retriable=False,
            )
        limit, setting = self.limit(topic)
        size = record_size(key, value, headers)
        if size > limit:
            raise PublishError(
                f"publishing to {topic!r}: the record is {size} bytes, larger than "
                f"{setting} ({limit} bytes)",
                retriable=False,
            )
