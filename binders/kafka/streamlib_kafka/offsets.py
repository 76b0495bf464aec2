"""Offsets of one assigned partition: what may be committed, and where to redeliver from.

Invariant: the offset committed for a partition is never past its first record that is not
finished, a record being finished once it was handled and every output and dead letter it
sent was acknowledged by the broker. ``done`` is that bound: it only moves forward over
finished records, in offset order, and never decreases. Everything else follows from it:

- a record's completion counts only in the *generation* it was fetched in. A rewind (a send
  failed) starts a new generation at ``done``, so completions and confirmations of records
  handled after the failed one, still in flight at the rewind, no longer move ``done``;
- a confirmation that failed is never skipped: it rewinds, and the record is redelivered;
- revoke and stop keep the generation, so the record being handled when they happen still
  counts once it finishes;
- a send failure shared by several records (the broker refuses a whole batch, say one over
  ``max.message.bytes``) is charged to none of them: the partition rewinds and handles the
  records up to the last one that failed *isolated*, one at a time, each confirmed before the
  next is handled, so the failure that follows names its record and counts its attempt.

No broker client here: the consumer feeds records and confirmations in, and seeks to
``done`` whenever a method reports a rewind.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol


class Acknowledgement(Protocol):
    """The broker's answer to one send: awaiting it raises when the send failed."""

    def done(self) -> bool: ...
    def error(self) -> BaseException | None: ...
    def __await__(self) -> Generator[Any, None, None]: ...


@dataclass(frozen=True, slots=True)
class Rewind:
    """A failed send made the partition start over: seek to ``to`` (None: nothing fetched
    yet, no seek needed). ``failed`` is the record whose send failed, ``dropped`` the
    confirmations no longer waited for."""

    to: int | None
    failed: int
    failure: SendFailure
    dropped: tuple[Acknowledgement, ...]
    shared_until: int | None = None
    """Set when the failure was shared by the records ``failed`` to ``shared_until``: no
    attempt was counted, and they are redelivered isolated."""


@dataclass(frozen=True, slots=True)
class SendFailure:
    """The last failed send of a redelivered record: how many attempts failed, the broker's
    error, and whether that send was the record's dead letter."""

    attempts: int
    error: BaseException
    dead_letter: bool


