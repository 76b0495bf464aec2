"""Config Server as a configuration source: settings, Spring key mapping, precedence, failures.

A small HTTP server in a thread answers as Spring Cloud Config Server does (its Environment
JSON); tests/interop runs the real one.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from streamlib import ConfigError, ConfigServerError, StreamApp
from streamlib._spring_keys import to_streamlib
from streamlib.config_server import settings_from

pytestmark = pytest.mark.anyio

PASSWORD = "pa55-w0rd-from-config"
TOKEN = "t0ken-for-the-server"


@dataclass
class FakeServer:
    """Answers ``GET /<name>/<profiles>[/<label>]`` with ``sources``, or ``status``."""

    sources: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    auth: str | None = None
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def server() -> Iterator[FakeServer]:
    state = FakeServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            header = self.headers.get("Authorization")
            state.requests.append((self.path, header))
            if state.auth is not None and header != state.auth:
                self.send_response(401)
                self.end_headers()
                return
            if state.status != 200:
                self.send_response(state.status)
                self.end_headers()
                return
            name, profiles, *label = self.path.strip("/").split("/")
            body = {
                "name": name,
                "profiles": profiles.split(","),
                "label": label[0] if label else None,
                "propertySources": state.sources,
            }
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Greeting(BaseModel):
    message: str = "local-default"
    token: SecretStr | None = None


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def node(path: Path) -> tuple[StreamApp, Any]:
    app = StreamApp("pynode", config=path)
    greeting = app.settings("greeting", Greeting)

    @app.sink
    async def orders(item: dict[str, Any]) -> None:
        return None

    return app, greeting


def test_spring_keys_map_to_streamlib_keys() -> None:
    tree = to_streamlib(
        {
            "spring.cloud.stream.bindings.orders-in-0.group": "billing",
            "spring.cloud.stream.bindings.orders-in-0.destination": "orders",
            "spring.cloud.stream.bindings.orders-in-0.consumer.maxAttempts": 5,
            "spring.cloud.stream.bindings.orders-in-0.consumer.back-off-initial-interval": "250",
            "spring.cloud.stream.bindings.out-0.producer.partitionKeyExpression": "payload.key",
            "spring.cloud.stream.bindings.out-0.producer.requiredGroups": "a,b",
            "spring.cloud.stream.kafka.bindings.orders-in-0.consumer.enableDlq": True,
            "spring.cloud.stream.instanceCount": 2,
            "spring.cloud.bus.destination": "estateBus",
            "spring.cloud.bus.trace.enabled": True,
            "spring.application.name": "javanode",
            "greeting.message": "hi",
            "greeting.tags[1]": "b",
            "greeting.tags[0]": "a",
        }
    )
    assert tree == {
        "bindings": {
            "orders-in-0": {
                "group": "billing",
                "destination": "orders",
                "consumer": {"max-attempts": 5, "back-off-initial-interval": 0.25, "dlq": True},
            },
            "out-0": {"producer": {"partition-key": "payload.key", "required-groups": ["a", "b"]}},
        },
        "instance-count": 2,
        "bus": {"destination": "estateBus"},
        "greeting": {"message": "hi", "tags": ["a", "b"]},
    }


def test_config_import_spelling_and_secrets_kept_out_of_reprs() -> None:
    settings = settings_from(
        {
            "config-import": f"optional:configserver:http://cfg:{PASSWORD}@h1:8888",
            "config-server": {"name": "billing", "profiles": "prod,eu", "token": TOKEN},
        }
    )
    assert settings is not None
    assert settings.optional and settings.profiles == ("prod", "eu")
    assert settings.uri == (f"http://cfg:{PASSWORD}@h1:8888",)
    text = repr(settings) + str(settings)
    assert PASSWORD not in text and TOKEN not in text
    assert "http://cfg:***@h1:8888" in text
    with pytest.raises(ConfigError) as caught:
        settings_from({"config-import": f"vault:http://u:{PASSWORD}@h"})
    assert caught.value.key == "config-import" and PASSWORD not in str(caught.value)
    with pytest.raises(ConfigError, match=r"config-server\.read-timeout"):
        settings_from({"config-server": {"uri": "http://h", "read-timeout": 0}})


async def test_server_sources_sit_between_the_file_and_the_environment(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.sources = [
        {
            "name": "pynode.yml",
            "source": {
                "greeting.message": "from-pynode-yml",
                "spring.cloud.stream.bindings.orders-in-0.consumer.maxAttempts": 5,
                "interop.greeting": "a Java service's key",
            },
        },
        {
            "name": "application.yml",
            "source": {
                "greeting.message": "from-application-yml",
                "spring.cloud.stream.bindings.orders-in-0.group": "billing",
                "spring.cloud.stream.bindings.orders-in-0.consumer.maxAttempts": 9,
            },
        },
    ]
    path = write(
        tmp_path / "app.yaml",
        {
            "name": "pynode",
            "config-server": {"uri": server.url, "profiles": "dev", "label": "release/1"},
            "greeting": {"message": "from-file"},
            "bindings": {"orders-in-0": {"group": "local", "consumer": {"concurrency": 2}}},
        },
    )
    monkeypatch.setenv("STREAMLIB_BINDINGS__ORDERS_IN_0__CONSUMER__MAX_ATTEMPTS", "7")
    app, greeting = node(path)
    async with app.run():
        props = app.config.binding("orders-in-0")
        assert greeting.value.message == "from-pynode-yml"  # first source wins
        assert props.group == "billing"  # the server over the file
        assert props.consumer.concurrency == 2  # the file where the server is silent
        assert props.consumer.max_attempts == 7  # the environment over the server
    assert server.requests == [("/pynode/dev/release(_)1", None)]


async def test_refresh_fetches_again_and_listeners_see_the_changed_keys(
    server: FakeServer, tmp_path: Path
) -> None:
    server.sources = [{"name": "a", "source": {"greeting.message": "v1"}}]
    path = write(tmp_path / "app.yaml", {"config-server": {"uri": server.url}})
    app, greeting = node(path)
    seen: list[frozenset[str]] = []
    app.on_refresh(seen.append)
    async with app.run():
        assert greeting.value.message == "v1"
        server.sources = [{"name": "a", "source": {"greeting.message": "v2"}}]
        result = await app.refresh()
        assert result.changed == ("greeting.message",)
        assert greeting.value.message == "v2"
        await app.refresh()
    assert seen == [frozenset({"greeting.message"}), frozenset()]
    assert [p for p, _ in server.requests] == ["/pynode/default"] * 3


async def test_a_refresh_while_the_server_is_down_keeps_the_config_and_raises(
    server: FakeServer, tmp_path: Path
) -> None:
    server.sources = [{"name": "a", "source": {"greeting.message": "v1"}}]
    path = write(tmp_path / "app.yaml", {"config-server": {"uri": server.url}})
    app, greeting = node(path)
    seen: list[frozenset[str]] = []
    app.on_refresh(seen.append)
    async with app.run():
        server.status = 503
        with pytest.raises(ConfigServerError, match=r"HTTP 503") as caught:
            await app.refresh()
        assert server.url in str(caught.value)
        assert greeting.value.message == "v1"
    assert seen == []


async def test_the_next_uri_is_tried_and_basic_auth_is_sent_but_never_shown(
    server: FakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = base64.b64encode(f"cfg:{PASSWORD}".encode()).decode()
    server.auth = f"Basic {credentials}"
    server.sources = [{"name": "a", "source": {"greeting.message": "v1", "greeting.token": TOKEN}}]
    down = f"http://cfg:{PASSWORD}@127.0.0.1:{closed_port()}"
    authed = server.url.replace("http://", f"http://cfg:{PASSWORD}@")
    path = write(tmp_path / "app.yaml", {"config-server": {"uri": [down, authed]}})
    app, greeting = node(path)
    async with app.run():
        assert greeting.value.message == "v1"
        assert greeting.value.token.get_secret_value() == TOKEN
        shown = [repr(app.config), str(app.config), repr(greeting), repr(greeting.value)]
        server.auth = "Basic wrong"
        with pytest.raises(ConfigServerError) as caught:
            await app.refresh()
        shown.append(str(caught.value))
    assert "HTTP 401" in str(caught.value) and "ConnectError" in str(caught.value)
    shown.append(caplog.text)
    for text in shown:
        assert PASSWORD not in text and TOKEN not in text and credentials not in text


async def test_a_bearer_token_is_sent(server: FakeServer, tmp_path: Path) -> None:
    server.auth = f"Bearer {TOKEN}"
    server.sources = [{"name": "a", "source": {"greeting.message": "v1"}}]
    path = write(tmp_path / "app.yaml", {"config-server": {"uri": server.url, "token": TOKEN}})
    app, greeting = node(path)
    async with app.run():
        assert greeting.value.message == "v1"


async def test_fail_fast_retries_on_springs_schedule_then_fails_naming_the_uri(
    server: FakeServer, tmp_path: Path
) -> None:
    server.status = 500
    retry = {"initial-interval": 0.01, "max-interval": 0.02}
    path = write(
        tmp_path / "app.yaml",
        {"config-server": {"uri": server.url, "fail-fast": True, "retry": retry}},
    )
    app, _ = node(path)
    with pytest.raises(ConfigServerError, match=r"after 6 attempts") as caught:
        await app.start()
    assert caught.value.key == "config-server.uri"
    assert f"{server.url}/pynode/default: HTTP 500" in str(caught.value)
    assert len(server.requests) == 6


async def test_without_optional_start_fails_after_one_try(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    app, _ = node(write(tmp_path / "app.yaml", {"config-server": {"uri": uri}}))
    with pytest.raises(ConfigServerError, match=r"no Config Server answered: ") as caught:
        await app.start()
    assert f"{uri}/pynode/default: ConnectError" in str(caught.value)


async def test_optional_starts_on_local_config_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    path = write(
        tmp_path / "app.yaml",
        {"config-import": f"optional:configserver:{uri}", "greeting": {"message": "local"}},
    )
    app, greeting = node(path)
    async with app.run():
        assert greeting.value.message == "local"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert uri in warning.getMessage() and "starting on local configuration" in (
        warning.getMessage()
    )


async def test_an_invalid_served_value_fails_the_refresh_and_changes_nothing(
    server: FakeServer, tmp_path: Path
) -> None:
    key = "spring.cloud.stream.bindings.orders-in-0.consumer.maxAttempts"
    server.sources = [{"name": "a", "source": {key: 4, "greeting.message": "v1"}}]
    app, greeting = node(write(tmp_path / "app.yaml", {"config-server": {"uri": server.url}}))
    seen: list[frozenset[str]] = []
    app.on_refresh(seen.append)
    async with app.run():
        server.sources = [{"name": "a", "source": {key: 0, "greeting.message": "v2"}}]
        with pytest.raises(ConfigError) as caught:
            await app.refresh()
        assert caught.value.key == "bindings.orders-in-0.consumer.max-attempts"
        assert app.config.binding("orders-in-0").consumer.max_attempts == 4
        assert greeting.value.message == "v1"
    assert seen == []
