"""Where the tests find real brokers, and helpers to inspect and disturb them.

Resolution, for Kafka, RabbitMQ and PostgreSQL alike:

1. ``STREAMLIB_TEST_KAFKA`` (``host:port[,host:port]``) / ``STREAMLIB_TEST_RABBIT``
   (``amqp://`` URL) / ``STREAMLIB_TEST_POSTGRES`` (``postgresql://`` URL) from the environment;
2. the brokers started by ``tools/brokers.py up`` (``make brokers``), found through its state
   file in ``$STREAMLIB_BROKERS_DIR`` (default ``/tmp/streamlib-brokers``);
3. Testcontainers, when a Docker engine answers and the ``testcontainers`` package is installed;
4. otherwise the test fails (never skips) with a message that says how to get a broker.

The client libraries (aiokafka, aio-pika) and testcontainers are imported lazily, never at import
time of this module.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest

from streamlib.config import redact_url

KAFKA_ENV = "STREAMLIB_TEST_KAFKA"
RABBIT_ENV = "STREAMLIB_TEST_RABBIT"
POSTGRES_ENV = "STREAMLIB_TEST_POSTGRES"
RABBIT_NODE_ENV = "STREAMLIB_TEST_RABBIT_NODE"
RABBITMQCTL_ENV = "STREAMLIB_TEST_RABBITMQCTL"
BROKERS_TOOL_ENV = "STREAMLIB_BROKERS_TOOL"
BROKERS_DIR_ENV = "STREAMLIB_BROKERS_DIR"
KAFKA_IMAGE_ENV = "STREAMLIB_TEST_KAFKA_IMAGE"
RABBIT_IMAGE_ENV = "STREAMLIB_TEST_RABBIT_IMAGE"
POSTGRES_IMAGE_ENV = "STREAMLIB_TEST_POSTGRES_IMAGE"

DEFAULT_RABBIT_NODE = "streamlib@localhost"
DEFAULT_RABBIT_IMAGE = "rabbitmq:3-management"
DEFAULT_POSTGRES_IMAGE = "postgres:16"
CONNECT_TIMEOUT = 2.0

HOW_TO_GET_BROKERS = (
    "Start the project's brokers with `make brokers` (or `python3 tools/brokers.py up`), "
    f"or point the tests at your own: {KAFKA_ENV}=host:9092, "
    f"{RABBIT_ENV}=amqp://guest:guest@host:5672/ (see docs/brokers.md)."
)

Action = Literal["stop", "start", "restart", "kill", "pause", "resume"]
Broker = Literal["kafka", "rabbit"]


class BrokerControlError(RuntimeError):
    """A broker control command (rabbitmqctl, tools/brokers.py) failed."""


_resolved: dict[str, str] = {}
_containers: list[Any] = []


# --------------------------------------------------------------------------- resolution


def _brokers_dir() -> Path:
    return Path(os.environ.get(BROKERS_DIR_ENV, "/tmp/streamlib-brokers"))


def _launcher_state() -> dict[str, Any]:
    try:
        data = json.loads((_brokers_dir() / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _launcher_address(broker: Broker | Literal["postgres"]) -> str | None:
    """Address of a broker that tools/brokers.py started and that is still running."""
    entry = _launcher_state().get(broker)
    if not isinstance(entry, dict) or not entry.get("pid"):
        return None
    pid = entry["pid"]
    if not isinstance(pid, int) or not Path(f"/proc/{pid}").exists():
        return None
    address = entry.get("bootstrap" if broker == "kafka" else "url")
    return address if isinstance(address, str) else None


def _docker_answers() -> bool:
    """True when a Docker engine answers /_ping (DOCKER_HOST or the default socket)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            path = host[len("unix://") :]
            if not Path(path).exists():
                return False
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(path)
        elif host.startswith("tcp://"):
            parts = urlsplit(host)
            sock = socket.create_connection(
                (parts.hostname or "localhost", parts.port or 2375), timeout=CONNECT_TIMEOUT
            )
        else:
            return False
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"HTTP/") and b" 200 " in reply


def _stop_containers() -> None:
    while _containers:
        container = _containers.pop()
        with contextlib.suppress(Exception):
            container.stop()


