"""Prometheus metrics of an app: per-binding message counters, handling time, in-flight
messages, sends per destination, and what binders report at scrape time (lag, reconnects).

The hot path only adds to plain numbers on a per-binding (per-destination) object made once;
a prometheus-client collector turns them into metric families when ``/metrics`` is scraped.
prometheus-client's own ``Counter.inc`` takes a lock and checks its argument on every call,
which at six calls a message cost a measurable share of Kafka consume throughput. Every
update happens in the event loop's thread, so plain additions are safe.
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from typing import Any

from . import _logs
from .binder import Batching, Dispatcher, Outcome
from .messages import Envelope

try:
    import prometheus_client
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector
except ModuleNotFoundError:  # the extra is not installed: nothing is exported
    prometheus_client = None  # type: ignore[assignment]

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Seconds; from a fast in-memory handler to one that calls slow services and retries."""

Health = Callable[[], Mapping[str, Any]]
"""The app's ``health()``, read at scrape time."""


class BindingMetrics:
    """What one consumer binding counted; the dispatcher adds to it, the collector reads it."""

    __slots__ = (
        "dead_lettered",
        "duration_counts",
        "duration_sum",
        "failed",
        "handled",
        "received",
        "retried",
    )

    def __init__(self) -> None:
        self.received = 0
        self.handled = 0
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.duration_counts = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.duration_sum = 0.0

    @property
    def in_flight(self) -> int:
        """Messages received whose outcome is not known yet: each received message ends
        handled or failed (one that is cancelled at stop is neither, and is redelivered)."""
        return self.received - self.handled - self.failed

    def observe(self, seconds: float) -> None:
        self.duration_counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds

    def observe_many(self, seconds: float, count: int) -> None:
        """``count`` messages that reached their outcome together after ``seconds`` (a
        batch)."""
        self.duration_counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += count
        self.duration_sum += seconds * count


