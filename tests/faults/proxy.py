"""A TCP fault proxy between a client and a broker, for tests (standard library only).

Point the client at ``proxy.port`` instead of the broker's port; the proxy forwards bytes both
ways and can, at any moment, ``cut()`` every open connection (both sides closed at once, as a
dropped link or a killed load balancer does), add ``latency`` to every chunk, or ``blackhole``
the traffic (connections stay open and data is read, but nothing is forwarded, as with a
partitioned network). It knows nothing about the protocol, so it serves AMQP and Kafka alike.

    async with FaultProxy("127.0.0.1", 5672) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        ...
        proxy.cut()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

CHUNK = 65_536


class FaultProxy:
    """Listens on ``host``:``port`` (a free port by default) and forwards each connection to
    ``target``."""

    def __init__(
        self, target_host: str, target_port: int, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.latency = 0.0
        """Seconds each chunk is held before it is forwarded (both directions)."""
        self.blackhole = False
        """While true, bytes read from either side are dropped instead of forwarded."""
        self.accepted = 0
        """Connections accepted since start (a reconnecting client shows here)."""
        self.cuts = 0
        """How often ``cut()`` was called."""
        self._refuse_until = 0.0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def open_connections(self) -> int:
        return len(self._links)

    @property
    def address(self) -> str:
        """``host:port`` to give clients."""
        return f"{self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def cut(self, outage: float = 0.0) -> int:
        """Close every open connection, client and broker side at once; return how many.

        The proxy keeps listening; connections made in the next ``outage`` seconds are closed
        at once (a link that stays down for a while), later ones get a fresh link.
        """
        self.cuts += 1
        self._refuse_until = time.monotonic() + outage
        links, self._links = self._links, set()
        for client, upstream in links:
            client.transport.abort()
            upstream.transport.abort()
        return len(links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if time.monotonic() < self._refuse_until:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        pumps = [
            self._spawn(self._pump(reader, up_writer)),
            self._spawn(self._pump(up_reader, writer)),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        # One side ended: end the other too, as a broken link would.
        self._links.discard(link)
        writer.transport.abort()
        up_writer.transport.abort()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := (item := await queue.get())[1]:
                    if (wait := item[0] - loop.time()) > 0:
                        await asyncio.sleep(wait)
                    sink.write(data)
                    await sink.drain()

        # A queue with due times: latency delays each chunk without slowing the stream down.
        sender = self._spawn(send())
        try:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(CHUNK):
                    if not self.blackhole:
                        queue.put_nowait((loop.time() + self.latency, data))
            queue.put_nowait((0.0, b""))  # end of stream: forward what is queued, then stop
            await sender
        finally:
            sender.cancel()
