"""OpenTelemetry tracing of sends and handled messages, named after the messaging conventions.

A send opens a ``send <destination>`` span (kind PRODUCER) and writes the W3C ``traceparent``
(and ``tracestate``) into the message headers with the globally configured propagator; a
handled message opens a ``process <destination>`` span (kind CONSUMER) that continues the
context found in its headers (W3C, or Zipkin's ``b3`` / ``X-B3-*`` as Spring's Brave writes
them) and stays current while the handler runs, so a processor's output is its child.

Only ``opentelemetry-api`` is needed. Without an SDK (a real ``TracerProvider``) nothing is
traced and nothing is added to messages: the app checks the provider once when it starts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TracerProvider,
)

from .binder import Batching, Dispatcher, Outcome, Producer
from .messages import Envelope

__all__ = ["Tracing", "record_failure"]

INSTRUMENTATION = "streamlib"

SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
OPERATION_NAME = "messaging.operation.name"
OPERATION_TYPE = "messaging.operation.type"
CONSUMER_GROUP = "messaging.consumer.group.name"
PARTITION_ID = "messaging.destination.partition.id"
MESSAGE_ID = "messaging.message.id"
BATCH_COUNT = "messaging.batch.message_count"
ERROR_TYPE = "error.type"
_OFFSET_ATTRIBUTE = {
    "kafka": "messaging.kafka.offset",
    "rabbitmq": "messaging.rabbitmq.message.delivery_tag",
}
"""Where each system's ``Envelope.offset`` goes: the Kafka offset or the AMQP delivery tag."""

