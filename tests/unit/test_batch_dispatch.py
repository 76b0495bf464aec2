"""The batch dispatcher: one call per batch, failed records retried alone, one outcome each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import ACK, BatchFailed, Envelope, Message, MessageConversionError, RetryPolicy
from streamlib._batch_dispatch import BatchDispatcher
from streamlib._metrics import BindingMetrics
from streamlib.binder import Batching
from streamlib.converters import PayloadDecoder

pytestmark = pytest.mark.anyio

Handler = Callable[[list[Any]], Awaitable[Any]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def envelopes(*bodies: bytes) -> list[Envelope]:
    return [Envelope(body, {}, None, "orders", 0, offset) for offset, body in enumerate(bodies)]


def numbers(count: int) -> list[Envelope]:
    return envelopes(*(str(n).encode() for n in range(count)))


def dispatcher(
    handler: Handler,
    *,
    dlq: bool = True,
    max_attempts: int = 3,
    emit: Callable[[Any], Awaitable[Awaitable[None] | None]] | None = None,
    wants_message: bool = False,
    metrics: BindingMetrics | None = None,
) -> BatchDispatcher:
    return BatchDispatcher(
        "take-in-0",
        handler,
        PayloadDecoder(int),
        wants_message,
        RetryPolicy(max_attempts=max_attempts, initial_interval=0.0),
        dlq,
        emit,
        metrics,
        Batching(10, 0.0),
    )


class Calls:
    """A batch sink that records each call's list and fails as told."""

    def __init__(self, fail: Callable[[list[Any]], None] | None = None) -> None:
        self.calls: list[list[Any]] = []
        self._fail = fail

    async def __call__(self, items: list[Any]) -> None:
        self.calls.append(list(items))
        if self._fail is not None:
            self._fail(items)


async def test_the_handler_is_called_once_for_the_batch_and_each_record_is_acked() -> None:
    sink, metrics = Calls(), BindingMetrics()
    outcomes = await dispatcher(sink, metrics=metrics).dispatch_batch(numbers(5))
    assert sink.calls == [[0, 1, 2, 3, 4]]
    assert outcomes == [ACK] * 5
    assert (metrics.handled, metrics.failed, metrics.retried) == (5, 0, 0)


async def test_batch_failed_records_are_retried_alone_and_the_others_never_again() -> None:
    def fail(items: list[int]) -> None:
        if 2 in items:
            raise BatchFailed({items.index(2): ValueError("bad 2")})

    sink, metrics = Calls(fail), BindingMetrics()
    outcomes = await dispatcher(sink, metrics=metrics).dispatch_batch(numbers(5))
    assert sink.calls == [[0, 1, 2, 3, 4], [2], [2]]
    assert [o.failure is None for o in outcomes] == [True, True, False, True, True]
    failure = outcomes[2].failure
    assert failure is not None
    assert (failure.reason, failure.attempts) == ("bad 2", 3)
    assert (metrics.handled, metrics.failed, metrics.retried, metrics.dead_lettered) == (4, 1, 2, 1)


async def test_any_other_exception_fails_every_record_and_each_is_retried_alone() -> None:
    def fail(items: list[int]) -> None:
        if len(items) > 1:
            raise RuntimeError("the batch failed")

    sink = Calls(fail)
    outcomes = await dispatcher(sink).dispatch_batch(numbers(3))
    assert sink.calls == [[0, 1, 2], [0], [1], [2]]
    assert outcomes == [ACK] * 3


async def test_a_record_that_recovers_on_retry_is_not_dead_lettered() -> None:
    seen: dict[int, int] = {}

    def fail(items: list[int]) -> None:
        for n in items:
            seen[n] = seen.get(n, 0) + 1
        if seen[1] < 3:
            raise BatchFailed({items.index(1): ConnectionError("transient")})

    sink = Calls(fail)
    outcomes = await dispatcher(sink).dispatch_batch(numbers(3))
    assert sink.calls == [[0, 1, 2], [1], [1]]
    assert outcomes == [ACK] * 3


