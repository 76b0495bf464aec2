"""Where tests find real brokers, and whether a broker still answers.

Resolution, for Kafka, RabbitMQ and PostgreSQL alike:

1. ``STREAMLIB_TEST_KAFKA`` (``host:port[,host:port]``) / ``STREAMLIB_TEST_RABBIT``
   (``amqp://`` URL) / ``STREAMLIB_TEST_POSTGRES`` (``postgresql://`` URL) from the environment;
2. Testcontainers, when a Docker engine answers and the ``testcontainers`` package is installed;
3. otherwise the test fails (never skips) with a message that says how to get a broker.

The client libraries (aiokafka, aio-pika) and testcontainers are imported lazily, never at import
time of this module.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
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
KAFKA_IMAGE_ENV = "STREAMLIB_TEST_KAFKA_IMAGE"
RABBIT_IMAGE_ENV = "STREAMLIB_TEST_RABBIT_IMAGE"
POSTGRES_IMAGE_ENV = "STREAMLIB_TEST_POSTGRES_IMAGE"

DEFAULT_RABBIT_IMAGE = "rabbitmq:3-management"
DEFAULT_POSTGRES_IMAGE = "postgres:16"
CONNECT_TIMEOUT = 2.0

HOW_TO_GET_BROKERS = (
    f"Point the tests at a broker with {KAFKA_ENV}=host:9092, "
    f"{RABBIT_ENV}=amqp://guest:guest@host:5672/ or "
    f"{POSTGRES_ENV}=postgresql://user:password@host:5432/db, "
    "or run a Docker engine so that Testcontainers starts one."
)

Broker = Literal["kafka", "rabbit"]


_resolved: dict[str, str] = {}
_containers: list[Any] = []


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
    _started(container)
    return str(container.get_bootstrap_server())


def _started(container: Any, port: int | None = None) -> tuple[str, int]:
    """Start ``container``, stop it when the process exits; its host and mapped ``port``."""
    container.start()
    if not _containers:
        atexit.register(_stop_containers)
    _containers.append(container)
    if port is None:
        return "", 0
    return str(container.get_container_host_ip()), int(container.get_exposed_port(port))


def _start_rabbit_container() -> str:
    # A plain container: testcontainers' RabbitMqContainer needs the pika package.
    from testcontainers.core.container import DockerContainer

    container: Any = DockerContainer(os.environ.get(RABBIT_IMAGE_ENV, DEFAULT_RABBIT_IMAGE))
    host, port = _started(container.with_exposed_ports(5672), 5672)
    _wait_amqp(host, port, timeout=120.0)
    return f"amqp://guest:guest@{host}:{port}/"


def _wait_amqp(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not amqp_answers(host, port):
        if time.monotonic() > deadline:
            pytest.fail(f"RabbitMQ container at {host}:{port} did not answer in {timeout:.0f} s")
        time.sleep(0.5)


def amqp_answers(host: str, port: int) -> bool:
    """True when an AMQP 0-9-1 server answers the protocol header with a method frame."""
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
        address = os.environ.get(env_var, "").strip() or _from_testcontainers(broker) or ""
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
    host, port = _started(container, 5432)
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
    else a Testcontainers container where Docker answers; fails otherwise."""
    if "postgres" not in _resolved:
        url = os.environ.get(POSTGRES_ENV, "").strip() or _from_testcontainers("postgres") or ""
        if not url:
            pytest.fail("No PostgreSQL server for this test. " + HOW_TO_GET_BROKERS, pytrace=False)
        _resolved["postgres"] = url
    require_postgres(_resolved["postgres"])
    return _resolved["postgres"]


def require_postgres(url: str, hint: str = "") -> None:
    """Fail the test at once when the PostgreSQL server does not accept a TCP
    connection; the message ends
    with ``hint``, else with how to get a broker."""
    parts = urlsplit(url)
    if not tcp_answers(parts.hostname or "127.0.0.1", parts.port or 5432):
        pytest.fail(
            f"PostgreSQL at {redact_url(url)} does not answer (TCP connect failed within "
            f"{CONNECT_TIMEOUT:.0f} s). {hint or HOW_TO_GET_BROKERS}",
            pytrace=False,
        )


def tcp_answers(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    """True when ``host:port`` accepts a TCP connection within ``timeout`` seconds."""
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


def require_kafka(bootstrap: str, hint: str = "") -> None:
    """Fail the test at once when no Kafka bootstrap server accepts a TCP
    connection; the message ends
    with ``hint``, else with how to get a broker."""
    hosts = _kafka_hosts(bootstrap)
    if not any(tcp_answers(host, port) for host, port in hosts):
        pytest.fail(
            f"Kafka at {bootstrap} does not answer (TCP connect failed within "
            f"{CONNECT_TIMEOUT:.0f} s). {hint or HOW_TO_GET_BROKERS}",
            pytrace=False,
        )


def require_rabbit(url: str, hint: str = "") -> None:
    """Fail the test at once when the RabbitMQ server does not accept a TCP
    connection; the message ends
    with ``hint``, else with how to get a broker."""
    parts = urlsplit(url)
    default_port = 5671 if parts.scheme == "amqps" else 5672
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    if not tcp_answers(host, port):
        safe = redact_url(url)
        pytest.fail(
            f"RabbitMQ at {safe} does not answer (TCP connect failed within "
            f"{CONNECT_TIMEOUT:.0f} s). {hint or HOW_TO_GET_BROKERS}",
            pytrace=False,
        )


def unique_name(prefix: str = "t") -> str:
    """A short name no other test uses: ``<prefix>-<10 hex digits>`` (valid topic, queue,
    exchange and group name)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
