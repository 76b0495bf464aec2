"""Consuming: one channel and one consumer per queue, ``concurrency`` workers, manual acks.

Deliveries are taken from aiormq directly (aio-pika would wrap each in an ``IncomingMessage``
and a second task) into a buffer that the workers drain. With one worker, messages are
handled strictly in delivery order. A message is acknowledged only after its handler and any
output confirmation finished, or after it was dead-lettered. Acks go out in batches when half
the prefetch is finished or no new message came for ``ACK_DELAY``; which frames are safe to
send (on which channel, covering which tags) is decided by ``acks.AckLedger``.

A batch handler's worker takes up to ``batch-size`` buffered deliveries at a time (waiting
up to ``batch-wait-ms`` after the first for more), hands the readable ones to
``dispatch_batch`` and then acts on each outcome in delivery order, as for one message. A
batch never holds more than ``prefetch`` deliveries: the broker sends no more until some are
acked.

The channel is an aio-pika robust channel: after a reconnection it declares the queue again
and calls back here to consume again. Deliveries of the lost channel are dropped unacked, also
those whose handlers finish after the reconnection; the broker delivers them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, cast

import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

from streamlib.binder import (
    ACK,
    CONTENT_TYPE,
    X_EXCEPTION_STACKTRACE,
    BaseBinding,
    Batching,
    ConfigError,
    ConnectionLostError,
    ConsumerSpec,
    Dispatcher,
    Envelope,
    Failure,
    Outcome,
    RetryPolicy,
    StreamlibError,
)

from . import naming, timestamps
from .acks import AckLedger, Action, Settle
from .attributes import DeliveryExtras
from .errors import map_error
from .limits import DEFAULT_FRAME_MAX, fit_headers, truncated
from .naming import QueuePlan
from .producer import Publisher
from .provisioning import RabbitProvisioner
from .settings import RabbitConsumerSettings

log = logging.getLogger("streamlib.rabbit")


def _deliver(message: DeliveredMessage) -> Basic.Deliver:
    return cast(Basic.Deliver, message.delivery)


def _tag(message: DeliveredMessage) -> int:
    return cast(int, cast(Basic.Deliver, message.delivery).delivery_tag)


ACK_DELAY = 0.002
"""Seconds a batched ack waits for more messages when the buffer ran empty."""
SETTLE_TIMEOUT = 10.0
"""Seconds an ack or reject may wait for room in the connection's write queue."""
RECOVERY_INTERVAL = 1.0
"""Seconds between attempts to consume again after the broker cancelled the consumer."""
HEADROOM = 20_000
"""Bytes of a frame kept free for other headers when a stack trace is added (as Spring)."""
DEAD_LETTER_ATTEMPTS = 3
"""Writes of one dead letter (with the binding's back-off between) before it is requeued."""
SETTLED_ROUNDS = 3
"""Event-loop rounds without a new delivery after which a batch takes no more."""


def envelope_of(
    message: DeliveredMessage, destination: str, partition: int | None, queue: str
) -> Envelope:
    """The streamlib envelope of a delivery: ``content_type`` back as the contentType header,
    the key from its header, the delivery tag as offset.

    Raises ValueError for a timestamp (property or header) the client could not represent."""
    props = message.header.properties
    # A copy: a dead letter is republished with the delivery's own headers, untouched.
    headers: dict[str, Any] = dict(props.headers) if props.headers else {}
    timestamps.check(props.timestamp, headers)
    key = headers.pop(naming.KEY_HEADER, None) if headers else None
    if props.content_type is not None:
        headers[CONTENT_TYPE] = props.content_type
    stamp = props.timestamp
    return Envelope(
        message.body,
        headers,
        key,
        destination,
        partition,
        _tag(message),
        stamp.timestamp() if stamp is not None else None,
        DeliveryExtras(message, queue),
        props.message_id,
    )


def batch_size(spec: ConsumerSpec, settings: RabbitConsumerSettings, batching: Batching) -> int:
    """The most deliveries one batch takes: ``batch-size``, within the prefetch.

    A batch larger than the prefetch could never fill (the broker sends nothing more until
    some of it is acked), so it would wait out ``batch-wait-ms`` every time: an explicit
    ``batch-size`` above the prefetch is a ConfigError, the default one is capped."""
    if batching.size <= settings.prefetch:
        return batching.size
    if "batch_size" in spec.properties.model_fields_set:
        raise ConfigError(
            f"bindings.{spec.binding_name}.consumer.batch-size",
            f"{batching.size} is more than the prefetch ({settings.prefetch}), so a batch "
            f"could never fill: lower batch-size or raise prefetch",
        )
    log.debug(
        "binding %s: batches of at most %d (the prefetch), not the default batch-size %d",
        spec.binding_name,
        settings.prefetch,
        batching.size,
    )
    return settings.prefetch


