"""The management endpoint's settings: off by default, errors name the key, and the core runs
without the ops extra."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from streamlib import StreamApp
from streamlib.config import ManagementProperties
from streamlib.errors import ConfigError

pytestmark = pytest.mark.anyio


def _app(management: object) -> StreamApp:
    app = StreamApp("m", config={"management": management})

    @app.sink
    async def take(payload: str) -> None:
        return None

    return app


async def test_the_endpoint_is_off_by_default() -> None:
    app = _app({})
    async with app.run():
        assert app.management_url is None
        assert app.settings("management", ManagementProperties).value.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("management", "key", "reason"),
    [
        ({"port": 70000}, "management.port", "less than or equal to 65535"),
        ({"port": "http"}, "management.port", "valid integer"),
        ({"prot": 8080}, "management.prot", "did you mean 'port'?"),
    ],
)
async def test_invalid_settings_fail_at_start_naming_the_key(
    management: object, key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        await _app(management).start()
    assert caught.value.key == key
    assert reason in str(caught.value)


async def test_a_port_in_use_fails_at_start_naming_management_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = _app({"port": port})
        with pytest.raises(ConfigError) as caught:
            await app.start()
    assert caught.value.key == "management.port"
    assert f"cannot listen on 127.0.0.1:{port}" in str(caught.value)
    assert app.health()["status"] == "down"  # nothing was left started


def test_without_the_ops_extra_the_app_runs_and_enabling_the_endpoint_names_the_extra() -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["aiohttp"] = None
        sys.modules["prometheus_client"] = None
        from streamlib import StreamApp
        from streamlib.errors import ConfigError

        seen = []
        app = StreamApp("plain", config={"bindings": {"take-in-0": {"destination": "d"}}})

        @app.sink
        async def take(payload: str) -> None:
            seen.append(payload)

        async def main():
            async with app.run():
                await app.send("d", "hello")
                while not seen:
                    await asyncio.sleep(0.01)
            print("handled", seen)
            app.override_config({"management.port": 0})
            try:
                await app.start()
            except ConfigError as exc:
                print(exc)

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "handled ['hello']",
        "management.port: the management endpoint needs aiohttp and prometheus_client; "
        "install the ops extra: pip install 'streamlib[ops]'",
    ]
