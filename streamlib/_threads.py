"""Worker threads for plain ``def`` handlers, which must never block the event loop.

The threads are daemon threads, reused while they are idle: a handler stuck forever cannot
keep the process alive once the app stopped. Cancelling the task that waits for a call
abandons the call (it goes on in its thread, its result is dropped) with a log line naming
the handler, so a stop bounded by ``shutdown-timeout`` is not held up by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("streamlib.app")

T = TypeVar("T")

IDLE_SECONDS = 10.0


class _Call:
    __slots__ = ("context", "fn", "future", "loop", "returned")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], fn: Callable[[], Any]
    ) -> None:
        self.loop = loop
        self.future = future
        self.fn = fn
        self.context = contextvars.copy_context()
        self.returned = False


def _deliver(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class _Worker(threading.Thread):
    def __init__(self, pool: _Pool) -> None:
        super().__init__(name="streamlib-handler", daemon=True)
        self.pool = pool
        self.calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            try:
                call = self.calls.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                if self.pool.retire(self):
                    return
                continue
            result: Any = None
            error: BaseException | None = None
            try:
                result = call.context.run(call.fn)
            except BaseException as exc:
                error = exc
            call.returned = True
            # A closed loop raises RuntimeError: nobody waits for this call any more.
            with contextlib.suppress(RuntimeError):
                call.loop.call_soon_threadsafe(_deliver, call.future, result, error)
            del call, result, error
            self.pool.release(self)


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def acquire(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        worker = _Worker(self)
        worker.start()
        return worker

    def release(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def retire(self, worker: _Worker) -> bool:
        """Whether an idle ``worker`` may end (False: it was just handed a call)."""
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
                return True
            return False


_pool = _Pool()


async def run_sync(fn: Callable[[], T], what: str) -> T:
    """``fn()`` in a worker thread; cancelling abandons it, logging ``what`` is left running."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    call = _Call(loop, future, fn)
    _pool.acquire().calls.put(call)
    try:
        return await future
    except asyncio.CancelledError:
        if not call.returned:
            log.warning(
                "%s is still running in its worker thread and is abandoned; the thread is a "
                "daemon and does not keep the process alive",
                what,
            )
        raise