class QueueConsumer:
    """Consumes one queue on its own robust channel."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        spec: ConsumerSpec,
        plan: QueuePlan,
        settings: RabbitConsumerSettings,
        dispatch: Dispatcher,
        dead_letters: Publisher | None,
    ) -> None:
        self._connection = connection
        self._spec = spec
        self._plan = plan
        self._settings = settings
        self._dispatch = dispatch
        self._dead_letters = dead_letters
        batching = dispatch.batching
        self._batch_size = 0 if batching is None else batch_size(spec, settings, batching)
        self._batch_wait = 0.0 if batching is None else batching.wait
        self._channel: AbstractRobustChannel | None = None
        self._raw: aiormq.Channel | None = None
        self._tag: str | None = None
        self._consuming = False
        self._buffer: deque[DeliveredMessage] = deque()
        self._ready = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._ack_batch = max(1, settings.prefetch // 2)
        self._policy = RetryPolicy.from_properties(spec.properties)
        self._ledger: AckLedger[AbstractChannel] = AckLedger()
        self._settling = asyncio.Lock()
        self._recovery: asyncio.Task[None] | None = None

    @property
    def queue(self) -> str:
        return self._plan.name

    @property
    def consuming(self) -> bool:
        return self._consuming

    async def open(self) -> None:
        """Open the channel, set the prefetch, declare the queue (and DLQ)."""
        try:
            channel = await self._connection.channel(publisher_confirms=False)
        except Exception as exc:
            raise map_error(exc, f"open a channel for {self.queue!r}") from exc
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        try:
            await channel.set_qos(prefetch_count=self._settings.prefetch)
            provisioner = RabbitProvisioner(channel)
            await provisioner.exchange(self._spec.destination, self._settings)
            await provisioner.queue(self._spec.destination, self._plan)
        except BaseException:
            await channel.close()
            raise
        channel.reopen_callbacks.add(self._on_reopen)

    async def _on_reopen(self, _: Any) -> None:
        # A new channel: deliveries of the old one can no longer be acknowledged.
        self._buffer.clear()
        self._ledger.reset()
        self._raw = None
        if self._consuming:
            await self._consume()

    async def _consume(self) -> None:
        assert self._channel is not None
        raw = await self._channel.get_underlay_channel()
        assert isinstance(raw, aiormq.Channel)
        self._raw = raw
        if self._on_cancel not in raw.on_consumer_cancel_callbacks:
            raw.on_consumer_cancel_callbacks.add(self._on_cancel)
        ok = await raw.basic_consume(
            self.queue, self._on_delivery, exclusive=self._settings.exclusive
        )
        self._tag = ok.consumer_tag

    def _on_cancel(self, frame: Basic.Cancel) -> None:
        # The broker cancels a consumer whose queue was deleted (or whose quorum queue
        # moved): declare the queue again and consume, as Spring's container does.
        if frame.consumer_tag != self._tag or not self._consuming:
            return
        self._tag = None
        log.warning("the broker cancelled the consumer of %s; recovering", self.queue)
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover(), name=f"recover:{self.queue}")

    async def _recover(self) -> None:
        assert self._channel is not None
        while self._consuming and self._tag is None:
            await asyncio.sleep(RECOVERY_INTERVAL)
            try:
                await RabbitProvisioner(self._channel).queue(self._spec.destination, self._plan)
                await self._consume()
            except Exception as exc:
                log.warning("recovering the consumer of %s failed: %s", self.queue, exc)

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        self._ledger.deliver(message.channel, _tag(message))
        self._buffer.append(message)
        self._ready.set()

    async def start(self) -> None:
        """Start the workers and consume; returns once the broker confirmed the consumer."""
        if self._consuming:
            return
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"{self._spec.binding_name}:{self.queue}")
                for _ in range(self._spec.properties.concurrency)
            ]
        self._consuming = True
        try:
            await self._consume()
        except Exception as exc:
            self._consuming = False
            raise map_error(exc, f"consume {self.queue!r}") from exc

    async def pause(self) -> None:
        """Cancel the consumer and give back what was delivered but not yet handled."""
        if not self._consuming:
            return
        self._consuming = False
        self._ready.set()  # a worker gathering a batch stops waiting for more
        raw, tag = self._raw, self._tag
        self._tag = None
        if raw is not None and tag is not None and not raw.is_closed:
            try:
                await raw.basic_cancel(tag, timeout=SETTLE_TIMEOUT)
            except Exception as exc:
                log.warning("cancelling the consumer of %s failed: %r", self.queue, exc)
        await self._requeue_buffer()

    async def stop(self) -> None:
        """Stop consuming, let in-flight messages finish and acknowledge them."""
        await self.pause()
        if self._busy:
            self._idle.clear()
            await self._idle.wait()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        await self._flush()

    async def close(self) -> None:
        await self.stop()
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        if self._channel is not None:
            self._channel.reopen_callbacks.discard(self._on_reopen)
            await self._channel.close()
            self._channel = None

    async def _requeue_buffer(self) -> None:
        while self._buffer:
            message = self._buffer.popleft()
            await self._finish(message, Action.REQUEUE)

    async def _work(self) -> None:
        buffer = self._buffer
        ready = self._ready
        while True:
            if not buffer:
                ready.clear()
                if self._ledger.finished:
                    # Acks wait a moment for more messages, so one frame acks many.
                    try:
                        async with asyncio.timeout(ACK_DELAY):
                            await ready.wait()
                    except TimeoutError:
                        await self._flush()
                    continue
                await ready.wait()
                continue
            message = buffer.popleft()
            self._busy += 1
            try:
                if self._batch_size:
                    await self._handle_batch(await self._gather(message))
                else:
                    await self._handle(message)
            finally:
                self._busy -= 1
                if not self._busy:
                    self._idle.set()

    async def _handle(self, message: DeliveredMessage) -> None:
        if message.channel is not self._raw:
            return  # from a channel lost since: the broker redelivers it
        outcome: Outcome | None
        try:
            envelope = self._envelope(message)
        except Exception as exc:
            outcome = self._dispatch.unreadable(exc, f"{self.queue} delivery {_tag(message)}")
        else:
            outcome = await self._dispatch_until_confirmed(message, envelope)
        if outcome is not None:
            await self._conclude(message, outcome)

    def _envelope(self, message: DeliveredMessage) -> Envelope:
        return envelope_of(message, self._spec.destination, self._plan.partition, self.queue)

    async def _conclude(self, message: DeliveredMessage, outcome: Outcome) -> None:
        """Dead-letter a failure, then ack; or just ack (outputs are confirmed by now)."""
        if outcome.failure is not None:
            await self._dead_letter(message, outcome.failure)
            return
        await self._ack(message)

    async def _gather(self, first: DeliveredMessage) -> list[DeliveredMessage]:
        """``first`` and what else is buffered, up to the batch size, waiting up to the batch
        wait after ``first`` for more (not once the consumer is paused or stopped)."""
        batch = [first]
        size = self._batch_size
        buffer = self._buffer
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._batch_wait
        idle = 0
        while len(batch) < size and self._consuming:
            if buffer:
                take = min(size - len(batch), len(buffer))
                batch.extend(buffer.popleft() for _ in range(take))
                idle = 0
                continue
            if idle < SETTLED_ROUNDS:
                # Deliveries already read from the socket reach the buffer through a few
                # event-loop rounds (frames, then one task per delivery): let them arrive.
                idle += 1
                await asyncio.sleep(0)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if self._ledger.finished:
                await self._flush()  # acks make room in the prefetch for more deliveries
                continue
            self._ready.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._ready.wait()
            except TimeoutError:
                break
        return batch

    async def _handle_batch(self, messages: list[DeliveredMessage]) -> None:
        """Dispatch a batch, then act on each outcome in delivery order.

        Outcomes may share one ``pending`` (the batch's outputs); it is awaited once. If it
        failed, none of the deliveries sharing it is acked: each is handled again alone, in
        order, by the one-at-a-time rules (the batch counts as its first attempt)."""
        live = [m for m in messages if m.channel is self._raw]  # others: redelivered
        outcomes: list[Outcome | None] = [None] * len(live)
        envelopes: list[Envelope | None] = [None] * len(live)
        readable: list[int] = []
        for i, message in enumerate(live):
            try:
                envelopes[i] = self._envelope(message)
                readable.append(i)
            except Exception as exc:
                where = f"{self.queue} delivery {_tag(message)}"
                outcomes[i] = self._dispatch.unreadable(exc, where)
        if readable:
            batch = [e for e in envelopes if e is not None]
            results = await self._dispatch.dispatch_batch(batch)
            for i, result in zip(readable, results, strict=True):
                outcomes[i] = result
        confirmed: dict[int, Exception | None] = {}
        for message, envelope, outcome in zip(live, envelopes, outcomes, strict=True):
            assert outcome is not None
            pending = outcome.pending
            if pending is not None and envelope is not None:
                # Every pending is referenced by ``outcomes``: ids are not reused here.
                if id(pending) not in confirmed:
                    try:
                        await pending
                        confirmed[id(pending)] = None
                    except Exception as exc:
                        confirmed[id(pending)] = exc
                error = confirmed[id(pending)]
                if error is not None:
                    again = await self._dispatch_until_confirmed(message, envelope, error)
                    if again is None:
                        continue
                    outcome = again
            await self._conclude(message, outcome)

    async def _dispatch_until_confirmed(
        self, message: DeliveredMessage, envelope: Envelope, failed: Exception | None = None
    ) -> Outcome | None:
        """Dispatch until the outputs are confirmed, in place, so order holds.

        An output the broker refused (nacked, 404, 403, ...) is a failure of this message:
        it is handled again per the binding's retry policy, then dead-lettered or dropped
        with the broker's reason. A lost producer connection is not the message's fault: it
        is tried again with back-off until it works or the consumer stops. Returns None when
        the message was given back (stopping, or its channel is gone). ``failed``: the
        message was dispatched once already (in a batch) and its output failed so."""
        attempt = 0
        lost = 0
        while True:
            attempt += 1
            if failed is not None:
                error, failed = failed, None
            else:
                outcome = await self._dispatch(envelope)
                if outcome.pending is None:
                    return outcome
                try:
                    await outcome.pending
                    return outcome
                except Exception as exc:
                    error = exc
            if message.channel.is_closed:
                return None  # the broker redelivers it
            if isinstance(error, ConnectionLostError):
                lost += 1
                attempt -= 1
                if not self._consuming:
                    await self._settle(message, requeue=True)
                    return None
                delay = self._policy.backoff(lost)
            elif self._policy.should_retry(error, attempt):
                delay = self._policy.backoff(attempt)
            else:
                return self._output_failed(error, attempt)
            log.warning(
                "binding %s: output of a message from %s was not confirmed (%s); "
                "handling it again in %.3gs",
                self._spec.binding_name,
                self.queue,
                error,
                delay,
            )
            await asyncio.sleep(delay)

    def _output_failed(self, exc: Exception, attempts: int) -> Outcome:
        failure = Failure(exc, attempts)
        if self._plan.dlq is not None:
            log.warning(
                "binding %s: output of a message from %s failed after %d attempt(s), "
                "dead-lettering: %s",
                self._spec.binding_name,
                self.queue,
                attempts,
                failure.reason,
            )
            return Outcome(failure=failure)
        log.error(
            "binding %s: output of a message from %s failed after %d attempt(s) and the "
            "message is dropped (no DLQ): %s",
            self._spec.binding_name,
            self.queue,
            attempts,
            failure.reason,
        )
        return ACK

    async def _ack(self, message: DeliveredMessage) -> None:
        await self._finish(message, Action.ACK)

    async def _settle(self, message: DeliveredMessage, requeue: bool) -> None:
        """Reject ``message``: back to the queue, or dead-lettered by the broker."""
        await self._finish(message, Action.REQUEUE if requeue else Action.REJECT)

    async def _finish(self, message: DeliveredMessage, action: Action) -> None:
        """Record the outcome; rejects are sent at once, acks when a batch is full (or by the
        idle worker after ``ACK_DELAY``)."""
        if not self._ledger.finish(message.channel, _tag(message), action):
            return  # its channel is gone: the broker redelivers it
        if action is not Action.ACK or self._ledger.finished >= self._ack_batch:
            await self._flush()

    async def _flush(self) -> None:
        # One flush at a time: frames must reach the broker in the order the ledger gave
        # them, or a later multiple-ack would settle a tag an earlier frame names.
        async with self._settling:
            for frame in self._ledger.flush():
                await self._write(frame)

    async def _write(self, frame: Settle[AbstractChannel]) -> None:
        channel = cast(aiormq.Channel, frame.channel)
        if channel.is_closed:
            return  # the channel is gone; the broker redelivers unacknowledged messages
        try:
            # Waits only when the connection's write queue is full; a connection that died
            # unnoticed never drains it, so the wait is bounded.
            async with asyncio.timeout(SETTLE_TIMEOUT if channel.write_queue.full() else None):
                if frame.action is Action.ACK:
                    await channel.basic_ack(frame.tag, multiple=frame.multiple, wait=False)
                else:
                    requeue = frame.action is Action.REQUEUE
                    await channel.basic_reject(frame.tag, requeue=requeue, wait=False)
        except (aiormq.exceptions.ChannelInvalidStateError, TimeoutError):
            return

    async def _dead_letter(self, message: DeliveredMessage, failure: Failure) -> None:
        """Republish to the DLX with the exception headers, then ack; or let the broker
        dead-letter it (reject without requeue) when republishing is off.

        A dead letter that cannot be written is tried ``DEAD_LETTER_ATTEMPTS`` times with the
        binding's back-off, then goes back to the queue (and through its handler again)."""
        if self._dead_letters is None or not self._settings.republish_to_dlq:
            await self._settle(message, requeue=False)
            return
        props = message.header.properties
        headers: dict[str, Any] = dict(props.headers or {})
        headers.update(failure.dead_letter_headers())
        frame_max = message.channel.connection.connection_tune.frame_max or DEFAULT_FRAME_MAX
        trace = headers[X_EXCEPTION_STACKTRACE].encode()
        limit = max(1_000, frame_max - HEADROOM)
        if len(trace) > limit:
            headers[X_EXCEPTION_STACKTRACE] = truncated(trace, limit)
        headers["x-original-exchange"] = _deliver(message).exchange
        headers["x-original-routingKey"] = _deliver(message).routing_key
        previous = headers.get("retry-count")
        headers["retry-count"] = (previous if isinstance(previous, int) else 0) + 1
        props.headers = headers
        try:
            fit_headers(props, len(message.body), frame_max)
        except ValueError as exc:
            log.error(
                "binding %s: a dead letter from %s: %s", self._spec.binding_name, self.queue, exc
            )
        attempt = 0
        while True:
            attempt += 1
            try:
                confirm = await self._dead_letters.publish(
                    self._settings.dead_letter_exchange, self.queue, message.body, props
                )
                await confirm
            except (StreamlibError, aiormq.exceptions.AMQPError) as exc:
                if message.channel.is_closed:
                    return  # the broker redelivers it
                if attempt < DEAD_LETTER_ATTEMPTS:
                    delay = self._policy.backoff(attempt)
                    log.warning(
                        "binding %s: dead-lettering a message from %s failed (attempt %d: %s); "
                        "trying again in %.3gs",
                        self._spec.binding_name,
                        self.queue,
                        attempt,
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                log.error(
                    "binding %s: dead-lettering a message from %s failed %d times (%s); it "
                    "goes back to the queue",
                    self._spec.binding_name,
                    self.queue,
                    attempt,
                    exc,
                )
                await self._settle(message, requeue=True)
                return
            break
        await self._ack(message)


class RabbitBinding(BaseBinding):
    """A bound consumer: one ``QueueConsumer`` per queue (several when partitioned)."""

    def __init__(self, spec: ConsumerSpec, consumers: list[QueueConsumer]) -> None:
        super().__init__(spec)
        self._consumers = consumers
        self._started = False

    @property
    def queues(self) -> list[str]:
        return [c.queue for c in self._consumers]

    @property
    def is_running(self) -> bool:
        return self._started and all(c.consuming for c in self._consumers)

    async def start(self) -> None:
        for consumer in self._consumers:
            await consumer.start()
        self._started = True

    async def stop(self) -> None:
        self._started = False
        await asyncio.gather(*(c.stop() for c in self._consumers))

    async def pause(self) -> None:
        await asyncio.gather(*(c.pause() for c in self._consumers))

    async def resume(self) -> None:
        if self._started:
            for consumer in self._consumers:
                await consumer.start()

    async def unbind(self) -> None:
        self._started = False
        await asyncio.gather(*(c.close() for c in self._consumers))
