"""Run an app inside a test: send to its inputs, read what it sent, see its failures.

``run_app(app)`` starts the app on a private in-memory binder (or, with ``binder=None``, on the
binder its configuration names), listens on every output destination of its handlers before
the first message moves, and stops it on leaving. A handler that raises fails the test with
its own traceback, unless the test opts out to check the dead-letter path.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from .._handlers import Kind
from ..app import StreamApp
from ..binder import ACK, Binder, BinderContext, ConsumerSpec, Outcome, load_binder_factory
from ..config import ConsumerProperties, normalize_key
from ..converters import PayloadDecoder
from ..errors import StreamlibError
from ..memory import drop_memory_broker
from ..messages import Envelope, Message

log = logging.getLogger("streamlib.testing")

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
MEMORY = "memory"


class HandlerFailed(AssertionError):
    """A handler of the app under test raised; the handler's exception is the ``__cause__``."""

    def __init__(self, handler: str, exc: Exception) -> None:
        super().__init__(f"handler {handler} raised {type(exc).__name__}: {exc}")
        self.handler = handler
        self.exception = exc


@dataclass
class _Failure:
    handler: str
    exception: Exception
    raised: bool = False


class _Recorder:
    """A dispatcher that keeps every envelope of one destination, in arrival order."""

    def __init__(self, changed: asyncio.Event) -> None:
        self.envelopes: list[Envelope] = []
        self._changed = changed

    batching = None

    async def dispatch_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        return [await self(envelope) for envelope in envelopes]

    async def __call__(self, envelope: Envelope) -> Outcome:
        self.envelopes.append(envelope)
        self._changed.set()
        return ACK

    def unreadable(self, exc: BaseException, where: str) -> Outcome:
        log.error("test observer could not read message %s: %s", where, exc)
        return ACK


