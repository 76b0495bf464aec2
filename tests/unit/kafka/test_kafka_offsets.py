"""The Kafka offset tracker never lets a partition's committed offset pass a record that is not
finished, whatever the order of fetches, completions, confirmations, rewinds and revokes.

The test drives trackers the way the consumer does (fetch with the generation, handle one
record at a time per partition, seek where a rewind says) and checks them against an oracle
that knows only which records were really finished: handled, and their sends confirmed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from streamlib_kafka.offsets import PartitionOffsets, Rewind

PARTITIONS = 2


class Rejected(Exception):
    pass


class FakeAck:
    """A send confirmation the test resolves whenever it likes."""

    def __init__(self, partition: int, offset: int) -> None:
        self.partition = partition
        self.offset = offset
        self.ok: bool | None = None

    def done(self) -> bool:
        return self.ok is not None

    def error(self) -> BaseException | None:
        return Rejected(self.offset) if self.ok is False else None

    def __await__(self) -> Generator[Any, None, None]:
        assert self.ok is not None, "the test resolves every confirmation before a flush"
        if not self.ok:
            raise Rejected(self.offset)
        return
        yield


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("flush waited on a resolved confirmation")


@dataclass
class Partition:
    """One partition as the broker and the oracle see it, and the tracker under test."""

    number: int
    log: list[int]
    tracker: PartitionOffsets = field(default_factory=PartitionOffsets)
    position: int = 0
    queue: deque[tuple[PartitionOffsets, int, int]] = field(default_factory=deque)
    handling: tuple[PartitionOffsets, int, int] | None = None
    group_committed: int | None = None
    finished: set[int] = field(default_factory=set)

    @property
    def end(self) -> int:
        return self.log[-1] + 1

    def first_unfinished(self) -> int:
        return next((o for o in self.log if o not in self.finished), self.end)

    def seek(self, target: int | Rewind | None) -> None:
        if isinstance(target, Rewind):
            target = target.to
        if target is None:
            return
        assert target <= self.first_unfinished(), f"seek to {target} skips an unfinished record"
        self.position = target

    def fetch(self, count: int) -> None:
        """Records from the fetch position, tagged with the generation; an idle worker
        takes the first."""
        records = [o for o in self.log if o >= self.position][:count]
        for offset in records:
            self.tracker.fetched(offset)
            self.queue.append((self.tracker, self.tracker.generation, offset))
            self.position = offset + 1
        self.begin()

    def begin(self) -> None:
        if self.handling is None and self.queue:
            tracker, generation, offset = self.queue.popleft()
            if tracker is self.tracker and tracker.accepts(generation):
                self.handling = (tracker, generation, offset)

    def complete(self, kind: str, acks: list[FakeAck]) -> None:
        """The record being handled completes, and the worker takes the next one."""
        if self.handling is None:
            return
        tracker, generation, offset = self.handling
        self.handling = None
        if kind == "nothing-to-confirm":
            self.finished.add(offset)
            tracker.handled(generation, offset, None)
        elif kind == "send-fails":
            self.seek(tracker.failed(generation, offset, Rejected(offset)))
        else:
            ack = FakeAck(self.number, offset)
            acks.append(ack)
            tracker.handled(generation, offset, ack, dead_letter=kind == "dead-letter")
        self.begin()

    def commit(self, succeeds: bool) -> None:
        offset = self.tracker.to_commit()
        if offset is None:
            return
        assert offset <= self.first_unfinished(), (
            f"committing {offset} while {self.first_unfinished()} is not finished"
        )
        assert self.group_committed is None or offset >= self.group_committed
        if succeeds:
            self.group_committed = offset
            self.tracker.commit_succeeded(offset)

    def reassign(self) -> None:
        """A new tracker, positioned where the group committed (or at the start)."""
        self.tracker = PartitionOffsets()
        self.position = self.group_committed if self.group_committed is not None else 0
        self.handling = None

    def drain(self, kind: str, outcomes: list[bool], acks: list[FakeAck]) -> None:
        """Revoke or stop: finish the record being handled, wait for confirmations, commit."""
        self.tracker.revoked = True
        self.complete(kind, acks)
        mine = [a for a in acks if a.partition == self.number and a.ok is None]
        for ack, ok in zip(mine, outcomes + [True] * len(mine), strict=False):
            resolve(ack, ok, self)
        run(self.tracker.flush())
        self.commit(True)


def resolve(ack: FakeAck, ok: bool, partition: Partition) -> None:
    ack.ok = ok
    if ok:
        partition.finished.add(ack.offset)


KINDS = ("nothing-to-confirm", "confirm", "dead-letter", "send-fails")
# Repeated names weight the common steps; revokes and crashes stay rarer.
STEPS = (
    "fetch",
    "fetch",
    "complete",
    "complete",
    "complete",
    "resolve",
    "resolve",
    "resolve",
    "advance",
    "advance",
    "commit",
    "commit",
    "begin",
    "rewind",
    "revoke",
    "crash",
)


def decode(code: int) -> tuple[Any, ...]:
    """An operation from an integer: plain integers are far cheaper for hypothesis to draw
    than nested tuples, which keeps 1,000 examples within seconds."""
    step, code = STEPS[code % len(STEPS)], code // len(STEPS)
    partition, code = code % PARTITIONS, code // PARTITIONS
    if step == "fetch":
        return (step, partition, code % 4 + 1)
    if step == "complete":
        return (step, partition, KINDS[code % 4])
    if step == "resolve":
        return (step, code // 2, code % 2 == 0)
    if step == "commit":
        return (step, partition, code % 2 == 0)
    if step == "revoke":
        outcomes = [code >> bit & 1 == 0 for bit in range(2, 2 + code % 4)]
        return (step, partition, KINDS[code // 64 % 4], outcomes)
    return (step, partition)


OPS = st.lists(st.integers(0, 2**20 - 1), min_size=5, max_size=40).map(
    lambda codes: [decode(c) for c in codes]
)
LOGS = st.lists(
    st.lists(st.integers(1, 3), min_size=1, max_size=8).map(
        lambda steps: [sum(steps[: i + 1]) for i in range(len(steps))]
    ),
    min_size=PARTITIONS,
    max_size=PARTITIONS,
)


def play(
    logs: list[list[int]], ops: list[tuple[Any, ...]]
) -> tuple[list[Partition], list[FakeAck]]:
    partitions = [Partition(n, log) for n, log in enumerate(logs)]
    for p in partitions:
        p.position = p.log[0]
    acks: list[FakeAck] = []
    for op in ops:
        name = op[0]
        if name == "resolve":
            unresolved = [a for a in acks if a.ok is None]
            if unresolved:
                ack = unresolved[op[1] % len(unresolved)]
                resolve(ack, op[2], partitions[ack.partition])
            continue
        p = partitions[op[1]]
        if name == "fetch":
            p.fetch(op[2])
        elif name == "begin":
            p.begin()
        elif name == "complete":
            p.complete(op[2], acks)
        elif name == "advance":
            p.seek(p.tracker.advance())
        elif name == "rewind":
            p.seek(p.tracker.rewind())
        elif name == "commit":
            p.commit(op[2])
        elif name == "revoke":
            p.drain(op[2], op[3], acks)
            p.reassign()
        elif name == "crash":
            p.reassign()
    return partitions, acks


def run_to_the_end(p: Partition) -> None:
    """Every later send succeeds: the tracker must reach the end of the log."""
    for _ in range(10 * len(p.log) + 10):
        if p.handling is not None:
            p.complete("nothing-to-confirm", [])
        elif p.queue:
            p.begin()
        elif p.position < p.end:
            p.fetch(len(p.log))
        else:
            p.seek(p.tracker.advance())
            if p.tracker.done == p.end and not p.tracker.pending:
                break
    p.commit(True)


@settings(max_examples=1000, deadline=None)
@given(LOGS, OPS)
def test_committed_offset_never_passes_an_unfinished_record(
    logs: list[list[int]], ops: list[tuple[Any, ...]]
) -> None:
    play(logs, ops)


@settings(max_examples=1000, deadline=None)
@given(LOGS, OPS)
def test_every_record_is_finished_and_committed_once_sends_succeed(
    logs: list[list[int]], ops: list[tuple[Any, ...]]
) -> None:
    partitions, acks = play(logs, ops)
    for ack in acks:
        if ack.ok is None:
            resolve(ack, True, partitions[ack.partition])
    for p in partitions:
        run_to_the_end(p)
        assert p.group_committed == p.end
        assert p.first_unfinished() == p.end


def test_a_failed_send_counts_an_attempt_of_its_record_until_it_finishes() -> None:
    tracker = PartitionOffsets()
    tracker.fetched(10)
    first = FakeAck(0, 10)
    tracker.handled(0, 10, first)
    tracker.handled(0, 11, None)
    first.ok = False
    rewind = tracker.advance()
    assert rewind is not None and (rewind.to, rewind.failed, rewind.failure.attempts) == (10, 10, 1)
    assert rewind.dropped == (first,)
    tracker.handled(0, 12, None)  # handled before the rewind: no longer counts
    assert tracker.done == 10 and not tracker.pending
    rewind = tracker.failed(1, 10, Rejected(10))
    assert rewind is not None and rewind.to == 10
    failure = tracker.failure(10)
    assert failure is not None and failure.attempts == 2 and not failure.dead_letter
    letter = FakeAck(0, 10)
    tracker.handled(2, 10, letter, dead_letter=True)
    letter.ok = True
    assert tracker.advance() is None
    assert tracker.done == 11 and tracker.failure(10) is None


def test_a_failure_shared_by_several_records_is_charged_to_none_and_isolates_them() -> None:
    tracker = PartitionOffsets()
    tracker.fetched(0)
    acks = [FakeAck(0, offset) for offset in range(4)]
    for offset, ack in enumerate(acks):
        tracker.handled(0, offset, ack)
    acks[0].ok = True
    for ack in acks[1:3]:
        ack.ok = False  # one batch refused whole
    rewind = tracker.advance()
    assert rewind is not None
    assert (rewind.to, rewind.failed, rewind.shared_until) == (1, 1, 2)
    assert tracker.failure(1) is None and tracker.failure(2) is None
    assert [tracker.isolating(o) for o in range(4)] == [True, True, True, False]
    # Alone, record 2's send fails again: that failure is its own.
    tracker.handled(1, 1, None)
    alone = FakeAck(0, 2)
    tracker.handled(1, 2, alone)
    alone.ok = False
    rewind = tracker.advance()
    assert rewind is not None and rewind.shared_until is None
    failure = tracker.failure(2)
    assert failure is not None and failure.attempts == 1
    assert tracker.done == 2


def test_a_transaction_failing_for_several_records_is_charged_to_none() -> None:
    tracker = PartitionOffsets()
    tracker.fetched(5)
    rewind = tracker.failed_together(0, [5, 7], Rejected(5))
    assert rewind is not None and (rewind.to, rewind.shared_until) == (5, 7)
    assert tracker.failure(5) is None and tracker.isolating(7) and not tracker.isolating(8)
    rewind = tracker.failed_together(1, [6], Rejected(6))
    assert rewind is not None and rewind.shared_until is None
    failure = tracker.failure(6)
    assert failure is not None and failure.attempts == 1
