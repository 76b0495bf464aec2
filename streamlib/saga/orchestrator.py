"""The saga orchestrator: runs sagas step by step over an app's bindings.

Each transition is written to the store before the next message goes out. Several instances
may share one store and one reply destination: an instance works on a saga only while it
holds the saga's lease (claimed from the store, renewed while the work goes on, released when
the saga waits for a reply or a deadline). Every write is checked against the lease's fencing
token, so an instance that lost its lease stops instead of writing over the new owner. Any
instance takes the reply of any saga (it claims the saga, waiting while another instance still
holds it), and every instance's timer claims the sagas whose deadline passed and those whose
owner died (its lease expired): a step that waited for a reply gets its command re-sent with
the same command id (participants answer duplicates from their de-duplication record), a
local step that was running runs again. Replies are matched by command id; a duplicate or late
reply matches nothing and is ignored.

The orchestrator registers two functions with the app: a sink for replies
(``<name>_saga_replies``, bound to the reply destination with the app's name as group, so
replies wait in a durable queue while the orchestrator is down and are shared between
instances) and a source (``<name>_saga_timer``) that claims due sagas and renews leases.
Replies of different sagas are independent (each saga has its own lock), so the reply
binding's ``concurrency`` may be raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from ..app import StreamApp
from ..messages import Message
from . import headers as h
from ._support import config_store, header_text, identifier, named
from .definition import Backoff, Local, Remote, Saga, Step, StepFailed
from .events import DEFAULT_EVENTS_DESTINATION, SagaEvent, SagaEventType
from .settings import saga_settings
from .store import HistoryEntry, SagaRecord, SagaState, SagaStore, StaleSagaError, Wait

log = logging.getLogger("streamlib.saga")

D = TypeVar("D", bound=BaseModel)

_RESEND_DELAY = 1.0
"""Wait before re-sending a command the broker refused."""
DEFAULT_LEASE = 10.0
_CLAIM_BATCH = 50


class Orchestrator:
    """Starts and drives sagas of the given definitions on ``app``.

    ``store`` defaults to the SQLite file named by ``saga.store`` in the app's configuration
    (``saga.db``); ``events_destination`` to ``saga.events-destination`` (``saga-events``);
    ``reply_destination`` to ``<name>.saga-replies`` where ``name`` defaults to the app's name.

    ``instance`` names this instance in the leases it holds (``saga.instance``; default the
    host name, process id and a random suffix); it must differ between live instances. A
    restarted instance with the same name takes its sagas back at once, others after their
    ``lease`` (``saga.lease`` seconds, default 10) expired. ``retention`` (``saga.retention``
    seconds; default none) prunes finished sagas and de-duplication records older than that.
    """

    def __init__(
        self,
        app: StreamApp,
        sagas: Iterable[Saga[Any]],
        *,
        store: SagaStore | None = None,
        name: str | None = None,
        reply_destination: str | None = None,
        events_destination: str | None = None,
        tick: float = 0.1,
        instance: str | None = None,
        lease: float | None = None,
        retention: float | None = None,
    ) -> None:
        self.app = app
        self._sagas: dict[str, Saga[Any]] = {}
        for saga in sagas:
            if saga.name in self._sagas:
                raise ValueError(f"two sagas are named {saga.name!r}")
            self._sagas[saga.name] = saga
        base = name or app.name or "saga"
        self.reply_destination = reply_destination or f"{base}.saga-replies"
        self._events_destination = events_destination
        self._store = store
        configured = saga_settings(app)
        self.instance = str(
            instance
            or configured.instance
            or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self.lease = float(lease or configured.lease or DEFAULT_LEASE)
        if self.lease <= 0:
            raise ValueError(f"saga.lease must be positive, not {self.lease}")
        kept = retention or configured.retention
        self.retention = float(kept) if kept else None
        self._next_prune = 0.0
        self._held: set[str] = set()
        self._next_renewal = 0.0
        self._locks: dict[str, asyncio.Lock] = {}
        self._recovered = False
        self._recovery_lock = asyncio.Lock()
        self._unconfirmed: list[Awaitable[None]] = []
        self.ignored_replies = 0
        """Replies that matched no pending command (duplicates, late or unknown)."""
        self.replies_applied = 0
        """Replies this instance applied to the saga waiting for them."""
        self.lost_leases = 0
        """Sagas this instance stopped working on because another instance took them over."""

        prefix = identifier(base)
        replies = named(self._replies_handler(), f"{prefix}_saga_replies")
        timer = named(self._timer_handler(), f"{prefix}_saga_timer")
        app.binding_defaults(
            f"{replies.__name__}-in-0",
            {"destination": self.reply_destination, "group": app.name or prefix},
        )
        app.binding_defaults(
            f"{timer.__name__}-out-0",
            {"destination": events_destination or DEFAULT_EVENTS_DESTINATION},
        )
        app.sink(replies)
        app.source(interval=tick)(timer)

    def _replies_handler(self) -> Any:
        async def replies(msg: Message[bytes]) -> None:
            await self._on_reply(msg)

        return replies

    def _timer_handler(self) -> Any:
        async def timer() -> None:
            await self._on_tick()

        return timer

    @property
    def store(self) -> SagaStore:
        """The saga store (opened from configuration on first use)."""
        if self._store is None:
            self._store = config_store(self.app)
        return self._store

    @property
    def events_destination(self) -> str:
        if self._events_destination is None:
            configured = saga_settings(self.app).events_destination
            self._events_destination = configured or DEFAULT_EVENTS_DESTINATION
        return self._events_destination

    async def start(self, saga: Saga[D], data: D, *, saga_id: str | None = None) -> str:
        """Start a saga with ``data`` and return its id once its first message went out.

        Starting with the id of an existing saga does nothing (a retried request does not
        start the saga twice). The app must be running.
        """
        if self._sagas.get(saga.name) is not saga:
            raise ValueError(f"saga {saga.name!r} is not one of this orchestrator's sagas")
        await self._recover()
        sid = saga_id or str(uuid.uuid4())
        async with self._lock(sid):
            if await self.store.get(sid) is not None:
                self._locks.pop(sid, None)
                return sid
            rec = SagaRecord(
                id=sid,
                saga=saga.name,
                state=SagaState.RUNNING,
                step=0,
                data=data.model_dump(mode="json"),
                owner=self.instance,
                lease_until=time.time() + self.lease,
                fence=1,
            )
            try:
                await self.store.create(rec, HistoryEntry(sid, "started"))
            except ValueError:
                return sid  # another instance started it meanwhile
            self._held.add(sid)
            await self._publish(rec, SagaEventType.STARTED)
            await self._work(rec, self._drive(saga, rec))
        await self._confirm_events()
        return sid

    async def get(self, saga_id: str) -> SagaRecord | None:
        """The stored record of saga ``saga_id``."""
        return await self.store.get(saga_id)

    def data(self, record: SagaRecord) -> BaseModel:
        """The saga data of ``record`` as its definition's model."""
        data: BaseModel = self._sagas[record.saga].data_type.model_validate(record.data)
        return data

    async def wait(self, saga_id: str, timeout: float = 30.0) -> SagaRecord:
        """The saga's record once it is final; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                rec = await self.store.get(saga_id)
                if rec is not None and rec.state.is_final:
                    return rec
                await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        """Close the store."""
        if self._store is not None:
            await self._store.aclose()

    def _lock(self, saga_id: str) -> asyncio.Lock:
        lock = self._locks.get(saga_id)
        if lock is None:
            lock = self._locks[saga_id] = asyncio.Lock()
        return lock

    async def _work(self, rec: SagaRecord, work: Awaitable[SagaRecord]) -> None:
        """Run ``work`` on a claimed saga, then release its lease. A lost lease ends the work
        where it is: the instance that took the saga over goes on from the store's state."""
        try:
            rec = await work
            await self.store.update(dataclasses.replace(rec, owner=None))
        except StaleSagaError:
            self.lost_leases += 1
            log.warning("saga %s: another instance took it over; this one stops", rec.id)
        finally:
            self._held.discard(rec.id)
            if not self._lock(rec.id).locked():
                self._locks.pop(rec.id, None)

    async def _claim(self, saga_id: str) -> SagaRecord | None:
        """Claim an unfinished saga, waiting while another instance holds its lease."""
        while True:
            now = time.time()
            rec = await self.store.claim(saga_id, self.instance, now + self.lease, now)
            if rec is None or rec.state.is_final:
                return None
            if rec.owner == self.instance:
                self._held.add(saga_id)
                return rec
            wait = (rec.lease_until or now) - now
            await asyncio.sleep(min(max(wait, 0.01), 0.05))

    async def _save(
        self,
        rec: SagaRecord,
        event: str,
        step: Step[Any] | None,
        detail: str | None = None,
        lifecycle: SagaEventType | None = None,
    ) -> SagaRecord:
        await self.store.update(
            rec, HistoryEntry(rec.id, event, step.name if step else None, detail)
        )
        if lifecycle is not None:
            await self._publish(rec, lifecycle, step)
        return rec

    async def _publish(
        self, rec: SagaRecord, kind: SagaEventType, step: Step[Any] | None = None
    ) -> None:
        event = SagaEvent(
            type=kind,
            saga_id=rec.id,
            saga=rec.saga,
            step=step.name if step else None,
            state=rec.state.value,
            error=rec.error,
        )
        try:
            output = await self.app.output(self.events_destination)
            self._unconfirmed.append(await output.send(event, rec.id))
        except Exception as exc:
            log.warning("saga %s: could not publish %s event: %s", rec.id, kind.value, exc)

    async def _confirm_events(self) -> None:
        """Wait for the broker to confirm the events sent so far (they travel while the
        saga's next message is sent, instead of one after the other)."""
        pending, self._unconfirmed = self._unconfirmed, []
        for confirmation in pending:
            try:
                await confirmation
            except Exception as exc:
                log.warning("a saga event was not published: %s", exc)

    async def _drive(self, saga: Saga[Any], rec: SagaRecord) -> SagaRecord:
        """Run local steps and send commands until the saga waits or is final."""
        while not rec.state.is_final and rec.wait is Wait.RUN:
            if rec.state is SagaState.RUNNING:
                if rec.step >= len(saga.steps):
                    rec = rec.evolve(state=SagaState.COMPLETED)
                    return await self._save(
                        rec, "completed", None, lifecycle=SagaEventType.COMPLETED
                    )
                step = saga.steps[rec.step]
                action = step.action
            else:
                index = rec.step
                while index >= 0 and saga.steps[index].compensation is None:
                    index -= 1
                if index < 0:
                    rec = rec.evolve(state=SagaState.COMPENSATED, step=-1)
                    return await self._save(
                        rec, "compensated", None, lifecycle=SagaEventType.COMPENSATED
                    )
                if index != rec.step:
                    rec = rec.evolve(step=index)
                step = saga.steps[index]
                assert step.compensation is not None
                action = step.compensation
            if isinstance(action, Remote):
                rec = await self._send(saga, rec, step, action)
            else:
                rec = await self._run_local(saga, rec, step, action)
        return rec

    async def _run_local(
        self, saga: Saga[Any], rec: SagaRecord, step: Step[Any], action: Local[Any]
    ) -> SagaRecord:
        data = saga.data_type.model_validate(rec.data)
        try:
            async with asyncio.timeout(step.timeout):
                result = await action.fn(data)
        except TimeoutError:
            return await self._failed(saga, rec, step, "timed out", timed_out=True)
        except StepFailed as exc:
            return await self._failed(saga, rec, step, exc.reason)
        except Exception as exc:
            return await self._failed(saga, rec, step, f"{type(exc).__name__}: {exc}")
        return await self._succeeded(rec, step, result if result is not None else data)

    async def _send(
        self, saga: Saga[Any], rec: SagaRecord, step: Step[Any], action: Remote[Any]
    ) -> SagaRecord:
        data = saga.data_type.model_validate(rec.data)
        try:
            name, command = action.build(data)
        except Exception as exc:
            error = f"building the command failed: {type(exc).__name__}: {exc}"
            return await self._failed(saga, rec, step, error)
        command_id = rec.command_id or str(uuid.uuid4())
        compensating = rec.state is SagaState.COMPENSATING
        deadline = time.time() + step.timeout if step.timeout is not None else None
        rec = rec.evolve(wait=Wait.REPLY, command_id=command_id, deadline=deadline)
        what = "compensation sent" if compensating else "command sent"
        await self._save(rec, what, step, f"{name} {command_id} to {action.destination}")
        try:
            await self.app.send(
                action.destination,
                command,
                key=rec.id,
                headers={
                    h.SAGA_ID: rec.id,
                    h.SAGA_TYPE: rec.saga,
                    h.SAGA_STEP: step.name,
                    h.COMMAND: name,
                    h.COMMAND_ID: command_id,
                    h.REPLY_TO: self.reply_destination,
                },
            )
        except Exception as exc:
            log.warning("saga %s: sending %s failed (%s); re-sending", rec.id, name, exc)
            rec = rec.evolve(wait=Wait.RETRY, deadline=time.time() + _RESEND_DELAY)
            return await self._save(rec, "send failed", step, str(exc))
        return rec

    async def _succeeded(self, rec: SagaRecord, step: Step[Any], data: BaseModel) -> SagaRecord:
        done = dict(wait=Wait.RUN, command_id=None, deadline=None, attempt=0)
        if rec.state is SagaState.COMPENSATING:
            rec = rec.evolve(step=rec.step - 1, data=data.model_dump(mode="json"), **done)
            return await self._save(rec, "step compensated", step)
        rec = rec.evolve(step=rec.step + 1, data=data.model_dump(mode="json"), **done)
        return await self._save(rec, "step done", step, lifecycle=SagaEventType.STEP_DONE)

    async def _failed(
        self,
        saga: Saga[Any],
        rec: SagaRecord,
        step: Step[Any],
        error: str,
        *,
        timed_out: bool = False,
        probe: bool = True,
    ) -> SagaRecord:
        """A step or compensation failed (a failure reply, an exception, a deadline).

        A timed-out remote step with a probe is asked first (unless ``probe`` is off: the probe
        already answered). After a timeout the command is re-sent with the same id (the
        participant may have done the work); after a failure reply a retry is a new command.
        """
        if probe and timed_out and rec.state is SagaState.RUNNING and step.probe_fn is not None:
            return await self._probe(saga, rec, step)
        command_id = rec.command_id if timed_out else None
        if rec.state is SagaState.COMPENSATING:
            return await self._retry_or_give_up(
                rec, step, error, saga.compensation_backoff, command_id, "compensation failed"
            )
        if step.retriable:
            return await self._retry_or_give_up(
                rec, step, error, saga.retry_backoff, command_id, "step failed"
            )
        # The outcome of a step that timed out is unknown, so it is compensated too.
        start = rec.step if timed_out else rec.step - 1
        rec = rec.evolve(
            state=SagaState.COMPENSATING,
            step=start,
            wait=Wait.RUN,
            command_id=None,
            deadline=None,
            attempt=0,
            error=f"{step.name}: {error}",
        )
        return await self._save(
            rec, "step failed", step, error, lifecycle=SagaEventType.COMPENSATING
        )

    async def _probe(self, saga: Saga[Any], rec: SagaRecord, step: Step[Any]) -> SagaRecord:
        """Ask a timed-out remote step's probe whether it took effect."""
        assert step.probe_fn is not None
        data = saga.data_type.model_validate(rec.data)
        try:
            async with asyncio.timeout(step.timeout):
                outcome = await step.probe_fn(data)
            detail = {True: "done", False: "not done", None: "unknown"}[outcome]
        except Exception as exc:
            outcome, detail = None, f"unknown: {type(exc).__name__}: {exc}"
        await self.store.append_history(HistoryEntry(rec.id, "probed", step.name, detail))
        if outcome is True:
            return await self._succeeded(rec, step, data)
        if outcome is False:
            # It did not happen: like a failure reply (nothing of this step to undo).
            return await self._failed(saga, rec, step, "timed out; the probe found it not done")
        attempt = rec.attempt + 1
        if attempt >= saga.retry_backoff.attempts:
            rec = rec.evolve(attempt=0)
            return await self._failed(
                saga, rec, step, "timed out; outcome unknown", timed_out=True, probe=False
            )
        delay = saga.retry_backoff.delay(attempt)
        rec = rec.evolve(wait=Wait.PROBE, deadline=time.time() + delay, attempt=attempt)
        return await self._save(rec, "outcome unknown", step, f"probe again in {delay}s")

    async def _retry_or_give_up(
        self,
        rec: SagaRecord,
        step: Step[Any],
        error: str,
        backoff: Backoff,
        command_id: str | None,
        what: str,
    ) -> SagaRecord:
        attempt = rec.attempt + 1
        if attempt >= backoff.attempts:
            rec = rec.evolve(
                state=SagaState.NEEDS_ATTENTION,
                wait=Wait.RUN,
                deadline=None,
                attempt=attempt,
                error=f"{step.name}: {error}",
            )
            log.error("saga %s needs attention: %s failed: %s", rec.id, step.name, error)
            return await self._save(
                rec,
                "needs attention",
                step,
                f"{what} {attempt} times: {error}",
                lifecycle=SagaEventType.NEEDS_ATTENTION,
            )
        delay = backoff.delay(attempt)
        rec = rec.evolve(
            wait=Wait.RETRY,
            command_id=command_id,
            deadline=time.time() + delay,
            attempt=attempt,
        )
        return await self._save(rec, what, step, f"attempt {attempt}: {error}; retry in {delay}s")

    async def _on_reply(self, msg: Message[bytes]) -> None:
        await self._recover()
        saga_id = header_text(msg.headers, h.SAGA_ID)
        command_id = header_text(msg.headers, h.COMMAND_ID)
        if saga_id is None or command_id is None:
            log.warning("reply without %s/%s headers ignored", h.SAGA_ID, h.COMMAND_ID)
            self.ignored_replies += 1
            return
        seen = await self.store.get(saga_id)
        if seen is None or seen.state.is_final or seen.command_id != command_id:
            self._ignore(saga_id, command_id)
            return
        async with self._lock(saga_id):
            rec = await self._claim(saga_id)
            if rec is None:
                self._ignore(saga_id, command_id)
                return
            await self._work(rec, self._apply_reply(rec, command_id, msg))
        await self._confirm_events()

    def _ignore(self, saga_id: str, command_id: str) -> None:
        log.debug("saga %s: reply to %s matches nothing; ignored", saga_id, command_id)
        self.ignored_replies += 1

    async def _apply_reply(
        self, rec: SagaRecord, command_id: str, msg: Message[bytes]
    ) -> SagaRecord:
        # A reply counts while its command is pending, also during the back-off before a
        # re-send with the same id (after a timeout).
        if rec.wait is Wait.RUN or rec.command_id != command_id:
            self._ignore(rec.id, command_id)
            return rec
        self.replies_applied += 1
        saga = self._sagas[rec.saga]
        step = saga.steps[rec.step]
        body: Any = orjson.loads(msg.payload) if msg.payload else None
        if header_text(msg.headers, h.OUTCOME) != h.SUCCESS:
            error = body.get("error") if isinstance(body, dict) else None
            rec = await self._failed(saga, rec, step, str(error or "failed"))
        elif rec.state is SagaState.COMPENSATING:
            rec = await self._succeeded(rec, step, saga.data_type.model_validate(rec.data))
        else:
            rec = await self._read_reply(saga, rec, step, body)
        return await self._drive(saga, rec)

    async def _read_reply(
        self, saga: Saga[Any], rec: SagaRecord, step: Step[Any], body: Any
    ) -> SagaRecord:
        data = saga.data_type.model_validate(rec.data)
        action = step.action
        if isinstance(action, Remote) and action.on_reply is not None:
            try:
                updated = action.on_reply(data, body)
            except Exception as exc:
                error = f"reading the reply failed: {type(exc).__name__}: {exc}"
                return await self._failed(saga, rec, step, error)
            if updated is not None:
                data = updated
        return await self._succeeded(rec, step, data)

    async def _on_tick(self) -> None:
        await self._recover()
        now = time.time()
        if now >= self._next_renewal:
            await self._renew(now)
        if self.retention is not None and now >= self._next_prune:
            self._next_prune = now + min(self.retention / 10, 3600.0)
            pruned = await self.store.prune(now - self.retention)
            if pruned:
                log.info("pruned %d saga store row(s) older than %gs", pruned, self.retention)
        claimed = await self.store.claim_due(
            self.instance, now + self.lease, now, limit=_CLAIM_BATCH
        )
        if claimed:
            await self._renewing(self._work_on(claimed))
        await self._confirm_events()

    async def _work_on(self, claimed: list[SagaRecord]) -> None:
        for rec in claimed:
            async with self._lock(rec.id):
                self._held.add(rec.id)
                await self._work(rec, self._on_due(rec))

    async def _renew(self, now: float) -> None:
        """Extend the leases of the sagas this instance works on."""
        self._next_renewal = now + self.lease / 3
        if not self._held:
            return
        held = list(self._held)
        renewed = await self.store.renew(self.instance, held, now + self.lease)
        for saga_id in set(held) - renewed:
            if saga_id in self._held:  # not released while the renewal ran
                log.warning("saga %s: lease not renewed; another instance took it", saga_id)

    async def _renewing(self, work: Awaitable[None]) -> None:
        """Await ``work`` (the timer's own), renewing leases meanwhile: the timer that
        normally renews them is busy with it."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=self.lease / 3)
                if not task.done() and time.time() >= self._next_renewal:
                    await self._renew(time.time())
            task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _on_due(self, rec: SagaRecord) -> SagaRecord:
        """A claimed saga: its deadline passed, or its last owner died."""
        saga = self._sagas.get(rec.saga)
        if saga is None:
            log.warning("saga %s is of unknown type %r; left as it is", rec.id, rec.saga)
            return rec
        waiting = rec.wait is not Wait.RUN
        if waiting and rec.deadline is not None and rec.deadline <= time.time():
            return await self._on_deadline(saga, rec)
        if rec.wait in (Wait.RETRY, Wait.PROBE):
            return rec  # its owner died during the back-off; the deadline will come
        return await self._resume(saga, rec)

    async def _on_deadline(self, saga: Saga[Any], rec: SagaRecord) -> SagaRecord:
        step = saga.steps[rec.step]
        if rec.wait is Wait.REPLY:
            rec = await self._failed(saga, rec, step, "timed out", timed_out=True)
        elif rec.wait is Wait.PROBE:
            rec = await self._probe(saga, rec, step)
        else:
            rec = rec.evolve(wait=Wait.RUN, deadline=None)
        return await self._drive(saga, rec)

    async def _recover(self) -> None:
        """Once per start: end this instance's leases left from before a restart, so the
        timer claims those sagas at once."""
        if self._recovered:
            return
        async with self._recovery_lock:
            if not self._recovered:
                count = await self.store.expire_leases(self.instance)
                if count:
                    log.info("taking back %d saga(s) of instance %s", count, self.instance)
                self._recovered = True

    async def _resume(self, saga: Saga[Any], rec: SagaRecord) -> SagaRecord:
        step = saga.steps[rec.step] if 0 <= rec.step < len(saga.steps) else None
        await self.store.append_history(
            HistoryEntry(rec.id, "resumed", step.name if step else None, rec.wait.value)
        )
        if rec.wait is Wait.REPLY:
            assert step is not None
            # Same command id: a participant that already did the work answers again.
            action = step.compensation if rec.state is SagaState.COMPENSATING else step.action
            assert isinstance(action, Remote)
            return await self._send(saga, rec.evolve(wait=Wait.RUN), step, action)
        return await self._drive(saga, rec)
