"""Batch handling for a consumer binding whose handler takes a list: one call per batch,
failed records retried one at a time, per-record outcomes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from time import perf_counter
from typing import Any

import anyio

from ._dispatch import HandlerDispatcher, _where
from .binder import ACK, CONTENT_TYPE, Outcome
from .errors import BatchFailed, StreamlibError
from .messages import Envelope, Message
from .retry import Failure

log = logging.getLogger("streamlib.consumer")
_UNSET = object()


class BatchDispatcher(HandlerDispatcher):
    """The core ``Dispatcher`` of a binding whose handler takes a list.

    ``dispatch_batch`` calls the handler once with every record that decodes. Records the
    call failed (all of them when it raised, the listed ones when it raised ``BatchFailed``)
    are then tried again one at a time, each alone in a list of one, as the retry policy says
    (the batch call was their first attempt); the others are never called again. A
    processor's outputs (its returned list, or ``BatchFailed.results``) are handed to
    ``emit`` as one list; its confirmation is the ``pending`` of every record that succeeded
    in that call. ``__call__`` is a batch of one.
    """

    async def __call__(self, envelope: Envelope) -> Outcome:
        return (await self.dispatch_batch((envelope,)))[0]

    async def dispatch_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        """Every record counted as received; each reaches its outcome when the batch does
        (retries of its failed records included)."""
        metrics = self._metrics
        metrics.received += len(envelopes)
        if not self._timed or not envelopes:
            return await self._dispatch_batch(envelopes)
        start = perf_counter()
        try:
            return await self._dispatch_batch(envelopes)
        finally:
            metrics.observe_many(perf_counter() - start, len(envelopes))

    async def _dispatch_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        failed: dict[int, BaseException] = {}
        args = self._decoded(envelopes, failed)
        if not args:
            outcomes: list[Outcome] = [ACK] * len(envelopes)
        else:
            pending, failures = await self._attempt(args)
            succeeded = ACK if pending is None else Outcome(pending=pending)
            outcomes = [succeeded] * len(envelopes)
            if failures:
                # Positions of the decoded records among ``envelopes``.
                positions = [i for i in range(len(envelopes)) if i not in failed]
                for local, failure in failures.items():
                    failed[positions[local]] = failure
            self._metrics.handled += len(args) - len(failures)
        for index in sorted(failed):
            outcomes[index] = await self._retry_alone(envelopes[index], failed[index])
        return outcomes

    def _decoded(
        self, envelopes: Sequence[Envelope], undecodable: dict[int, BaseException]
    ) -> list[Any]:
        """The handler's argument for each of ``envelopes`` that decodes, in order; the
        others' errors go to ``undecodable`` by index (they take the one-at-a-time path).
        A batch's records mostly share one ``contentType``, so its body decoder is looked up
        once per run of equal headers, not once per record."""
        decoder, wants_message, received = self._decoder, self._wants_message, Message._received
        args: list[Any] = []
        append = args.append
        last: object = _UNSET
        decode: Any = None
        mime = ""
        for index, envelope in enumerate(envelopes):
            content_type = envelope.headers.get(CONTENT_TYPE)
            if content_type is not last:
                try:
                    decode, mime = decoder.for_header(content_type)
                except Exception as exc:
                    undecodable[index] = exc
                    continue
                last = content_type
            try:
                payload = decode(envelope.body)
            except ValueError as exc:
                undecodable[index] = decoder.error(mime, exc)
                continue
            except Exception as exc:
                undecodable[index] = exc
                continue
            append(received(payload, envelope, 1) if wants_message else payload)
        return args

    def _arg(self, envelope: Envelope, attempt: int) -> Any:
        payload = self._decoder(envelope.body, envelope.headers)
        return Message._received(payload, envelope, attempt) if self._wants_message else payload

    async def _attempt(
        self, args: list[Any]
    ) -> tuple[Awaitable[None] | None, dict[int, BaseException]]:
        """Call the handler with ``args`` and send its outputs: (their confirmation, the
        failed records by index into ``args``)."""
        try:
            results = await self._handler(args)
            failures: dict[int, BaseException] = {}
        except BatchFailed as exc:
            bad = [i for i in exc.failures if not (isinstance(i, int) and 0 <= i < len(args))]
            if bad:
                error = StreamlibError(
                    f"binding {self.binding}: the handler raised BatchFailed for index "
                    f"{bad[0]!r}, not an index of its list of {len(args)}"
                )
                return None, dict.fromkeys(range(len(args)), error)
            results, failures = exc.results, exc.failures
        except Exception as exc:
            return None, dict.fromkeys(range(len(args)), exc)
        if results is None or self._emit is None or len(failures) == len(args):
            return None, failures
        try:
            return await self._emit(results), failures
        except Exception as exc:
            # The outputs of the records that succeeded were not sent: they failed too.
            return None, {**dict.fromkeys(range(len(args)), exc), **failures}

    async def _retry_alone(self, envelope: Envelope, exc: BaseException) -> Outcome:
        """The outcome of a record whose first attempt failed with ``exc``: tried again alone
        while the policy allows, then given up."""
        attempt = 1
        while self.policy.should_retry(exc, attempt):
            delay = self.policy.backoff(attempt)
            self._metrics.retried += 1
            log.info(
                "binding %s: attempt %d of message %s failed (%s: %s); retrying it alone in %.3gs",
                self.binding,
                attempt,
                _where(envelope),
                type(exc).__name__,
                exc,
                delay,
            )
            await anyio.sleep(delay)
            attempt += 1
            try:
                arg = self._arg(envelope, attempt)
            except Exception as decode_error:
                exc = decode_error
                continue
            pending, failures = await self._attempt([arg])
            if not failures:
                self._metrics.handled += 1
                return ACK if pending is None else Outcome(pending=pending)
            exc = failures[0]
        return self._give_up(_where(envelope), Failure(exc, attempt))
