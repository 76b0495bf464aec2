"""Helpers of the rabbit binder's integration tests (real broker from ``rabbit_url``)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from support.launcher import rabbitmqctl
from yarl import URL

from streamlib import StreamApp
from streamlib.errors import BrokerError


def rabbit_app(
    url: str,
    name: str,
    bindings: Mapping[str, Any],
    binder: Mapping[str, Any] | None = None,
    **top: Any,
) -> StreamApp:
    """An app on the rabbit binder at ``url`` with ``bindings`` (and more binder settings)."""
    config: dict[str, Any] = {
        "name": name,
        "binders": {"rabbit": {"type": "rabbit", "url": url, **(binder or {})}},
        "default-binder": "rabbit",
        "bindings": dict(bindings),
        **top,
    }
    return StreamApp(name, config=config)


def listing(what: str, *columns: str) -> list[dict[str, Any]]:
    """``rabbitmqctl list_<what> <columns>`` as dicts."""
    rows = json.loads(rabbitmqctl(f"list_{what}", *columns, "--formatter", "json", "-q"))
    assert isinstance(rows, list)
    return rows


def queue_info(name: str) -> dict[str, Any]:
    """Flags and arguments of queue ``name``; arguments as a plain dict."""
    for row in listing("queues", "name", "durable", "auto_delete", "exclusive", "arguments"):
        if row["name"] == name:
            row["arguments"] = {k: v for k, _type, v in row["arguments"]}
            return row
    raise AssertionError(f"queue {name!r} does not exist")


def queues_named(prefix: str) -> list[str]:
    return sorted(r["name"] for r in listing("queues", "name") if r["name"].startswith(prefix))


def bindings_of(exchange: str) -> set[tuple[str, str]]:
    """(queue, routing key) pairs bound to ``exchange``."""
    return {
        (r["destination_name"], r["routing_key"])
        for r in listing("bindings", "source_name", "destination_name", "routing_key")
        if r["source_name"] == exchange
    }


def exchange_info(name: str) -> dict[str, Any]:
    for row in listing("exchanges", "name", "type", "durable", "auto_delete"):
        if row["name"] == name:
            return row
    raise AssertionError(f"exchange {name!r} does not exist")


def close_connections(name_prefix: str) -> int:
    """Close (broker side) every connection whose connection name starts with the prefix."""
    closed = 0
    out = rabbitmqctl("list_connections", "pid", "client_properties", "-q", "--no-table-headers")
    for line in out.splitlines():
        pid, _, props = line.partition("\t")
        if f'{{"connection_name","{name_prefix}' in props:
            rabbitmqctl("close_connection", pid, "closed by a streamlib test")
            closed += 1
    return closed


class ConfirmTally:
    """Publishes numbered messages and sorts them by the broker's answer: ``confirmed`` or
    ``failed`` (refused or not confirmed, e.g. while the connection was down)."""

    def __init__(self, app: StreamApp, destination: str, make: Callable[[int], Any]) -> None:
        self.app = app
        self.destination = destination
        self.make = make
        self.confirmed: set[int] = set()
        self.failed: list[int] = []

    async def publish(self, seqs: Iterable[int]) -> None:
        output = await self.app.output(self.destination)
        pending: list[tuple[int, Awaitable[None]]] = []
        for seq in seqs:
            try:
                pending.append((seq, await output.send(self.make(seq))))
            except BrokerError:
                self.failed.append(seq)
        for seq, confirm in pending:
            try:
                await confirm
                self.confirmed.add(seq)
            except BrokerError:
                self.failed.append(seq)

    async def resend_failed(self) -> None:
        """Send what was not confirmed again, until all is: at-least-once."""
        while self.failed:
            retry, self.failed = self.failed, []
            await self.publish(retry)


def through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by a local proxy's (credentials kept)."""
    return str(URL(url).with_host("127.0.0.1").with_port(port))


def queue_depth(name: str) -> int:
    """Messages of queue ``name`` on the broker, ready and unacknowledged (0 if it is gone)."""
    for row in listing("queues", "name", "messages"):
        if row["name"] == name:
            return int(row["messages"])
    return 0
