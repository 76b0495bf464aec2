"""The management endpoint: liveness, readiness, metrics and binding control over HTTP.

Served by aiohttp (the ``streamlib[ops]`` extra) inside the app's event loop, so a request
sees the bindings as they are and changes them with the same calls the app makes. Routes:
``GET /health``, ``GET /ready``, ``GET /metrics``, ``GET /bindings``, ``GET /bindings/{name}``
and ``POST /bindings/{name}`` with ``{"state": "STOPPED"|"STARTED"|"PAUSED"|"RESUMED"}`` as
Spring's actuator ``bindings`` endpoint takes it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from .config import ManagementProperties
from .errors import ConfigError

if TYPE_CHECKING:
    from aiohttp import web

    from .app import StreamApp

log = logging.getLogger("streamlib.management")

EXTRA_HINT = "install the ops extra: pip install 'streamlib[ops]'"
STATES = ("STOPPED", "STARTED", "PAUSED", "RESUMED")
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def check_installed() -> None:
    """Raise ConfigError naming ``management.port`` when aiohttp or prometheus-client is
    missing."""
    missing = []
    for module in ("aiohttp", "prometheus_client"):
        try:
            __import__(module)
        except ModuleNotFoundError:
            missing.append(module)
    if missing:
        raise ConfigError(
            "management.port",
            f"the management endpoint needs {' and '.join(missing)}; {EXTRA_HINT}",
        )


class ManagementServer:
    """The endpoint of one app, started before its bindings (so that ``/ready`` answers 503
    while they start) and stopped after them."""

    def __init__(
        self, app: StreamApp, props: ManagementProperties, metrics: Callable[[], bytes]
    ) -> None:
        self._app = app
        self._props = props
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        """``http://host:port`` once started (the port chosen when ``port`` is 0)."""

    async def start(self) -> None:
        """Listen on ``management.host``:``management.port``; ConfigError naming the key when
        the address cannot be used."""
        from aiohttp import web

        server = web.Application()
        server.add_routes(
            [
                web.get("/health", self._health),
                web.get("/ready", self._ready),
                web.get("/metrics", self._metrics_page),
                web.get("/bindings", self._bindings),
                web.get("/bindings/{name}", self._binding),
                web.post("/bindings/{name}", self._change_state),
            ]
        )
        runner = web.AppRunner(server, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = self._props.host, self._props.port or 0
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                "management.port", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self._runner = runner
        bound = runner.addresses[0]
        self.url = f"http://{_url_host(bound[0])}:{bound[1]}"
        log.info("management endpoint on %s (/health /ready /metrics /bindings)", self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        health = self._app.health()
        return _json(health, 200 if health["status"] == "up" else 503)

    async def _ready(self, request: web.Request) -> web.Response:
        ready, waiting = self._app.readiness()
        body = {"status": "ready" if ready else "not ready", "waiting-for": waiting}
        return _json(body, 200 if ready else 503)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(body=self._metrics(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _bindings(self, request: web.Request) -> web.Response:
        return _json(self._app.describe_bindings())

    async def _binding(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = [b for b in self._app.describe_bindings() if b["name"] == name]
        if not found:
            return _not_found(name, self._app)
        return _json(found[0])

    async def _change_state(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json({"error": 'the body must be JSON: {"state": "PAUSED"}'}, 400)
        state = body.get("state") if isinstance(body, Mapping) else None
        if not isinstance(state, str) or state.upper() not in STATES:
            return _json({"error": f"state must be one of {', '.join(STATES)}"}, 400)
        if name not in self._app.bindings:
            return _not_found(name, self._app)
        binding = self._app.binding(name)
        change: Mapping[str, Callable[[], Awaitable[None]]] = {
            "STOPPED": binding.stop,
            "STARTED": binding.start,
            "PAUSED": binding.pause,
            "RESUMED": binding.resume,
        }
        log.info("binding %s: %s requested on the management endpoint", name, state.upper())
        try:
            await change[state.upper()]()
        except Exception as exc:
            log.exception("binding %s: %s failed", name, state.upper())
            return _json({"error": f"{state.upper()} failed: {type(exc).__name__}: {exc}"}, 500)
        found = [b for b in self._app.describe_bindings() if b["name"] == name]
        return _json(found[0])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _json(body: Any, status: int = 200) -> web.Response:
    from aiohttp import web

    return web.Response(
        body=orjson.dumps(body, default=str),
        status=status,
        content_type="application/json",
    )


def _not_found(name: str, app: StreamApp) -> web.Response:
    known = ", ".join(app.bindings) or "none"
    return _json({"error": f"no consumer binding {name!r}; bindings: {known}"}, 404)
