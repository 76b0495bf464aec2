"""The broker's frame limit, respected before sending.

AMQP carries a message's properties and headers in one content-header frame, which may not be
larger than the connection's negotiated ``frame_max`` (128 KiB by default). A larger one makes
RabbitMQ close the whole connection with ``FRAME_ERROR``, failing every send on it. Dead
letters carry the exception's message and stack trace, which can be any size, so their headers
are trimmed to fit; any other message that does not fit fails alone with ``PublishError``.
"""

from __future__ import annotations

from typing import Any

from pamqp.commands import Basic
from pamqp.frame import marshal as marshal_frame
from pamqp.header import ContentHeader

DEFAULT_FRAME_MAX = 131_072
"""RabbitMQ's default ``frame_max``, used when the connection did not say."""


def header_frame_size(properties: Basic.Properties, body_size: int) -> int:
    """Bytes of the content-header frame that carries ``properties`` (frame overhead included,
    which is what ``frame_max`` counts)."""
    return len(marshal_frame(ContentHeader(0, body_size, properties), 1))


def truncated(value: str | bytes, keep: int) -> str:
    """The first ``keep`` bytes of ``value`` (UTF-8) and a marker saying how many were cut."""
    raw = value.encode() if isinstance(value, str) else value
    head = raw[:keep].decode("utf-8", "ignore")
    return f"{head}... [truncated {len(raw) - len(head.encode())} bytes]"


def fit_headers(properties: Basic.Properties, body_size: int, frame_max: int) -> list[str]:
    """Trim string headers of ``properties``, largest first, until its header frame fits in
    ``frame_max``; return the names of the headers trimmed (empty when it already fit).

    A trimmed value keeps its beginning and ends with ``... [truncated N bytes]``. Raises
    ValueError when even trimming every string header cannot make it fit.
    """
    excess = header_frame_size(properties, body_size) - frame_max
    if excess <= 0:
        return []
    headers: dict[str, Any] = dict(properties.headers or {})
    trimmed: list[str] = []
    while excess > 0:
        sizes = {
            key: len(value.encode() if isinstance(value, str) else value)
            for key, value in headers.items()
            if isinstance(value, str | bytes) and key not in trimmed
        }
        if not sizes:
            raise ValueError(
                f"the message headers take {excess} bytes more than frame_max {frame_max} "
                "and have no long value left to trim"
            )
        key = max(sizes, key=lambda k: sizes[k])
        # The marker is at most ~40 bytes; cut that much more so one pass usually suffices.
        headers[key] = truncated(headers[key], max(0, sizes[key] - excess - 64))
        trimmed.append(key)
        properties.headers = headers
        excess = header_frame_size(properties, body_size) - frame_max
    return trimmed
