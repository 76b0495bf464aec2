"""StreamApp: the registry of handlers, their bindings, and the application lifecycle."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

from opentelemetry.trace import TracerProvider
from pydantic import BaseModel

from . import _logs, _metrics, config_server
from ._banner import log_banner
from ._batch_dispatch import BatchDispatcher
from ._dispatch import HandlerDispatcher
from ._handlers import Handler, Kind, make_handler
from ._management import ManagementServer, check_installed
from ._outputs import (
    DynamicOutput,
    DynamicOutputs,
    Output,
    Sender,
    check_partition_key,
    send_results,
)
from ._supervision import DOWN, ManagedBinding, Supervisor
from .binder import (
    Batching,
    Binder,
    BinderContext,
    Binding,
    ConsumerSpec,
    Dispatcher,
    ProducerSpec,
    load_binder_factory,
)
from .config import (
    BindingProperties,
    ManagementProperties,
    StreamConfig,
    blame_environment,
    did_you_mean,
    find_key,
    normalize_key,
)
from .converters import PayloadDecoder
from .errors import BatchFailed, ConfigError, ConfigServerError, StreamlibError
from .messages import Message
from .refresh import (
    BindingDefaults,
    LiveConfig,
    RefreshListener,
    RefreshResult,
    Settings,
)
from .retry import RetryPolicy
from .tracing import Tracing

log = logging.getLogger("streamlib.app")

F = TypeVar("F", bound=Callable[..., Any])
ErrorListener = Callable[[str, Exception], None]
"""``fn(handler_name, exception)``: told of every failure of a handler or of its output."""
L = TypeVar("L", bound=RefreshListener)
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

DEFAULT_BINDER_TYPE = "memory"
DEFAULT_INTERVAL = 1.0
"""Seconds between polls of a source declared without ``interval`` (Spring's poller's)."""
_INPUT_BINDING = re.compile(r".+[-_]in[-_]\d+", re.I)

# Shares of shutdown-timeout by which stop's steps must be done: handlers get the first four
# fifths, the rest is kept for flushing producers and closing binders.
DRAIN_SHARE = 0.8
FLUSH_SHARE = 0.9


class _ReportedDecoder(PayloadDecoder):
    """A handler's decoder that tells the error listeners of a body it cannot decode."""

    __slots__ = ("_handler", "_listeners")

    def __init__(
        self, handler: Handler, listeners: Collection[ErrorListener], content_type: str | None
    ) -> None:
        super().__init__(handler.payload_type, content_type)
        self._handler = handler.name
        self._listeners = list(listeners)

    def __call__(self, body: bytes, headers: dict[str, Any]) -> Any:
        try:
            return super().__call__(body, headers)
        except Exception as exc:
            for listener in self._listeners:
                listener(self._handler, exc)
            raise


