"""Which acks and rejects a consumer may send, per channel, from what its handlers finished.

AMQP delivery tags count per channel, and ``basic.ack(tag, multiple=True)`` settles every
unsettled delivery of that channel up to ``tag``. So an ack is only ever meaningful on the
channel that delivered the message, and a multiple-ack is safe only when every delivery it
covers is finished. ``AckLedger`` keeps that bookkeeping apart from the client library: the
consumer records deliveries and finishes, and ``flush`` returns the frames to write.
Deliveries of a lost channel are forgotten; the broker delivers them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

C = TypeVar("C")
"""A channel, compared by identity (a new channel after a reconnection is a new object)."""


class Action(Enum):
    ACK = "ack"
    REJECT = "reject"
    """Not requeued: the broker dead-letters it (or drops it without a DLX)."""
    REQUEUE = "requeue"


@dataclass(frozen=True, slots=True)
class Settle(Generic[C]):
    """One frame to write: ``action`` for ``tag`` on ``channel``, the channel that delivered."""

    channel: C
    tag: int
    action: Action
    multiple: bool = False


_PENDING = None


class AckLedger(Generic[C]):
    """Deliveries not yet settled, per channel, in tag order, with what was decided for each.

    Invariants of what ``flush`` returns: every frame names the channel that delivered the
    tag; a tag is settled once; a multiple-ack covers only deliveries finished with ``ACK``;
    rejects come before any ack of the same flush, so no ack covers a rejected delivery.
    """

    def __init__(self) -> None:
        # channel -> {tag: action or _PENDING}; dicts keep the tags in delivery order.
        self._open: dict[int, tuple[C, dict[int, Action | None]]] = {}
        self._finished = 0

    @property
    def finished(self) -> int:
        """Deliveries finished but not yet settled by a flush."""
        return self._finished

    def deliver(self, channel: C, tag: int) -> None:
        """Record a delivery of ``channel``; tags of a channel only grow."""
        entry = self._open.get(id(channel))
        if entry is None:
            entry = self._open[id(channel)] = (channel, {})
        entry[1][tag] = _PENDING

    def finish(self, channel: C, tag: int, action: Action) -> bool:
        """Record the outcome of a delivery; False when its channel was lost (nothing to
        send: the broker redelivers it) or the tag is unknown or already finished."""
        entry = self._open.get(id(channel))
        if entry is None or entry[0] is not channel:
            return False
        tags = entry[1]
        if tags.get(tag, action) is not _PENDING:
            return False
        tags[tag] = action
        self._finished += 1
        return True

    def lost(self, channel: C) -> None:
        """Forget ``channel``: its deliveries can no longer be settled."""
        entry = self._open.get(id(channel))
        if entry is not None and entry[0] is channel:
            del self._open[id(channel)]
            self._finished -= sum(1 for a in entry[1].values() if a is not _PENDING)

    def reset(self) -> None:
        """Forget every channel (all were lost: a consumer has one channel at a time)."""
        self._open.clear()
        self._finished = 0

    def flush(self) -> list[Settle[C]]:
        """The frames that settle every finished delivery, and forget those deliveries."""
        out: list[Settle[C]] = []
        for channel, tags in self._open.values():
            for tag, decided in list(tags.items()):
                if decided is not None and decided is not Action.ACK:
                    out.append(Settle(channel, tag, decided))
                    del tags[tag]
            prefix = 0
            last = 0
            for tag, action in tags.items():
                if action is not Action.ACK:
                    break
                prefix += 1
                last = tag
            if prefix:
                # Every delivery up to ``last`` is finished with ACK: one frame acks them.
                out.append(Settle(channel, last, Action.ACK, multiple=prefix > 1))
                for tag in list(tags)[:prefix]:
                    del tags[tag]
            for tag in [t for t, a in tags.items() if a is Action.ACK]:
                out.append(Settle(channel, tag, Action.ACK))
                del tags[tag]
        self._finished = 0
        return out
