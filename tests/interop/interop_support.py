"""What the interop tests share: the Spring application's build and launcher, each broker as
both sides see it, the payload, small waiting helpers, and what the bus tests read from a
Java bus node (its greetings and bus events).

Java and Maven must be installed: without them these tests fail, they never skip.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import anyio
import orjson
import pytest
from pydantic import BaseModel
from streamlib_kafka.testing import read_topic

from streamlib import StreamApp

SPRING_DIR = Path(__file__).parent / "spring"
JVM_OPTIONS = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
BUILD_TIMEOUT = 900.0
START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0
RECEIVE_TIMEOUT = 60.0


def _sources() -> list[Path]:
    files = [SPRING_DIR / "pom.xml", *(p for p in (SPRING_DIR / "src").rglob("*") if p.is_file())]
    return sorted(files)


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in _sources():
        digest.update(path.relative_to(SPRING_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"the interop tests need {name!r} on PATH (a JDK 17+ and Maven 3.8+)")
    return path


@dataclass
class Broker:
    """One broker as both sides see it: Spring arguments/environment and a streamlib binder."""

    name: str
    spring_args: dict[str, str]
    spring_env: dict[str, str]
    binder: dict[str, Any]

    def streamlib_config(self, name: str, bindings: dict[str, Any], **top: Any) -> dict[str, Any]:
        """A streamlib app configuration on this broker."""
        return {
            "name": name,
            "binders": {self.name: self.binder},
            "default-binder": self.name,
            "bindings": bindings,
            **{k.replace("_", "-"): v for k, v in top.items()},
        }


def kafka_broker(bootstrap: str) -> Broker:
    return Broker(
        "kafka",
        {
            "spring.cloud.stream.defaultBinder": "kafka",
            "spring.cloud.stream.kafka.binder.brokers": bootstrap,
            "spring.kafka.bootstrap-servers": bootstrap,
        },
        {},
        {"type": "kafka", "bootstrap-servers": bootstrap},
    )


def rabbit_broker(url: str) -> Broker:
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    env = {
        "SPRING_RABBITMQ_HOST": parts.hostname or "127.0.0.1",
        "SPRING_RABBITMQ_PORT": str(parts.port or 5672),
        "SPRING_RABBITMQ_USERNAME": unquote(parts.username or "guest"),
        "SPRING_RABBITMQ_PASSWORD": unquote(parts.password or "guest"),
        "SPRING_RABBITMQ_VIRTUAL_HOST": vhost,
    }
    return Broker(
        "rabbit",
        {"spring.cloud.stream.defaultBinder": "rabbit"},
        env,
        {"type": "rabbit", "url": url},
    )


@dataclass
class JavaApp:
    """A running Spring application; ``records()`` are the JSON lines it wrote."""

    label: str
    out: Path
    log: Path
    process: subprocess.Popen[bytes]
    _log_file: Any = field(repr=False)

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        lines = [orjson.loads(line) for line in self.out.read_bytes().splitlines() if line]
        return [r for r in lines if event is None or r.get("event") == event]

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    async def wait_for(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool],
        what: str,
        timeout: float = START_TIMEOUT,
    ) -> list[dict[str, Any]]:
        """Wait until ``predicate(records)`` holds; fail with the JVM's log if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.records()
            if predicate(records):
                return records
            if self.process.poll() is not None:
                break
            await anyio.sleep(0.2)
        pytest.fail(f"{self.label}: {what} did not happen\n--- log ---\n{self.log_tail()}")

    async def wait_ready(self) -> None:
        await self.wait_for(lambda rs: any(r["event"] == "ready" for r in rs), "start")

    async def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            await anyio.sleep(0.2)
        if self.process.returncode is None:
            pytest.fail(f"{self.label} did not exit\n--- log ---\n{self.log_tail()}")
        return self.process.returncode

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


class Spring:
    """Starts the Spring application in a role (a Spring profile) on the test's broker."""

    def __init__(self, jar: Path, broker: Broker, tmp_path: Path) -> None:
        self.jar = jar
        self.broker = broker
        self.tmp_path = tmp_path
        self.apps: list[JavaApp] = []

    def start(self, profile: str, properties: dict[str, Any]) -> JavaApp:
        label = f"java-{profile}-{len(self.apps)}"
        out = self.tmp_path / f"{label}.jsonl"
        log = self.tmp_path / f"{label}.log"
        args = {**self.broker.spring_args, **properties, "interop.out": str(out)}
        command = [
            _tool("java"),
            *JVM_OPTIONS,
            "-jar",
            str(self.jar),
            f"--spring.profiles.active={profile}",
            *(f"--{key}={value}" for key, value in args.items()),
        ]
        log_file = log.open("wb")
        process = subprocess.Popen(
            command,
            cwd=self.tmp_path,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.broker.spring_env},
        )
        app = JavaApp(label, out, log, process, log_file)
        self.apps.append(app)
        return app

    def stop_all(self) -> None:
        for app in self.apps:
            app.stop()


