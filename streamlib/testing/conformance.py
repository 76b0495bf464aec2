"""The binder conformance suite: one test per semantic rule every binder must keep.

Run it for a binder by subclassing ``BinderConformance`` (with no overrides) in a test module and
providing a ``binder_harness`` fixture that yields the binder's ``BinderHarness``
(docs/writing-a-binder.md). The same tests run unchanged on every binder; a binder states its
timing once, as its harness's ``settle``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Any

import pytest
from pydantic import BaseModel

from ..app import StreamApp
from ..config import deep_merge
from ..errors import BatchFailed
from ..messages import Message
from ..partitioning import select_partition
from .collector import Collector
from .harness import BinderHarness


class Item(BaseModel):
    """The payload the suite sends: a key and a sequence number."""

    key: str
    seq: int


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)


class Fixture:
    """Builds apps on the harness's binder and stops them all at the end of a test."""

    def __init__(self, harness: BinderHarness, stack: AsyncExitStack) -> None:
        self.harness = harness
        self._stack = stack

    def app(self, name: str, bindings: Mapping[str, Any], **top: Any) -> StreamApp:
        config = deep_merge(self.harness.binder_config(), {"name": name, **top})
        config["bindings"] = dict(bindings)
        return StreamApp(name, config=config)

    async def start(self, app: StreamApp) -> StreamApp:
        await self._stack.enter_async_context(app.run())
        return app

    async def quiet(self) -> None:
        """Give stray deliveries time to show up."""
        await asyncio.sleep(self.harness.settle)


def _retry(**extra: Any) -> dict[str, Any]:
    return {
        "max-attempts": 3,
        "back-off-initial-interval": 0.01,
        "back-off-max-interval": 0.05,
        **extra,
    }


