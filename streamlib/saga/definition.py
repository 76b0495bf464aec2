"""Saga definitions: an ordered list of steps over a pydantic data model.

A step's action is local (a coroutine run by the orchestrator) or remote (a command sent to a
participant's destination, answered by a reply). Its optional compensation undoes it, locally
or by another command. Retriable steps come after the pivot: they are retried until they
succeed and are never compensated.

    saga = Saga("create-order", Order)

    @saga.remote("reserve-credit", destination="payments", timeout=10)
    def reserve_credit(order: Order) -> ReserveCredit:
        return ReserveCredit(order_id=order.id, amount=order.total)

    @reserve_credit.compensate_remote(destination="payments")
    def release_credit(order: Order) -> ReleaseCredit:
        return ReleaseCredit(order_id=order.id)
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from ..retry import exponential_backoff

D = TypeVar("D", bound=BaseModel)

LocalFn = Callable[[D], Awaitable[D | None]]
"""A local action or compensation: gets the saga data, may return updated data."""
CommandFn = Callable[[D], BaseModel]
"""Builds a remote step's command from the saga data (it may be rebuilt on re-send)."""
ReplyFn = Callable[[D, Any], D | None]
"""Reads a success reply's payload (decoded JSON) into the saga data."""
ProbeFn = Callable[[D], Awaitable[bool | None]]
"""Checks whether a remote step whose reply never came took effect: True (it did), False (it
did not) or None (still unknown)."""


class StepFailed(Exception):
    """A step failed for a business reason: raise it in a participant handler to answer with
    a failure reply, or in a local action to fail the step. Other exceptions in a participant
    handler are retried by the binding and never answered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry schedule: ``attempts`` tries, waiting ``initial * multiplier**n`` capped at ``max``."""

    attempts: int = 5
    initial: float = 0.5
    multiplier: float = 2.0
    max: float = 10.0

    def delay(self, attempt: int) -> float:
        """Wait before try ``attempt + 1`` (``attempt`` counts from 1)."""
        return exponential_backoff(attempt, self.initial, self.multiplier, self.max)


@dataclass(frozen=True, slots=True)
class Local(Generic[D]):
    """An action run by the orchestrator itself; it should be idempotent (it runs again if
    the orchestrator dies while running it)."""

    fn: LocalFn[D]


@dataclass(frozen=True, slots=True)
class Remote(Generic[D]):
    """A command sent to ``destination``; ``name`` selects the participant's handler
    (default: the command model's class name)."""

    destination: str
    command: CommandFn[D]
    name: str | None = None
    on_reply: ReplyFn[D] | None = None

    def build(self, data: D) -> tuple[str, BaseModel]:
        cmd = self.command(data)
        return self.name or type(cmd).__name__, cmd


Action = Local[D] | Remote[D]


