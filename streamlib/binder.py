"""The Binder SPI: what a broker integration implements, and how binders are found.

A binder connects bindings to a broker. The core calls ``bind_consumer``, ``bind_producer``,
``health`` and ``aclose``. Consumers hand every received ``Envelope`` to a ``Dispatcher`` and
act on its ``Outcome``: acknowledge, wait for pending output first, or dead-letter a
``Failure``. Binders are registered under the entry-point group ``streamlib.binders`` by type
name and loaded lazily.

A binder may also serve the ``streamlib dlq`` commands: a ``dead_letters()`` method returning
``DeadLetterQueues`` (see ``streamlib.dlq.letters``).

Everything a binder needs from the core is importable from this module (see ``__all__`` and
docs/writing-a-binder.md); a binder imports nothing else from streamlib.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

from .config import ConsumerProperties, ProducerProperties, redact_url, validate
from .dlq.letters import (
    REPLAY_COUNT,
    DeadLetter,
    DeadLetterQueues,
    ReplaySession,
    is_dead_letter_header,
    next_replay_count,
)
from .errors import (
    BinderNotFoundError,
    BindingError,
    BrokerError,
    ConfigError,
    ConnectionLostError,
    PublishError,
    StreamlibError,
)
from .messages import (
    CONTENT_TYPE,
    PARTITION,
    X_EXCEPTION_FQCN,
    X_EXCEPTION_MESSAGE,
    X_EXCEPTION_STACKTRACE,
    Attribute,
    Envelope,
)
from .models import SettingsModel, TlsSettings
from .retry import Failure, RetryPolicy

__all__ = [
    "ACK",
    "CONTENT_TYPE",
    "DONE",
    "ENTRY_POINT_GROUP",
    "PARTITION",
    "REPLAY_COUNT",
    "X_EXCEPTION_FQCN",
    "X_EXCEPTION_MESSAGE",
    "X_EXCEPTION_STACKTRACE",
    "Attribute",
    "BaseBinder",
    "BaseBinding",
    "Batching",
    "Binder",
    "BinderContext",
    "BinderFactory",
    "BinderNotFoundError",
    "Binding",
    "BindingError",
    "BrokerError",
    "BulkProducer",
    "ConfigError",
    "ConnectionLostError",
    "ConsumerProperties",
    "ConsumerSpec",
    "DeadLetter",
    "DeadLetterQueues",
    "Dispatcher",
    "Envelope",
    "Failure",
    "Outcome",
    "Producer",
    "ProducerProperties",
    "ProducerSpec",
    "PublishError",
    "ReplaySession",
    "RetryPolicy",
    "SettingsModel",
    "StreamlibError",
    "TlsSettings",
    "installed_binder_types",
    "is_dead_letter_header",
    "load_binder_factory",
    "next_replay_count",
    "redact_url",
    "register_binder",
    "validate",
]

ENTRY_POINT_GROUP = "streamlib.binders"

# Distributions that provide the binder types this project maintains.
KNOWN_DISTRIBUTIONS = {"kafka": "streamlib-kafka", "rabbit": "streamlib-rabbit"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a consumer does with a message after dispatch.

    ``failure`` set: the message failed for good and the binding has a DLQ; dead-letter it,
    then acknowledge. ``pending`` set: output sends still await broker confirmation;
    acknowledge only after it resolves (it raises if a send failed). Neither: acknowledge.
    """

    failure: Failure | None = None
    pending: Awaitable[None] | None = None


ACK = Outcome()
"""The outcome of a message that was handled and needs nothing more than its ack."""


@dataclass(frozen=True, slots=True)
class Batching:
    """How a binding whose handler takes a list groups its messages: at most ``size`` per
    call, waiting at most ``wait`` seconds after the first one for more (0: what has arrived;
    on Kafka, what one fetch brought for the partition)."""

    size: int
    wait: float


class Dispatcher(Protocol):
    """The core's handling of one message: decode, call the handler, retry; never raises
    for a handler error (those become an Outcome), only when cancelled.

    When ``batching`` is set the handler takes a list: a binder that can, groups the
    messages of one partition (or queue) as ``batching`` says and calls ``dispatch_batch``;
    ``__call__`` still works and hands the handler a list of one.
    """

    @property
    def batching(self) -> Batching | None: ...

    async def __call__(self, envelope: Envelope) -> Outcome: ...

    async def dispatch_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        """The outcome of each of ``envelopes``, in their order. Each outcome is final, as
        ``__call__``'s is: retries happened already, one message at a time for the failed
        ones. Outcomes may share one ``pending`` confirmation (a batch's outputs)."""
        ...

    def unreadable(self, exc: BaseException, where: str) -> Outcome:
        """The outcome of a message the binder could not turn into an ``Envelope`` (odd
        headers, key or extras): a failure like an undecodable body, dead-lettered when the
        binding has a DLQ, else logged with ``where`` and its reason."""
        ...


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """Everything a binder needs to bind a consumer."""

    binding_name: str
    destination: str
    group: str | None
    properties: ConsumerProperties
    instance_index: int
    instance_count: int

    @property
    def partitions(self) -> tuple[int, ...]:
        """Partitions this instance owns when ``partitioned`` (explicit list or its index)."""
        listed = self.properties.instance_index_list
        return tuple(listed) if listed else (self.instance_index,)