def _start_kafka_container() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:  # testcontainers before the "community" split
            from testcontainers.kafka import KafkaContainer
    image = os.environ.get(KAFKA_IMAGE_ENV)
    container: Any = KafkaContainer(image) if image else KafkaContainer()
    container = container.with_kraft()
    container.start()
    if not _containers:
        atexit.register(_stop_containers)
    _containers.append(container)
    return str(container.get_bootstrap_server())


def _start_rabbit_container() -> str:
    # A plain container: testcontainers' RabbitMqContainer needs the pika package.
    from testcontainers.core.container import DockerContainer

    container: Any = DockerContainer(os.environ.get(RABBIT_IMAGE_ENV, DEFAULT_RABBIT_IMAGE))
    container = container.with_exposed_ports(5672)
    container.start()
    if not _containers:
        atexit.register(_stop_containers)
    _containers.append(container)
    host = str(container.get_container_host_ip())
    port = int(container.get_exposed_port(5672))
    _wait_amqp(host, port, timeout=120.0)
    return f"amqp://guest:guest@{host}:{port}/"


def _wait_amqp(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _amqp_answers(host, port):
        if time.monotonic() > deadline:
            pytest.fail(f"RabbitMQ container at {host}:{port} did not answer in {timeout:.0f} s")
        time.sleep(0.5)


def _amqp_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as sock:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            head = sock.recv(1)
    except OSError:
        return False
    return head == b"\x01"


def _from_testcontainers(broker: Broker | Literal["postgres"]) -> str | None:
    if not _docker_answers():
        return None
    try:
        import testcontainers  # noqa: F401
    except ImportError:
        pytest.fail(
            f"A Docker engine answers but the `testcontainers` package is missing "
            f"(pip install testcontainers), so there is no {broker} broker. " + HOW_TO_GET_BROKERS
        )
    try:
        if broker == "postgres":
            return _start_postgres_container()
        return _start_kafka_container() if broker == "kafka" else _start_rabbit_container()
    except Exception as exc:
        pytest.fail(f"Testcontainers could not start {broker}: {exc!r}. " + HOW_TO_GET_BROKERS)


def _resolve(broker: Broker, env_var: str) -> str:
    if broker in _resolved:
        address = _resolved[broker]
    else:
        address = (
            os.environ.get(env_var, "").strip()
            or _launcher_address(broker)
            or _from_testcontainers(broker)
            or ""
        )
        if not address:
            name = "Kafka" if broker == "kafka" else "RabbitMQ"
            pytest.fail(f"No {name} broker for this test. " + HOW_TO_GET_BROKERS, pytrace=False)
        _resolved[broker] = address
    if broker == "kafka":
        require_kafka(address)
    else:
        require_rabbit(address)
    return address


def kafka_bootstrap() -> str:
    """Bootstrap servers (``host:port[,...]``) of a Kafka broker that answers; fails otherwise."""
    return _resolve("kafka", KAFKA_ENV)


def rabbit_url() -> str:
    """AMQP URL of a RabbitMQ broker that answers; fails otherwise."""
    return _resolve("rabbit", RABBIT_ENV)


def _start_postgres_container() -> str:
    from testcontainers.core.container import DockerContainer

    container: Any = DockerContainer(os.environ.get(POSTGRES_IMAGE_ENV, DEFAULT_POSTGRES_IMAGE))
    container = container.with_env("POSTGRES_USER", "streamlib")
    container = container.with_env("POSTGRES_PASSWORD", "streamlib")
    container = container.with_env("POSTGRES_DB", "streamlib").with_exposed_ports(5432)
    container.start()
    if not _containers:
        atexit.register(_stop_containers)
    _containers.append(container)
    host = str(container.get_container_host_ip())
    port = int(container.get_exposed_port(5432))
    deadline = time.monotonic() + 120.0
    # The image's entrypoint runs a temporary server for its set-up first: the real one is
    # ready at the second "ready" line.
    while b"".join(container.get_logs()).count(b"ready to accept connections") < 2:
        if time.monotonic() > deadline:
            pytest.fail(f"PostgreSQL container at {host}:{port} did not get ready in 120 s")
        time.sleep(0.5)
    return f"postgresql://streamlib:streamlib@{host}:{port}/streamlib"


def postgres_url() -> str:
    """URL (``postgresql://...``) of a PostgreSQL server that answers: ``$STREAMLIB_TEST_POSTGRES``,
    else the one ``tools/brokers.py up postgres`` started, else a Testcontainers container where
    Docker answers; fails otherwise."""
    if "postgres" not in _resolved:
        url = (
            os.environ.get(POSTGRES_ENV, "").strip()
            or _launcher_address("postgres")
            or _from_testcontainers("postgres")
            or ""
        )
        if not url:
            pytest.fail(
                "No PostgreSQL server for this test. Start the project's with "
                f"`python3 tools/brokers.py up postgres`, or set {POSTGRES_ENV}="
                "postgresql://user:password@host:5432/db (or run a Docker engine).",
                pytrace=False,
            )
        _resolved["postgres"] = url
    require_postgres(_resolved["postgres"])
    return _resolved["postgres"]


def require_postgres(url: str) -> None:
    """Fail the test at once when the PostgreSQL server does not accept a TCP connection."""
    parts = urlsplit(url)
    if not _tcp_answers(parts.hostname or "127.0.0.1", parts.port or 5432):
        pytest.fail(
            f"PostgreSQL at {redact_url(url)} does not answer (TCP connect failed within "
            f"{CONNECT_TIMEOUT:.0f} s). Start it with `python3 tools/brokers.py up postgres`.",
            pytrace=False,
        )


# --------------------------------------------------------------------------- liveness


def _tcp_answers(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _kafka_hosts(bootstrap: str) -> list[tuple[str, int]]:
    hosts = []
    for item in bootstrap.split(","):
        item = item.strip()
        if "://" in item:
            item = item.split("://", 1)[1]
        host, _, port = item.rpartition(":")
        hosts.append((host.strip("[]") or "127.0.0.1", int(port or 9092)))
    return hosts


def launcher_runs(broker: Broker, address: str) -> bool:
    """True when ``address`` is the broker that tools/brokers.py started (so broker_ctl and
    rabbitmqctl reach it)."""
    entry = _launcher_state().get(broker)
    if not isinstance(entry, dict):
        return False
    return entry.get("bootstrap" if broker == "kafka" else "url") == address


def _dead_broker_hint(broker: Broker, address: str) -> str:
    if launcher_runs(broker, address):
        log = "kafka/logs/server.log" if broker == "kafka" else "rabbit/log/rabbit.log"
        return (
            f" Its log: {_brokers_dir() / log}. Restart it with "
            f"`python3 tools/brokers.py up {broker}`."
        )
    return " " + HOW_TO_GET_BROKERS


def require_kafka(bootstrap: str) -> None:
    """Fail the test at once when no Kafka bootstrap server accepts a TCP connection."""
    hosts = _kafka_hosts(bootstrap)
    if not any(_tcp_answers(host, port) for host, port in hosts):
        pytest.fail(
            f"Kafka at {bootstrap} does not answer (TCP connect failed within "
            f"{CONNECT_TIMEOUT:.0f} s)." + _dead_broker_hint("kafka", bootstrap),
            pytrace=False,
        )


def require_rabbit(url: str) -> None:
    """Fail the test at once when the RabbitMQ server does not accept a TCP connection."""
    parts = urlsplit(url)
    default_port = 5671 if parts.scheme == "amqps" else 5672
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    if not _tcp_answers(host, port):
        safe = redact_url(url)
        pytest.fail(
            f"RabbitMQ at {safe} does not answer (TCP connect failed within "
            f"{CONNECT_TIMEOUT:.0f} s)." + _dead_broker_hint("rabbit", url),
            pytrace=False,
        )


# --------------------------------------------------------------------------- control


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
        home = _brokers_dir() / "rabbit" / "home"
        if (home / ".erlang.cookie").exists():
            env["HOME"] = str(home)  # the launcher's node shares this cookie
        env.setdefault("LANG", "C.UTF-8")
        env.setdefault("LC_ALL", "C.UTF-8")
    return _run([*base, "-n", node, *args], env, timeout)


def brokers_tool() -> Path:
    """Path of tools/brokers.py: ``$STREAMLIB_BROKERS_TOOL`` or relative to this checkout."""
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


def unique_name(prefix: str = "t") -> str:
    """A short name no other test uses: ``<prefix>-<10 hex digits>`` (valid topic, queue,
    exchange and group name)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