class PartitionOffsets:
    """Progress of one assigned partition (see the module docstring for the invariant).

    ``pending`` holds handled records, in offset order, whose sends await confirmation.
    ``committed`` is the offset last committed for the group (or found there at start).
    """

    __slots__ = (
        "_failures",
        "committed",
        "done",
        "generation",
        "isolate_until",
        "pending",
        "revoked",
    )

    def __init__(self) -> None:
        self.done = -1
        self.committed = -1
        self.generation = 0
        self.revoked = False
        self.pending: deque[tuple[int, Acknowledgement | None, bool]] = deque()
        self._failures: dict[int, SendFailure] = {}
        self.isolate_until = -1

    def fetched(self, offset: int) -> None:
        """The first record fetched after assignment fixes where the group starts."""
        if self.done < 0:
            self.done = self.committed = offset

    def accepts(self, generation: int) -> bool:
        """Whether a record fetched in ``generation`` may still be handled."""
        return generation == self.generation and not self.revoked

    def handled(
        self,
        generation: int,
        offset: int,
        ack: Acknowledgement | None,
        dead_letter: bool = False,
    ) -> None:
        """A record of ``generation`` was handled; ``ack`` confirms its sends (None: nothing
        to confirm). Ignored when a rewind happened meanwhile: the record comes again."""
        if generation != self.generation or offset < self.done:
            return
        pending = self.pending
        if pending and offset <= pending[-1][0]:
            return
        if ack is None and not pending:
            self._finish(offset)
        else:
            pending.append((offset, ack, dead_letter))

    def failed(
        self, generation: int, offset: int, error: BaseException, dead_letter: bool = False
    ) -> Rewind | None:
        """A send of a record of ``generation`` failed before it was queued: rewind. None
        when the failure is stale (a rewind already happened)."""
        if generation != self.generation or offset < self.done:
            return None
        return self._rewind_for(offset, error, dead_letter)

    def failed_together(
        self, generation: int, offsets: list[int], error: BaseException
    ) -> Rewind | None:
        """Sends of several records of ``generation`` failed at once (a transaction's
        outputs, say): a rewind charged to none of them when more than one failed."""
        if len(offsets) == 1:
            return self.failed(generation, offsets[0], error)
        if generation != self.generation or max(offsets) < self.done:
            return None
        return self._shared_rewind(min(offsets), max(offsets), error)

    def isolating(self, offset: int) -> bool:
        """Whether the record at ``offset`` is to be handled alone: its sends confirmed
        before the next record is handled, so a failure is charged to it alone."""
        return offset <= self.isolate_until

    @property
    def redelivering(self) -> bool:
        """Whether any record is redelivered because its sends failed (see ``failure``)."""
        return bool(self._failures)

    def failure(self, offset: int) -> SendFailure | None:
        """The failed sends of a redelivered record, if its earlier attempts failed so."""
        return self._failures.get(offset)

    def advance(self) -> Rewind | None:
        """Move ``done`` past every confirmed record; when a confirmation failed, rewind."""
        pending = self.pending
        while pending:
            offset, ack, dead_letter = pending[0]
            if ack is not None:
                if not ack.done():
                    return None
                error = ack.error()
                if error is not None:
                    shared = [
                        o
                        for o, a, _ in pending
                        if o > offset and a is not None and a.done() and a.error() is not None
                    ]
                    if shared:
                        return self._shared_rewind(offset, shared[-1], error)
                    return self._rewind_for(offset, error, dead_letter)
            pending.popleft()
            self._finish(offset)
        return None

    async def flush(self) -> Rewind | None:
        """Wait for every pending confirmation in order; like ``advance`` otherwise."""
        while self.pending:
            ack = self.pending[0][1]
            if ack is not None and not ack.done():
                # Its error is read back by ``advance``.
                with contextlib.suppress(Exception):
                    await ack
            rewound = self.advance()
            if rewound is not None:
                return rewound
        return None

    def rewind(self) -> int | None:
        """Forget unconfirmed records and start a new generation at ``done``: records fetched
        before are no longer handled, and their completions no longer count. Returns the
        offset to seek to (None before the first fetch: the position is still the group's)."""
        self.pending.clear()
        self.generation += 1
        return self.done if self.done >= 0 else None

    def transacted(self, generation: int, next_offset: int) -> None:
        """A transaction of ``generation`` committed the records before ``next_offset``."""
        if generation == self.generation and next_offset > self.done:
            self._finish(next_offset - 1)
            self.committed = max(self.committed, next_offset)

    def to_commit(self) -> int | None:
        """The offset to commit now, or None when the group already has it."""
        return self.done if self.done > self.committed else None

    def commit_succeeded(self, offset: int) -> None:
        self.committed = max(self.committed, offset)

    def _finish(self, offset: int) -> None:
        self.done = offset + 1
        if self._failures:
            for old in [o for o in self._failures if o <= offset]:
                del self._failures[old]

    def _shared_rewind(self, first: int, last: int, error: BaseException) -> Rewind:
        self.isolate_until = max(self.isolate_until, last)
        previous = self._failures.get(first)
        failure = SendFailure(previous.attempts if previous else 0, error, False)
        dropped = tuple(ack for _, ack, _ in self.pending if ack is not None)
        return Rewind(self.rewind(), first, failure, dropped, shared_until=last)

    def _rewind_for(self, offset: int, error: BaseException, dead_letter: bool) -> Rewind:
        previous = self._failures.get(offset)
        attempts = previous.attempts + 1 if previous is not None else 1
        failure = self._failures[offset] = SendFailure(attempts, error, dead_letter)
        dropped = tuple(ack for _, ack, _ in self.pending if ack is not None)
        return Rewind(self.rewind(), offset, failure, dropped)