@dataclass(frozen=True, slots=True)
class ProducerSpec:
    """Everything a binder needs to bind a producer."""

    binding_name: str
    destination: str
    properties: ProducerProperties


@dataclass(frozen=True, slots=True)
class BinderContext:
    """Facts about the application a binder serves."""

    app_name: str
    instance_index: int
    instance_count: int
    binder_name: str


@runtime_checkable
class Binding(Protocol):
    """A bound consumer; owns its lifecycle. ``stop`` drains in-flight messages and acks them."""

    @property
    def name(self) -> str: ...
    @property
    def is_running(self) -> bool: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def pause(self) -> None: ...
    async def resume(self) -> None: ...
    async def unbind(self) -> None: ...


class BaseBinding:
    """Optional base class of a ``Binding``: its ``spec``, its ``name``, and default lifecycle.

    A subclass implements ``start``, ``stop`` and the ``is_running`` property. By default
    ``pause`` stops the binding and ``resume`` starts it again (a consumer that cannot hold its
    deliveries paused gives them back to the broker), and ``unbind`` is ``stop``; override them
    where the broker can do better, or where unbinding must also delete what it declared.
    """

    def __init__(self, spec: ConsumerSpec) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.binding_name

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def pause(self) -> None:
        await self.stop()

    async def resume(self) -> None:
        await self.start()

    async def unbind(self) -> None:
        await self.stop()


class _Done:
    """An awaitable that is already complete."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


DONE: Awaitable[None] = _Done()
"""A confirmation that needs no waiting (for binders that confirm synchronously)."""


class Producer(Protocol):
    """A bound producer."""

    async def send(self, envelope: Envelope) -> Awaitable[None]:
        """Hand the message to the broker client and return its confirmation.

        Returns once the message is queued; awaiting the result waits until the broker
        confirmed it and raises PublishError if it did not. Many sends may be in flight.
        """
        ...

    async def aclose(self) -> None:
        """Wait for unconfirmed messages, then release the producer."""
        ...


@runtime_checkable
class BulkProducer(Producer, Protocol):
    """A producer that sends many messages at once (optional; the core falls back to
    ``send`` per message)."""

    async def send_many(self, envelopes: Sequence[Envelope]) -> Awaitable[None]:
        """Hand all of ``envelopes`` to the broker client, in order; the confirmation of all
        of them (raises PublishError if any was refused)."""
        ...


class Binder(Protocol):
    """A broker integration. Implementations are created per application by their factory."""

    async def bind_consumer(self, spec: ConsumerSpec, dispatch: Dispatcher) -> Binding: ...
    async def bind_producer(self, spec: ProducerSpec) -> Producer: ...
    def health(self) -> Mapping[str, Any]: ...
    async def aclose(self) -> None: ...


class BaseBinder:
    """Optional base class: ``async with`` support and an empty health report."""

    messaging_system: ClassVar[str] = ""
    """The broker's OpenTelemetry ``messaging.system`` value (``kafka``, ``rabbitmq``) for
    spans; empty: the binder's type name is used."""

    def health(self) -> Mapping[str, Any]:
        return {}

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


BinderFactory = Callable[[Mapping[str, Any], BinderContext], Binder]

_factories: dict[str, BinderFactory] = {}


def installed_binder_types() -> list[str]:
    """Names of every binder type registered under ``streamlib.binders``."""
    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names | set(_factories))


def register_binder(type_name: str, factory: BinderFactory) -> None:
    """Register a binder factory in code (entry points are the usual way)."""
    _factories[type_name] = factory


def load_binder_factory(type_name: str, key: str = "binders") -> BinderFactory:
    """The factory for ``type_name``, loaded from its entry point once and cached.

    Raises BinderNotFoundError (naming ``key`` and the distribution to install) when no
    installed distribution provides the type.
    """
    cached = _factories.get(type_name)
    if cached is not None:
        return cached
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=type_name):
        factory: BinderFactory = ep.load()
        _factories[type_name] = factory
        return factory
    installed = ", ".join(installed_binder_types()) or "none"
    hint = KNOWN_DISTRIBUTIONS.get(type_name)
    remedy = (
        f"install it with `pip install {hint}`" if hint else "no known distribution provides it"
    )
    raise BinderNotFoundError(
        key, f"binder type {type_name!r} is not installed ({remedy}); installed: {installed}"
    )
