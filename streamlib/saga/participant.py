"""Saga participants: services that handle commands and answer with replies.

    payments = Participant(app, "payments")

    @payments.handler(ReserveCredit)
    async def reserve_credit(cmd: ReserveCredit) -> CreditReserved:
        if cmd.amount > LIMIT:
            raise StepFailed("credit limit exceeded")      # answered as a failure reply
        return CreditReserved(...)                        # answered as a success reply

The reply is sent for the handler. Each answer is recorded under its command id in the
participant's store before it is sent, so a duplicated command is answered with the same reply
and the handler does not run twice. An exception other than ``StepFailed`` is no answer: the
binding retries the command (and dead-letters it if so configured), and the orchestrator's
timeout decides.

With ``outbox=True`` the answer and the reply are written in one store transaction, and a
handler declared ``transactional=True`` gets that transaction to write its own rows in it::

    @payments.handler(ReserveCredit, transactional=True)
    async def reserve_credit(cmd: ReserveCredit, tx: StoreTransaction) -> CreditReserved:
        await tx.execute("INSERT INTO credit (order_id, amount) VALUES ($1, $2)", ...)
        return CreditReserved(...)

The work, the de-duplication record and the reply commit together or not at all. The reply is
sent right after the commit and marked sent; a relay (the source ``<destination>_saga_relay``)
sends replies whose sending did not finish, e.g. because the process died after the commit. A
duplicated command is then not answered again: its reply is in the outbox, sent once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from ..app import StreamApp
from ..messages import APPLICATION_JSON, CONTENT_TYPE, Message
from . import headers as h
from ._support import config_store, header_text, identifier, named
from .definition import StepFailed
from .store import DedupeRecord, OutboxMessage, SagaStore, StoreTransaction

log = logging.getLogger("streamlib.saga")

C = TypeVar("C", bound=BaseModel)

Reply = BaseModel | Mapping[str, Any] | None
CommandHandler = Callable[[C], Awaitable[Reply]]
TransactionalHandler = Callable[[C, StoreTransaction], Awaitable[Reply]]


class _Failed(Exception):
    """A transactional handler's StepFailed: its work is rolled back, its answer kept."""

    def __init__(self, answer: DedupeRecord) -> None:
        self.answer = answer


