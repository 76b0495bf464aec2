"""The brokers that tools/brokers.py runs for this repository's tests, and control of them.

The launcher keeps a state file in ``$STREAMLIB_BROKERS_DIR`` (default
``/tmp/streamlib-brokers``); ``export_addresses`` turns the live entries into the
``STREAMLIB_TEST_*`` variables that streamlib's broker fixtures read. ``broker_ctl`` and
``rabbitmqctl`` stop, restart and inspect the launcher's brokers from a test.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from streamlib.testing.brokers import KAFKA_ENV, POSTGRES_ENV, RABBIT_ENV

BROKERS_TOOL_ENV = "STREAMLIB_BROKERS_TOOL"
BROKERS_DIR_ENV = "STREAMLIB_BROKERS_DIR"
RABBIT_NODE_ENV = "STREAMLIB_TEST_RABBIT_NODE"
RABBITMQCTL_ENV = "STREAMLIB_TEST_RABBITMQCTL"
DEFAULT_RABBIT_NODE = "streamlib@localhost"

Action = Literal["stop", "start", "restart", "kill", "pause", "resume"]
Broker = Literal["kafka", "rabbit"]
Server = Literal["kafka", "rabbit", "postgres"]

_ADDRESS_ENV: dict[Server, str] = {
    "kafka": KAFKA_ENV,
    "rabbit": RABBIT_ENV,
    "postgres": POSTGRES_ENV,
}


class BrokerControlError(RuntimeError):
    """A broker control command (rabbitmqctl, tools/brokers.py) failed."""


def brokers_dir() -> Path:
    return Path(os.environ.get(BROKERS_DIR_ENV, "/tmp/streamlib-brokers"))


def _state() -> dict[str, Any]:
    try:
        data = json.loads((brokers_dir() / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _address(entry: Any, server: Server) -> str | None:
    if not isinstance(entry, dict):
        return None
    address = entry.get("bootstrap" if server == "kafka" else "url")
    return address if isinstance(address, str) else None


def launcher_address(server: Server) -> str | None:
    """Address of a server that tools/brokers.py started and that is still running."""
    entry = _state().get(server)
    if not isinstance(entry, dict):
        return None
    pid = entry.get("pid")
    if not isinstance(pid, int) or not Path(f"/proc/{pid}").exists():
        return None
    return _address(entry, server)


def export_addresses() -> None:
    """Set ``STREAMLIB_TEST_KAFKA``/``_RABBIT``/``_POSTGRES`` to the launcher's running servers,
    leaving any variable that is already set as it is."""
    for server, env_var in _ADDRESS_ENV.items():
        if os.environ.get(env_var, "").strip():
            continue
        address = launcher_address(server)
        if address:
            os.environ[env_var] = address


def launcher_runs(broker: Server, address: str) -> bool:
    """True when ``address`` is the server that tools/brokers.py started (so broker_ctl and
    rabbitmqctl reach it)."""
    return _address(_state().get(broker), broker) == address


def dead_broker_hint(broker: Server, address: str) -> str:
    """What to do about a launcher's server that stopped answering ("" for other servers)."""
    if not launcher_runs(broker, address):
        return ""
    logs = {
        "kafka": "kafka/logs/server.log",
        "rabbit": "rabbit/log/rabbit.log",
        "postgres": "postgres/postgres.log",
    }
    return (
        f"Its log: {brokers_dir() / logs[broker]}. Restart it with "
        f"`python3 tools/brokers.py up {broker}`."
    )


def _run(cmd: list[str], env: dict[str, str] | None, timeout: float) -> str:
    try:
        proc = subprocess.run(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerControlError(f"`{shlex.join(cmd)}` failed: {exc}") from exc
    if proc.returncode != 0:
        raise BrokerControlError(
            f"`{shlex.join(cmd)}` exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """Run ``rabbitmqctl -n <node> ARGS`` against the test node; return its standard output.

    The node is ``$STREAMLIB_TEST_RABBIT_NODE`` (default ``streamlib@localhost``, the launcher's
    node). ``$STREAMLIB_TEST_RABBITMQCTL`` may name another command, for instance
    ``docker exec my-rabbit rabbitmqctl``. Raises BrokerControlError on failure.
    """
    node = os.environ.get(RABBIT_NODE_ENV, DEFAULT_RABBIT_NODE)
    custom = os.environ.get(RABBITMQCTL_ENV)
    env = dict(os.environ)
    if custom:
        base = shlex.split(custom)
    else:
        direct = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
        # Not the /usr/sbin wrapper: as root it switches to the rabbitmq user and its cookie.
        base = [str(direct) if direct.exists() else "rabbitmqctl"]
        home = brokers_dir() / "rabbit" / "home"
        if (home / ".erlang.cookie").exists():
            env["HOME"] = str(home)  # the launcher's node shares this cookie
        env.setdefault("LANG", "C.UTF-8")
        env.setdefault("LC_ALL", "C.UTF-8")
    return _run([*base, "-n", node, *args], env, timeout)


def brokers_tool() -> Path:
    """Path of tools/brokers.py: ``$STREAMLIB_BROKERS_TOOL`` or the one of this checkout."""
    configured = os.environ.get(BROKERS_TOOL_ENV)
    tool = (
        Path(configured)
        if configured
        else Path(__file__).resolve().parents[2] / "tools" / "brokers.py"
    )
    if not tool.exists():
        raise BrokerControlError(f"broker launcher not found at {tool}; set {BROKERS_TOOL_ENV}")
    return tool


def broker_ctl(action: Action, broker: Broker, timeout: float = 180.0) -> str:
    """Stop, start, restart, kill (SIGKILL), pause (SIGSTOP) or resume a launcher-run broker.

    Data is kept, so a test can restart RabbitMQ or Kafka in the middle of a stream. ``start``
    and ``restart`` return once the broker answers again. Raises BrokerControlError on failure.
    """
    return _run([sys.executable, str(brokers_tool()), action, broker], None, timeout)