class RunningApp:
    """The app under test, while ``run_app`` runs it.

    Targets are binding names of the app (``bill-in-0``, ``bill-out-0``) or destinations
    (``orders``); a binding name stands for its configured destination.
    """

    def __init__(
        self, app: StreamApp, raise_handler_errors: bool, timeout: float, stack: AsyncExitStack
    ) -> None:
        self.app = app
        self.timeout = timeout
        self._raise = raise_handler_errors
        self._stack = stack
        self._changed = asyncio.Event()
        self._recorders: dict[str, _Recorder] = {}
        self._cursors: dict[str, int] = {}
        self._failures: list[_Failure] = []
        self._binders: dict[str, Binder] = {}

    @property
    def handler_errors(self) -> list[tuple[str, Exception]]:
        """``(handler name, exception)`` of every failure so far, retries included."""
        return [(f.handler, f.exception) for f in self._failures]

    def destination(self, target: str) -> str:
        """The destination a binding name stands for; any other name is a destination."""
        if self._is_binding(target):
            return self.app.config.binding(target).destination or target
        return target

    def _is_binding(self, target: str) -> bool:
        wanted = normalize_key(target)
        names = {
            normalize_key(n)
            for h in self.app._handlers.values()
            for n in (h.input_binding, h.output_binding)
            if n
        }
        return wanted in names or self.app.config.has_binding(target)

    async def send(
        self,
        target: str,
        payload: Any,
        *,
        key: bytes | str | int | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Send ``payload`` to an input binding's destination (or any destination)."""
        self.raise_handler_errors()
        await self.app.send(self.destination(target), payload, key=key, headers=headers)

    @overload
    async def next(self, target: str, /, *, timeout: float | None = None) -> Message[Any]: ...
    @overload
    async def next(
        self, target: str, payload_type: type[T], /, *, timeout: float | None = None
    ) -> Message[T]: ...
    async def next(
        self, target: str, payload_type: Any = Any, /, *, timeout: float | None = None
    ) -> Message[Any]:
        """The next message on ``target`` that this test has not read yet, decoded as
        ``payload_type`` (raw JSON values without it).

        Raises AssertionError when none arrives within ``timeout``, and HandlerFailed as soon
        as a handler raises (unless ``raise_handler_errors=False``).
        """
        __tracebackhide__ = True
        [msg] = await self.take(target, 1, payload_type, timeout=timeout)
        return msg

    async def take(
        self,
        target: str,
        count: int,
        payload_type: Any = Any,
        /,
        *,
        timeout: float | None = None,
    ) -> list[Message[Any]]:
        """The next ``count`` unread messages on ``target``; see ``next``."""
        __tracebackhide__ = True
        destination = self.destination(target)
        recorder = self._recorder(target, destination)
        start = self._cursors.get(destination, 0)
        wait = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                while len(recorder.envelopes) < start + count:
                    self.raise_handler_errors()
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            self.raise_handler_errors()
            got = len(recorder.envelopes) - start
            raise AssertionError(
                f"expected {count} message(s) on {destination!r} within {wait}s, got {got}"
            ) from None
        self._cursors[destination] = start + count
        return [_decode(e, payload_type) for e in recorder.envelopes[start : start + count]]

    def messages(self, target: str, payload_type: Any = Any, /) -> list[Message[Any]]:
        """Every message that arrived on ``target`` so far, read or not (no waiting)."""
        destination = self.destination(target)
        return [_decode(e, payload_type) for e in self._recorder(target, destination).envelopes]

    async def dead_letters(
        self, binding: str, count: int, payload_type: Any = Any, /, *, timeout: float | None = None
    ) -> list[Message[Any]]:
        """The next ``count`` dead letters of input binding ``binding`` (``dlq: true``), with
        their ``x-exception-*`` headers. Dead letters go to ``error.<destination>.<group>``
        (the memory and Kafka binders' naming)."""
        __tracebackhide__ = True
        return await self.take(
            self.dead_letter_destination(binding), count, payload_type, timeout=timeout
        )

    def dead_letter_destination(self, binding: str) -> str:
        props = self.app.config.binding(binding)
        return f"error.{props.destination or binding}.{props.group or 'anonymous'}"

    def raise_handler_errors(self) -> None:
        """Raise HandlerFailed for the first handler failure not raised yet (if the test
        did not opt out)."""
        __tracebackhide__ = True
        if not self._raise:
            return
        for failure in self._failures:
            if not failure.raised:
                failure.raised = True
                raise HandlerFailed(failure.handler, failure.exception) from failure.exception

    def _recorder(self, target: str, destination: str) -> _Recorder:
        recorder = self._recorders.get(destination)
        if recorder is None:
            raise StreamlibError(
                f"{target!r} is not observed: run_app listens on the handlers' outputs and the "
                f"dead letters of bindings with dlq; add it with run_app(app, observe=[{target!r}])"
            )
        return recorder

    def _record_failure(self, handler: str, exc: Exception) -> None:
        self._failures.append(_Failure(handler, exc))
        self._changed.set()

    async def _observe(self, target: str) -> None:
        destination = self.destination(target)
        if destination in self._recorders:
            return
        binder = await self._binder_of(target)
        recorder = self._recorders[destination] = _Recorder(self._changed)
        spec = ConsumerSpec(f"observe-{destination}", destination, None, ConsumerProperties(), 0, 1)
        binding = await binder.bind_consumer(spec, recorder)
        self._stack.push_async_callback(binding.unbind)

    async def _binder_of(self, target: str) -> Binder:
        props = self.app.config.binding(target)
        name, type_name, settings, key = self.app._binder_for(target, props)
        binder = self._binders.get(name)
        if binder is None:
            cfg = self.app.config
            context = BinderContext(
                f"{cfg.name}-test", cfg.instance_index, cfg.instance_count, name
            )
            binder = load_binder_factory(type_name, key)(settings, context)
            self._binders[name] = binder
            self._stack.push_async_callback(binder.aclose)
        return binder


def _decode(envelope: Envelope, payload_type: Any) -> Message[Any]:
    payload = PayloadDecoder(payload_type)(envelope.body, envelope.headers)
    return Message._received(payload, envelope, 1)


@asynccontextmanager
async def run_app(
    app: StreamApp,
    *,
    binder: str | None = MEMORY,
    observe: Collection[str] = (),
    raise_handler_errors: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> AsyncIterator[RunningApp]:
    """Run ``app`` for the duration of the block.

    ``binder="memory"`` (the default) binds every binding to an in-memory binder of its own,
    whatever the configuration says, so tests do not see each other's messages; ``None`` keeps
    the configured binders (a real broker). Destinations, groups, retries and DLQ settings come
    from the app's configuration either way. Every handler output and the dead letters of
    bindings with ``dlq: true`` are observed; ``observe`` adds more binding names or
    destinations. With ``raise_handler_errors`` (the default) a handler failure raises
    HandlerFailed from the next wait, or on leaving the block.
    """
    namespace = f"test-{uuid.uuid4().hex[:10]}" if binder == MEMORY else None
    saved = app._binder_override
    if binder is not None:
        app._binder_override = (binder, {"namespace": namespace} if namespace else {})
    try:
        async with AsyncExitStack() as stack:
            running = RunningApp(app, raise_handler_errors, timeout, stack)
            app._error_listeners.append(running._record_failure)
            stack.callback(app._error_listeners.remove, running._record_failure)
            targets = list(observe)
            for handler in app._handlers.values():
                if handler.output_binding and handler.kind is not Kind.SINK:
                    targets.append(handler.output_binding)
                if handler.input_binding and app.config.binding(handler.input_binding).consumer.dlq:
                    targets.append(running.dead_letter_destination(handler.input_binding))
            for target in targets:
                await running._observe(target)
            async with app.run():
                yield running
            running.raise_handler_errors()
    finally:
        app._binder_override = saved
        if namespace is not None:
            drop_memory_broker(namespace)
