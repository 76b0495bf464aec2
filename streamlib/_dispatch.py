"""Per-message handling for a consumer binding: decode, call, retry, emit, decide."""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter
from typing import Any

import anyio

from ._metrics import DURATION_BUCKETS, BindingMetrics
from .binder import ACK, Batching, Outcome
from .converters import PayloadDecoder
from .messages import Envelope, Message
from .retry import Failure, RetryPolicy
from .tracing import record_failure

log = logging.getLogger("streamlib.consumer")

_FIRST_BUCKET = DURATION_BUCKETS[0]
"""Where most handling times fall, so the histogram is mostly told without a bisection."""

Emit = Callable[[Any], Awaitable[Awaitable[None] | None]]


class HandlerDispatcher:
    """The core ``Dispatcher`` for one binding.

    Retries happen in place with back-off, so later messages of the same partition wait
    (order holds). A processor's output is sent before the outcome is returned; its broker
    confirmation travels back as ``Outcome.pending`` so the binder acks only after it.
    It counts every message in the binding's metrics and, when the app has metrics, how long
    each takes to reach its outcome (retries included).
    """

    def __init__(
        self,
        binding: str,
        handler: Callable[[Any], Awaitable[Any]],
        decoder: PayloadDecoder,
        wants_message: bool,
        policy: RetryPolicy,
        dlq: bool,
        emit: Emit | None,
        metrics: BindingMetrics | None = None,
        batching: Batching | None = None,
    ) -> None:
        self.binding = binding
        self.batching = batching
        self.policy = policy
        self._handler = handler
        self._decoder = decoder
        self._wants_message = wants_message
        self._dlq = dlq
        self._emit = emit
        self._metrics = metrics if metrics is not None else BindingMetrics()
        self._timed = metrics is not None

    async def __call__(self, envelope: Envelope) -> Outcome:
        metrics = self._metrics
        metrics.received += 1
        timed = self._timed
        start = perf_counter() if timed else 0.0
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    payload = self._decoder(envelope.body, envelope.headers)
                    arg = (
                        Message._received(payload, envelope, attempt)
                        if self._wants_message
                        else payload
                    )
                    result = await self._handler(arg)
                    emit = self._emit
                    pending = None if result is None or emit is None else await emit(result)
                    metrics.handled += 1
                    return ACK if pending is None else Outcome(pending=pending)
                except Exception as exc:
                    if self.policy.should_retry(exc, attempt):
                        delay = self.policy.backoff(attempt)
                        metrics.retried += 1
                        log.info(
                            "binding %s: attempt %d failed (%s: %s); retrying in %.3gs",
                            self.binding,
                            attempt,
                            type(exc).__name__,
                            exc,
                            delay,
                        )
                        await anyio.sleep(delay)
                        continue
                    return self._give_up(_where(envelope), Failure(exc, attempt))
        finally:
            if timed:  # BindingMetrics.observe, inlined: this runs for every message
                seconds = perf_counter() - start
                bucket = 0 if seconds <= _FIRST_BUCKET else bisect_left(DURATION_BUCKETS, seconds)
                metrics.duration_counts[bucket] += 1
                metrics.duration_sum += seconds

    async def dispatch_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        return [await self(envelope) for envelope in envelopes]

    def unreadable(self, exc: BaseException, where: str) -> Outcome:
        self._metrics.received += 1
        return self._give_up(where, Failure(exc, 1))

    def _give_up(self, where: str, failure: Failure) -> Outcome:
        self._metrics.failed += 1
        record_failure(failure.exception)
        if self._dlq:
            self._metrics.dead_lettered += 1
            log.warning(
                "binding %s: message %s failed after %d attempt(s), dead-lettering: %s: %s",
                self.binding,
                where,
                failure.attempts,
                failure.fqcn,
                failure.reason,
            )
            return Outcome(failure=failure)
        log.error(
            "binding %s: message %s failed after %d attempt(s) and is dropped (no DLQ): %s: %s",
            self.binding,
            where,
            failure.attempts,
            failure.fqcn,
            failure.reason,
            exc_info=failure.exception,
        )
        return ACK


def _where(envelope: Envelope) -> str:
    parts = [envelope.destination or "?"]
    if envelope.partition is not None:
        parts.append(f"partition {envelope.partition}")
    if envelope.offset is not None:
        parts.append(f"offset {envelope.offset}")
    return " ".join(parts)