B3 = "b3"
_B3_MULTI = ("X-B3-TraceId", "X-B3-SpanId", "X-B3-Sampled")
_B3_FIELDS = frozenset({B3, *_B3_MULTI, *(name.lower() for name in _B3_MULTI)})


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads message headers, whose values are ``str`` or (untyped Kafka headers) ``bytes``."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, bytes | bytearray):
            return [bytes(value).decode("utf-8", "replace")]
        return [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


class _HeaderSetter(Setter[MutableMapping[str, Any]]):
    def set(self, carrier: MutableMapping[str, Any], key: str, value: str) -> None:
        carrier[key] = value


_GETTER = _HeaderGetter()
_SETTER = _HeaderSetter()
_NO_CONTEXT = Context()
"""What a message without trace context continues: nothing (contexts are never mutated)."""
_PARTITIONS_CACHED = 1024


def _text(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("ascii", "replace")
    return value if isinstance(value, str) else None


def _b3_context(headers: Mapping[str, Any]) -> SpanContext | None:
    """The Zipkin B3 context of ``headers``: single ``b3`` or multi ``X-B3-*``; None if none
    or malformed (a 64-bit trace id is widened to 128 bits, as B3 allows)."""
    single = _text(headers, B3)
    if single is not None:
        parts = single.strip().split("-")
        if len(parts) < 2:
            return None
        trace_id, span_id = parts[0], parts[1]
        sampled = parts[2] if len(parts) > 2 else "1"
    else:
        trace_id_h, span_id_h, sampled_h = (_text(headers, name) for name in _B3_MULTI)
        if trace_id_h is None or span_id_h is None:
            return None
        trace_id, span_id, sampled = trace_id_h, span_id_h, sampled_h or "1"
    try:
        tid, sid = int(trace_id, 16), int(span_id, 16)
    except ValueError:
        return None
    if len(trace_id) not in (16, 32) or len(span_id) != 16 or not tid or not sid:
        return None
    flags = TraceFlags.SAMPLED if sampled in ("1", "d", "true") else TraceFlags.DEFAULT
    return SpanContext(tid, sid, is_remote=True, trace_flags=TraceFlags(flags))


def context_fields() -> frozenset[str]:
    """Every header a trace context can be read from: the configured propagator's and B3's."""
    return frozenset(propagate.get_global_textmap().fields) | _B3_FIELDS


def extract(headers: Mapping[str, Any], fields: frozenset[str] | None = None) -> Context:
    """The trace context a message carries: the configured propagator's (W3C by default),
    else B3; an empty context when there is none. ``fields`` (``context_fields()``) lets a
    message without any of them skip the propagator."""
    if not headers or (fields is not None and headers.keys().isdisjoint(fields)):
        return _NO_CONTEXT
    context = propagate.extract(headers, getter=_GETTER)
    if trace.get_current_span(context).get_span_context().is_valid:
        return context
    b3 = _b3_context(headers) if headers else None
    if b3 is None:
        return context
    return trace.set_span_in_context(NonRecordingSpan(b3), context)


def record_failure(exc: BaseException) -> None:
    """Mark the current span (a handled message's) as failed by ``exc``; nothing without one."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.record_exception(exc)
    span.set_attribute(ERROR_TYPE, f"{type(exc).__module__}.{type(exc).__qualname__}")
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def is_sdk(provider: TracerProvider) -> bool:
    """False for the API's placeholders (no SDK configured), which would trace nothing."""
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


class Tracing:
    """Spans of one app, from ``provider`` (the global provider by default).

    ``Tracing.create`` returns None when no SDK is configured, so the callers' only cost per
    message is one ``is None`` test.
    """

    def __init__(self, provider: TracerProvider) -> None:
        self._tracer = provider.get_tracer(INSTRUMENTATION)

    @classmethod
    def create(cls, provider: TracerProvider | None = None) -> Tracing | None:
        chosen = provider if provider is not None else trace.get_tracer_provider()
        return cls(chosen) if is_sdk(chosen) else None

    def producer(self, destination: str, system: str) -> TracedSend:
        return TracedSend(self._tracer, destination, system)

    def consumer(
        self, dispatcher: Dispatcher, destination: str, group: str | None, system: str
    ) -> TracedDispatcher:
        return TracedDispatcher(self._tracer, dispatcher, destination, group, system)


class TracedSend:
    """Sends through a producer inside a ``send`` span whose context the message carries."""

    def __init__(self, tracer: trace.Tracer, destination: str, system: str) -> None:
        self._tracer = tracer
        self._name = f"send {destination}"
        self._attributes = {
            SYSTEM: system,
            DESTINATION: destination,
            OPERATION_NAME: "send",
            OPERATION_TYPE: "send",
        }
        self._by_partition: dict[int, dict[str, Any]] = {}

    async def send(self, producer: Producer, envelope: Envelope) -> Awaitable[None]:
        partition = envelope.partition
        attributes = self._attributes
        if partition is not None:
            attributes = self._by_partition.get(partition) or self._for_partition(partition)
        # What start_as_current_span does, without its context manager's cost.
        span = self._tracer.start_span(self._name, kind=SpanKind.PRODUCER, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            propagate.inject(envelope.headers, setter=_SETTER)
            return await producer.send(envelope)
        except Exception as exc:
            span.set_attribute(ERROR_TYPE, f"{type(exc).__module__}.{type(exc).__qualname__}")
            if span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def _for_partition(self, partition: int) -> dict[str, Any]:
        attributes = {**self._attributes, PARTITION_ID: str(partition)}
        if len(self._by_partition) < _PARTITIONS_CACHED:
            self._by_partition[partition] = attributes
        return attributes

    async def send_many(
        self,
        send: Callable[[Sequence[Envelope]], Awaitable[Awaitable[None]]],
        envelopes: Sequence[Envelope],
    ) -> Awaitable[None]:
        """``send(envelopes)`` inside one ``send`` span for the whole bulk (with
        ``messaging.batch.message_count``), whose context every message carries."""
        attributes: dict[str, Any] = {**self._attributes, BATCH_COUNT: len(envelopes)}
        partitions = {envelope.partition for envelope in envelopes}
        if len(partitions) == 1 and None not in partitions:
            attributes[PARTITION_ID] = str(next(iter(partitions)))
        with self._tracer.start_as_current_span(
            self._name, kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            for envelope in envelopes:
                propagate.inject(envelope.headers, setter=_SETTER)
            try:
                return await send(envelopes)
            except Exception as exc:
                span.set_attribute(ERROR_TYPE, f"{type(exc).__module__}.{type(exc).__qualname__}")
                raise


class TracedDispatcher:
    """A dispatcher whose every message is handled inside a ``process`` span continuing the
    context in its headers; the span is an error when the message failed for good."""

    def __init__(
        self,
        tracer: trace.Tracer,
        inner: Dispatcher,
        destination: str,
        group: str | None,
        system: str,
    ) -> None:
        self._tracer = tracer
        self._inner = inner
        self._fields = context_fields()
        self._name = f"process {destination}"
        self._offset = _OFFSET_ATTRIBUTE.get(system)
        self._attributes: dict[str, Any] = {
            SYSTEM: system,
            DESTINATION: destination,
            OPERATION_NAME: "process",
            OPERATION_TYPE: "process",
        }
        if group is not None:
            self._attributes[CONSUMER_GROUP] = group
        self._by_partition: dict[int, dict[str, Any]] = {}

    def _attributes_of(self, envelope: Envelope) -> dict[str, Any]:
        partition = envelope.partition
        if partition is None:
            attributes = dict(self._attributes)
        else:
            base = self._by_partition.get(partition)
            if base is None:
                base = {**self._attributes, PARTITION_ID: str(partition)}
                if len(self._by_partition) < _PARTITIONS_CACHED:
                    self._by_partition[partition] = base
            attributes = dict(base)
        if envelope.offset is not None and self._offset is not None:
            attributes[self._offset] = envelope.offset
        if envelope.message_id is not None:
            attributes[MESSAGE_ID] = envelope.message_id
        return attributes

    @property
    def batching(self) -> Batching | None:
        return self._inner.batching

    async def dispatch_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        """The batch handled inside one ``process`` span (the messaging conventions' batch
        process): no parent, a link to the context each message carries, and
        ``messaging.batch.message_count``; it is an error when a record failed for good."""
        links = []
        for envelope in envelopes:
            carried = trace.get_current_span(extract(envelope.headers, self._fields))
            span_context = carried.get_span_context()
            if span_context.is_valid:
                links.append(Link(span_context))
        attributes = {**self._attributes, BATCH_COUNT: len(envelopes)}
        partitions = {envelope.partition for envelope in envelopes}
        if len(partitions) == 1 and None not in partitions:
            attributes[PARTITION_ID] = str(next(iter(partitions)))
        span = self._tracer.start_span(
            self._name,
            context=Context(),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            return await self._inner.dispatch_batch(envelopes)
        finally:
            otel_context.detach(token)
            span.end()

    async def __call__(self, envelope: Envelope) -> Outcome:
        span = self._tracer.start_span(
            self._name,
            context=extract(envelope.headers, self._fields),
            kind=SpanKind.CONSUMER,
            attributes=self._attributes_of(envelope),
            record_exception=False,
            set_status_on_exception=False,
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            return await self._inner(envelope)
        finally:
            otel_context.detach(token)
            span.end()

    def unreadable(self, exc: BaseException, where: str) -> Outcome:
        with self._tracer.start_as_current_span(
            self._name, kind=SpanKind.CONSUMER, attributes=self._attributes
        ):
            return self._inner.unreadable(exc, where)
