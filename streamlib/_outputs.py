"""Outgoing bindings: payload encoding, partition selection, and the bound producer."""

from __future__ import annotations

import asyncio
import importlib
import logging
import typing
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, Protocol

import orjson
from pydantic import BaseModel

from ._metrics import DestinationMetrics
from .binder import DONE, BulkProducer, Producer
from .config import BindingProperties, did_you_mean
from .converters import encode
from .errors import ConfigError, MessageConversionError
from .messages import APPLICATION_JSON, CONTENT_TYPE, Envelope, Message
from .partitioning import PartitionSelector, default_partition_selector, select_partition
from .tracing import TracedSend

log = logging.getLogger("streamlib.app")

KeyExtractor = Callable[[Any, Mapping[str, Any], Any], Any]


def import_object(path: str, key: str) -> Any:
    """``package.module:attribute`` -> the object; ConfigError naming ``key`` otherwise."""
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(key, f"cannot import {path!r}: {exc}") from None
    return obj


def _field(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(name)
    if isinstance(value, str | bytes):
        try:
            return _field(orjson.loads(value), name)
        except orjson.JSONDecodeError:
            return None
    return getattr(value, name, None)


def key_extractor(expression: str | None, key: str) -> KeyExtractor:
    """A function ``(payload, headers, message_key) -> partition key`` for ``expression``.

    ``payload.a.b`` reads a field of the payload (a model, a mapping, or a JSON string),
    ``headers.h`` a header, ``key`` the message key, and ``module:function`` calls a function
    with the payload. Without an expression the message key is used.
    """
    if expression is None or expression == "key":
        return lambda payload, headers, msg_key: msg_key
    if ":" in expression:
        fn = import_object(expression, key)
        if not callable(fn):
            raise ConfigError(key, f"{expression!r} is not callable")
        return lambda payload, headers, msg_key: fn(payload)
    root, *path = expression.split(".")
    if root not in ("payload", "headers") or (root == "headers" and len(path) != 1):
        raise ConfigError(
            key,
            f"{expression!r} is not 'key', 'payload.<field>...', 'headers.<name>' or 'module:fn'",
        )

    def extract(payload: Any, headers: Mapping[str, Any], msg_key: Any) -> Any:
        value: Any = payload if root == "payload" else headers
        for name in path:
            value = _field(value, name)
            if value is None:
                return None
        return value

    return extract


def check_partition_key(expression: str | None, model: Any, key: str, handler: str) -> None:
    """Fail when ``payload.a.b`` names a field that ``model`` (a handler's annotated result)
    does not have; nothing is checked where the type is not a pydantic model."""
    if not expression or not expression.startswith("payload."):
        return
    target = model
    for name in expression.split(".")[1:]:
        if not (isinstance(target, type) and issubclass(target, BaseModel)):
            return
        fields = target.model_fields
        field = next((f for n, f in fields.items() if name in (n, f.alias)), None)
        if field is None:
            raise ConfigError(
                key,
                f"{target.__name__} (returned by {handler}) has no field {name!r}"
                + did_you_mean(name, list(fields)),
            )
        target = field.annotation
        args = [a for a in typing.get_args(target) if a is not type(None)]
        if len(args) == 1:
            target = args[0]


class AllConfirmed:
    """The confirmation of several sends as one, which may be awaited any number of times
    (the records of a batch share it): the first await waits for every one of them, later
    awaits return or raise as it did (the first failure; all are waited for)."""

    __slots__ = ("_confirms", "_done", "_error", "_waiters")

    def __init__(self, confirms: Iterable[Awaitable[None]]) -> None:
        self._confirms = list(confirms)
        self._done = False
        self._error: BaseException | None = None
        self._waiters: list[asyncio.Future[None]] | None = None

    def __await__(self) -> Generator[Any, None, None]:
        if self._done:
            if self._error is not None:
                raise self._error
            return
        if self._waiters is not None:  # another await is waiting for the sends already
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            yield from waiter.__await__()
            return
        self._waiters = []
        error: BaseException | None = None
        try:
            for confirm in self._confirms:
                try:
                    yield from confirm.__await__()
                except Exception as exc:
                    error = error or exc
        except BaseException:
            waiters, self._waiters = self._waiters, None
            for waiting in waiters:
                waiting.cancel()
            raise
        self._done, self._error, self._confirms = True, error, []
        waiters, self._waiters = self._waiters, None
        for waiting in waiters:
            if error is None:
                waiting.set_result(None)
            else:
                waiting.set_exception(error)
        if error is not None:
            raise error


async def send_each(producer: Producer, envelopes: Sequence[Envelope]) -> Awaitable[None]:
    """Hand ``envelopes`` to ``producer`` in order, in one bulk where it can; the confirmation
    of all of them."""
    if isinstance(producer, BulkProducer):
        return await producer.send_many(envelopes)
    return AllConfirmed([await producer.send(envelope) for envelope in envelopes])


async def send_results(
    results: Any,
    what: str,
    check: Callable[[Any], None] | None,
    output: Output,
    send_many_to: Callable[[str, list[Any]], Awaitable[Awaitable[None]]],
) -> Awaitable[None] | None:
    """Send a batch processor's ``results``: its non-None items checked, then one bulk send
    per destination (a ``Message``'s own through ``send_many_to``, else ``output``); the one
    confirmation of all of them, None when there was nothing to send. Raises
    MessageConversionError naming ``what`` when ``results`` is no list."""
    if not isinstance(results, list | tuple):
        raise MessageConversionError(
            f"{what} takes a list and returned {type(results).__name__}, not a list"
        )
    by_destination: dict[str | None, list[Any]] = {}
    for item in results:
        if item is None:
            continue
        if check is not None:
            check(item)
        routed = item.destination if isinstance(item, Message) else None
        by_destination.setdefault(routed or None, []).append(item)
    confirms = [
        await (output.send_many(items) if to is None else send_many_to(to, items))
        for to, items in by_destination.items()
    ]
    if not confirms:
        return None
    return confirms[0] if len(confirms) == 1 else AllConfirmed(confirms)


class Output:
    """One output binding: turns payloads into envelopes and hands them to its producer."""

    def __init__(
        self,
        name: str,
        props: BindingProperties,
        producer: Producer,
        metrics: DestinationMetrics | None = None,
        traced: TracedSend | None = None,
    ) -> None:
        self.name = name
        self.destination = props.destination or name
        self.producer = producer
        self._metrics = metrics
        self._traced = traced
        self._content_type = props.content_type
        self._model_type = props.content_type or APPLICATION_JSON
        pprops = props.producer
        self._partition_count = pprops.partition_count
        self._partitioned = pprops.partitioned
        key_path = f"bindings.{name}.producer"
        self._extract = key_extractor(pprops.partition_key, f"{key_path}.partition-key")
        self._selector: PartitionSelector = (
            import_object(pprops.partition_selector, f"{key_path}.partition-selector")
            if pprops.partition_selector
            else default_partition_selector
        )

    def envelope(
        self, payload: Any, key: Any = None, headers: Mapping[str, Any] | None = None
    ) -> Envelope:
        """Encode ``payload`` (or a ``Message``) with its partition and content type."""
        if (
            key is None
            and headers is None
            and not self._partitioned
            and isinstance(payload, BaseModel)
        ):
            # The usual send, a model alone: what ``encode`` and the code below would make.
            body = payload.__pydantic_serializer__.to_json(payload, by_alias=True)
            return Envelope(body, {CONTENT_TYPE: self._model_type}, None, self.destination)
        if isinstance(payload, Message):
            headers = {**payload.headers, **(headers or {})}
            key = payload.key if key is None else key
            payload = payload.payload
        body, content_type = encode(payload, self._content_type)
        out_headers: dict[str, Any] = dict(headers) if headers else {}
        out_headers.setdefault(CONTENT_TYPE, content_type)
        partition = None
        if self._partitioned:
            pkey = self._extract(payload, out_headers, key)
            if pkey is None:
                raise MessageConversionError(
                    f"binding {self.name!r} is partitioned but the message has no partition key"
                )
            try:
                partition = select_partition(pkey, self._partition_count, self._selector)
            except TypeError as exc:
                raise MessageConversionError(f"binding {self.name!r}: {exc}") from exc
        wire_key = key.encode() if isinstance(key, str) else key
        if isinstance(wire_key, int):
            wire_key = str(wire_key).encode()
        return Envelope(body, out_headers, wire_key, self.destination, partition)

    async def send(
        self, payload: Any, key: Any = None, headers: Mapping[str, Any] | None = None
    ) -> Awaitable[None]:
        envelope = self.envelope(payload, key, headers)
        try:
            if self._traced is None:
                confirm = await self.producer.send(envelope)
            else:
                confirm = await self._traced.send(self.producer, envelope)
        except Exception:
            if self._metrics is not None:
                self._metrics.send_failures += 1
            raise
        return confirm if self._metrics is None else self._metrics.confirmed(confirm)

    async def send_many(
        self, items: Iterable[Any], key: Any = None, headers: Mapping[str, Any] | None = None
    ) -> Awaitable[None]:
        """Send ``items`` (payloads or ``Message``s) in order, as one bulk where the producer
        is a ``BulkProducer`` (else one send each); ``key`` and ``headers`` apply to every
        item, as in ``send``. The one confirmation of all of them, which may be
        awaited more than once."""
        envelopes = self._envelopes(items, key, headers)
        if not envelopes:
            return DONE
        try:
            if self._traced is None:
                confirm = await self._send_each(envelopes)
            else:
                confirm = await self._traced.send_many(self._send_each, envelopes)
        except Exception:
            if self._metrics is not None:
                self._metrics.send_failures += len(envelopes)
            raise
        if self._metrics is not None:
            confirm = self._metrics.confirmed_many(confirm, len(envelopes))
        return AllConfirmed([confirm])

    def _envelopes(
        self, items: Iterable[Any], key: Any, headers: Mapping[str, Any] | None
    ) -> list[Envelope]:
        """``envelope`` of each of ``items``, in one loop: for the usual bulk, models of one
        class to an unpartitioned binding, the serializer, key and headers are looked up
        once, and each envelope gets its own copy of the headers."""
        if self._partitioned:
            return [self.envelope(item, key, headers) for item in items]
        envelopes: list[Envelope] = []
        append = envelopes.append
        destination = self.destination
        last: type | None = None
        to_json: Any = None
        template: dict[str, Any] = {}
        wire_key: Any = None
        for item in items:
            kind = type(item)
            if kind is not last:
                if not issubclass(kind, BaseModel):
                    append(self.envelope(item, key, headers))
                    continue
                last = kind
                to_json = kind.__pydantic_serializer__.to_json
                template = dict(headers) if headers else {}
                template.setdefault(CONTENT_TYPE, self._content_type or APPLICATION_JSON)
                wire_key = self.envelope(item, key, headers).key
            append(Envelope(to_json(item, by_alias=True), dict(template), wire_key, destination))
        return envelopes

    async def _send_each(self, envelopes: Sequence[Envelope]) -> Awaitable[None]:
        return await send_each(self.producer, envelopes)


class _Cached:
    __slots__ = ("evicted", "output", "users")

    def __init__(self, output: Output) -> None:
        self.output = output
        self.users = 0
        self.evicted = False


class DynamicOutputs:
    """Outputs bound on first use for destinations that are no handler's output binding
    (``app.send``, a returned ``Message`` with a destination), like Spring's StreamBridge.

    At most ``size`` stay bound: binding one more first evicts the least recently used,
    whose producer is closed (which waits for its unconfirmed messages) once no send is
    using it. An evicted destination is bound again when it is next used.
    """

    def __init__(self, bind: Callable[[str], Awaitable[Output]], size: int) -> None:
        self._bind = bind
        self._size = size
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._evicted: set[_Cached] = set()  # evicted, not closed yet: a send still uses them
        self._lock = asyncio.Lock()

    async def send(
        self,
        destination: str,
        payload: Any,
        key: Any = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Awaitable[None]:
        """Send through the output of ``destination`` (bound if needed); the confirmation."""
        entry = self._cache.get(destination)
        if entry is None:
            entry = await self._acquire(destination)
        else:
            self._cache.move_to_end(destination)
            entry.users += 1
        try:
            return await entry.output.send(payload, key, headers)
        finally:
            entry.users -= 1
            if entry.evicted:
                await self._close_if_unused(entry)

    async def send_many(
        self,
        destination: str,
        items: Iterable[Any],
        key: Any = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Awaitable[None]:
        """``Output.send_many`` through the output of ``destination`` (bound if needed)."""
        entry = await self._acquire(destination)
        try:
            return await entry.output.send_many(items, key, headers)
        finally:
            await self._release(entry)

    async def bind(self, destination: str) -> None:
        """Bind ``destination`` now if it is not (to provision it before the first send)."""
        await self._release(await self._acquire(destination))

    async def _acquire(self, destination: str) -> _Cached:
        entry = self._cache.get(destination)
        if entry is None:
            evicted: list[_Cached] = []
            async with self._lock:
                entry = self._cache.get(destination)
                if entry is None:
                    while len(self._cache) >= self._size:
                        _, old = self._cache.popitem(last=False)
                        old.evicted = True
                        self._evicted.add(old)
                        evicted.append(old)
                    await asyncio.gather(*(self._close_if_unused(old) for old in evicted))
                    entry = self._cache[destination] = _Cached(await self._bind(destination))
        self._cache.move_to_end(destination)
        entry.users += 1
        return entry

    async def _release(self, entry: _Cached) -> None:
        entry.users -= 1
        await self._close_if_unused(entry)

    async def _close_if_unused(self, entry: _Cached) -> None:
        if entry.evicted and entry.users == 0:
            entry.users = -1  # closed: never again
            self._evicted.discard(entry)
            try:
                await entry.output.producer.aclose()
            except Exception:
                log.exception("closing the evicted output %s failed", entry.output.name)

    def take_producers(self) -> list[Producer]:
        """Every producer still open, handed over to be closed (at stop); the cache is empty
        after."""
        entries = [*self._cache.values(), *self._evicted]
        self._cache.clear()
        self._evicted.clear()
        for entry in entries:
            entry.evicted, entry.users = True, -1
        return [entry.output.producer for entry in entries]

    def __len__(self) -> int:
        return len(self._cache)


class Sender(Protocol):
    """What ``app.output()`` gives: a destination to send to."""

    @property
    def destination(self) -> str: ...

    async def send(
        self, payload: Any, key: Any = None, headers: Mapping[str, Any] | None = None
    ) -> Awaitable[None]:
        """Hand the message over; awaiting the result waits for the broker's confirmation."""
        ...

    async def send_many(
        self, items: Iterable[Any], key: Any = None, headers: Mapping[str, Any] | None = None
    ) -> Awaitable[None]:
        """Hand ``items`` over in order (one bulk where the binder can); awaiting the result
        waits for the broker's confirmation of all of them."""
        ...


class DynamicOutput:
    """A destination in the app's ``DynamicOutputs``: each send binds it again if evicted."""

    def __init__(self, outputs: DynamicOutputs, destination: str) -> None:
        self._outputs = outputs
        self.destination = destination

    async def send(
        self, payload: Any, key: Any = None, headers: Mapping[str, Any] | None = None
    ) -> Awaitable[None]:
        return await self._outputs.send(self.destination, payload, key, headers)

    async def send_many(
        self, items: Iterable[Any], key: Any = None, headers: Mapping[str, Any] | None = None
    ) -> Awaitable[None]:
        return await self._outputs.send_many(self.destination, items, key, headers)