class DestinationMetrics:
    """Sends to one destination: confirmed by the broker, and refused or failed."""

    __slots__ = ("send_failures", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.send_failures = 0

    def confirmed(self, confirm: Awaitable[None]) -> Awaitable[None]:
        """``confirm``, counting the send as sent or failed when it is awaited."""
        return _Counted(confirm, self)

    def confirmed_many(self, confirm: Awaitable[None], count: int) -> Awaitable[None]:
        """``confirm`` of a bulk send of ``count`` messages, counting them all as sent or as
        failed when it is awaited (the broker confirms or fails a bulk together)."""
        return _CountedMany(confirm, self, count)


class _Counted:
    """A send's confirmation that counts its outcome; a plain awaitable (not a coroutine), so
    one that is never awaited is no warning."""

    __slots__ = ("_confirm", "_metrics")

    def __init__(self, confirm: Awaitable[None], metrics: DestinationMetrics) -> None:
        self._confirm = confirm
        self._metrics = metrics

    def __await__(self) -> Generator[Any, None, None]:
        try:
            yield from self._confirm.__await__()
        except Exception:
            self._metrics.send_failures += 1
            raise
        self._metrics.sent += 1


class _CountedMany:
    """A bulk send's confirmation that counts its ``count`` messages when awaited."""

    __slots__ = ("_confirm", "_count", "_metrics")

    def __init__(self, confirm: Awaitable[None], metrics: DestinationMetrics, count: int) -> None:
        self._confirm = confirm
        self._metrics = metrics
        self._count = count

    def __await__(self) -> Generator[Any, None, None]:
        try:
            yield from self._confirm.__await__()
        except Exception:
            self._metrics.send_failures += self._count
            raise
        self._metrics.sent += self._count


class ObservedDispatcher:
    """A binding's dispatcher that tells the logs which binding and destination a record was
    logged for (JSON logs). The counting and timing are the inner ``HandlerDispatcher``'s,
    which has the binding's ``metrics``."""

    __slots__ = ("_binding", "_inner", "_logs", "_metrics")

    def __init__(self, binding: str, inner: Dispatcher, metrics: BindingMetrics | None) -> None:
        self._binding = binding
        self._inner = inner
        self._metrics = metrics if metrics is not None else BindingMetrics()
        self._logs = _logs.context_enabled

    async def __call__(self, envelope: Envelope) -> Outcome:
        if not self._logs:
            return await self._inner(envelope)
        token = _logs.enter(self._binding, envelope.destination)
        try:
            return await self._inner(envelope)
        finally:
            _logs.leave(token)

    @property
    def batching(self) -> Batching | None:
        return self._inner.batching

    async def dispatch_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        if not self._logs or not envelopes:
            return await self._inner.dispatch_batch(envelopes)
        token = _logs.enter(self._binding, envelopes[0].destination)
        try:
            return await self._inner.dispatch_batch(envelopes)
        finally:
            _logs.leave(token)

    def unreadable(self, exc: BaseException, where: str) -> Outcome:
        return self._inner.unreadable(exc, where)


class AppMetrics:
    """One app's metrics and the registry that exports them (one per app, so that apps in one
    process and apps started again do not collide); ``exposition()`` is what ``/metrics``
    serves."""

    def __init__(self, health: Health) -> None:
        assert prometheus_client is not None, "AppMetrics needs prometheus-client"
        self.bindings: dict[str, BindingMetrics] = {}
        self.destinations: dict[str, DestinationMetrics] = {}
        self.registry = prometheus_client.CollectorRegistry(auto_describe=False)
        self.registry.register(_Exporter(self, health))

    def binding(self, name: str) -> BindingMetrics:
        metrics = self.bindings.get(name)
        if metrics is None:
            metrics = self.bindings[name] = BindingMetrics()
        return metrics

    def destination(self, destination: str) -> DestinationMetrics:
        metrics = self.destinations.get(destination)
        if metrics is None:
            metrics = self.destinations[destination] = DestinationMetrics()
        return metrics

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        assert prometheus_client is not None
        return prometheus_client.generate_latest(self.registry)


_BINDING_COUNTERS = (
    ("received", "streamlib_messages_received", "Messages handed to a binding's handler."),
    (
        "handled",
        "streamlib_messages_handled",
        "Messages whose handler (and output send) succeeded.",
    ),
    (
        "failed",
        "streamlib_messages_failed",
        "Messages that failed for good, after their last attempt.",
    ),
    ("retried", "streamlib_messages_retried", "Attempts made again after a failure."),
    ("dead_lettered", "streamlib_messages_dead_lettered", "Failed messages sent to the DLQ."),
)
_BUCKET_LABELS = [*(str(float(b)) for b in DURATION_BUCKETS), "+Inf"]


if prometheus_client is not None:

    class _Exporter(Collector):
        """The app's numbers as metric families, and what binders report in ``health()``
        (a binding's ``lag`` per partition, a binder's ``reconnects``), read at scrape time."""

        def __init__(self, metrics: AppMetrics, health: Health) -> None:
            self._metrics = metrics
            self._health = health

        def describe(self) -> Iterator[Any]:
            return iter(())

        def collect(self) -> Iterator[Any]:
            bindings = sorted(self._metrics.bindings.items())
            for attribute, name, doc in _BINDING_COUNTERS:
                family = CounterMetricFamily(name, doc, labels=["binding"])
                for binding, m in bindings:
                    family.add_metric([binding], getattr(m, attribute))
                yield family
            in_flight = GaugeMetricFamily(
                "streamlib_messages_in_flight",
                "Messages being handled (retries included).",
                labels=["binding"],
            )
            duration = HistogramMetricFamily(
                "streamlib_handler_duration_seconds",
                "Time from dispatch to outcome: decode, handler, output send and retries.",
                labels=["binding"],
            )
            for binding, m in bindings:
                in_flight.add_metric([binding], m.in_flight)
                cumulative, total = [], 0
                for label, count in zip(_BUCKET_LABELS, m.duration_counts, strict=True):
                    total += count
                    cumulative.append((label, total))
                duration.add_metric([binding], cumulative, m.duration_sum)
            yield in_flight
            yield duration
            sent = CounterMetricFamily(
                "streamlib_messages_sent", "Sends the broker confirmed.", labels=["destination"]
            )
            failures = CounterMetricFamily(
                "streamlib_send_failures",
                "Sends that failed: not encodable, refused, or not confirmed.",
                labels=["destination"],
            )
            for destination, d in sorted(self._metrics.destinations.items()):
                sent.add_metric([destination], d.sent)
                failures.add_metric([destination], d.send_failures)
            yield sent
            yield failures
            yield from self._reported(self._health())

        def _reported(self, health: Mapping[str, Any]) -> Iterator[Any]:
            lag = GaugeMetricFamily(
                "streamlib_consumer_lag",
                "Records of a partition not handled yet (binders that report lag: Kafka).",
                labels=["binding", "partition"],
            )
            reconnects = CounterMetricFamily(
                "streamlib_binder_reconnects",
                "Reconnections of a binder to its broker (binders that report them: RabbitMQ).",
                labels=["binder"],
            )
            states = GaugeMetricFamily(
                "streamlib_binding_state",
                "1 for a consumer binding's state: running, paused, stopped or down.",
                labels=["binding", "state"],
            )
            for binder, report in health.get("binders", {}).items():
                count = report.get("reconnects")
                if isinstance(count, int):
                    reconnects.add_metric([binder], count)
                bindings = report.get("bindings")
                if not isinstance(bindings, Mapping):
                    continue
                for binding, info in bindings.items():
                    partitions = info.get("lag") if isinstance(info, Mapping) else None
                    if not isinstance(partitions, Mapping):
                        continue
                    for partition, value in partitions.items():
                        if value is not None:
                            lag.add_metric([binding, str(partition)], value)
            for binding, state in health.get("bindings", {}).items():
                states.add_metric([binding, state], 1)
            yield lag
            yield reconnects
            yield states