def build_spring_jar() -> Path:
    """The Spring application's jar: built once per source change, outside the repository."""
    _tool("java")
    mvn = _tool("mvn")
    cache = Path(os.environ.get("STREAMLIB_CACHE") or Path.home() / ".cache" / "streamlib")
    jar = cache / "interop" / _source_hash() / "app.jar"
    if jar.exists():
        return jar
    jar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="streamlib-interop-") as tmp:
        work = Path(tmp) / "spring"
        work.mkdir()
        for path in _sources():
            target = work / path.relative_to(SPRING_DIR)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        build = subprocess.run(
            [mvn, "-q", "-B", "package", "-DskipTests"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
        if build.returncode != 0:
            pytest.fail(f"Maven build of {SPRING_DIR} failed:\n{build.stdout[-4000:]}")
        partial = jar.with_suffix(".tmp")
        shutil.copyfile(work / "target" / "app.jar", partial)
        partial.replace(jar)
    return jar


class WireTap:
    """What the broker carried on a destination, read raw to compare bytes, not beliefs.

    Kafka: the topic's records from its start. RabbitMQ: the messages routed to the
    destination's exchange after ``start()``, through an exclusive queue bound with ``#``.
    """

    def __init__(self, broker: Broker, dest: str) -> None:
        self.broker, self.dest = broker, dest
        self._connection: Any = None
        self._queue: Any = None

    async def start(self) -> None:
        if self.broker.name == "rabbit":
            self._connection = await aio_pika.connect(self.broker.binder["url"])
            channel = await self._connection.channel()
            exchange = await channel.declare_exchange(
                self.dest, aio_pika.ExchangeType.TOPIC, durable=True
            )
            self._queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await self._queue.bind(exchange, "#")

    async def read(self, count: int | None = None) -> list[Any]:
        """Kafka ``ConsumerRecord``s or aio-pika messages: ``count`` of them, or (None) all
        there are. Reading RabbitMQ's ends the tap."""
        if self.broker.name == "kafka":
            return await self._kafka_records(count)
        out: list[Any] = []
        while count is None or len(out) < count:
            message = await self._queue.get(no_ack=True, fail=False)
            if message is None:
                break
            out.append(message)
        await self._connection.close()
        return out

    async def _kafka_records(self, count: int | None) -> list[Any]:
        bootstrap = self.broker.binder["bootstrap-servers"]
        if count is None:
            return await read_topic(bootstrap, self.dest, 0, 0.0, settle=2.0)
        return await read_topic(bootstrap, self.dest, count, RECEIVE_TIMEOUT, settle=0.0)

    async def bodies(self) -> list[bytes]:
        """The body of every record or message there is."""
        kafka = self.broker.name == "kafka"
        return [r.value if kafka else r.body for r in await self.read()]


class Order(BaseModel):
    """The payload of the Java side's ``io.streamlib.interop.Order`` record."""

    key: str
    seq: int
    note: str


async def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = RECEIVE_TIMEOUT
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await anyio.sleep(0.1)


async def wait_count(items: Sized, count: int, what: str) -> None:
    await wait_until(lambda: len(items) >= count, f"{count} {what} (have {len(items)})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


REFRESH = "RefreshRemoteApplicationEvent"
ACK = "AckRemoteApplicationEvent"
PROBE = "probe:0:"


async def java_listening(java: JavaApp, broker: Broker, dest: str) -> None:
    """Ready, and on Kafka positioned on its bus partition.

    An anonymous Kafka group starts at "latest", fixed on its first fetch after the
    assignment, so a probe ack is sent until Java logs one: then nothing later is skipped.
    """
    await java.wait_ready()
    if broker.name != "kafka":
        return
    await java.wait_for(
        lambda rs: any(r["event"] == "assigned" and r["partitions"] for r in rs),
        "assignment of the bus partition",
    )
    probe = StreamApp("probe", config={"binders": {"kafka": broker.binder}})
    async with probe.run():
        with anyio.fail_after(60):
            while True:
                origin = f"{PROBE}{uuid.uuid4().hex}"
                await probe.send(
                    dest,
                    {
                        "type": ACK,
                        "ackDestinationService": "**",
                        "ackId": str(uuid.uuid4()),
                        "destinationService": "**",
                        "event": "org.springframework.cloud.bus.event.AckRemoteApplicationEvent",
                        "id": str(uuid.uuid4()),
                        "originService": origin,
                        "timestamp": int(time.time() * 1000),
                    },
                )
                for _ in range(20):
                    if any(a["originService"] == origin for a in java.records("bus")):
                        return
                    await anyio.sleep(0.1)


def greetings(java: JavaApp) -> list[str]:
    return [r["greeting"] for r in java.records("greeting")]


def bus_events(java: JavaApp, type_: str) -> list[dict[str, Any]]:
    """The bus events Java logged, without the readiness probes."""
    return [
        r
        for r in java.records("bus")
        if r["type"] == type_ and not r["originService"].startswith(PROBE)
    ]