class Participant:
    """Handles saga commands arriving on ``destination`` (group: ``group``, default the app's
    name, so commands wait in a durable queue while the service is down).

    ``store`` keeps the de-duplication records; it defaults to the SQLite file named by
    ``saga.store`` in the app's configuration. ``outbox=True`` writes answers and replies in one
    transaction (with a transactional handler's own writes) and relays them after commit;
    ``relay_interval`` is how often the relay looks for unsent replies and ``relay_claim`` how
    long a reply being sent is left to its sender before a relay sends it.
    """

    def __init__(
        self,
        app: StreamApp,
        destination: str,
        *,
        store: SagaStore | None = None,
        group: str | None = None,
        outbox: bool = False,
        relay_interval: float = 0.5,
        relay_claim: float = 5.0,
    ) -> None:
        self.app = app
        self.destination = destination
        self._store = store
        self._handlers: dict[
            str, tuple[type[BaseModel], Callable[..., Awaitable[Reply]], bool]
        ] = {}
        self._in_flight: dict[str, asyncio.Lock] = {}
        self.outbox = outbox
        self._relay_claim = relay_claim
        self.duplicates = 0
        """Commands answered from a de-duplication record instead of running the handler."""
        self.relayed = 0
        """Replies the relay sent because their sending had not finished."""

        prefix = identifier(destination)
        commands = named(self._commands_handler(), f"{prefix}_saga_commands")
        app.binding_defaults(
            f"{commands.__name__}-in-0",
            {"destination": destination, "group": group or app.name or identifier(destination)},
        )
        app.sink(commands)
        if outbox:
            app.source(interval=relay_interval)(
                named(self._relay_handler(), f"{prefix}_saga_relay")
            )

    def _commands_handler(self) -> Any:
        async def commands(msg: Message[bytes]) -> None:
            await self._on_command(msg)

        return commands

    def _relay_handler(self) -> Any:
        async def relay() -> None:
            await self._relay()

        return relay

    @property
    def store(self) -> SagaStore:
        if self._store is None:
            self._store = config_store(self.app)
        return self._store

    def handler(
        self, command: type[C], *, name: str | None = None, transactional: bool = False
    ) -> Callable[[Any], Any]:
        """Decorator: handle commands of type ``command`` (selected by ``name``, default the
        class name, as the orchestrator sends it). A ``transactional`` handler is called as
        ``fn(command, tx)`` inside the transaction that stores its answer (``outbox=True``)."""
        if transactional and not self.outbox:
            raise ValueError(
                f"{self.destination}: a transactional handler needs Participant(outbox=True)"
            )

        def decorate(fn: Any) -> Any:
            key = name or command.__name__
            if key in self._handlers:
                raise ValueError(f"command {key!r} already has a handler")
            self._handlers[key] = (command, fn, transactional)
            return fn

        return decorate

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()

    async def _on_command(self, msg: Message[bytes]) -> None:
        headers = msg.headers
        command_id = header_text(headers, h.COMMAND_ID)
        reply_to = header_text(headers, h.REPLY_TO)
        saga_id = header_text(headers, h.SAGA_ID)
        if command_id is None or reply_to is None or saga_id is None:
            log.error(
                "%s: command without %s/%s/%s headers dropped",
                self.destination,
                h.COMMAND_ID,
                h.REPLY_TO,
                h.SAGA_ID,
            )
            return
        if self.outbox:
            await self._on_command_with_outbox(msg, command_id, reply_to, saga_id)
            return
        lock = self._in_flight.setdefault(command_id, asyncio.Lock())
        try:
            async with lock:
                answer = await self.store.get_dedupe(command_id)
                if answer is not None:
                    self.duplicates += 1
                    log.debug(
                        "%s: command %s seen before; same reply", self.destination, command_id
                    )
                else:
                    answer = await self._handle(header_text(headers, h.COMMAND), command_id, msg)
                    await self.store.put_dedupe(answer)
        finally:
            if not lock.locked():
                self._in_flight.pop(command_id, None)
        await self.app.send(
            reply_to,
            answer.body,
            key=saga_id,
            headers={
                CONTENT_TYPE: APPLICATION_JSON,
                h.SAGA_ID: saga_id,
                h.SAGA_STEP: header_text(headers, h.SAGA_STEP) or "",
                h.COMMAND_ID: command_id,
                h.OUTCOME: answer.outcome,
            },
        )

    async def _on_command_with_outbox(
        self, msg: Message[bytes], command_id: str, reply_to: str, saga_id: str
    ) -> None:
        lock = self._in_flight.setdefault(command_id, asyncio.Lock())
        try:
            async with lock:
                if await self.store.get_dedupe(command_id) is not None:
                    self.duplicates += 1
                    log.debug(
                        "%s: command %s seen before; its reply is in the outbox",
                        self.destination,
                        command_id,
                    )
                    return
                name = header_text(msg.headers, h.COMMAND)
                claimed_until = time.time() + self._relay_claim
                try:
                    async with self.store.transaction() as tx:
                        answer = await self._handle(name, command_id, msg, tx)
                        reply = self._reply(answer, reply_to, saga_id, msg)
                        if not await tx.put_dedupe(answer):
                            raise _Duplicate
                        await tx.put_outbox(reply, claimed_until)
                except _Failed as failed:
                    reply = self._reply(failed.answer, reply_to, saga_id, msg)
                    async with self.store.transaction() as tx:
                        if not await tx.put_dedupe(failed.answer):
                            raise _Duplicate from None
                        await tx.put_outbox(reply, claimed_until)
        except _Duplicate:
            self.duplicates += 1
            return
        finally:
            if not lock.locked():
                self._in_flight.pop(command_id, None)
        try:
            await self._deliver(reply)
        except Exception as exc:
            # Committed: the relay sends it once its claim expired.
            log.warning(
                "%s: sending the reply to %s failed (%s); the relay will",
                self.destination,
                command_id,
                exc,
            )
            return
        await self.store.mark_sent([reply.command_id], time.time())

    def _reply(
        self, answer: DedupeRecord, reply_to: str, saga_id: str, msg: Message[bytes]
    ) -> OutboxMessage:
        headers = {
            CONTENT_TYPE: APPLICATION_JSON,
            h.SAGA_ID: saga_id,
            h.SAGA_STEP: header_text(msg.headers, h.SAGA_STEP) or "",
            h.COMMAND_ID: answer.key,
            h.OUTCOME: answer.outcome,
        }
        return OutboxMessage(answer.key, reply_to, saga_id, headers, answer.body)

    async def _deliver(self, reply: OutboxMessage) -> None:
        """Send one reply of the outbox."""
        await self.app.send(reply.destination, reply.body, key=reply.key, headers=reply.headers)

    async def _relay(self) -> None:
        """Send the replies whose sender did not finish (it died, or the broker refused)."""
        now = time.time()
        for reply in await self.store.claim_outbox(now, now + self._relay_claim):
            try:
                await self._deliver(reply)
            except Exception as exc:
                log.warning(
                    "%s: relaying the reply to %s failed: %s",
                    self.destination,
                    reply.command_id,
                    exc,
                )
                continue
            await self.store.mark_sent([reply.command_id], time.time())
            self.relayed += 1

    async def _handle(
        self,
        name: str | None,
        command_id: str,
        msg: Message[bytes],
        tx: StoreTransaction | None = None,
    ) -> DedupeRecord:
        entry = self._handlers.get(name or "")
        if entry is None:
            return _failure(command_id, f"{self.destination} has no handler for command {name!r}")
        model, fn, transactional = entry
        try:
            command = model.model_validate_json(msg.payload)
        except ValidationError as exc:
            return _failure(command_id, f"invalid {name} command: {exc.errors()[0]['msg']}")
        try:
            result = await (fn(command, tx) if transactional else fn(command))
        except StepFailed as exc:
            if transactional:
                raise _Failed(_failure(command_id, exc.reason)) from None
            return _failure(command_id, exc.reason)
        if result is None:
            body = b"{}"
        elif isinstance(result, BaseModel):
            body = result.model_dump_json(by_alias=True).encode()
        else:
            body = orjson.dumps(dict(result))
        return DedupeRecord(command_id, h.SUCCESS, body)


class _Duplicate(Exception):
    """Another delivery of the command stored its answer first."""


def _failure(command_id: str, reason: str) -> DedupeRecord:
    return DedupeRecord(command_id, h.FAILURE, orjson.dumps({"error": reason}))
