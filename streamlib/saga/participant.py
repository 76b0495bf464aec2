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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from ..app import StreamApp
from ..messages import APPLICATION_JSON, CONTENT_TYPE, Message
from . import headers as h
from ._support import config_store, header_text, identifier, named
from .definition import StepFailed
from .store import DedupeRecord, SagaStore

log = logging.getLogger("streamlib.saga")

C = TypeVar("C", bound=BaseModel)

Reply = BaseModel | Mapping[str, Any] | None
CommandHandler = Callable[[C], Awaitable[Reply]]


class Participant:
    """Handles saga commands arriving on ``destination`` (group: ``group``, default the app's
    name, so commands wait in a durable queue while the service is down).

    ``store`` keeps the de-duplication records; it defaults to the SQLite file named by
    ``saga.store`` in the app's configuration.
    """

    def __init__(
        self,
        app: StreamApp,
        destination: str,
        *,
        store: SagaStore | None = None,
        group: str | None = None,
    ) -> None:
        self.app = app
        self.destination = destination
        self._store = store
        self._handlers: dict[str, tuple[type[BaseModel], CommandHandler[Any]]] = {}
        self._in_flight: dict[str, asyncio.Lock] = {}
        self.duplicates = 0
        """Commands answered from a de-duplication record instead of running the handler."""

        commands = named(self._commands_handler(), f"{identifier(destination)}_saga_commands")
        app.binding_defaults(
            f"{commands.__name__}-in-0",
            {"destination": destination, "group": group or app.name or identifier(destination)},
        )
        app.sink(commands)

    def _commands_handler(self) -> Any:
        async def commands(msg: Message[bytes]) -> None:
            await self._on_command(msg)

        return commands

    @property
    def store(self) -> SagaStore:
        if self._store is None:
            self._store = config_store(self.app)
        return self._store

    def handler(
        self, command: type[C], *, name: str | None = None
    ) -> Callable[[CommandHandler[C]], CommandHandler[C]]:
        """Decorator: handle commands of type ``command`` (selected by ``name``, default the
        class name, as the orchestrator sends it)."""

        def decorate(fn: CommandHandler[C]) -> CommandHandler[C]:
            key = name or command.__name__
            if key in self._handlers:
                raise ValueError(f"command {key!r} already has a handler")
            self._handlers[key] = (command, fn)
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

    async def _handle(self, name: str | None, command_id: str, msg: Message[bytes]) -> DedupeRecord:
        entry = self._handlers.get(name or "")
        if entry is None:
            return _failure(command_id, f"{self.destination} has no handler for command {name!r}")
        model, fn = entry
        try:
            command = model.model_validate_json(msg.payload)
        except ValidationError as exc:
            return _failure(command_id, f"invalid {name} command: {exc.errors()[0]['msg']}")
        try:
            result = await fn(command)
        except StepFailed as exc:
            return _failure(command_id, exc.reason)
        if result is None:
            body = b"{}"
        elif isinstance(result, BaseModel):
            body = result.model_dump_json(by_alias=True).encode()
        else:
            body = orjson.dumps(dict(result))
        return DedupeRecord(command_id, h.SUCCESS, body)


def _failure(command_id: str, reason: str) -> DedupeRecord:
    return DedupeRecord(command_id, h.FAILURE, orjson.dumps({"error": reason}))
