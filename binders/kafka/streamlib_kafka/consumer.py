"""Consuming: one aiokafka consumer per binding, a fetch loop, and ``concurrency`` workers.

Each assigned partition belongs to one worker, so a partition's records are handled one at a
time and in order (retries happen in place, in the core), while different partitions run in
parallel. Offsets are committed periodically, on revoke and on stop, and only up to the first
record whose handling (including output and DLQ confirmations) has not completed: that is
at-least-once without awaiting each send. Fetching stops while ``max-in-flight`` fetched
records wait to be handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka import errors as kafka_errors
from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.coordinator.assignors.range import (  # type: ignore[import-untyped]
    RangePartitionAssignor,
)

from streamlib.binder import (
    ACK,
    BaseBinding,
    Batching,
    BindingError,
    ConsumerSpec,
    Dispatcher,
    Envelope,
    Failure,
    Outcome,
    RetryPolicy,
    StreamlibError,
)

from . import naming
from .attributes import RecordExtras
from .dead_letters import send_dead_letter
from .errors import KafkaError, start_client
from .headers import decode_headers
from .offsets import PartitionOffsets, Rewind, SendFailure
from .producer import Confirmation, ProducerClient
from .settings import KafkaConsumerDefaults, KafkaConsumerSettings
from .transactions import Transaction, current_transaction

log = logging.getLogger("streamlib.kafka")

_T = TypeVar("_T")

READY_TIMEOUT = 60.0
_FETCH_WAIT_MS = 200
_RESTART_DELAY = 0.5


class _Partition(PartitionOffsets):
    """An assigned partition: its offsets, the worker that handles its records, and (for a
    transactional binding) the producer whose transactions commit its offsets."""

    __slots__ = ("producer", "tp", "worker")

    def __init__(self, tp: Any, worker: int) -> None:
        super().__init__()
        self.tp = tp
        self.worker = worker
        self.producer: Any = None


class _Worker:
    """Handles the records of the partitions it owns, one at a time; ``current`` is the
    partition of the record being handled."""

    __slots__ = ("batches", "current", "wake")

    def __init__(self) -> None:
        self.batches: deque[tuple[_Partition, int, list[Any]]] = deque()
        self.wake = asyncio.Event()
        self.current: _Partition | None = None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, binding: KafkaBinding) -> None:
        self._binding = binding

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._binding._revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._binding._assigned(assigned)


class _Rejected(Exception):
    """A send of the record at ``offset`` failed inside a transaction; ``offsets`` lists
    every record whose sends failed with it (more than one: the failure is shared)."""

    def __init__(
        self,
        offset: int,
        dead_letter: bool,
        error: BaseException,
        offsets: list[int] | None = None,
    ) -> None:
        super().__init__(str(error))
        self.offset = offset
        self.dead_letter = dead_letter
        self.error = error
        self.offsets = offsets or [offset]


async def _confirm_all(sent: list[tuple[int, Confirmation, bool]]) -> None:
    """Await every confirmation of a transaction. The broker refuses a whole batch at once,
    so when sends of several records failed, the ``_Rejected`` raised names them all."""
    failed: list[tuple[int, bool, BaseException]] = []
    for offset, confirmation, dead_letter in sent:
        try:
            await confirmation
        except Exception as exc:
            failed.append((offset, dead_letter, exc))
    if failed:
        offset, dead_letter, error = failed[0]
        raise _Rejected(offset, dead_letter, error, sorted({o for o, _, _ in failed}))


async def _attributed(offset: int, dead_letter: bool, send: Awaitable[_T]) -> _T:
    """Await a send of the record at ``offset``; its failure raised as ``_Rejected``."""
    try:
        return await send
    except Exception as exc:
        raise _Rejected(offset, dead_letter, exc) from exc


def _fenced(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kafka_errors.ProducerFenced):
            return True
        seen = seen.__cause__
    return False


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def envelope_of(record: Any) -> Envelope:
    """The streamlib envelope of a consumed record (a null value reads as an empty body)."""
    value = record.value
    return Envelope(
        value if value is not None else b"",
        decode_headers(record.headers),
        record.key,
        record.topic,
        record.partition,
        record.offset,
        record.timestamp / 1000.0,
        RecordExtras(record),
    )


_NO_HEADERS = object()  # equal to no record's headers


def envelopes_of(records: Sequence[Any]) -> list[Envelope]:
    """The envelopes of consumed records, as ``envelope_of`` makes them, in one loop: a run
    of records with equal headers (one producer's, mostly) decodes them once, and every
    envelope still gets its own headers dict."""
    envelopes: list[Envelope] = []
    append = envelopes.append
    envelope, extras = Envelope, RecordExtras
    last: Any = _NO_HEADERS
    decoded: dict[str, Any] = {}
    for record in records:
        raw = record.headers
        if raw != last:
            decoded = decode_headers(raw)
            last = raw
        value = record.value
        append(
            envelope(
                value if value is not None else b"",
                dict(decoded),
                record.key,
                record.topic,
                record.partition,
                record.offset,
                record.timestamp / 1000.0,
                extras(record),
            )
        )
    return envelopes


class KafkaBinding(BaseBinding):
    """A bound consumer (the ``Binding`` of the SPI)."""

    def __init__(
        self,
        spec: ConsumerSpec,
        dispatch: Dispatcher,
        extension: KafkaConsumerSettings,
        defaults: KafkaConsumerDefaults,
        client_kwargs: dict[str, Any],
        producer: ProducerClient,
        partition_count: int,
        transactional: Callable[[str], Any] | None = None,
    ) -> None:
        super().__init__(spec)
        self._dispatch = dispatch
        self._ext = extension
        self._defaults = defaults
        self._client_kwargs = client_kwargs
        self._producer = producer
        self._topic = naming.topic(spec.destination)
        self._group_id = naming.group_id(spec.group)
        self._dlq_topic = naming.dlq_topic(spec.destination, spec.group) if spec.group else None
        self._static = self._static_partitions(partition_count)
        self._concurrency = spec.properties.concurrency
        self._max_in_flight = extension.max_in_flight
        self._policy = RetryPolicy.from_properties(spec.properties)
        self._consumer: Any = None
        self._partitions: dict[Any, _Partition] = {}
        self._workers: list[_Worker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._room = asyncio.Event()
        self._backpressure = False
        self._task_failures = 0
        self._last_task_failure: str | None = None
        self._paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._assigned_once = asyncio.Event()
        self._reset_pending = extension.reset_offsets
        self._running = False
        self._new_transactional = transactional

    def _static_partitions(self, partition_count: int) -> list[int] | None:
        spec = self.spec
        props = spec.properties
        if props.partitioned and props.instance_index_list:
            return sorted(props.instance_index_list)
        if props.partitioned or not self._ext.auto_rebalance:
            n, i = spec.instance_count, spec.instance_index
            return [p for p in range(partition_count) if p % n == i]
        return None

    @property
    def is_running(self) -> bool:
        return self._running

    @property
    def is_ready(self) -> bool:
        """Running, and its partitions assigned by the group (or taken statically); a member
        the group gave no partition is ready too."""
        return self._running and self._assigned_once.is_set()

    @property
    def group_id(self) -> str:
        return self._group_id

    async def start(self) -> None:
        """Connect, join the group (or take the static partitions), and return once every
        assigned partition has its starting position, so nothing sent afterwards is missed."""
        if self._running:
            return
        ext = self._ext
        offset_reset = ext.start_offset or ("earliest" if self.spec.group else "latest")
        consumer = AIOKafkaConsumer(
            **self._client_kwargs,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset=offset_reset,
            isolation_level="read_committed" if ext.transactional else "read_uncommitted",
            session_timeout_ms=self._defaults.session_timeout_ms,
            heartbeat_interval_ms=self._defaults.heartbeat_interval_ms,
            max_poll_interval_ms=self._defaults.max_poll_interval_ms,
            # Range is the strategy Java clients share with aiokafka, so a Python member can
            # join a Spring group. Only one: aiokafka 0.14 sends one JoinGroup per listed
            # assignor on every rejoin, and two members doing that can rebalance forever.
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        await start_client(consumer, f"starting the consumer of {self._topic!r}")
        self._consumer = consumer
        self._partitions = {}
        self._workers = [_Worker() for _ in range(self._concurrency)]
        self._in_flight = 0
        self._assigned_once.clear()
        self._backpressure = False
        self._running = True
        try:
            if self._static is not None:
                tps = [TopicPartition(self._topic, p) for p in self._static]
                consumer.assign(tps)
                await self._assigned(tps)
            else:
                consumer.subscribe([self._topic], listener=_Listener(self))
            loop = asyncio.get_running_loop()
            tasks: list[tuple[str, Callable[[], Awaitable[None]]]] = [("fetch", self._fetch)]
            work = self._work if self._new_transactional is None else self._work_transactional
            if self._dispatch.batching is not None:
                work = self._work_batches
            if self._new_transactional is None:
                tasks.append(("commit", self._commit_periodically))
            for i, w in enumerate(self._workers):
                tasks.append((f"worker{i}", functools.partial(work, w)))
            self._tasks = [
                loop.create_task(self._supervised(what, run), name=f"{self.name}:{what}")
                for what, run in tasks
            ]
            await self._ready()
        except BaseException:
            await self._close()
            raise

    async def _supervised(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run one task of the binding; if it dies of an unexpected error, log it, count it
        in ``health()`` and start it again, so the binding never stops silently."""
        while True:
            try:
                await run()
                return
            except Exception as exc:
                self._task_failures += 1
                self._last_task_failure = f"{what}: {type(exc).__name__}: {exc}"
                log.exception("binding %s: task %s died; restarting it", self.name, what)
                await asyncio.sleep(_RESTART_DELAY)

    async def _ready(self) -> None:
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self._assigned_once.wait()
                for tp in list(self._partitions):
                    # A partition revoked by a rebalance meanwhile is positioned by its owner.
                    with contextlib.suppress(KafkaError):
                        await self._consumer.position(tp)
        except TimeoutError:
            raise BindingError(
                f"binding {self.name!r}: no partitions of topic {self._topic!r} were assigned "
                f"to group {self._group_id!r} within {READY_TIMEOUT:.0f}s"
            ) from None

    async def stop(self) -> None:
        """Stop fetching, finish the record each worker is handling, commit, and leave; a
        cancelled stop skips the waiting but still closes the clients and leaves."""
        if not self._running:
            return
        self._running = False
        try:
            fetch = self._tasks[0] if self._tasks else None
            if fetch is not None:
                fetch.cancel()
                await asyncio.gather(fetch, return_exceptions=True)
            await self._drain(list(self._partitions.values()))
        finally:
            # Also when the stopping task is cancelled: close the clients and leave the group
            # (what was not committed is redelivered to the next owner).
            await asyncio.shield(self._close())

    async def _close(self) -> None:
        self._running = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        states, self._partitions = list(self._partitions.values()), {}
        await self._close_producers(states)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except KafkaError as exc:
                log.warning("binding %s: closing the consumer failed: %s", self.name, exc)

    async def pause(self) -> None:
        """Stop fetching and handling; the record being handled finishes."""
        self._paused = True
        self._resumed.clear()
        if self._consumer is not None:
            self._consumer.pause(*self._partitions)

    async def resume(self) -> None:
        self._paused = False
        self._resumed.set()
        if self._consumer is not None:
            self._consumer.resume(*self._partitions)

    async def _assigned(self, assigned: Any) -> None:
        load = [0] * self._concurrency
        for state in self._partitions.values():
            load[state.worker] += 1
        for tp in sorted(assigned, key=lambda t: t.partition):
            if tp not in self._partitions:
                worker = load.index(min(load))
                load[worker] += 1
                self._partitions[tp] = _Partition(tp, worker)
        if self._paused and assigned:
            self._consumer.pause(*assigned)
        if self._reset_pending and assigned:
            self._reset_pending = False
            if self._ext.start_offset == "latest" or (
                self._ext.start_offset is None and not self.spec.group
            ):
                await self._consumer.seek_to_end(*assigned)
            else:
                await self._consumer.seek_to_beginning(*assigned)
        self._assigned_once.set()

    async def _revoked(self, revoked: Any) -> None:
        states = [self._partitions.pop(tp) for tp in revoked if tp in self._partitions]
        await self._drain(states)
        await self._close_producers(states)

    def _transactional_id(self, state: _Partition) -> str:
        return naming.transactional_id(self._group_id, self._topic, state.tp.partition)

    async def _transactional_producer(self, state: _Partition) -> Any:
        """The partition's transactional producer, started by its worker for the first
        transaction after assignment (or after a failure replaced it); taking the id fences
        a previous owner and aborts the transaction it left open. StreamlibError when it
        cannot start."""
        # Started here rather than in the rebalance callback: producers started there were
        # seen to stall the worker's transactions.
        if state.producer is None:
            assert self._new_transactional is not None
            producer = self._new_transactional(self._transactional_id(state))
            try:
                await start_client(
                    producer, f"starting the transactional producer of {self.name!r}"
                )
            except StreamlibError as exc:
                log.error(
                    "binding %s: cannot start the transactional producer %r: %s",
                    self.name,
                    self._transactional_id(state),
                    exc,
                )
                raise
            state.producer = producer
        return state.producer

    async def _close_producers(self, states: list[_Partition]) -> None:
        for state in states:
            producer, state.producer = state.producer, None
            if producer is None:
                continue
            try:
                await producer.stop()
            except KafkaError as exc:
                log.warning("binding %s: closing a producer failed: %s", self.name, exc)

    async def _drain(self, states: list[_Partition]) -> None:
        """Let the workers finish their current record of ``states``, then commit them."""
        for state in states:
            state.revoked = True
        # Polled: cheaper than signalling from the hot path; rebalances and stop() wait here.
        for worker in self._workers:
            while worker.current is not None and worker.current in states:
                await asyncio.sleep(0.005)
        for state in states:
            self._rewound(state, await state.flush())
        await self._commit(states)

    async def _fetch(self) -> None:
        consumer = self._consumer
        max_poll = self._defaults.max_poll_records
        while True:
            room = self._max_in_flight - self._in_flight
            full = room <= 0
            if full:
                # Backpressure pauses the partitions but keeps polling: a member that does
                # not poll for max-poll-interval-ms leaves its group.
                self._room.clear()
                consumer.pause(*self._partitions)
            elif self._backpressure and not self._paused:
                consumer.resume(*self._partitions)
            self._backpressure = full
            try:
                batches = await consumer.getmany(
                    timeout_ms=0 if full else _FETCH_WAIT_MS,
                    max_records=max(1, min(room, max_poll)),
                )
                if full and not batches:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_FETCH_WAIT_MS / 1000):
                            await self._room.wait()
            except KafkaError as exc:
                log.warning("binding %s: fetching from %s failed: %s", self.name, self._topic, exc)
                await asyncio.sleep(1.0)
                continue
            except Exception:
                log.exception("binding %s: fetching from %s failed", self.name, self._topic)
                await asyncio.sleep(1.0)
                continue
            for tp, records in batches.items():
                state = self._partitions.get(tp)
                if state is None or state.revoked or not records:
                    continue
                state.fetched(records[0].offset)
                self._in_flight += len(records)
                worker = self._workers[state.worker]
                worker.batches.append((state, state.generation, records))
                worker.wake.set()

    async def _work(self, worker: _Worker) -> None:
        batches = worker.batches
        while True:
            if not batches:
                worker.wake.clear()
                await worker.wake.wait()
                continue
            state, generation, records = batches.popleft()
            try:
                for record in records:
                    if self._paused:
                        await self._resumed.wait()
                    if not state.accepts(generation):
                        break
                    worker.current = state
                    await self._handle(state, generation, record)
                    worker.current = None
            except Exception:
                self._redeliver(state)
                raise
            finally:
                worker.current = None
                self._in_flight -= len(records)
                if self._in_flight < self._max_in_flight:
                    self._room.set()

    async def _handle(self, state: _Partition, generation: int, record: Any) -> None:
        """Dispatch one record and note its outcome. A record redelivered because its sends
        failed counts those as attempts: it is retried while the policy allows, then
        dead-lettered or logged."""
        failed = state.failure(record.offset)
        if failed is not None:
            if not self._policy.should_retry(failed.error, failed.attempts):
                try:
                    letter = await self._give_up(record, failed)
                except Exception as exc:
                    rewind = state.failed(generation, record.offset, exc, dead_letter=True)
                    self._rewound(state, rewind)
                    return
                state.handled(generation, record.offset, letter, dead_letter=True)
                return
            await asyncio.sleep(self._policy.backoff(failed.attempts))
        # _dispatch_record, inlined: this runs for every record.
        try:
            envelope = envelope_of(record)
        except Exception as exc:
            where = f"{record.topic} partition {record.partition} offset {record.offset}"
            outcome = self._dispatch.unreadable(exc, where)
        else:
            outcome = await self._dispatch(envelope)
        if outcome is ACK and not state.pending:
            state.handled(generation, record.offset, None)
            return
        await self._settle(state, generation, record, outcome)

    async def _dispatch_record(self, record: Any) -> Outcome:
        """Dispatch a record; one that cannot become an envelope fails like an undecodable
        body (dead-lettered or logged), so the partition goes on."""
        try:
            envelope = envelope_of(record)
        except Exception as exc:
            where = f"{record.topic} partition {record.partition} offset {record.offset}"
            return self._dispatch.unreadable(exc, where)
        return await self._dispatch(envelope)

    async def _give_up(
        self, record: Any, failed: SendFailure, producer: Any = None
    ) -> Confirmation | None:
        """A record whose sends failed for good: its dead letter, or None when it is
        dropped (logged) because there is no DLQ or its dead letter was refused."""
        failure = Failure(failed.error, failed.attempts)
        where = f"{self._topic} partition {record.partition} offset {record.offset}"
        if not self.spec.properties.dlq or self._dlq_topic is None or failed.dead_letter:
            log.error(
                "binding %s: message %s failed after %d attempt(s) and is dropped (%s): %s",
                self.name,
                where,
                failed.attempts,
                "its dead letter was refused" if failed.dead_letter else "no DLQ",
                failure.reason,
            )
            return None
        log.warning(
            "binding %s: message %s failed after %d attempt(s), dead-lettering: %s: %s",
            self.name,
            where,
            failed.attempts,
            failure.fqcn,
            failure.reason,
        )
        return await self._dead_letter(record, failure, producer)

    async def _work_transactional(self, worker: _Worker) -> None:
        """Like ``_work``, but records commit in transactions of their partition's producer
        (one per batch unless a pause splits it): the handler's sends (through
        ``current_transaction``), dead letters and the consumed offsets commit together."""
        await self._work_in_steps(worker, self._transact)

    async def _work_in_steps(
        self,
        worker: _Worker,
        step: Callable[[_Partition, int, list[Any], int], Awaitable[int]],
        gather: Callable[[_Worker, _Partition, int, list[Any]], Awaitable[None]] | None = None,
    ) -> None:
        """A worker's loop: each partition's fetched records go to ``step`` from the first,
        which handles some and returns the index of the next (``gather`` may first add more
        of the partition's records); it waits while paused and ends at a revoke. The worker
        dying rewinds the partition to its first unfinished record."""
        batches = worker.batches
        while True:
            if not batches:
                worker.wake.clear()
                await worker.wake.wait()
                continue
            state, generation, records = batches.popleft()
            try:
                if gather is not None:
                    await gather(worker, state, generation, records)
                start = 0
                while start < len(records):
                    if self._paused:
                        await self._resumed.wait()
                    if not state.accepts(generation):
                        break
                    worker.current = state
                    start = await step(state, generation, records, start)
                    worker.current = None
            except Exception:
                self._redeliver(state)
                raise
            finally:
                worker.current = None
                self._in_flight -= len(records)
                if self._in_flight < self._max_in_flight:
                    self._room.set()

    async def _transact(
        self, state: _Partition, generation: int, records: list[Any], start: int
    ) -> int:
        """One transaction over ``records[start:]``, ended early by a pause or a revoke;
        returns the index of the first record it did not handle. The transaction commits
        only once the broker acknowledged every output and dead letter in it; otherwise it
        is aborted and the partition rewinds to its committed offset."""
        index = start
        sent: list[tuple[int, Confirmation, bool]] = []
        producer = None
        try:
            producer = await self._transactional_producer(state)
            current_transaction.set(Transaction(producer, self._producer))
            await producer.begin_transaction()
            while index < len(records):
                if self._paused or not state.accepts(generation):
                    break
                record = records[index]
                if index > start and state.isolating(record.offset):
                    break
                index += 1
                failed = state.failure(record.offset)
                if failed is not None:
                    if not self._policy.should_retry(failed.error, failed.attempts):
                        letter = await _attributed(
                            record.offset, True, self._give_up(record, failed, producer)
                        )
                        if letter is not None:
                            sent.append((record.offset, letter, True))
                        continue
                    await asyncio.sleep(self._policy.backoff(failed.attempts))
                outcome = await self._dispatch_record(record)
                pending = outcome.pending
                if isinstance(pending, Confirmation):
                    sent.append((record.offset, pending, False))
                elif pending is not None:
                    await _attributed(record.offset, False, pending)
                if outcome.failure is not None:
                    letter = await _attributed(
                        record.offset, True, self._dead_letter(record, outcome.failure, producer)
                    )
                    sent.append((record.offset, letter, True))
                if state.isolating(record.offset):
                    break
            await _confirm_all(sent)
            if index > start:
                offsets = {state.tp: records[index - 1].offset + 1}
                await producer.send_offsets_to_transaction(offsets, self._group_id)
            await producer.commit_transaction()
        except Exception as exc:
            await self._abandon(state, generation, records[start].offset, exc, sent, producer)
            return len(records)
        if index > start:
            state.transacted(generation, records[index - 1].offset + 1)
        return index

    async def _abandon(
        self,
        state: _Partition,
        generation: int,
        first: int,
        exc: Exception,
        sent: list[tuple[int, Confirmation, bool]],
        producer: Any,
    ) -> None:
        """A transaction starting at offset ``first`` failed with ``exc``: rewind the
        partition, charging the failure to the records it names, and abort."""
        for _, confirmation, _ in sent:
            confirmation.future.add_done_callback(_retrieve)
        if isinstance(exc, _Rejected) and len(exc.offsets) > 1:
            rewind = state.failed_together(generation, exc.offsets, exc.error)
        elif isinstance(exc, _Rejected):
            rewind = state.failed(generation, exc.offset, exc.error, exc.dead_letter)
        else:
            rewind = state.failed(generation, first, exc)
        self._rewound(state, rewind)
        if producer is not None:
            await self._after_abort(state, producer, exc)
        else:
            await asyncio.sleep(1.0)

    async def _after_abort(self, state: _Partition, producer: Any, exc: Exception) -> None:
        """Abort the failed transaction and replace the producer: a rejected send leaves
        its sequence numbers out of step for good. A fenced producer is not replaced (that
        would fence the partition's new owner): the partition stops until it is revoked."""
        with contextlib.suppress(Exception):
            await producer.abort_transaction()
        if _fenced(exc):
            log.error(
                "binding %s: the transactional producer %r of %s partition %d was fenced by "
                "another member holding the same id; the partition stops here until it is "
                "reassigned",
                self.name,
                self._transactional_id(state),
                self._topic,
                state.tp.partition,
            )
            state.revoked = True
            if self._consumer is not None:
                self._consumer.pause(state.tp)
            return
        if state.producer is producer:
            await self._close_producers([state])

    async def _work_batches(self, worker: _Worker) -> None:
        """Like ``_work`` (or ``_work_transactional``), for a handler that takes a list:
        the records of one partition go to ``dispatch_batch`` in batches of at most
        ``batch-size`` (see ``_gather`` for how long it waits for more)."""
        batching = self._dispatch.batching
        assert batching is not None
        handle = self._handle_batch if self._new_transactional is None else self._transact_batch

        async def step(state: _Partition, generation: int, records: list[Any], start: int) -> int:
            return await handle(state, generation, records, start, batching.size)

        async def gather(
            worker: _Worker, state: _Partition, generation: int, records: list[Any]
        ) -> None:
            if len(records) < batching.size:
                await self._gather(worker, state, generation, records, batching)

        await self._work_in_steps(worker, step, gather)

    async def _gather(
        self,
        worker: _Worker,
        state: _Partition,
        generation: int,
        records: list[Any],
        batching: Batching,
    ) -> None:
        """Extend ``records`` with the partition's records fetched since, until there are
        ``batching.size`` of them: those already queued for the worker, then those fetched
        within ``batching.wait`` seconds. A pause, a revoke or ``max-in-flight`` records in
        hand end the wait."""
        deadline = asyncio.get_running_loop().time() + batching.wait
        batches = worker.batches
        while len(records) < batching.size and state.accepts(generation) and not self._paused:
            for i, (queued, queued_generation, more) in enumerate(batches):
                if queued is state:
                    if queued_generation != generation:
                        return
                    del batches[i]
                    records.extend(more)
                    break
            else:
                remaining = deadline - asyncio.get_running_loop().time()
                # At max-in-flight nothing more is fetched until records in hand are handled.
                if remaining <= 0 or self._in_flight >= self._max_in_flight:
                    break
                worker.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await worker.wake.wait()

    @staticmethod
    def _batch_end(state: _Partition, records: list[Any], start: int, size: int) -> int:
        """The end of the batch starting at ``records[start]``: at most ``size`` records,
        ending before a record redelivered after failed sends (it goes alone)."""
        end = min(start + size, len(records))
        if state.redelivering:
            for i in range(start + 1, end):
                if state.failure(records[i].offset) is not None:
                    return i
        return end

    @staticmethod
    def _alone(state: _Partition, record: Any) -> bool:
        """Whether ``record`` is handled as a batch of one by the one-record path: it is
        redelivered after failed sends, or its partition isolates it."""
        return state.isolating(record.offset) or state.failure(record.offset) is not None

    async def _dispatch_records(self, records: list[Any]) -> list[Outcome]:
        """The outcome of each of ``records``: one ``dispatch_batch`` call for those that
        become envelopes, ``unreadable`` for the others."""
        unreadable: dict[int, Outcome] = {}
        try:
            envelopes = envelopes_of(records)
        except Exception:
            envelopes = []
            for i, record in enumerate(records):
                try:
                    envelopes.append(envelope_of(record))
                except Exception as exc:
                    where = f"{record.topic} partition {record.partition} offset {record.offset}"
                    unreadable[i] = self._dispatch.unreadable(exc, where)
        outcomes = await self._dispatch.dispatch_batch(envelopes) if envelopes else []
        if len(outcomes) != len(envelopes):
            raise RuntimeError(
                f"binding {self.name!r}: the dispatcher returned {len(outcomes)} outcome(s) "
                f"for a batch of {len(envelopes)} message(s)"
            )
        if not unreadable:
            return outcomes
        handed = iter(outcomes)
        return [unreadable[i] if i in unreadable else next(handed) for i in range(len(records))]

    async def _handle_batch(
        self, state: _Partition, generation: int, records: list[Any], start: int, size: int
    ) -> int:
        """Dispatch the batch starting at ``records[start]`` and note each outcome in offset
        order, as ``_handle`` does for one; returns the index after the batch. A pending
        confirmation that is not ours is awaited once; its failure is shared by every
        record of the batch that waited for it."""
        if self._alone(state, records[start]):
            await self._handle(state, generation, records[start])
            return start + 1
        end = self._batch_end(state, records, start, size)
        batch = records[start:end]
        outcomes = await self._dispatch_records(batch)
        if not state.pending and all(outcome is ACK for outcome in outcomes):
            state.handled(generation, batch[-1].offset, None)
            return end
        confirmed: set[int] = set()
        acked = -1
        for i, (record, outcome) in enumerate(zip(batch, outcomes, strict=True)):
            pending = outcome.pending
            if pending is not None and not isinstance(pending, Confirmation):
                if id(pending) not in confirmed:
                    try:
                        await pending
                    except Exception as exc:
                        if acked >= 0:
                            state.handled(generation, acked, None)
                        sharing = [
                            r.offset
                            for r, o in zip(batch[i:], outcomes[i:], strict=True)
                            if o.pending is pending
                        ]
                        self._rewound(state, state.failed_together(generation, sharing, exc))
                        return end
                    confirmed.add(id(pending))
                outcome = Outcome(failure=outcome.failure)
            if outcome.failure is None and outcome.pending is None and not state.pending:
                acked = record.offset
                continue
            if acked >= 0:
                state.handled(generation, acked, None)
                acked = -1
            await self._settle(state, generation, record, outcome)
            if not state.accepts(generation):
                return end
        if acked >= 0:
            state.handled(generation, acked, None)
        return end

    async def _transact_batch(
        self, state: _Partition, generation: int, records: list[Any], start: int, size: int
    ) -> int:
        """One transaction over the batch starting at ``records[start]``: its outputs, dead
        letters and consumed offsets commit together, or it is aborted and the partition
        rewinds (see ``_transact``). Returns the index after the batch."""
        if self._alone(state, records[start]):
            return start + await self._transact(state, generation, records[start : start + 1], 0)
        end = self._batch_end(state, records, start, size)
        batch = records[start:end]
        sent: list[tuple[int, Confirmation, bool]] = []
        producer = None
        try:
            producer = await self._transactional_producer(state)
            current_transaction.set(Transaction(producer, self._producer))
            await producer.begin_transaction()
            outcomes = await self._dispatch_records(batch)
            confirmed: set[int] = set()
            for i, (record, outcome) in enumerate(zip(batch, outcomes, strict=True)):
                pending = outcome.pending
                if isinstance(pending, Confirmation):
                    sent.append((record.offset, pending, False))
                elif pending is not None and id(pending) not in confirmed:
                    try:
                        await pending
                    except Exception as exc:
                        sharing = [
                            r.offset
                            for r, o in zip(batch[i:], outcomes[i:], strict=True)
                            if o.pending is pending
                        ]
                        raise _Rejected(record.offset, False, exc, sharing) from exc
                    confirmed.add(id(pending))
                if outcome.failure is not None:
                    letter = await _attributed(
                        record.offset, True, self._dead_letter(record, outcome.failure, producer)
                    )
                    sent.append((record.offset, letter, True))
            await _confirm_all(sent)
            next_offset = batch[-1].offset + 1
            await producer.send_offsets_to_transaction({state.tp: next_offset}, self._group_id)
            await producer.commit_transaction()
        except Exception as exc:
            await self._abandon(state, generation, batch[0].offset, exc, sent, producer)
            return len(records)
        state.transacted(generation, next_offset)
        return end

    async def _settle(
        self, state: _Partition, generation: int, record: Any, outcome: Outcome
    ) -> None:
        """Note a handled record whose outcome needs a confirmation or a dead letter."""
        confirmation: Confirmation | None = None
        dead_letter = False
        try:
            if outcome.pending is not None:
                confirmation = await self._confirmation(outcome.pending)
            if outcome.failure is not None:
                if confirmation is not None:
                    await confirmation
                    confirmation = None
                dead_letter = True
                confirmation = await self._dead_letter(record, outcome.failure)
        except Exception as exc:
            self._rewound(state, state.failed(generation, record.offset, exc, dead_letter))
            return
        state.handled(generation, record.offset, confirmation, dead_letter)
        if state.isolating(record.offset):
            # Confirmed before the next record is handled, so a failure names this one.
            self._rewound(state, await state.flush())
            return
        # Checked after every record, so a rejected send stops the partition promptly.
        self._rewound(state, state.advance())
        if len(state.pending) > self._max_in_flight:
            await self._confirm_some(state)

    async def _confirm_some(self, state: _Partition) -> None:
        """Bound the unconfirmed records of a partition: wait for the oldest ones."""
        while len(state.pending) > self._max_in_flight // 2:
            oldest = state.pending[0][1]
            if oldest is not None:
                with contextlib.suppress(Exception):
                    await oldest
            if self._rewound(state, state.advance()):
                return

    @staticmethod
    async def _confirmation(pending: Awaitable[None]) -> Confirmation | None:
        # Our own confirmations are checked without waiting; others are awaited here.
        if isinstance(pending, Confirmation):
            return pending
        await pending
        return None

    async def _dead_letter(
        self, record: Any, failure: Failure, producer: Any = None
    ) -> Confirmation:
        assert self._dlq_topic is not None
        if producer is None:
            producer = await self._producer.get()
        return await send_dead_letter(self._producer, producer, self._dlq_topic, record, failure)

    def _redeliver(self, state: _Partition) -> None:
        """The worker died handling a record of ``state``: that record is neither finished
        nor failed, so start over from the first unfinished one."""
        for _, ack, _ in state.pending:
            if isinstance(ack, Confirmation):
                ack.future.add_done_callback(_retrieve)
        target = state.rewind()
        if target is not None and not state.revoked and self._consumer is not None:
            self._consumer.seek(state.tp, target)

    def _rewound(self, state: _Partition, rewind: Rewind | None) -> bool:
        """Act on a rewind of ``state``, if any: log it and seek back to redeliver."""
        if rewind is None:
            return False
        for ack in rewind.dropped:
            # Their errors no longer matter; retrieve them so asyncio does not report them.
            if isinstance(ack, Confirmation):
                ack.future.add_done_callback(_retrieve)
        if rewind.shared_until is not None:
            log.error(
                "binding %s: sends for %s partition %d offsets %d to %d failed together; "
                "redelivering from offset %s, one record at a time: %s",
                self.name,
                self._topic,
                state.tp.partition,
                rewind.failed,
                rewind.shared_until,
                rewind.to,
                rewind.failure.error,
            )
        else:
            log.error(
                "binding %s: sending for %s partition %d offset %d failed (attempt %d); "
                "redelivering from offset %s: %s",
                self.name,
                self._topic,
                state.tp.partition,
                rewind.failed,
                rewind.failure.attempts,
                rewind.to,
                rewind.failure.error,
            )
        if rewind.to is not None and not state.revoked and self._consumer is not None:
            self._consumer.seek(state.tp, rewind.to)
        return True

    async def _commit_periodically(self) -> None:
        interval = self._defaults.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            states = []
            for state in list(self._partitions.values()):
                self._rewound(state, state.advance())
                states.append(state)
            await self._commit(states)

    async def _commit(self, states: list[_Partition]) -> None:
        offsets = {s.tp: offset for s in states if (offset := s.to_commit()) is not None}
        if not offsets or self._consumer is None:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance is under way: the revoke callback commits what this one could not.
            log.info("binding %s: commit deferred: %s", self.name, exc)
            return
        for state in states:
            if state.tp in offsets:
                state.commit_succeeded(offsets[state.tp])

    def health(self) -> dict[str, Any]:
        """Running state, assigned partitions, lag (records not yet handled) per partition,
        and how many times a task of the binding died and was restarted (with the last
        error)."""
        lag: dict[int, int | None] = {}
        consumer = self._consumer
        for tp, state in self._partitions.items():
            high = None
            if consumer is not None:
                try:
                    high = consumer.highwater(tp)
                except KafkaError:
                    high = None
            lag[tp.partition] = (
                None if high is None or state.done < 0 else max(high - state.done, 0)
            )
        return {
            "running": self._running,
            "paused": self._paused,
            "topic": self._topic,
            "group": self._group_id,
            "assigned": sorted(lag),
            "lag": lag,
            "task-failures": self._task_failures,
            "last-task-failure": self._last_task_failure,
        }

    def client(self) -> Any:
        return self._consumer
