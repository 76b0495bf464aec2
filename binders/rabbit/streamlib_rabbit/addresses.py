"""Robust connections over several brokers (the nodes of a cluster).

aio-pika's robust connection reconnects to the one URL it was opened with, so an app whose node
died would wait for that node. Here the addresses are tried in order at start-up, and each
reconnection attempt after a drop moves to the next one, so the app goes on with the nodes left.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.robust_connection import RobustConnection
from yarl import URL

from streamlib.binder import redact_url

log = logging.getLogger("streamlib.rabbit")

# The hook below replaces the method a robust connection opens its transport with; it is
# private, so its presence is checked once here rather than failing at the first reconnect.
_CONNECT_TRANSPORT = "_RobustConnection__connect_transport"
if not hasattr(RobustConnection, _CONNECT_TRANSPORT):  # pragma: no cover - an aio-pika upgrade
    raise ImportError(f"aio_pika.RobustConnection has no {_CONNECT_TRANSPORT} to hook")


def _rotating(urls: Sequence[URL]) -> type[RobustConnection]:
    """A RobustConnection class that opens each transport to the next of ``urls``."""
    addresses = tuple(urls)

    class Rotating(RobustConnection):
        _next = 0

        async def _RobustConnection__connect_transport(self) -> None:
            # The opening URL carries the client's options (heartbeat...) as its query.
            query = self.url.query
            self.url = addresses[self._next % len(addresses)].with_query(query)
            if self._next:
                log.info("reconnecting to %s", redact_url(str(self.url.with_query(None))))
            self._next += 1
            await getattr(super(), _CONNECT_TRANSPORT)()

    return Rotating


async def connect(urls: Sequence[URL], **kwargs: Any) -> AbstractRobustConnection:
    """A robust connection to the first of ``urls`` that answers; later reconnections go
    round the others. Raises the last address's error when none answers."""
    conn: AbstractRobustConnection
    if len(urls) == 1:
        conn = await aio_pika.connect_robust(urls[0], **kwargs)
        return conn
    error: BaseException | None = None
    for start in range(len(urls)):
        order = [*urls[start:], *urls[:start]]
        try:
            conn = await aio_pika.connect_robust(
                order[0], connection_class=_rotating(order), **kwargs
            )
        except Exception as exc:
            error = exc
            continue
        return conn
    assert error is not None
    raise error
