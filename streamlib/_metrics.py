"""Prometheus metrics of an app: per-binding message counters, handling time, in-flight
messages, sends per destination, and what binders report at scrape time (lag, reconnects).

Each binding and destination gets its labelled children once, so the hot path is one
increment on a pre-bound child. Without ``prometheus-client`` (the ``streamlib[ops]`` extra)
or with the management endpoint off, every metric is a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import _logs
from .binder import Dispatcher, Outcome
from .messages import Envelope

try:
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ModuleNotFoundError:  # the extra is not installed: metrics stay no-ops
    prometheus_client = None  # type: ignore[assignment]

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Seconds; from a fast in-memory handler to one that calls slow services and retries."""

Health = Callable[[], Mapping[str, Any]]
"""The app's ``health()``, read at scrape time."""


def available() -> bool:
    """Whether ``prometheus-client`` is installed."""
    return prometheus_client is not None


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Counter, Protocol):
    def dec(self, amount: float = 1) -> None: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class _Noop:
    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        return None

    def dec(self, amount: float = 1) -> None:
        return None

    def observe(self, amount: float) -> None:
        return None


_NOOP = _Noop()


@dataclass(frozen=True, slots=True)
class BindingMetrics:
    """The metrics of one consumer binding, each already bound to its label."""

    received: Counter = _NOOP
    handled: Counter = _NOOP
    failed: Counter = _NOOP
    retried: Counter = _NOOP
    dead_lettered: Counter = _NOOP
    in_flight: Gauge = _NOOP
    duration: Histogram = _NOOP


NO_BINDING_METRICS = BindingMetrics()


@dataclass(frozen=True, slots=True)
class DestinationMetrics:
    """Sends to one destination: confirmed by the broker, and refused or failed."""

    sent: Counter = _NOOP
    send_failures: Counter = _NOOP

    def confirmed(self, confirm: Awaitable[None]) -> Awaitable[None]:
        """``confirm``, counting the send as sent or failed when it is awaited."""
        if self is NO_DESTINATION_METRICS:
            return confirm
        return _Counted(confirm, self)


NO_DESTINATION_METRICS = DestinationMetrics()


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
            self._metrics.send_failures.inc()
            raise
        self._metrics.sent.inc()


class ObservedDispatcher:
    """A binding's dispatcher that counts what it receives, how many messages are in flight
    and how long each takes to reach its outcome (retries included), and tells the logs which
    binding and destination a record was logged for (JSON logs)."""

    __slots__ = ("_binding", "_inner", "_logs", "_metrics")

    def __init__(self, binding: str, inner: Dispatcher, metrics: BindingMetrics) -> None:
        self._binding = binding
        self._inner = inner
        self._metrics = metrics
        self._logs = _logs.context_enabled

    async def __call__(self, envelope: Envelope) -> Outcome:
        metrics = self._metrics
        metrics.received.inc()
        metrics.in_flight.inc()
        token = _logs.enter(self._binding, envelope.destination) if self._logs else None
        start = time.perf_counter()
        try:
            return await self._inner(envelope)
        finally:
            metrics.duration.observe(time.perf_counter() - start)
            metrics.in_flight.dec()
            if token is not None:
                _logs.leave(token)

    def unreadable(self, exc: BaseException, where: str) -> Outcome:
        self._metrics.received.inc()
        return self._inner.unreadable(exc, where)


class AppMetrics:
    """The registry of one app's metrics (one per app, so that apps in one process and apps
    started again do not collide); ``exposition()`` is the text ``/metrics`` serves."""

    def __init__(self, health: Health) -> None:
        assert prometheus_client is not None, "AppMetrics needs prometheus-client"
        pc = prometheus_client
        self.registry = registry = pc.CollectorRegistry(auto_describe=True)

        def counter(name: str, doc: str, label: str) -> Any:
            return pc.Counter(name, doc, [label], registry=registry)

        self._received = counter(
            "streamlib_messages_received", "Messages handed to a binding's handler.", "binding"
        )
        self._handled = counter(
            "streamlib_messages_handled",
            "Messages whose handler (and output send) succeeded.",
            "binding",
        )
        self._failed = counter(
            "streamlib_messages_failed",
            "Messages that failed for good, after their last attempt.",
            "binding",
        )
        self._retried = counter(
            "streamlib_messages_retried", "Attempts made again after a failure.", "binding"
        )
        self._dead_lettered = counter(
            "streamlib_messages_dead_lettered", "Failed messages sent to the DLQ.", "binding"
        )
        self._in_flight = pc.Gauge(
            "streamlib_messages_in_flight",
            "Messages being handled (retries included).",
            ["binding"],
            registry=registry,
        )
        self._duration = pc.Histogram(
            "streamlib_handler_duration_seconds",
            "Time from dispatch to outcome: decode, handler, output send and retries.",
            ["binding"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._sent = counter(
            "streamlib_messages_sent", "Sends the broker confirmed.", "destination"
        )
        self._send_failures = counter(
            "streamlib_send_failures", "Sends the broker refused or never confirmed.", "destination"
        )
        registry.register(_HealthCollector(health))

    def binding(self, name: str) -> BindingMetrics:
        return BindingMetrics(
            self._received.labels(name),
            self._handled.labels(name),
            self._failed.labels(name),
            self._retried.labels(name),
            self._dead_lettered.labels(name),
            self._in_flight.labels(name),
            self._duration.labels(name),
        )

    def destination(self, destination: str) -> DestinationMetrics:
        return DestinationMetrics(
            self._sent.labels(destination), self._send_failures.labels(destination)
        )

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        assert prometheus_client is not None
        return prometheus_client.generate_latest(self.registry)


if prometheus_client is not None:

    class _HealthCollector(Collector):
        """What binders report in ``health()``, read at scrape time rather than updated per
        message: a binding's ``lag`` per partition and a binder's ``reconnects``."""

        def __init__(self, health: Health) -> None:
            self._health = health

        def describe(self) -> Iterator[Any]:
            return iter(())

        def collect(self) -> Iterator[Any]:
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
            health = self._health()
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
