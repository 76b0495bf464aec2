"""A TCP fault proxy: forwards connections to a broker and breaks them on demand.

Clients connect to ``listen_port``; every connection is relayed to ``target``. ``cut`` aborts
every open connection (both sides see a reset) and, for an outage, refuses new ones for a while;
``latency`` delays every chunk; ``black_hole`` keeps connections open but drops their bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class FaultProxy:
    """Relay ``127.0.0.1:listen_port`` to ``target_host:target_port`` with injectable faults."""

    def __init__(
        self, listen_port: int, target_host: str, target_port: int, host: str = "127.0.0.1"
    ) -> None:
        self.host = host
        self.listen_port = listen_port
        self.target = (target_host, target_port)
        self.latency = 0.0
        self.black_hole = False
        self.connections_seen = 0
        self.cuts = 0
        self._refuse_until = 0.0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.listen_port}"

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.listen_port, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for link in list(self._links):
            link.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self, outage: float = 0.0) -> int:
        """Abort every open connection, refuse new ones for ``outage`` s; how many were cut."""
        self.cuts += 1
        self._refuse_until = time.monotonic() + outage
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.clear()
        return len(links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_seen += 1
        if time.monotonic() < self._refuse_until:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._links.discard(link)
            link.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if self.latency:
                    await asyncio.sleep(self.latency)
                if self.black_hole:
                    continue
                writer.write(data)
                await writer.drain()
        # One side closed: close the other, so the peer sees the end too.
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()