class StreamApp:
    """A service's message handlers and how they are bound.

    Configuration is read when the app starts: ``config`` (a mapping or a YAML path), else
    ``$STREAMLIB_CONFIG`` or ``./streamlib.yaml``, then ``STREAMLIB_*`` environment variables.
    Sends and handled messages are traced with ``tracer_provider``, else OpenTelemetry's
    global provider, when it is an SDK's (see docs/operating.md).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        config: Mapping[str, Any] | str | Path | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._tracing: Tracing | None = None
        self._handlers: dict[str, Handler] = {}
        self._binders: dict[str, Binder] = {}
        self._outputs: dict[str, Output] = {}
        self._dynamic = DynamicOutputs(self._bind_dynamic, 1)
        self._bindings: dict[str, ManagedBinding] = {}
        self._supervisor = Supervisor()
        self._running = False
        self._live = LiveConfig(config, name)
        self._management_settings = self._live.settings("management", ManagementProperties, ())
        self._dispatchers: dict[str, HandlerDispatcher] = {}
        self._error_listeners: list[ErrorListener] = []
        self._binder_override: tuple[str, dict[str, Any]] | None = None
        self._override_origin: tuple[frozenset[str], str] = (frozenset(), "")
        self._metrics: _metrics.AppMetrics | None = None
        self._management: ManagementServer | None = None
        self._started = False
        self._stopping = False

    @property
    def name(self) -> str | None:
        """The application name given in code, used when the configuration sets none."""
        return self._live.name

    @name.setter
    def name(self, value: str | None) -> None:
        self._live.name = value
        self._live.invalidate()

    def _register(self, handler: Handler) -> None:
        if handler.name in self._handlers:
            raise ConfigError("", f"a function named {handler.name!r} is already registered")
        if self._running:
            raise StreamlibError("handlers must be registered before the app starts")
        self._handlers[handler.name] = handler

    @overload
    def processor(self, fn: F, /) -> F: ...
    @overload
    def processor(self) -> Callable[[F], F]: ...
    def processor(self, fn: F | None = None) -> F | Callable[[F], F]:
        """Consume ``<fn>-in-0``, send each non-None result to ``<fn>-out-0``.

        ``@app.processor`` and ``@app.processor()`` are the same."""
        return self._decorate(fn, Kind.PROCESSOR)

    @overload
    def sink(self, fn: F, /) -> F: ...
    @overload
    def sink(self) -> Callable[[F], F]: ...
    def sink(self, fn: F | None = None) -> F | Callable[[F], F]:
        """Consume ``<fn>-in-0``; ``@app.sink`` and ``@app.sink()`` are the same."""
        return self._decorate(fn, Kind.SINK)

    @overload
    def source(self, fn: F, /) -> F: ...
    @overload
    def source(self, *, interval: float = DEFAULT_INTERVAL) -> Callable[[F], F]: ...
    def source(
        self, fn: F | None = None, *, interval: float = DEFAULT_INTERVAL
    ) -> F | Callable[[F], F]:
        """Call the function every ``interval`` seconds (default 1); send non-None results to
        ``<fn>-out-0``. ``@app.source``, ``@app.source()`` and ``@app.source(interval=5)``."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        return self._decorate(fn, Kind.SOURCE, interval)

    def _decorate(
        self, fn: F | None, kind: Kind, interval: float | None = None
    ) -> F | Callable[[F], F]:
        def decorate(f: F) -> F:
            self._register(make_handler(f, kind, interval))
            return f

        return decorate if fn is None else decorate(fn)

    def use_config(self, source: Mapping[str, Any] | str | Path) -> None:
        """Read configuration from ``source`` instead (before the app starts)."""
        if self._running:
            raise StreamlibError("configuration can only be replaced before the app starts")
        self._live.source = source
        self._live.invalidate()

    def override_config(self, values: Mapping[str, Any], origin: str = "code") -> None:
        """Set dotted keys (``bindings.bill-in-0.group``) over the file and the environment,
        before the app starts; errors in them name ``origin`` (``streamlib run --set``)."""
        if self._running:
            raise StreamlibError("configuration can only be overridden before the app starts")
        self._live.override(values)
        self._override_origin = (frozenset(normalize_key(k) for k in values), origin)

    def binding_defaults(self, binding: str, settings: BindingDefaults) -> None:
        """Settings of ``bindings.<binding>`` that apply where configuration sets none.

        Features built on the app (Saga, Bus) give their bindings a destination and group
        this way; the configuration file and environment still override them. ``settings``
        is a mapping, or a function of the raw configuration that returns one (the Bus
        derives its bindings' from ``bus.*``), called at every read of the configuration.
        """
        if self._running:
            raise StreamlibError("binding defaults must be set before the app starts")
        self._live.binding_defaults(binding, settings if callable(settings) else dict(settings))

    async def _fetch_served(self, *, starting: bool) -> dict[str, Any]:
        """The Config Server's layer, fetched now ({} when none is configured).

        At start-up ``fail-fast`` retries on Spring's schedule and ``optional`` starts on local
        configuration with a warning; a refresh asks once. Raises ConfigServerError otherwise.
        """
        local = self._live.local()
        settings = config_server.settings_from(local)
        if settings is None:
            return {}
        name = str(local.get("name") or self.name or "application")
        try:
            return await config_server.fetch(settings, name, retry=starting and settings.fail_fast)
        except ConfigServerError as exc:
            if not (starting and settings.optional):
                raise
            log.warning("%s; starting on local configuration (config-server.optional)", exc)
            return {}

    @property
    def config(self) -> StreamConfig:
        """The configuration in force (read at start, or on first access)."""
        return self._live.config

    @property
    def bindings(self) -> Mapping[str, Binding]:
        """Consumer bindings by name, while the app runs."""
        return dict(self._bindings)

    def binding(self, name: str) -> Binding:
        """The consumer binding ``name``; KeyError when there is none."""
        return self._bindings[name]

    def health(self) -> dict[str, Any]:
        """``status`` (``up`` while the app runs, no task of it died and no binding is
        ``down``), each binder's own report, each consumer binding's state (``running``,
        ``paused``, ``stopped`` or ``down``: not running though nobody stopped it), each
        source's state (``running`` or ``down``) and why the app's dead tasks died."""
        bindings = {name: b.state for name, b in self._bindings.items()}
        failures = self._supervisor.reasons()
        sources = {
            h.name: DOWN if f"source {h.name}" in failures else "running"
            for h in self._handlers.values()
            if h.kind is Kind.SOURCE and self._running
        }
        up = self._running and not failures and DOWN not in bindings.values()
        return {
            "status": "up" if up else "down",
            "binders": {name: dict(b.health()) for name, b in self._binders.items()},
            "bindings": bindings,
            "sources": sources,
            "failures": dict(failures),
        }

    def readiness(self) -> tuple[bool, list[str]]:
        """(ready, what it waits for): ready once started, with every auto-started consumer
        binding running and, on Kafka, assigned its partitions (or given them statically)."""
        if not self._running:
            return False, ["start"]
        if self._stopping:
            return False, ["stop"]
        waiting = []
        for handler in self._handlers.values():
            name = handler.input_binding
            if name is None:
                continue
            binding = self._bindings.get(name)
            if binding is None:
                if self.config.binding(name).consumer.auto_startup:
                    waiting.append(name)  # being bound (on Kafka: waiting for its partitions)
            elif binding.auto_startup and not binding.is_ready:
                waiting.append(name)
        if not self._started and not waiting:
            waiting.append("start")
        return not waiting, waiting

    def describe_bindings(self) -> list[dict[str, Any]]:
        """Each consumer binding: ``name``, ``destination``, ``group``, ``binder``, ``state``
        (as ``health()`` says it) and ``pausable``, as the management endpoint lists them."""
        out = []
        for name, binding in self._bindings.items():
            props = self.config.binding(name)
            out.append(
                {
                    "name": name,
                    "destination": props.destination or name,
                    "group": props.group,
                    "binder": self._binder_for(name, props)[0],
                    "state": binding.state,
                    "pausable": True,
                    "input": True,
                }
            )
        return out

    @property
    def management_url(self) -> str | None:
        """``http://host:port`` of the management endpoint while it serves, else None."""
        return self._management.url if self._management is not None else None

    def _metrics_text(self) -> bytes:
        return self._metrics.exposition() if self._metrics is not None else b""

    async def wait_failed(self) -> None:
        """Wait until a task the app owns (a source) died; ``health()`` says which and why."""
        await self._supervisor.wait_failed()

    def _binder_for(
        self, binding: str, props: BindingProperties
    ) -> tuple[str, str, dict[str, Any], str]:
        """(binder name, type, settings, key path for errors) of a binding's binder."""
        if self._binder_override is not None:
            forced, forced_settings = self._binder_override
            return forced, forced, dict(forced_settings), "default-binder"
        cfg = self.config
        if props.binder:
            name, key = props.binder, f"bindings.{binding}.binder"
        elif cfg.default_binder:
            name, key = cfg.default_binder, "default-binder"
        elif len(cfg.binders) == 1:
            name = next(iter(cfg.binders))
            key = f"binders.{name}"
        elif cfg.binders:
            raise ConfigError(
                "default-binder",
                f"{len(cfg.binders)} binders are configured ({', '.join(cfg.binders)}); "
                f"set default-binder or bindings.{binding}.binder",
            )
        else:
            return DEFAULT_BINDER_TYPE, DEFAULT_BINDER_TYPE, {}, "default-binder"
        found = find_key(cfg.binders, name)
        if found is None:
            # A bare type name works without a binders section, as in Spring.
            return name, name, {}, key
        settings = cfg.binders[found]
        return name, settings.type or name, settings.settings, f"binders.{name}.type"

    def _binder(self, binding: str, props: BindingProperties) -> Binder:
        name, type_name, settings, key = self._binder_for(binding, props)
        binder = self._binders.get(name)
        if binder is None:
            factory = load_binder_factory(type_name, key)
            cfg = self.config
            context = BinderContext(cfg.name, cfg.instance_index, cfg.instance_count, name)
            binder = self._binders[name] = factory(settings, context)
        return binder

    def _validate(self) -> dict[str, BindingProperties]:
        """Every binding's settings, validated before anything connects."""
        cfg = self.config
        props: dict[str, BindingProperties] = {}
        for handler in self._handlers.values():
            for name in (handler.input_binding, handler.output_binding):
                if name:
                    props[name] = cfg.binding(name)
        for name in cfg.bindings:
            props.setdefault(name, cfg.binding(name))
        self._check_inputs_have_handlers(cfg)
        for name, p in props.items():
            self._binder_for(name, p)
            cfg.check_partitions(name, p)
        for handler in self._handlers.values():
            self._check_batch_settings(handler, cfg)
            out = handler.output_binding
            if out:
                check_partition_key(
                    props[out].producer.partition_key,
                    handler.result_type,
                    f"bindings.{out}.producer.partition-key",
                    handler.name,
                )
        return props

    @staticmethod
    def _check_batch_settings(handler: Handler, cfg: StreamConfig) -> None:
        """Fail on ``batch-size``/``batch-wait-ms`` set on the binding of a handler that takes
        one message (under ``default:`` they are for the bindings of batch handlers)."""
        name = handler.input_binding
        if name is None or handler.batch:
            return
        own = cfg.own_consumer_fields(name)
        for field, key in (("batch_size", "batch-size"), ("batch_wait_ms", "batch-wait-ms")):
            if field in own:
                raise ConfigError(
                    f"bindings.{name}.consumer.{key}",
                    f"{handler.kind.value} {handler.name} takes one message, not a list "
                    "(batch settings are for a handler that takes list[T])",
                )

    def _check_inputs_have_handlers(self, cfg: StreamConfig) -> None:
        """Fail on a configured ``<name>-in-<n>`` binding that no handler consumes when it
        looks like a misspelling of a handler's input that has no configuration at all.

        Several apps may share one configuration, so an input of another app's handler is
        left alone; a near miss of an unconfigured input of this app is the usual typo.
        """
        configured = {normalize_key(n) for n in cfg.bindings}
        inputs = [h.input_binding for h in self._handlers.values() if h.input_binding]
        unconfigured = [n for n in inputs if normalize_key(n) not in configured]
        known = {normalize_key(n) for n in inputs}
        for name in cfg.bindings:
            if not _INPUT_BINDING.fullmatch(name) or normalize_key(name) in known:
                continue
            hint = did_you_mean(name, unconfigured)
            if hint:
                raise ConfigError(f"bindings.{name}", "no handler consumes this binding" + hint)

    def _messaging_system(self, binding: str, props: BindingProperties, binder: Binder) -> str:
        return getattr(binder, "messaging_system", "") or self._binder_for(binding, props)[1]

    async def _output(self, name: str, props: BindingProperties) -> Output:
        binder = self._binder(name, props)
        destination = props.destination or name
        spec = ProducerSpec(name, destination, props.producer)
        metrics = self._metrics.destination(destination) if self._metrics is not None else None
        traced = None
        if self._tracing is not None:
            system = self._messaging_system(name, props, binder)
            traced = self._tracing.producer(spec.destination, system)
        return Output(name, props, await binder.bind_producer(spec), metrics, traced)

    async def _bind_dynamic(self, destination: str) -> Output:
        return await self._output(destination, self.config.binding(destination))

    async def output(self, destination: str) -> Sender:
        """The output for a binding name or destination, bound now if it is not.

        A handler's own output binding stays bound while the app runs; other destinations
        share a cache of ``dynamic-destination-cache-size`` bound producers (least recently
        used closed first), and sending through the returned handle binds it again if needed.
        """
        out = self._outputs.get(destination)
        if out is not None:
            return out
        await self._dynamic.bind(destination)
        return DynamicOutput(self._dynamic, destination)

    async def _send(
        self,
        destination: str,
        payload: Any,
        key: Any = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Awaitable[None]:
        out = self._outputs.get(destination)
        if out is not None:
            return await out.send(payload, key, headers)
        return await self._dynamic.send(destination, payload, key, headers)

    async def _send_many(
        self,
        destination: str,
        items: Iterable[Any],
        key: Any = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Awaitable[None]:
        out = self._outputs.get(destination)
        if out is not None:
            return await out.send_many(items, key, headers)
        return await self._dynamic.send_many(destination, items, key, headers)

    def _reported(
        self, handler: Handler, call: Callable[[Any], Awaitable[T]]
    ) -> Callable[[Any], Awaitable[T]]:
        """``call``, telling the error listeners (a test) of each exception it raises (of
        each record's, for ``BatchFailed``); the exception still goes on to retry, DLQ or the
        log."""
        if not self._error_listeners:
            return call
        listeners = list(self._error_listeners)

        async def reported(arg: Any) -> T:
            try:
                return await call(arg)
            except BatchFailed as exc:
                for failure in exc.failures.values():
                    if isinstance(failure, Exception):
                        for listener in listeners:
                            listener(handler.name, failure)
                raise
            except Exception as exc:
                for listener in listeners:
                    listener(handler.name, exc)
                raise

        return reported

    def _dispatcher(
        self, handler: Handler, name: str, props: BindingProperties
    ) -> HandlerDispatcher:
        emit = None
        if handler.kind is Kind.PROCESSOR:
            out_name = handler.output_binding
            assert out_name is not None

            check = handler.check_result

            async def send_result(result: Any) -> Awaitable[None] | None:
                if check is not None:
                    check(result)
                if isinstance(result, Message) and result.destination:
                    return await self._send(result.destination, result)
                return await self._outputs[out_name].send(result)

            emit = self._reported(
                handler, self._batch_emit(handler) if handler.batch else send_result
            )

        decoder = (
            _ReportedDecoder(handler, self._error_listeners, props.content_type)
            if self._error_listeners
            else PayloadDecoder(handler.payload_type, props.content_type)
        )
        metrics = self._metrics.binding(name) if self._metrics is not None else None
        policy = RetryPolicy.from_properties(props.consumer)
        call = self._reported(handler, handler.call)
        if handler.batch:
            batching = Batching(props.consumer.batch_size, props.consumer.batch_wait_ms / 1000)
            return BatchDispatcher(
                name,
                call,
                decoder,
                handler.wants_message,
                policy,
                props.consumer.dlq,
                emit,
                metrics,
                batching,
            )
        return HandlerDispatcher(
            name, call, decoder, handler.wants_message, policy, props.consumer.dlq, emit, metrics
        )

    def _batch_emit(self, handler: Handler) -> Callable[[Any], Awaitable[Awaitable[None] | None]]:
        """How a batch processor's returned list is sent (``send_results``)."""
        out_name = handler.output_binding
        assert out_name is not None

        async def emit(results: Any) -> Awaitable[None] | None:
            output = self._outputs[out_name]
            what = f"processor {handler.name}"
            return await send_results(results, what, handler.check_result, output, self._send_many)

        return emit

    async def start(self) -> None:
        """Validate configuration, bind outputs, then consumers, then start sources."""
        if self._running:
            return
        try:
            self._live.load(await self._fetch_served(starting=True))
            props = self._validate()
        except ConfigServerError:
            raise
        except ConfigError as exc:
            keys, origin = self._override_origin
            if normalize_key(exc.key) in keys:
                raise ConfigError(exc.key, f"{exc.reason} (set by {origin})") from None
            raise blame_environment(exc, os.environ) from None
        self._supervisor.reset()
        self._tracing = Tracing.create(self._tracer_provider)
        self._dynamic = DynamicOutputs(
            self._bind_dynamic, self.config.dynamic_destination_cache_size
        )
        management = self._management_settings.value
        if management.enabled:
            check_installed()
        self._running = True
        try:
            cfg = self.config
            roles = {h.output_binding: "producer" for h in self._handlers.values()}
            roles.update({h.input_binding: "consumer" for h in self._handlers.values()})
            log_banner(
                cfg.name,
                self._live.source,
                {name: (p, roles.get(name, "configured")) for name, p in props.items()},
                self._binder_for,
                (cfg.instance_index, cfg.instance_count),
            )
            if management.enabled:
                self._metrics = _metrics.AppMetrics(self.health)
                self._management = ManagementServer(self, management, self._metrics_text)
                await self._management.start()
            for handler in self._handlers.values():
                if handler.output_binding:
                    out = handler.output_binding
                    self._outputs[out] = await self._output(out, props[out])
            for handler in self._handlers.values():
                name = handler.input_binding
                if name is None:
                    continue
                p = props[name]
                consumer = p.consumer
                spec = ConsumerSpec(
                    name,
                    p.destination or name,
                    p.group,
                    consumer,
                    cfg.instance_index
                    if consumer.instance_index is None
                    else consumer.instance_index,
                    cfg.instance_count
                    if consumer.instance_count is None
                    else consumer.instance_count,
                )
                binder = self._binder(name, p)
                handling = self._dispatchers[name] = self._dispatcher(handler, name, p)
                dispatcher: Dispatcher = self._observed(name, handling)
                if self._tracing is not None:
                    system = self._messaging_system(name, p, binder)
                    dispatcher = self._tracing.consumer(
                        dispatcher, spec.destination, spec.group, system
                    )
                binding = await binder.bind_consumer(spec, dispatcher)
                self._bindings[name] = ManagedBinding(binding, consumer.auto_startup)
            for handler in self._handlers.values():
                if handler.kind is Kind.SOURCE:
                    self._supervisor.spawn(f"source {handler.name}", self._poll(handler))
            self._started = True
        except BaseException:
            await self.stop()
            raise

    def _observed(self, name: str, dispatcher: HandlerDispatcher) -> Dispatcher:
        """What the binder calls: ``dispatcher`` (which counts in the metrics), named in the
        logs when JSON logs are on."""
        if not _logs.context_enabled:
            return dispatcher
        metrics = self._metrics.binding(name) if self._metrics is not None else None
        return _metrics.ObservedDispatcher(name, dispatcher, metrics)

    async def _poll(self, handler: Handler) -> None:
        assert handler.output_binding is not None and handler.interval is not None
        output = self._outputs[handler.output_binding]

        async def poll_once(_: None) -> None:
            result = await handler.call(None)
            if result is not None:
                if handler.check_result is not None:
                    handler.check_result(result)
                await (await output.send(result))

        poll = self._reported(handler, poll_once)
        while True:
            try:
                await poll(None)
            except Exception:
                log.exception(
                    "source %s failed; polling again in %.3gs", handler.name, handler.interval
                )
            await asyncio.sleep(handler.interval)

    async def stop(self) -> None:
        """Stop sources, drain consumers (in-flight messages finish and are acked), flush
        producers, close binders: all of it within ``shutdown-timeout``.

        Handlers get up to four fifths of the timeout to finish; those still running then are
        interrupted (their messages are redelivered), so that producers and binders are always
        closed — also when the task calling ``stop`` is cancelled, which is re-raised after.
        """
        if not self._running:
            return
        self._started = False
        self._stopping = True  # /ready answers 503 from now on
        timeout = self.config.shutdown_timeout
        start = asyncio.get_running_loop().time()
        cancelled: asyncio.CancelledError | None = None
        try:
            sources = list(self._supervisor.tasks.values())
            for task in sources:
                task.cancel()
            cancelled = await self._phase(
                "stopping sources", sources, start + timeout * DRAIN_SHARE, timeout
            )
            if cancelled is None:
                cancelled = await self._phase(
                    "draining consumers",
                    [b.unbind() for b in self._bindings.values()],
                    start + timeout * DRAIN_SHARE,
                    timeout,
                )
            flushed = await self._phase(
                "flushing producers",
                [
                    p.aclose()
                    for p in [
                        *(o.producer for o in self._outputs.values()),
                        *self._dynamic.take_producers(),
                    ]
                ],
                start + timeout * FLUSH_SHARE,
                timeout,
            )
            closed = await self._phase(
                "closing binders",
                [b.aclose() for b in self._binders.values()],
                start + timeout,
                timeout,
            )
            cancelled = cancelled or flushed or closed
        finally:
            if self._management is not None:
                # Last, so that /health and /metrics answer while the app drains.
                await asyncio.shield(self._management.stop())
            self._bindings.clear()
            self._dispatchers.clear()
            self._outputs.clear()
            self._supervisor.tasks.clear()
            self._binders.clear()
            self._management = None
            self._metrics = None
            self._started = False
            self._stopping = False
            self._running = False
        if cancelled is not None:
            raise cancelled

    @staticmethod
    async def _phase(
        what: str, calls: Collection[Awaitable[Any]], until: float, timeout: float
    ) -> asyncio.CancelledError | None:
        """Run one step of ``stop`` until ``until`` (loop time); a cancellation is returned so
        that the remaining steps still run."""
        if not calls:
            return None
        remaining = max(until - asyncio.get_running_loop().time(), 0.0)
        gathered = asyncio.gather(*calls, return_exceptions=True)
        # An interrupted gather ends with its CancelledError set; read it so that it is not
        # reported as never retrieved.
        gathered.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            results = await asyncio.wait_for(gathered, remaining)
        except TimeoutError:
            log.error(
                "%s did not finish within its share of shutdown-timeout (%.3gs); interrupted",
                what,
                timeout,
            )
            return None
        except asyncio.CancelledError as exc:
            log.warning("stop was cancelled while %s; closing what remains", what)
            return exc
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("%s failed: %r", what, result, exc_info=result)
        return None

    @asynccontextmanager
    async def run(self) -> AsyncIterator[StreamApp]:
        """Start every binding; leaving the block drains and stops them.

        Raises StreamlibError on leaving when a task of the app (a source) died meanwhile.
        """
        await self.start()
        try:
            yield self
        finally:
            await self.stop()
        for what, exc in self._supervisor.failures.items():
            raise StreamlibError(f"{what} died: {type(exc).__name__}: {exc}") from exc

    def settings(
        self, prefix: str, model: type[M], live_keys: Collection[str] | None = None
    ) -> Settings[M]:
        """The top-level section ``prefix`` of the configuration, validated as ``model``.

        This is how every feature declares its section (the Bus ``bus``, the Saga helpers
        ``saga``); errors name ``<prefix>.<key>``. ``.value`` is frozen between refreshes;
        ``refresh()`` replaces it with the new values. ``live_keys`` (``fnmatch`` patterns
        within the section) are the keys a refresh applies without a restart; by default all.
        """
        return self._live.settings(prefix, model, live_keys)

    def on_refresh(self, fn: L) -> L:
        """Call ``fn(changed_keys)`` (plain or ``async``) after every applied refresh; the keys
        are empty when nothing changed (a listener that re-reads an external source or clears a
        cache runs anyway)."""
        self._live.add_listener(fn)
        return fn

    async def refresh(self, overrides: Mapping[str, Any] | None = None) -> RefreshResult:
        """Read the configuration again, with ``overrides`` (dotted keys) set on top.

        Settings get their new values and consumer retry settings apply at once; other
        binding settings are reported in ``restart_required``. With a Config Server, its
        property sources are fetched again first. Raises ConfigError, changing nothing, when
        the new configuration is invalid, and ConfigServerError when the server cannot be
        reached.
        """
        served = await self._fetch_served(starting=False)
        reloaded = self._live.reload(overrides, self._dispatchers.keys(), served)
        self._live.apply(reloaded)
        for binding, policy in reloaded.policies.items():
            dispatcher = self._dispatchers[binding]
            if dispatcher.policy != policy:
                dispatcher.policy = policy
        await self._live.notify(reloaded.result)
        return reloaded.result

    async def send(
        self,
        destination: str,
        payload: Any,
        *,
        key: bytes | str | int | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Send to a binding name or any destination and wait for the broker's confirmation.

        Like Spring's StreamBridge: an output binding is created on first use, with the
        settings of ``bindings.<destination>`` if configured. Raises StreamlibError when the
        app is not running (nothing would be bound to send with).
        """
        if not self._running:
            raise StreamlibError(
                f"app.send({destination!r}) before the app runs: send inside "
                "`async with app.run():` (or after `await app.start()`)"
            )
        confirm = await self._send(destination, payload, key, headers)
        await confirm

    async def send_many(
        self,
        destination: str,
        items: Iterable[Any],
        *,
        key: bytes | str | int | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Send ``items`` (payloads or ``Message``s) in order to a binding name or any
        destination, as one bulk where the binder can, and wait for the broker's confirmation
        of all of them. ``key`` and ``headers`` apply to every item, as in ``send``.
        Raises StreamlibError when the app is not running, PublishError when the broker
        refused one."""
        if not self._running:
            raise StreamlibError(
                f"app.send_many({destination!r}) before the app runs: send inside "
                "`async with app.run():` (or after `await app.start()`)"
            )
        confirm = await self._send_many(destination, items, key, headers)
        await confirm
