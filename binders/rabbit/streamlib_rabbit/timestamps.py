"""AMQP timestamps the client cannot represent fail their message, not the connection.

pamqp decodes an AMQP timestamp (the ``timestamp`` property, or a header value of type
``T``) into a ``datetime`` and raises for one outside its range (year 584556019, say). That
happens in aiormq's frame reader, which then closes the whole connection; the broker delivers
the message again and the consumer loops on it forever, the messages behind it stuck. The
binder makes pamqp decode such a timestamp to ``OUT_OF_RANGE`` instead, so the delivery
reaches the consumer, which fails it like an undecodable body.
"""

from __future__ import annotations

import datetime
from typing import Any

from pamqp import decode

OUT_OF_RANGE = datetime.datetime.max.replace(tzinfo=datetime.UTC)
"""What a timestamp outside ``datetime``'s range decodes to."""

_pamqp_timestamp = decode.timestamp


def _timestamp(value: bytes) -> tuple[int, datetime.datetime]:
    try:
        return _pamqp_timestamp(value)
    except (ValueError, OverflowError, OSError):
        if len(value) < 8:
            raise  # a truncated frame: not a value to pass on
        return 8, OUT_OF_RANGE


def install() -> None:
    """Decode out-of-range timestamps to ``OUT_OF_RANGE`` from now on (idempotent)."""
    decode.METHODS["timestamp"] = _timestamp
    decode.TABLE_MAPPING[b"T"] = _timestamp


def check(timestamp: datetime.datetime | None, headers: dict[str, Any]) -> None:
    """Raise ValueError naming the property or header whose timestamp was out of range."""
    if timestamp is OUT_OF_RANGE:
        raise ValueError("the timestamp property is out of range")
    for name, value in headers.items():
        if value is OUT_OF_RANGE:
            raise ValueError(f"header {name!r}: a timestamp out of range")
