"""The Bus: configuration events broadcast to every node of an estate, Spring Cloud Bus style.

A ``Bus`` adds one consumer binding to its app, ``springCloudBus-in-0``, on destination
``springCloudBus`` (``bus.destination``) with no group, so every node receives every event
whatever binder the app uses; it sends through ``springCloudBus-out-0``. A node handles the
events addressed to its id, then acks them to ``**``. A node handles its own events once, when
they come back from the broker, and acks them like any other node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ..app import StreamApp
from ..config import read_section
from ..errors import StreamlibError
from ..messages import Message
from ..refresh import RefreshListener, RefreshResult
from .events import (
    AckRemoteApplicationEvent,
    EnvironmentChangeRemoteApplicationEvent,
    EventFormatError,
    RefreshRemoteApplicationEvent,
    RemoteApplicationEvent,
    parse_event,
    register_event,
)
from .matching import matches, normalize_destination, service_id
from .settings import BusSettings
from .signing import SIGNATURE_HEADER, ReplayGuard, sign, verify

SENT_REMEMBERED = 1024

log = logging.getLogger("streamlib.bus")

E = TypeVar("E", bound=RemoteApplicationEvent)
L = TypeVar("L", bound=RefreshListener)

HANDLER_NAME = "springCloudBus"
INPUT_BINDING = f"{HANDLER_NAME}-in-0"
OUTPUT_BINDING = f"{HANDLER_NAME}-out-0"

EventListener = Callable[[E], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class BusReply:
    """An event that was sent and the acks that came back while waiting."""

    event: RemoteApplicationEvent
    acks: tuple[AckRemoteApplicationEvent, ...]

    @property
    def nodes(self) -> tuple[str, ...]:
        """Service ids of the nodes that acked, in the order their acks arrived."""
        return tuple(ack.origin_service for ack in self.acks)


class _AckCollector:
    def __init__(self, expect: int | None) -> None:
        self.acks: dict[str, AckRemoteApplicationEvent] = {}
        self.expect = expect
        self.enough = asyncio.Event()

    def add(self, ack: AckRemoteApplicationEvent) -> None:
        self.acks.setdefault(ack.origin_service, ack)  # a redelivered ack counts once
        if self.expect is not None and len(self.acks) >= self.expect:
            self.enough.set()


class Bus:
    """Spring Cloud Bus for a ``StreamApp``; create it before the app starts.

    ``passive`` nodes (command-line tools) only send events and collect acks: they neither
    handle nor ack anything.
    """

    def __init__(
        self, app: StreamApp, *, passive: bool = False, node_id: str | None = None
    ) -> None:
        self.app = app
        self.passive = passive
        self._node_id = node_id
        self._instance = uuid.uuid4().hex
        self._waiting: dict[str, _AckCollector] = {}
        self._listeners: dict[type[RemoteApplicationEvent], list[EventListener[Any]]] = {}
        # Ids of events this node sent: one with our origin but not in here means another
        # node uses the same bus id.
        self._sent: deque[str] = deque(maxlen=SENT_REMEMBERED)
        self._collision_reported = False
        self._replays = ReplayGuard()

        async def receive(message: Message[bytes]) -> None:
            await self._receive(message)

        receive.__name__ = HANDLER_NAME
        app.sink(receive)
        self._section = app.settings(
            "bus", BusSettings, live_keys=("signing-key", "replay-window", "ack-wait")
        )
        app.binding_defaults(INPUT_BINDING, _input_defaults)
        app.binding_defaults(OUTPUT_BINDING, _output_defaults)

    @property
    def settings(self) -> BusSettings:
        """The ``bus:`` settings of the configuration in force."""
        return self._section.value

    @property
    def id(self) -> str:
        """This node's service id, ``name:index:<32 hex>`` unless ``bus.id`` sets it.

        Fixed once the app runs: a refresh does not change it.
        """
        if self._node_id:
            return self._node_id
        config = self.app.config
        node = self.settings.id or service_id(config.name, config.instance_index, self._instance)
        if INPUT_BINDING in self.app.bindings:
            self._node_id = node
        return node

    def on_refresh(self, fn: L) -> L:
        """Call ``fn(changed_keys)`` after every applied refresh (same as the app's)."""
        return self.app.on_refresh(fn)

    def on_event(self, event_type: type[E]) -> Callable[[EventListener[E]], EventListener[E]]:
        """Call the decorated function with each event of ``event_type`` addressed here."""
        register_event(event_type)

        def decorate(fn: EventListener[E]) -> EventListener[E]:
            self._listeners.setdefault(event_type, []).append(fn)
            return fn

        return decorate

    async def refresh(
        self,
        destination: str | None = None,
        *,
        wait: float | None = None,
        expect: int | None = None,
    ) -> BusReply:
        """Ask the nodes matching ``destination`` (default: all) to reload configuration."""
        return await self.publish(
            RefreshRemoteApplicationEvent(destination_service=destination or ""),
            wait=wait,
            expect=expect,
        )

    async def env(
        self,
        values: Mapping[str, object],
        destination: str | None = None,
        *,
        wait: float | None = None,
        expect: int | None = None,
    ) -> BusReply:
        """Set configuration keys (dotted names) on the nodes matching ``destination``, which
        then refresh. Values travel as strings, as Spring's do."""
        event = EnvironmentChangeRemoteApplicationEvent(
            destination_service=destination or "",
            values={str(k): _as_property(v) for k, v in values.items()},
        )
        return await self.publish(event, wait=wait, expect=expect)

    async def publish(
        self, event: RemoteApplicationEvent, *, wait: float | None = None, expect: int | None = None
    ) -> BusReply:
        """Send ``event`` from this node, then collect acks for ``wait`` seconds (default
        ``bus.ack-wait``), or until ``expect`` nodes acked.

        Raises StreamlibError when the app is not running (acks could not be received).
        """
        if INPUT_BINDING not in self.app.bindings:
            raise StreamlibError("the bus can send only while its app is running")
        event = event.model_copy(
            update={
                "origin_service": self.id,
                "destination_service": normalize_destination(event.destination_service),
            }
        )
        limit = self.settings.ack_wait if wait is None else wait
        collector = _AckCollector(expect)
        self._waiting[event.id] = collector
        try:
            await self._send(event)
            if limit > 0 and (expect is None or expect > 0):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(collector.enough.wait(), limit)
        finally:
            del self._waiting[event.id]
        return BusReply(event, tuple(collector.acks.values()))

    async def _send(self, event: RemoteApplicationEvent) -> None:
        self._sent.append(event.id)
        body = event.to_json()
        key = self.settings.signing_key
        headers = {SIGNATURE_HEADER: sign(key, body)} if key is not None else None
        await self.app.send(OUTPUT_BINDING, body, headers=headers)
        log.debug("bus %s: sent %s %s", event.origin_service, event.event_type, event.id)

    async def _receive(self, message: Message[bytes]) -> None:
        settings = self.settings
        if not settings.enabled:
            return
        body = message.payload
        if settings.signing_key is not None and not verify(
            settings.signing_key, body, message.headers.get(SIGNATURE_HEADER)
        ):
            log.warning(
                "bus: rejected a message without a valid signature (%d bytes on %s)",
                len(body),
                message.destination,
            )
            return
        try:
            event = parse_event(body)
        except EventFormatError as exc:
            log.warning("bus: ignoring a malformed event on %s: %s", message.destination, exc)
            return
        if event is None:
            return
        if settings.signing_key is not None:
            refusal = self._replays.refusal(event.id, event.timestamp, settings.replay_window)
            if refusal is not None:
                log.warning(
                    "bus: refused %s %s from %s: %s",
                    event.event_type,
                    event.id,
                    event.origin_service,
                    refusal,
                )
                return
        log.debug(
            "bus: received %s %s from %s to %r",
            event.event_type,
            event.id,
            event.origin_service,
            event.destination_service,
        )
        self._check_collision(event)
        if isinstance(event, AckRemoteApplicationEvent):
            collector = self._waiting.get(event.ack_id)
            if collector is not None:
                collector.add(event)
            return
        if self.passive:
            return
        me = self.id
        if not matches(event.destination_service, me):
            return
        if not await self._handle(event):
            return
        ack = AckRemoteApplicationEvent(
            origin_service=me,
            destination_service="**",
            ack_id=event.id,
            ack_destination_service=event.destination_service,
            event=event.java_class,
        )
        try:
            await self._send(ack)
        except Exception:
            log.exception("bus: could not ack event %s", event.id)

    def _check_collision(self, event: RemoteApplicationEvent) -> None:
        if (
            not self._collision_reported
            and event.origin_service == self.id
            and event.id not in self._sent
        ):
            self._collision_reported = True
            log.warning(
                "bus: another node uses this node's id %s (event %s); give each instance its "
                "own bus.id, or leave bus.id unset for a unique one",
                event.origin_service,
                event.id,
            )

    async def _handle(self, event: RemoteApplicationEvent) -> bool:
        """Act on an event addressed here; False (logged) when that failed, so no ack."""
        try:
            if isinstance(event, EnvironmentChangeRemoteApplicationEvent):
                result = await self.app.refresh(event.values)
                self._log_refresh(event, result)
            elif isinstance(event, RefreshRemoteApplicationEvent):
                result = await self.app.refresh()
                self._log_refresh(event, result)
            for event_type, listeners in self._listeners.items():
                if isinstance(event, event_type):
                    for listener in listeners:
                        outcome = listener(event)
                        if outcome is not None:
                            await outcome
        except Exception:
            log.exception(
                "bus: handling %s %s from %s failed; not acking",
                event.event_type,
                event.id,
                event.origin_service,
            )
            return False
        return True

    def _log_refresh(self, event: RemoteApplicationEvent, result: RefreshResult) -> None:
        log.info(
            "bus %s: %s %s from %s: changed keys: %s",
            self.id,
            event.event_type,
            event.id,
            event.origin_service,
            ", ".join(result.changed) or "none",
        )


def _as_property(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _input_defaults(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The bus input's settings, derived from ``bus.*`` (configuration may override them)."""
    settings = read_section(raw, "bus", BusSettings)
    return {
        **_common(settings),
        "group": None,
        # A broadcast consumer that handles events one at a time, in order: instance index and
        # count do not split its input, and a failed event is not retried.
        "consumer": {
            "max-attempts": 1,
            "auto-startup": settings.enabled,
            "instance-index": 0,
            "instance-count": 1,
            "partitioned": False,
            "concurrency": 1,
            "dlq": False,
        },
    }


def _output_defaults(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The bus output's settings, derived from ``bus.*``."""
    return _common(read_section(raw, "bus", BusSettings))


def _common(settings: BusSettings) -> dict[str, Any]:
    return {"destination": settings.destination, "content-type": "application/json"}
