"""A dead letter as the DLQ commands see it, and what a binder implements to serve them.

A binder that supports the commands has a ``dead_letters()`` method returning a
``DeadLetterQueues``. Reading (``browse``) leaves every message in its DLQ; a replay takes
messages in a ``ReplaySession`` and removes each only when the core calls ``remove`` after
the broker confirmed its republished copy.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Awaitable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..messages import X_EXCEPTION_FQCN, X_EXCEPTION_MESSAGE, X_EXCEPTION_STACKTRACE

if TYPE_CHECKING:
    from ..binder import ConsumerSpec

REPLAY_COUNT = "x-replay-count"
"""Header a replayed message carries: how many times it was replayed (1 the first time)."""
_DEAD_LETTER_PREFIXES = ("x-exception-", "x-original-")
_EXCEPTION_LINE = re.compile(r"^(?:Caused by: )?([A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*)(?::|$)")


def is_dead_letter_header(name: str) -> bool:
    """Whether ``name`` is one a binder adds when dead-lettering (``x-exception-*``,
    ``x-original-*``): a replay leaves them out, so a new failure writes fresh ones."""
    return name.startswith(_DEAD_LETTER_PREFIXES)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _count(value: Any) -> int:
    text = _text(value)
    try:
        return int(text) if text is not None else 0
    except ValueError:
        return 0


def next_replay_count(headers: Mapping[str, Any]) -> int:
    """The ``x-replay-count`` a replayed copy of a message with ``headers`` carries."""
    return _count(headers.get(REPLAY_COUNT)) + 1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message in a DLQ.

    ``headers`` are decoded (text as ``str``, numbers as ``int``, other values as the broker
    client gives them); ``original`` is the destination a replay sends it back to by default
    and ``origin`` says in words where it came from; ``timestamp`` is in epoch seconds;
    ``times_dead_lettered`` counts the dead-letterings the headers show (None when they show
    none). ``token`` is the binder's own handle on the message.
    """

    dlq: str
    position: str
    body: bytes
    headers: Mapping[str, Any]
    key: str | bytes | None
    timestamp: float | None
    original: str | None
    origin: str
    times_dead_lettered: int | None
    token: Any = field(default=None, compare=False, repr=False)

    @property
    def exception(self) -> str | None:
        """The exception's class: ``x-exception-fqcn``, else the first line of the stack
        trace (Spring writes no fqcn on RabbitMQ)."""
        fqcn = _text(self.headers.get(X_EXCEPTION_FQCN))
        if fqcn:
            return fqcn
        trace = self.stacktrace
        if trace:
            match = _EXCEPTION_LINE.match(trace.lstrip().splitlines()[0])
            if match:
                return match.group(1)
        return None

    @property
    def cause(self) -> str | None:
        """The innermost ``Caused by:`` class of a Java stack trace (Spring wraps the
        handler's exception), else None."""
        found = None
        for line in (self.stacktrace or "").splitlines():
            match = _EXCEPTION_LINE.match(line.strip())
            if match and line.strip().startswith("Caused by: "):
                found = match.group(1)
        return found

    @property
    def reason(self) -> str | None:
        return _text(self.headers.get(X_EXCEPTION_MESSAGE))

    @property
    def stacktrace(self) -> str | None:
        return _text(self.headers.get(X_EXCEPTION_STACKTRACE))

    @property
    def replay_count(self) -> int:
        """Times this message was replayed already (``x-replay-count``, 0 without one)."""
        return _count(self.headers.get(REPLAY_COUNT))


class ReplaySession(Protocol):
    """Messages taken from one DLQ to replay; each stays in the DLQ until ``remove``.

    Leaving the session without ``remove`` (or being killed) leaves the message in the DLQ.
    """

    @property
    def size(self) -> int:
        """Messages in the DLQ when the session began: ``letters`` yields at most these."""
        ...

    def letters(self) -> AsyncGenerator[DeadLetter, None]:
        """The messages that were in the DLQ when the session began, oldest first (per
        partition on Kafka); later dead letters (a replay failing again) wait for the next
        session."""
        ...

    async def forward(self, letter: DeadLetter, destination: str | None) -> Awaitable[None]:
        """Publish a copy of ``letter`` to ``destination`` (None: ``letter.original``) without
        the dead-letter headers and with ``x-replay-count`` incremented; returns its
        confirmation, which raises PublishError when the broker refused it."""
        ...

    async def remove(self, letters: Sequence[DeadLetter]) -> None:
        """Take confirmed ``letters`` (a prefix of those taken, in order) off the DLQ."""
        ...


class DeadLetterQueues(Protocol):
    """A binder's DLQs: names, reading, replaying and purging."""

    def dlq_of(self, spec: ConsumerSpec) -> str | None:
        """The DLQ a consumer binding dead-letters to, None when its settings have none."""
        ...

    def browse(self, dlq: str) -> AsyncGenerator[DeadLetter, None]:
        """Every message in ``dlq`` (none when it does not exist), leaving them there."""
        ...

    def replay(self, dlq: str) -> AbstractAsyncContextManager[ReplaySession]:
        """A session taking messages off ``dlq``."""
        ...

    async def purge(self, dlq: str) -> int:
        """Drop every message in ``dlq``; returns how many."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SupportsDeadLetters(Protocol):
    """A binder that serves the ``streamlib dlq`` commands."""

    def dead_letters(self) -> DeadLetterQueues: ...
