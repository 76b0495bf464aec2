"""What the app watches while it runs: its own tasks, and the state of each consumer binding.

A task the app owns (a source's poll loop) that ends for any reason but cancellation is a
failure of the app: logged with its traceback, kept for ``health()``, and raised when the app
stops. A binding handle remembers what was asked of the binding (started, stopped, paused) so
that health tells a paused or stopped binding from one that stopped running on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from .binder import Binding

log = logging.getLogger("streamlib.app")

RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"
DOWN = "down"


class ManagedBinding:
    """The app's handle on a consumer binding; other attributes are the binding's own."""

    def __init__(self, binding: Binding, started: bool) -> None:
        self._binding = binding
        self._wanted = started
        self._paused = False
        self.auto_startup = started

    @property
    def is_ready(self) -> bool:
        """Running and, where the broker hands out the work (Kafka's group assignment), given
        its share: a binding may say so with an ``is_ready`` property of its own. A paused
        binding is ready: it was paused on purpose and resumes where it stopped."""
        if self._paused:
            return True
        return self._binding.is_running and bool(getattr(self._binding, "is_ready", True))

    @property
    def name(self) -> str:
        return self._binding.name

    @property
    def is_running(self) -> bool:
        return self._binding.is_running

    @property
    def state(self) -> str:
        """``running``, ``paused``, ``stopped`` (as asked) or ``down`` (stopped on its own)."""
        if not self._wanted:
            return STOPPED
        if self._paused:
            # Before is_running: a binder may pause by stopping its consumers (RabbitMQ).
            return PAUSED
        return RUNNING if self._binding.is_running else DOWN

    async def start(self) -> None:
        self._wanted = True
        await self._binding.start()

    async def stop(self) -> None:
        self._wanted = False
        await self._binding.stop()

    async def pause(self) -> None:
        self._paused = True
        await self._binding.pause()

    async def resume(self) -> None:
        self._paused = False
        await self._binding.resume()

    async def unbind(self) -> None:
        self._wanted = False
        await self._binding.unbind()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._binding, name)


class Supervisor:
    """Owns the app's tasks and records the ones that died."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.failures: dict[str, BaseException] = {}
        self._failed = asyncio.Event()

    def spawn(self, what: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._watch(what, coro), name=what)
        # A task cancelled before its first step never awaits ``coro``: close it then.
        task.add_done_callback(lambda _: coro.close())
        self.tasks[what] = task

    async def _watch(self, what: str, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # also SystemExit & co: the task is dead either way
            self._died(what, exc)
        else:
            self._died(what, None)

    def _died(self, what: str, exc: BaseException | None) -> None:
        reason = "ended" if exc is None else f"died: {type(exc).__name__}: {exc}"
        log.critical("%s %s; the app has failed", what, reason, exc_info=exc)
        self.failures[what] = exc or RuntimeError(f"{what} ended")
        self._failed.set()

    def reasons(self) -> Mapping[str, str]:
        return {what: f"{type(exc).__name__}: {exc}" for what, exc in self.failures.items()}

    async def wait_failed(self) -> None:
        await self._failed.wait()

    def reset(self) -> None:
        self.tasks.clear()
        self.failures.clear()
        self._failed = asyncio.Event()