async def test_without_dlq_a_record_that_keeps_failing_is_logged_and_acked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail(items: list[int]) -> None:
        if 0 in items:
            raise BatchFailed({items.index(0): ValueError("never")})

    with caplog.at_level(logging.ERROR, logger="streamlib"):
        outcomes = await dispatcher(Calls(fail), dlq=False).dispatch_batch(numbers(2))
    assert outcomes == [ACK, ACK]
    assert any("never" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)


async def test_an_undecodable_record_takes_the_one_at_a_time_path() -> None:
    sink = Calls()
    outcomes = await dispatcher(sink).dispatch_batch(envelopes(b"1", b"{oops", b"3"))
    assert sink.calls == [[1, 3]]
    failure = outcomes[1].failure
    assert failure is not None
    assert isinstance(failure.exception, MessageConversionError)
    assert failure.attempts == 1  # not retryable: dead-lettered at once
    assert [outcomes[0], outcomes[2]] == [ACK, ACK]


async def test_messages_carry_their_attempt() -> None:
    attempts: list[list[tuple[int, int]]] = []

    async def take(msgs: list[Message[int]]) -> None:
        attempts.append([(m.payload, m.attempt) for m in msgs])
        if any(m.payload == 1 for m in msgs):
            raise BatchFailed({[m.payload for m in msgs].index(1): ValueError("no")})

    await dispatcher(take, wants_message=True).dispatch_batch(numbers(2))
    assert attempts == [[(0, 1), (1, 1)], [(1, 2)], [(1, 3)]]


class Emitted:
    """A processor's emit: records each list of results; each returns its own pending."""

    def __init__(self, fail_first: bool = False) -> None:
        self.lists: list[list[Any]] = []
        self.pendings: list[Awaitable[None]] = []
        self._fail_first = fail_first

    async def __call__(self, results: Any) -> Awaitable[None]:
        self.lists.append(list(results))
        if self._fail_first and len(self.lists) == 1:
            raise MessageConversionError("output not encodable")
        pending = asyncio.get_running_loop().create_future()
        pending.set_result(None)
        self.pendings.append(pending)
        return pending


async def test_processor_outputs_are_one_send_whose_pending_every_succeeded_record_shares() -> None:
    async def double(items: list[int]) -> list[int]:
        if 1 in items:
            doubled = [n * 2 for n in items if n != 1]
            raise BatchFailed({items.index(1): ValueError("odd one")}, results=doubled)
        return [n * 2 for n in items]

    emit = Emitted()
    outcomes = await dispatcher(double, emit=emit, max_attempts=2).dispatch_batch(numbers(4))
    assert emit.lists == [[0, 4, 6]]  # the batch's outputs; the retry of 1 had none
    first = emit.pendings[0]
    assert [o.pending for o in outcomes] == [first, None, first, first]
    assert outcomes[1].failure is not None


async def test_an_output_send_that_fails_fails_the_succeeded_records() -> None:
    async def echo(items: list[int]) -> list[int]:
        return items

    emit = Emitted(fail_first=True)
    outcomes = await dispatcher(echo, emit=emit).dispatch_batch(numbers(2))
    failure = outcomes[0].failure
    assert failure is not None  # the conversion error is not retryable
    assert failure.attempts == 1
    assert emit.lists == [[0, 1]]


async def test_batch_failed_naming_an_index_outside_the_list_fails_every_record() -> None:
    def fail(items: list[int]) -> None:
        raise BatchFailed({7: ValueError("where?")})

    outcomes = await dispatcher(Calls(fail), max_attempts=1).dispatch_batch(numbers(2))
    assert all(o.failure is not None for o in outcomes)
    failure = outcomes[0].failure
    assert failure is not None
    assert "index 7" in failure.reason


