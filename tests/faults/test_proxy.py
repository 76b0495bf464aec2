"""The fault proxy itself, against a local echo server: forwards, cuts, delays, black-holes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from faults.proxy import FaultProxy

pytestmark = pytest.mark.anyio


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def roundtrip(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = await asyncio.wait_for(reader.readexactly(len(data)), 5)
    writer.close()
    await writer.wait_closed()
    return got


async def test_forwards_both_ways(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        assert await roundtrip(proxy.port, b"hello" * 10_000) == b"hello" * 10_000
        assert proxy.accepted == 1


async def test_cut_closes_open_connections_and_accepts_new_ones(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        assert proxy.cut() == 1
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        writer.close()
        assert await roundtrip(proxy.port, b"again") == b"again"


async def test_latency_holds_each_chunk(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        proxy.latency = 0.2
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await roundtrip(proxy.port, b"slow") == b"slow"
        # Both directions are delayed: at least two latencies pass.
        assert loop.time() - started >= 0.4


async def test_blackhole_reads_but_forwards_nothing(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.blackhole = True
        writer.write(b"lost")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(1), 0.3)
        proxy.blackhole = False
        writer.write(b"kept")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"kept"
        writer.close()
        await writer.wait_closed()