class Step(Generic[D]):
    """One step of a saga; returned by the ``Saga.local``/``Saga.remote`` decorators, whose
    methods attach the compensation and the reply reader."""

    def __init__(
        self,
        name: str,
        action: Action[D],
        *,
        retriable: bool,
        timeout: float | None,
    ) -> None:
        self.name = name
        self.action = action
        self.compensation: Action[D] | None = None
        self.retriable = retriable
        self.timeout = timeout
        self.probe_fn: ProbeFn[D] | None = None

    @property
    def is_remote(self) -> bool:
        return isinstance(self.action, Remote)

    def compensate(self, fn: LocalFn[D]) -> LocalFn[D]:
        """Decorator: a local coroutine that undoes this step."""
        self._set_compensation(Local(_coroutine(fn)))
        return fn

    def compensate_remote(
        self, *, destination: str, name: str | None = None
    ) -> Callable[[CommandFn[D]], CommandFn[D]]:
        """Decorator: a command builder; the command sent to ``destination`` undoes this step."""

        def decorate(fn: CommandFn[D]) -> CommandFn[D]:
            self._set_compensation(Remote(destination, fn, name))
            return fn

        return decorate

    def on_reply(self, fn: ReplyFn[D]) -> ReplyFn[D]:
        """Decorator: reads the success reply of this remote step into the saga data."""
        if not isinstance(self.action, Remote):
            raise TypeError(f"step {self.name!r} is local: it has no reply")
        self.action = Remote(self.action.destination, self.action.command, self.action.name, fn)
        return fn

    def probe(self, fn: ProbeFn[D]) -> ProbeFn[D]:
        """Decorator: ``async def probe(data) -> bool | None`` asks whether this remote step
        took effect when its reply did not come in time, before the saga compensates it (or
        re-sends it). True: the step counts as done; False: it counts as not done; None or an
        exception: unknown, asked again after the saga's ``retry_backoff``, and when that is
        used up the step is handled as without a probe."""
        if not isinstance(self.action, Remote):
            raise TypeError(f"step {self.name!r} is local: its outcome is never unknown")
        self.probe_fn = _coroutine(fn)  # type: ignore[assignment]
        return fn

    def _set_compensation(self, action: Action[D]) -> None:
        if self.retriable:
            raise ValueError(f"step {self.name!r} is retriable: it is never compensated")
        self.compensation = action

    def __repr__(self) -> str:
        kind = "remote" if self.is_remote else "local"
        return f"Step({self.name!r}, {kind}, retriable={self.retriable})"


def _coroutine(fn: Callable[[D], Any]) -> LocalFn[D]:
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"{getattr(fn, '__qualname__', fn)!r} must be an async function")
    return fn


class Saga(Generic[D]):
    """A named, ordered list of steps over data of type ``data_type``.

    ``compensation_backoff`` paces retries of failing compensations; when they are used up
    the saga is left in ``needs_attention``. ``retry_backoff`` paces retriable steps.
    """

    def __init__(
        self,
        name: str,
        data_type: type[D],
        *,
        compensation_backoff: Backoff = Backoff(),
        retry_backoff: Backoff = Backoff(attempts=10),
    ) -> None:
        self.name = name
        self.data_type = data_type
        self.steps: list[Step[D]] = []
        self.compensation_backoff = compensation_backoff
        self.retry_backoff = retry_backoff

    def _add(self, step: Step[D]) -> Step[D]:
        if any(s.name == step.name for s in self.steps):
            raise ValueError(f"saga {self.name!r} already has a step named {step.name!r}")
        if self.steps and self.steps[-1].retriable and not step.retriable:
            raise ValueError(
                f"step {step.name!r} must be retriable: it follows retriable step "
                f"{self.steps[-1].name!r} (steps after the pivot are never compensated)"
            )
        self.steps.append(step)
        return step

    def local(
        self, name: str | None = None, *, retriable: bool = False, timeout: float | None = None
    ) -> Callable[[LocalFn[D]], Step[D]]:
        """Decorator: a local step running the decorated coroutine."""

        def decorate(fn: LocalFn[D]) -> Step[D]:
            step_name = name or fn.__name__
            return self._add(
                Step(step_name, Local(_coroutine(fn)), retriable=retriable, timeout=timeout)
            )

        return decorate

    def remote(
        self,
        name: str | None = None,
        *,
        destination: str,
        command: str | None = None,
        retriable: bool = False,
        timeout: float | None = 30.0,
    ) -> Callable[[CommandFn[D]], Step[D]]:
        """Decorator: a remote step whose command the decorated function builds; ``command``
        names the participant's handler (default: the command model's class name)."""

        def decorate(fn: CommandFn[D]) -> Step[D]:
            step_name = name or fn.__name__
            remote = Remote(destination, fn, command)
            return self._add(Step(step_name, remote, retriable=retriable, timeout=timeout))

        return decorate

    def step(self, name: str) -> Step[D]:
        """The step called ``name``; KeyError when there is none."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, steps={[s.name for s in self.steps]})"