async def test_call_is_a_batch_of_one() -> None:
    sink = Calls()
    assert await dispatcher(sink)(numbers(1)[0]) == ACK
    assert sink.calls == [[0]]


def test_batch_failed_says_which_records_failed() -> None:
    exc = BatchFailed({2: ValueError("bad amount"), 5: KeyError("id")})
    assert (
        str(exc)
        == "2 record(s) of the batch failed: [2] ValueError: bad amount; [5] KeyError: 'id'"
    )
    assert exc.results is None


@settings(max_examples=150, deadline=None)
@given(
    failing_attempts=st.lists(st.integers(0, 4), min_size=1, max_size=8),
    max_attempts=st.integers(1, 4),
    dlq=st.booleans(),
    whole_batch=st.booleans(),
)
def test_every_record_ends_with_one_outcome_and_is_tried_as_the_policy_says(
    failing_attempts: list[int], max_attempts: int, dlq: bool, whole_batch: bool
) -> None:
    """Record r fails its first ``failing_attempts[r]`` calls; a call fails the listed records
    (BatchFailed), or the whole list when ``whole_batch`` and one of it fails."""
    tried: dict[int, list[bool]] = {r: [] for r in range(len(failing_attempts))}

    async def take(items: list[int]) -> None:
        failing = {i for i, r in enumerate(items) if len(tried[r]) < failing_attempts[r]}
        if whole_batch and failing:
            failing = set(range(len(items)))
        for i, r in enumerate(items):
            tried[r].append(i not in failing)
        if failing:
            raise BatchFailed({i: RuntimeError(f"record {items[i]}") for i in failing})

    metrics = BindingMetrics()
    batch = numbers(len(failing_attempts))
    handling = dispatcher(take, dlq=dlq, max_attempts=max_attempts, metrics=metrics)
    outcomes = asyncio.run(handling.dispatch_batch(batch))

    assert len(outcomes) == len(batch)
    for r, results in tried.items():
        assert 1 <= len(results) <= max_attempts
        assert True not in results[:-1], f"record {r} was called again after it succeeded"
        failed_every_attempt = not any(results)
        if failed_every_attempt:
            assert len(results) == max_attempts
        assert (outcomes[r].failure is not None) == (dlq and failed_every_attempt)
        if not whole_batch:
            assert len(results) == min(failing_attempts[r] + 1, max_attempts)
    gave_up = sum(1 for results in tried.values() if not any(results))
    assert metrics.handled == len(batch) - gave_up
    assert metrics.failed == gave_up
    assert metrics.dead_lettered == (gave_up if dlq else 0)
    assert metrics.retried == sum(len(results) - 1 for results in tried.values())


@given(st.lists(st.sampled_from(["ok", "bad", "undecodable"]), max_size=10))
def test_each_outcome_is_its_own_records_among_undecodable_and_failed_ones(
    kinds: list[str],
) -> None:
    """Undecodable records are left out of the call, and ``BatchFailed``'s indexes (into
    the list the handler got) still name the right records' outcomes."""
    bodies = [
        b"{oops" if kind == "undecodable" else str(n).encode() for n, kind in enumerate(kinds)
    ]

    async def take(items: list[int]) -> None:
        failing = {i: RuntimeError(str(r)) for i, r in enumerate(items) if kinds[r] == "bad"}
        if failing:
            raise BatchFailed(failing)

    metrics = BindingMetrics()
    outcomes = asyncio.run(
        dispatcher(take, max_attempts=1, metrics=metrics).dispatch_batch(envelopes(*bodies))
    )
    assert len(outcomes) == len(kinds)
    for n, (kind, outcome) in enumerate(zip(kinds, outcomes, strict=True)):
        if kind == "ok":
            assert outcome is ACK
        else:
            assert outcome.failure is not None
            error = outcome.failure.exception
            if kind == "bad":
                assert isinstance(error, RuntimeError) and str(error) == str(n)
            else:
                assert isinstance(error, MessageConversionError)
    assert metrics.handled == kinds.count("ok")
