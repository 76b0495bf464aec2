"""Kafka dead letters: the record written to ``error.<destination>.<group>``.

A dead letter carries the original's key, value and headers, the ``x-original-*`` headers
(binary, as Spring writes them) and the ``x-exception-*`` headers. A long exception message
or stack trace could make it larger than the DLQ topic's ``max.message.bytes``; then the
``x-exception-*`` values are cut, each ending with ``... [truncated N bytes]``, so the dead
letter fits. The original's key, value and headers are never cut.
"""

from __future__ import annotations

import struct
from typing import Any

from streamlib.binder import X_EXCEPTION_FQCN, X_EXCEPTION_MESSAGE, X_EXCEPTION_STACKTRACE, Failure

from .attributes import timestamp_type_name
from .limits import Headers, record_size
from .producer import Confirmation, ProducerClient

TRIMMABLE = frozenset((X_EXCEPTION_STACKTRACE, X_EXCEPTION_MESSAGE, X_EXCEPTION_FQCN))


def dlq_headers(record: Any, failure: Failure) -> Headers:
    """The original record's headers, then ``x-original-*``, then ``x-exception-*``."""
    headers = list(record.headers or ())
    headers += [
        ("x-original-topic", record.topic.encode()),
        ("x-original-partition", struct.pack(">i", record.partition)),
        ("x-original-offset", struct.pack(">q", record.offset)),
        ("x-original-timestamp", struct.pack(">q", record.timestamp)),
        ("x-original-timestamp-type", timestamp_type_name(record.timestamp_type).encode()),
    ]
    headers += [(k, v.encode("utf-8")) for k, v in failure.dead_letter_headers().items()]
    return headers


def marker(removed: int) -> bytes:
    """The suffix of a cut header value."""
    return b"... [truncated %d bytes]" % removed


def cut(value: bytes, cap: int) -> bytes:
    """``value`` if it has at most ``cap`` bytes, else its head (whole UTF-8 characters)
    followed by the marker, at most ``cap`` bytes unless even the marker is longer."""
    if len(value) <= cap:
        return value
    room = max(cap - len(marker(len(value))), 0)
    head = value[:room].decode("utf-8", "ignore").encode("utf-8")
    return head + marker(len(value) - len(head))


def fit(key: bytes | None, value: bytes | None, headers: Headers, limit: int) -> Headers:
    """``headers`` with the ``x-exception-*`` values cut so the record takes at most
    ``limit`` bytes; every value gets the same cap, the largest that fits. When even
    markers alone do not fit, the shortest form is returned (sending it then fails)."""
    if record_size(key, value, headers) <= limit:
        return headers

    def capped(cap: int) -> Headers:
        return [(n, cut(v, cap) if n in TRIMMABLE else v) for n, v in headers]

    low, high = 0, max((len(v) for n, v in headers if n in TRIMMABLE), default=0)
    while low < high:
        middle = (low + high + 1) // 2
        if record_size(key, value, capped(middle)) <= limit:
            low = middle
        else:
            high = middle - 1
    return capped(low)


async def send_dead_letter(
    client: ProducerClient, producer: Any, topic: str, record: Any, failure: Failure
) -> Confirmation:
    """Queue the dead letter of ``record`` on ``producer``, fitted to ``topic``'s limit, to
    the original's partition. PublishError when it cannot be queued."""
    value = record.value if record.value is not None else b""
    limit, _ = client.limits.limit(topic)
    headers = fit(record.key, value, dlq_headers(record, failure), limit)
    return await client.send(producer, topic, value, record.key, record.partition, headers)
