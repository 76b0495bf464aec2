"""The exchanges, queues and bindings the rabbit binder declares are Spring's (WIRE.md)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from pydantic import BaseModel
from rabbit_support import bindings_of, exchange_info, queue_info, queues_named, rabbit_app

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]


class Item(BaseModel):
    key: str


async def test_group_queue_with_dlq(rabbit_url: str, unique: Callable[[str], str]) -> None:
    dest = unique("orders")
    app = rabbit_app(
        rabbit_url,
        "topo",
        {"take-in-0": {"destination": dest, "group": "billing", "consumer": {"dlq": True}}},
    )

    @app.sink
    async def take(item: Item) -> None: ...

    async with app.run():
        assert exchange_info(dest) == {
            "name": dest,
            "type": "topic",
            "durable": True,
            "auto_delete": False,
        }
        assert exchange_info("DLX")["type"] == "direct"
        assert exchange_info("DLX")["durable"] is True
        queue = queue_info(f"{dest}.billing")
        assert (queue["durable"], queue["auto_delete"], queue["exclusive"]) == (True, False, False)
        assert queue["arguments"] == {
            "x-dead-letter-exchange": "DLX",
            "x-dead-letter-routing-key": f"{dest}.billing",
        }
        assert bindings_of(dest) == {(f"{dest}.billing", "#")}
        dlq = queue_info(f"{dest}.billing.dlq")
        assert (dlq["durable"], dlq["arguments"]) == (True, {})
        assert (f"{dest}.billing.dlq", f"{dest}.billing") in bindings_of("DLX")


async def test_group_queue_without_dlq_has_no_arguments(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    app = rabbit_app(rabbit_url, "topo", {"take-in-0": {"destination": dest, "group": "g"}})

    @app.sink
    async def take(item: Item) -> None: ...

    async with app.run():
        assert queue_info(f"{dest}.g")["arguments"] == {}
        assert queues_named(f"{dest}.g") == [f"{dest}.g"]


async def test_partitioned_queues_share_one_dlq(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    bindings = {
        "take-in-0": {
            "destination": dest,
            "group": "billing",
            "consumer": {"partitioned": True, "dlq": True, "instance-index-list": [0, 1]},
        }
    }
    app = rabbit_app(rabbit_url, "topo", bindings, **{"instance-count": 2})

    @app.sink
    async def take(item: Item) -> None: ...

    async with app.run():
        assert bindings_of(dest) == {
            (f"{dest}.billing-0", f"{dest}-0"),
            (f"{dest}.billing-1", f"{dest}-1"),
        }
        for n in (0, 1):
            assert queue_info(f"{dest}.billing-{n}")["arguments"] == {
                "x-dead-letter-exchange": "DLX",
                "x-dead-letter-routing-key": f"{dest}.billing-{n}",
            }
        dlx = {b for b in bindings_of("DLX") if b[0] == f"{dest}.billing.dlq"}
        assert dlx == {
            (f"{dest}.billing.dlq", f"{dest}.billing"),
            (f"{dest}.billing.dlq", f"{dest}.billing-0"),
            (f"{dest}.billing.dlq", f"{dest}.billing-1"),
        }


async def test_anonymous_queue_is_exclusive_auto_delete(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("events")
    app = rabbit_app(rabbit_url, "topo", {"listen-in-0": {"destination": dest}})

    @app.sink
    async def listen(item: Item) -> None: ...

    async with app.run():
        [name] = queues_named(f"{dest}.anonymous.")
        assert re.fullmatch(rf"{re.escape(dest)}\.anonymous\.[A-Za-z0-9_-]{{22}}", name)
        queue = queue_info(name)
        assert (queue["durable"], queue["auto_delete"], queue["exclusive"]) == (False, True, True)
        assert bindings_of(dest) == {(name, "#")}
    assert queues_named(f"{dest}.anonymous.") == []


async def test_required_groups_of_a_partitioned_producer(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    producer = {"partition-count": 3, "partition-key": "payload.key", "required-groups": ["a"]}
    app = rabbit_app(rabbit_url, "topo", {dest: {"producer": producer}})
    async with app.run():
        await app.send(dest, Item(key="k"))
        assert bindings_of(dest) == {(f"{dest}.a-{n}", f"{dest}-{n}") for n in range(3)}
        assert queue_info(f"{dest}.a-2")["durable"] is True