class BinderConformance:
    """Semantics of DESIGN.md, asserted on what handlers receive."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def env(self, binder_harness: BinderHarness) -> AsyncIterator[Fixture]:
        async with AsyncExitStack() as stack:
            yield Fixture(binder_harness, stack)

    async def test_each_group_receives_every_message_once(self, env: Fixture) -> None:
        dest = env.harness.unique("orders")
        received: dict[str, Collector[tuple[str, int]]] = {"a": Collector(), "b": Collector()}

        def member(group: str, instance: str) -> StreamApp:
            app = env.app(instance, {"take-in-0": {"destination": dest, "group": group}})

            @app.sink
            async def take(item: Item) -> None:
                received[group].add((instance, item.seq))

            return app

        for app in (member("a", "a1"), member("a", "a2"), member("b", "b1")):
            await env.start(app)
        producer = await env.start(env.app("producer", {}))
        for seq in range(20):
            await producer.send(dest, Item(key="k", seq=seq))
        for group in ("a", "b"):
            await received[group].wait_for(20, env.harness.timeout)
        await env.quiet()
        for group in ("a", "b"):
            seqs = sorted(seq for _, seq in received[group].items)
            assert seqs == list(range(20)), f"group {group} got {seqs}"

    async def test_anonymous_consumers_each_receive_every_message(self, env: Fixture) -> None:
        dest = env.harness.unique("events")
        got: list[Collector[int]] = [Collector(), Collector()]
        for index, collector in enumerate(got):
            app = env.app(f"listener{index}", {"listen-in-0": {"destination": dest}})

            def bind(c: Collector[int], a: StreamApp) -> None:
                @a.sink
                async def listen(item: Item) -> None:
                    c.add(item.seq)

            bind(collector, app)
            await env.start(app)
        producer = await env.start(env.app("producer", {}))
        for seq in range(10):
            await producer.send(dest, Item(key="k", seq=seq))
        for collector in got:
            assert sorted(await collector.wait_for(10, env.harness.timeout)) == list(range(10))
        await env.quiet()
        assert [len(c) for c in got] == [10, 10]

    async def test_anonymous_consumer_starts_with_new_messages(self, env: Fixture) -> None:
        dest = env.harness.unique("events")
        producer = await env.start(env.app("producer", {}))
        for seq in range(5):
            await producer.send(dest, Item(key="old", seq=seq))
        got: Collector[int] = Collector()
        app = env.app("late", {"listen-in-0": {"destination": dest}})

        @app.sink
        async def listen(item: Item) -> None:
            got.add(item.seq)

        await env.start(app)
        for seq in range(5, 10):
            await producer.send(dest, Item(key="new", seq=seq))
        assert sorted(await got.wait_for(5, env.harness.timeout)) == [5, 6, 7, 8, 9]
        await env.quiet()
        assert len(got) == 5

    async def test_required_groups_keep_messages_sent_before_the_consumer_starts(
        self, env: Fixture
    ) -> None:
        dest = env.harness.unique("orders")
        producer = await env.start(
            env.app("producer", {dest: {"producer": {"required-groups": ["late"]}}})
        )
        for seq in range(5):
            await producer.send(dest, Item(key="k", seq=seq))
        got: Collector[int] = Collector()
        app = env.app("late", {"take-in-0": {"destination": dest, "group": "late"}})

        @app.sink
        async def take(item: Item) -> None:
            got.add(item.seq)

        await env.start(app)
        assert sorted(await got.wait_for(5, env.harness.timeout)) == list(range(5))

    async def test_partitioned_consumers_receive_exactly_their_keys_in_order(
        self, env: Fixture
    ) -> None:
        dest = env.harness.unique("orders")
        got: list[Collector[tuple[str, int, int | None]]] = [Collector(), Collector()]
        for index in (0, 1):
            app = env.app(
                f"part{index}",
                {
                    "take-in-0": {
                        "destination": dest,
                        "group": "billing",
                        "consumer": {"partitioned": True},
                    }
                },
                **{"instance-index": index, "instance-count": 2},
            )

            def bind(c: Collector[tuple[str, int, int | None]], a: StreamApp) -> None:
                @a.sink
                async def take(msg: Message[Item]) -> None:
                    c.add((msg.payload.key, msg.payload.seq, msg.partition))

            bind(got[index], app)
            await env.start(app)
        producer = await env.start(
            env.app(
                "producer",
                {
                    dest: {
                        "producer": {
                            "partition-key": "payload.key",
                            "partition-count": 2,
                            "required-groups": ["billing"],
                        }
                    }
                },
            )
        )
        keys = [f"customer-{n:06d}" for n in range(12)] + ["polygenelubricants", "Straße", "日本"]
        sent = [(keys[i % len(keys)], i) for i in range(150)]
        for key, seq in sent:
            await producer.send(dest, Item(key=key, seq=seq))
        await got[0].wait_for(1, env.harness.timeout)
        total = len(sent)
        deadline = asyncio.get_running_loop().time() + env.harness.timeout
        while len(got[0]) + len(got[1]) < total and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        await env.quiet()
        for index in (0, 1):
            expected = [(k, s) for k, s in sent if select_partition(k, 2) == index]
            received = [(k, s) for k, s, _ in got[index].items]
            # Order per key is the order sent; across keys of a partition too.
            assert received == expected, f"instance {index}"
            partitions = {p for _, _, p in got[index].items}
            assert partitions <= {index, None}

    async def test_failing_message_is_retried_then_dead_lettered_with_headers(
        self, env: Fixture
    ) -> None:
        dest = env.harness.unique("orders")
        attempts: Collector[int] = Collector()
        good: Collector[int] = Collector()
        app = env.app(
            "failing",
            {"take-in-0": {"destination": dest, "group": "g", "consumer": _retry(dlq=True)}},
        )

        @app.sink
        async def take(msg: Message[Item]) -> None:
            if msg.payload.key == "poison":
                attempts.add(msg.attempt)
                raise ValueError(f"cannot take {msg.payload.seq}")
            good.add(msg.payload.seq)

        await env.start(app)
        producer = await env.start(env.app("producer", {}))
        await producer.send(dest, Item(key="poison", seq=7), headers={"x-trace": "t-1"})
        await producer.send(dest, Item(key="ok", seq=8))
        await good.wait_for(1, env.harness.timeout)
        letters = await env.harness.dead_letters(dest, "g", 1)
        assert attempts.items == [1, 2, 3]
        assert len(letters) == 1
        letter = letters[0]
        assert Item.model_validate_json(letter.body) == Item(key="poison", seq=7)
        assert _text(letter.headers["x-exception-message"]) == "cannot take 7"
        assert _text(letter.headers["x-exception-fqcn"]) == "builtins.ValueError"
        assert "cannot take 7" in _text(letter.headers["x-exception-stacktrace"])
        assert _text(letter.headers["x-trace"]) == "t-1"

    async def test_retry_that_succeeds_is_not_dead_lettered(self, env: Fixture) -> None:
        dest = env.harness.unique("orders")
        attempts: Collector[int] = Collector()
        done: Collector[int] = Collector()
        app = env.app(
            "flaky",
            {"take-in-0": {"destination": dest, "group": "g", "consumer": _retry(dlq=True)}},
        )

        @app.sink
        async def take(msg: Message[Item]) -> None:
            attempts.add(msg.attempt)
            if msg.attempt < 3:
                raise ConnectionError("transient")
            done.add(msg.payload.seq)

        await env.start(app)
        producer = await env.start(env.app("producer", {}))
        await producer.send(dest, Item(key="k", seq=1))
        assert await done.wait_for(1, env.harness.timeout) == [1]
        assert await env.harness.dead_letters(dest, "g", 0) == []
        assert attempts.items == [1, 2, 3]

    async def test_undecodable_message_is_dead_lettered_and_consumer_keeps_going(
        self, env: Fixture
    ) -> None:
        dest = env.harness.unique("orders")
        good: Collector[int] = Collector()
        app = env.app(
            "strict",
            {"take-in-0": {"destination": dest, "group": "g", "consumer": _retry(dlq=True)}},
        )

        @app.sink
        async def take(item: Item) -> None:
            good.add(item.seq)

        await env.start(app)
        producer = await env.start(
            env.app("producer", {dest: {"content-type": "application/json"}})
        )
        await producer.send(dest, b"{not json")
        await producer.send(dest, {"key": "k", "seq": "not a number"})
        for seq in range(3):
            await producer.send(dest, Item(key="k", seq=seq))
        assert await good.wait_for(3, env.harness.timeout) == [0, 1, 2]
        letters = await env.harness.dead_letters(dest, "g", 2)
        assert [letter.body for letter in letters] == [
            b"{not json",
            b'{"key":"k","seq":"not a number"}',
        ]
        for letter in letters:
            assert _text(letter.headers["x-exception-fqcn"]).endswith("MessageConversionError")

    async def test_failure_without_dlq_is_logged_and_not_redelivered(
        self, env: Fixture, caplog: pytest.LogCaptureFixture
    ) -> None:
        dest = env.harness.unique("orders")
        attempts: Collector[int] = Collector()
        good: Collector[int] = Collector()
        bindings = {"take-in-0": {"destination": dest, "group": "g", "consumer": _retry()}}
        app = env.app("nodlq", bindings)

        @app.sink
        async def take(item: Item) -> None:
            if item.key == "poison":
                attempts.add(item.seq)
                raise RuntimeError("bad item")
            good.add(item.seq)

        with caplog.at_level(logging.ERROR, logger="streamlib"):
            await env.start(app)
            producer = await env.start(env.app("producer", {}))
            await producer.send(dest, Item(key="poison", seq=1))
            await producer.send(dest, Item(key="ok", seq=2))
            assert await good.wait_for(1, env.harness.timeout) == [2]
            await env.quiet()
        assert attempts.items == [1, 1, 1]
        assert any(
            "bad item" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records
        )

    async def test_order_within_a_partition_holds_across_retries(self, env: Fixture) -> None:
        dest = env.harness.unique("orders")
        handled: Collector[int] = Collector()
        failures: dict[int, int] = {}
        app = env.app(
            "ordered",
            {"take-in-0": {"destination": dest, "group": "g", "consumer": _retry()}},
        )

        @app.sink
        async def take(item: Item) -> None:
            if item.seq in (3, 6) and failures.get(item.seq, 0) < 2:
                failures[item.seq] = failures.get(item.seq, 0) + 1
                raise RuntimeError("not yet")
            handled.add(item.seq)

        await env.start(app)
        producer = await env.start(env.app("producer", {}))
        for seq in range(10):
            await producer.send(dest, Item(key="same", seq=seq), key="same")
        assert await handled.wait_for(10, env.harness.timeout) == list(range(10))

    async def test_send_reaches_any_destination_with_headers_and_key(self, env: Fixture) -> None:
        dest = env.harness.unique("anywhere")
        got: Collector[Message[Item]] = Collector()
        app = env.app("receiver", {"take-in-0": {"destination": dest, "group": "g"}})

        @app.sink
        async def take(msg: Message[Item]) -> None:
            got.add(msg)

        await env.start(app)
        producer = await env.start(env.app("producer", {}))
        await producer.send(dest, Item(key="k", seq=1), key="key-1", headers={"x-trace": "abc"})
        [msg] = await got.wait_for(1, env.harness.timeout)
        assert msg.payload == Item(key="k", seq=1)
        assert _text(msg.headers["x-trace"]) == "abc"
        assert _text(msg.key) == "key-1"
        assert msg.destination == dest
        assert msg.attempt == 1

    async def test_processor_output_reaches_the_next_binding(self, env: Fixture) -> None:
        src, out = env.harness.unique("in"), env.harness.unique("out")
        got: Collector[tuple[str, int]] = Collector()
        app = env.app(
            "pipeline",
            {
                "double-in-0": {"destination": src, "group": "p"},
                "double-out-0": {"destination": out},
                "audit-in-0": {"destination": out, "group": "audit"},
            },
        )

        @app.processor
        async def double(item: Item) -> Item | None:
            if item.seq < 0:
                return None
            return Item(key=item.key.upper(), seq=item.seq * 2)

        @app.sink
        async def audit(item: Item) -> None:
            got.add((item.key, item.seq))

        await env.start(app)
        for seq in (1, -1, 2, 3):
            await app.send(src, Item(key="x", seq=seq))
        assert await got.wait_for(3, env.harness.timeout) == [("X", 2), ("X", 4), ("X", 6)]
        await env.quiet()
        assert len(got) == 3

    async def test_text_and_bytes_payloads_keep_their_content_type(self, env: Fixture) -> None:
        dest_t, dest_b = env.harness.unique("text"), env.harness.unique("bytes")
        texts: Collector[tuple[str, str]] = Collector()
        blobs: Collector[bytes] = Collector()
        app = env.app(
            "types",
            {
                "text-in-0": {"destination": dest_t, "group": "g"},
                "blob-in-0": {"destination": dest_b, "group": "g"},
            },
        )

        @app.sink
        async def text(msg: Message[str]) -> None:
            texts.add((msg.payload, _text(msg.headers["contentType"])))

        @app.sink
        async def blob(data: bytes) -> None:
            blobs.add(data)

        await env.start(app)
        await app.send(dest_t, "héllo")
        await app.send(dest_b, b"\x00\xff")
        assert await texts.wait_for(1, env.harness.timeout) == [("héllo", "text/plain")]
        assert await blobs.wait_for(1, env.harness.timeout) == [b"\x00\xff"]

    async def test_stop_finishes_in_flight_work_and_nothing_is_redelivered(
        self, env: Fixture
    ) -> None:
        dest = env.harness.unique("orders")
        started: Collector[int] = Collector()
        finished: Collector[int] = Collector()
        bindings = {"slow-in-0": {"destination": dest, "group": "g"}}

        def build(name: str) -> StreamApp:
            app = env.app(name, bindings)

            @app.sink
            async def slow(item: Item) -> None:
                started.add(item.seq)
                await asyncio.sleep(0.5)
                finished.add(item.seq)

            return app

        first = build("first")
        producer = await env.start(env.app("producer", {}))
        async with first.run():
            await producer.send(dest, Item(key="k", seq=1))
            await started.wait_for(1, env.harness.timeout)
        assert finished.items == [1]
        await env.start(build("second"))
        await producer.send(dest, Item(key="k", seq=2))
        await finished.wait_for(2, env.harness.timeout)
        await env.quiet()
        assert started.items == [1, 2]

    async def test_paused_binding_receives_nothing_until_resumed(self, env: Fixture) -> None:
        dest = env.harness.unique("orders")
        got: Collector[int] = Collector()
        app = env.app("pausing", {"take-in-0": {"destination": dest, "group": "g"}})

        @app.sink
        async def take(item: Item) -> None:
            got.add(item.seq)

        await env.start(app)
        await app.send(dest, Item(key="k", seq=0))
        await got.wait_for(1, env.harness.timeout)
        await app.binding("take-in-0").pause()
        await app.send(dest, Item(key="k", seq=1))
        await env.quiet()
        assert got.items == [0]
        await app.binding("take-in-0").resume()
        assert await got.wait_for(2, env.harness.timeout) == [0, 1]

    async def test_batch_sink_gets_bounded_lists_with_every_message_once_in_order(
        self, env: Fixture
    ) -> None:
        dest = env.harness.unique("orders")
        batches: list[list[int]] = []
        got: Collector[int] = Collector()
        consumer = _retry(**{"batch-size": 4, "batch-wait-ms": 200})
        app = env.app(
            "batches", {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}}
        )

        @app.sink
        async def take(items: list[Item]) -> None:
            batches.append([item.seq for item in items])
            for item in items:
                got.add(item.seq)

        await env.start(app)
        producer = await env.start(env.app("producer", {}))
        await producer.send_many(dest, [Item(key="same", seq=seq) for seq in range(10)], key="same")
        assert await got.wait_for(10, env.harness.timeout) == list(range(10))
        await env.quiet()
        assert [seq for batch in batches for seq in batch] == list(range(10))
        assert all(1 <= len(batch) <= 4 for batch in batches), batches
        assert any(len(batch) > 1 for batch in batches), batches

    async def test_batch_partial_failure_retries_only_the_failed_record_alone(
        self, env: Fixture
    ) -> None:
        dest = env.harness.unique("orders")
        calls: list[list[tuple[int, int]]] = []
        handled: Collector[int] = Collector()
        consumer = _retry(dlq=True, **{"batch-size": 5, "batch-wait-ms": 200})
        app = env.app(
            "partial", {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}}
        )

        @app.sink
        async def take(msgs: list[Message[Item]]) -> None:
            calls.append([(m.payload.seq, m.attempt) for m in msgs])
            failures: dict[int, BaseException] = {
                i: ValueError(f"cannot take {m.payload.seq}")
                for i, m in enumerate(msgs)
                if m.payload.key == "poison"
            }
            for i, m in enumerate(msgs):
                if i not in failures:
                    handled.add(m.payload.seq)
            if failures:
                raise BatchFailed(failures)

        await env.start(app)
        producer = await env.start(env.app("producer", {}))
        items = [Item(key="poison" if seq == 2 else "ok", seq=seq) for seq in range(5)]
        await producer.send_many(dest, items, key="same")
        letters = await env.harness.dead_letters(dest, "g", 1)
        await handled.wait_for(4, env.harness.timeout)
        await env.quiet()
        assert sorted(handled.items) == [0, 1, 3, 4]  # each succeeded record once, never again
        seen = [entry for call in calls for entry in call]
        assert sorted(seq for seq, _ in seen if seq != 2) == [0, 1, 3, 4]
        assert all(attempt == 1 for seq, attempt in seen if seq != 2)
        poisoned = [call for call in calls if any(seq == 2 for seq, _ in call)]
        assert poisoned[1:] == [[(2, 2)], [(2, 3)]]  # retried alone, per max-attempts
        assert (2, 1) in poisoned[0]
        assert len(letters) == 1
        assert Item.model_validate_json(letters[0].body) == Item(key="poison", seq=2)
        assert _text(letters[0].headers["x-exception-message"]) == "cannot take 2"

    async def test_batch_processor_outputs_reach_the_next_binding(self, env: Fixture) -> None:
        src, out = env.harness.unique("in"), env.harness.unique("out")
        got: Collector[int] = Collector()
        app = env.app(
            "batch-pipeline",
            {
                "double-in-0": {
                    "destination": src,
                    "group": "p",
                    "consumer": {"batch-size": 3, "batch-wait-ms": 100},
                },
                "double-out-0": {"destination": out},
                "audit-in-0": {"destination": out, "group": "audit"},
            },
        )

        @app.processor
        async def double(items: list[Item]) -> list[Item | None]:
            return [None if i.seq < 0 else Item(key=i.key, seq=i.seq * 2) for i in items]

        @app.sink
        async def audit(item: Item) -> None:
            got.add(item.seq)

        await env.start(app)
        await app.send_many(src, [Item(key="x", seq=s) for s in (1, -1, 2, 3, 4)], key="x")
        assert await got.wait_for(4, env.harness.timeout) == [2, 4, 6, 8]
        await env.quiet()
        assert len(got) == 4

    async def test_send_many_delivers_all_in_order(self, env: Fixture) -> None:
        dest = env.harness.unique("orders")
        got: Collector[tuple[int, str]] = Collector()
        app = env.app("bulk", {"take-in-0": {"destination": dest, "group": "g"}})

        @app.sink
        async def take(msg: Message[Item]) -> None:
            got.add((msg.payload.seq, _text(msg.headers["x-trace"])))

        await env.start(app)
        producer = await env.start(env.app("producer", {}))
        items = [Item(key="same", seq=seq) for seq in range(20)]
        await producer.send_many(dest, items, key="same", headers={"x-trace": "bulk"})
        assert await got.wait_for(20, env.harness.timeout) == [(s, "bulk") for s in range(20)]
        await env.quiet()
        assert len(got) == 20

    async def test_stop_finishes_the_batch_in_hand_and_nothing_is_redelivered(
        self, env: Fixture
    ) -> None:
        dest = env.harness.unique("orders")
        started: Collector[int] = Collector()
        finished: Collector[int] = Collector()
        consumer = {"batch-size": 10, "batch-wait-ms": 100}
        bindings = {"slow-in-0": {"destination": dest, "group": "g", "consumer": consumer}}

        def build(name: str) -> StreamApp:
            app = env.app(name, bindings)

            @app.sink
            async def slow(items: list[Item]) -> None:
                for item in items:
                    started.add(item.seq)
                await asyncio.sleep(0.5)
                for item in items:
                    finished.add(item.seq)

            return app

        first = build("first")
        producer = await env.start(env.app("producer", {}))
        async with first.run():
            await producer.send_many(dest, [Item(key="k", seq=s) for s in range(3)], key="k")
            await started.wait_for(1, env.harness.timeout)
        assert finished.items == started.items  # the batch in hand finished before the stop
        await env.start(build("second"))
        await producer.send(dest, Item(key="k", seq=3), key="k")
        await finished.wait_for(4, env.harness.timeout)
        await env.quiet()
        assert started.items == [0, 1, 2, 3]
        assert finished.items == [0, 1, 2, 3]

    async def test_batch_outputs_that_cannot_be_sent_dead_letter_their_records(
        self, env: Fixture
    ) -> None:
        src, out = env.harness.unique("in"), env.harness.unique("out")
        got: Collector[int] = Collector()
        consumer = _retry(dlq=True, **{"batch-size": 5, "batch-wait-ms": 100})
        app = env.app(
            "unsendable",
            {
                "convert-in-0": {"destination": src, "group": "g", "consumer": consumer},
                "convert-out-0": {"destination": out},
                "audit-in-0": {"destination": out, "group": "audit"},
            },
        )

        @app.processor
        async def convert(items: list[Item]) -> list[Item]:
            return [{"key": i.key, "seq": i.seq} for i in items]  # type: ignore[misc]

        @app.sink
        async def audit(item: Item) -> None:
            got.add(item.seq)

        await env.start(app)
        await app.send_many(src, [Item(key="k", seq=s) for s in range(3)], key="k")
        letters = await env.harness.dead_letters(src, "g", 3)
        assert sorted(Item.model_validate_json(x.body).seq for x in letters) == [0, 1, 2]
        for letter in letters:
            assert _text(letter.headers["x-exception-fqcn"]).endswith("MessageConversionError")
            assert "returned dict, not Item" in _text(letter.headers["x-exception-message"])
        await env.quiet()
        assert got.items == []
