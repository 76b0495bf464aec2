"""Bus events as pydantic models, written and read exactly as Spring Cloud Bus does.

Wire form: compact JSON, ``type`` (the simple class name) first, then every other field in
alphabetical order; ``timestamp`` in epoch milliseconds; ``id`` a random uuid4. Custom events
are subclasses of ``RemoteApplicationEvent`` registered by type name with ``register_event``.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, ClassVar, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

log = logging.getLogger("streamlib.bus")

E = TypeVar("E", bound="RemoteApplicationEvent")

SPRING_EVENT_PACKAGE = "org.springframework.cloud.bus.event"
UNKNOWN_EVENT_CLASS = f"{SPRING_EVENT_PACKAGE}.UnknownRemoteApplicationEvent"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _new_id() -> str:
    return str(uuid.uuid4())


class RemoteApplicationEvent(BaseModel):
    """The fields every bus event carries.

    ``event_type`` is the JSON ``type`` (defaults to the class name); ``java_class`` is what an
    ack names in its ``event`` field (Spring resolves it to a class, so events without a Java
    counterpart name Spring's ``UnknownRemoteApplicationEvent``).
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    event_type: ClassVar[str] = "RemoteApplicationEvent"
    java_class: ClassVar[str] = UNKNOWN_EVENT_CLASS

    id: str = Field(default_factory=_new_id)
    origin_service: str = ""
    destination_service: str = "**"
    timestamp: int = Field(default_factory=_now_ms)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "event_type" not in cls.__dict__:
            cls.event_type = cls.__name__

    def to_json(self) -> bytes:
        """The event's wire form (byte-identical to Spring's for the same field values)."""
        fields = self.model_dump(mode="json", by_alias=True)
        ordered: dict[str, Any] = {"type": self.event_type}
        for key in sorted(fields):
            ordered[key] = fields[key]
        return orjson.dumps(ordered)


class RefreshRemoteApplicationEvent(RemoteApplicationEvent):
    """Reload configuration and rebind refreshable settings."""

    java_class: ClassVar[str] = f"{SPRING_EVENT_PACKAGE}.RefreshRemoteApplicationEvent"


class EnvironmentChangeRemoteApplicationEvent(RemoteApplicationEvent):
    """Set configuration keys (dotted names) on the addressed nodes."""

    java_class: ClassVar[str] = f"{SPRING_EVENT_PACKAGE}.EnvironmentChangeRemoteApplicationEvent"

    values: dict[str, Any] = {}


class AckRemoteApplicationEvent(RemoteApplicationEvent):
    """A node's answer to an event it handled; never acked itself."""

    java_class: ClassVar[str] = f"{SPRING_EVENT_PACKAGE}.AckRemoteApplicationEvent"

    ack_id: str
    ack_destination_service: str
    event: str


_registry: dict[str, type[RemoteApplicationEvent]] = {}


def register_event(cls: type[E]) -> type[E]:
    """Make ``cls`` known by its ``event_type`` so received events of that type parse into it.

    Raises ValueError when another class already holds that type name.
    """
    existing = _registry.get(cls.event_type)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"bus event type {cls.event_type!r} is already registered as {existing.__qualname__}"
        )
    _registry[cls.event_type] = cls
    return cls


for _builtin in (
    RefreshRemoteApplicationEvent,
    EnvironmentChangeRemoteApplicationEvent,
    AckRemoteApplicationEvent,
):
    register_event(_builtin)


def event_class(type_name: str) -> type[RemoteApplicationEvent] | None:
    """The registered class of ``type_name``, if any."""
    return _registry.get(type_name)


class EventFormatError(ValueError):
    """A bus message that is not a well-formed event of its declared type."""


def parse_event(body: bytes) -> RemoteApplicationEvent | None:
    """The event in ``body``; None (and a log line) for a type nobody registered.

    Raises EventFormatError when the body is not JSON, has no ``type``, or does not fit the
    registered model.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventFormatError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise EventFormatError("no 'type' field")
    type_name = data.pop("type")
    cls = _registry.get(type_name)
    if cls is None:
        log.info("bus: ignoring event %s of unknown type %s", data.get("id", "?"), type_name)
        return None
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise EventFormatError(f"{type_name}: {exc.errors(include_url=False)[0]['msg']}") from None
