#!/usr/bin/env python3
"""Run the real brokers that the streamlib tests use, on 127.0.0.1.

Standard library only: this script runs before any virtualenv exists.

    python3 tools/brokers.py up [kafka|rabbit|postgres|all]
                                                      start (idempotent), wait until they answer
    python3 tools/brokers.py down                     stop what this tool started, delete its data
    python3 tools/brokers.py status                   show what runs (exit 3 if something is down)
    python3 tools/brokers.py env                      print the variables the tests read
    python3 tools/brokers.py stop|start|restart|kill|pause|resume kafka|rabbit|postgres
                                                      fault injection; data is kept
    python3 tools/brokers.py rabbitmqctl ARGS...      rabbitmqctl against our node

Kafka: Apache Kafka (KRaft, one combined broker+controller node) from the jars on Maven Central,
fetched once with Maven into ${STREAMLIB_CACHE:-~/.cache/streamlib}/kafka-<version>/libs.
Listener 127.0.0.1:9092, controller 127.0.0.1:9093, and a listener for clients that go through a
TCP fault proxy: 127.0.0.1:9094, advertised as the proxy's address 127.0.0.1:19092, so a client
that bootstraps through the proxy keeps all its connections on it.

RabbitMQ: the Debian package rabbitmq-server (installed with apt-get when missing), run as our own
node streamlib@localhost on 127.0.0.1:5672 (distribution 127.0.0.1:25672, epmd 127.0.0.1:4369,
shared with other nodes), user guest/guest.

PostgreSQL: the Debian package postgresql (installed with apt-get when missing), a cluster of our
own run as the postgres system user on 127.0.0.1:5433 (not the default port, so a system instance
may run beside it), database streamlib, user streamlib/streamlib.

State and data live in ${STREAMLIB_BROKERS_DIR:-/tmp/streamlib-brokers}. Only processes recorded
in its state file are ever signalled.

A second, independent pair runs beside the first with its own directory, ports and node name:

    STREAMLIB_BROKERS_DIR        /tmp/streamlib-brokers   state, data and logs
    STREAMLIB_KAFKA_PORT         9092                     Kafka listener
    STREAMLIB_KAFKA_CONTROLLER_PORT  9093                 KRaft controller
    STREAMLIB_KAFKA_PROXIED_PORT     Kafka port + 2       listener the fault proxy forwards to
    STREAMLIB_KAFKA_PROXY_PORT   19092                    the proxy's port, advertised by it
    STREAMLIB_RABBIT_PORT        5672                     AMQP
    STREAMLIB_RABBIT_DIST_PORT   25672                    Erlang distribution
    STREAMLIB_RABBIT_NODE        streamlib@localhost      node name (epmd tells nodes apart)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BASE = Path(os.environ.get("STREAMLIB_BROKERS_DIR", "/tmp/streamlib-brokers"))
CACHE = Path(os.environ.get("STREAMLIB_CACHE", "~/.cache/streamlib")).expanduser()
STATE_FILE = BASE / "state.json"
LOCK_FILE = BASE / ".lock"


def env_port(name: str, default: int) -> int:
    """A TCP port from environment variable ``name``, ``default`` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise SystemExit(f"brokers.py: {name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise SystemExit(f"brokers.py: {name}={port} is not a port number (1-65535)")
    return port


HOST = "127.0.0.1"
KAFKA_PORT = env_port("STREAMLIB_KAFKA_PORT", 9092)
KAFKA_CONTROLLER_PORT = env_port("STREAMLIB_KAFKA_CONTROLLER_PORT", 9093)
KAFKA_PROXIED_PORT = env_port("STREAMLIB_KAFKA_PROXIED_PORT", KAFKA_PORT + 2)
KAFKA_PROXY_PORT = env_port("STREAMLIB_KAFKA_PROXY_PORT", 19092)
KAFKA_BOOTSTRAP = f"{HOST}:{KAFKA_PORT}"
KAFKA_PROXIED = f"{HOST}:{KAFKA_PROXY_PORT}"
KAFKA_VERSIONS = (
    [os.environ["STREAMLIB_KAFKA_VERSION"]]
    if os.environ.get("STREAMLIB_KAFKA_VERSION")
    else ["4.4.0", "4.3.1"]
)
KAFKA_POM = REPO / "tools" / "kafka" / "pom.xml"
KAFKA_JVM_OPTS = os.environ.get(
    "STREAMLIB_KAFKA_JVM_OPTS",
    "-Xms256m -Xmx768m -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError"
    " -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true",
).split()

RABBIT_PORT = env_port("STREAMLIB_RABBIT_PORT", 5672)
RABBIT_DIST_PORT = env_port("STREAMLIB_RABBIT_DIST_PORT", 25672)
EPMD_PORT = 4369
RABBIT_NODE = os.environ.get("STREAMLIB_RABBIT_NODE", "").strip() or "streamlib@localhost"
RABBIT_URL = f"amqp://guest:guest@{HOST}:{RABBIT_PORT}/"
RABBIT_LIB_BIN = Path("/usr/lib/rabbitmq/bin")

START_TIMEOUT = float(os.environ.get("STREAMLIB_BROKERS_TIMEOUT", "120"))
STOP_TIMEOUT = 30.0
BROKERS = ("kafka", "rabbit", "postgres")


class BrokerError(Exception):
    """A failure with a message meant for the person at the terminal."""


def say(msg: str) -> None:
    print(msg, flush=True)


@contextlib.contextmanager
def locked(base: Path = BASE) -> Iterator[None]:
    """Hold the lock of the launcher whose state lives in ``base``."""
    base.mkdir(parents=True, exist_ok=True)
    with open(base / LOCK_FILE.name, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_state(state_file: Path = STATE_FILE) -> dict[str, Any]:
    try:
        data = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(state: dict[str, Any], state_file: Path = STATE_FILE) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(state_file)


MARKERS = {"kafka": "kafka.Kafka", "rabbit": "rabbitmq", "epmd": "epmd", "postgres": "postgres"}


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state letter, process group, parent pid) of a process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[1])


def _all_stats() -> dict[int, tuple[str, int, int]]:
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None:
                stats[int(entry.name)] = stat
    return stats


def pid_alive(pid: int | None, kind: str) -> bool:
    """True if pid runs (not a zombie) and its command line is the one we started."""
    if not pid:
        return False
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return MARKERS[kind] in cmdline


def family(pid: int) -> set[int]:
    """pid, its process group and all its descendants (some helpers, such as Erlang's
    erl_child_setup, start sessions of their own)."""
    stats = _all_stats()
    found = {p for p, st in stats.items() if st[1] == pid} | {pid}
    grew = True
    while grew:
        more = {p for p, st in stats.items() if st[2] in found and p not in found}
        found |= more
        grew = bool(more)
    return found


def still_running(pids: set[int]) -> set[int]:
    """The pids of the set that are neither gone nor zombies."""
    left = set()
    for p in pids:
        stat = _proc_stat(p)
        if stat is not None and stat[0] not in ("Z", "X"):
            left.add(p)
    return left


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by pid (each broker runs in its own session)."""
    stat = _proc_stat(pid)
    with contextlib.suppress(ProcessLookupError):
        if stat is not None and stat[1] == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def terminate(pid: int, kind: str, timeout: float = STOP_TIMEOUT, hard: bool = False) -> None:
    """SIGTERM (SIGKILL when hard) the group of pid; SIGKILL whatever of the process, its group
    and its descendants is left after the timeout (2 s when hard); wait until all are gone."""
    if not pid_alive(pid, kind):
        return
    members = family(pid)
    signal_group(pid, signal.SIGKILL if hard else signal.SIGTERM)
    deadline = time.monotonic() + (2.0 if hard else timeout)
    sent_kill = False
    while left := still_running(members):
        now = time.monotonic()
        if now > deadline + 10:
            raise BrokerError(f"{kind}: pids {sorted(left)} do not die even after SIGKILL")
        if now > deadline and not sent_kill:
            if not hard:
                say(f"{kind}: no exit {timeout:.0f} s after SIGTERM, sending SIGKILL")
            for member in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL)
            sent_kill = True
        time.sleep(0.1)


def spawn(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"    ({path} does not exist)"
    return "\n".join("    " + line for line in text[-lines:])


def run_quiet(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> None:
    proc = subprocess.run(
        cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().splitlines()[-30:]
        raise BrokerError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n" + "\n".join(out))


_apt_updated = False


def apt_install(*packages: str) -> None:
    """Install Debian packages without letting their services start."""
    global _apt_updated
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BrokerError(
            f"missing {' '.join(packages)}; "
            f"install it (e.g. sudo apt-get install {' '.join(packages)})"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:
        # invoke-rc.d asks this script whether a service may start: 101 = no.
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        t0 = time.monotonic()
        if not _apt_updated:
            say("apt-get update ...")
            run_quiet(["apt-get", "update", "-q"], env=env)
            _apt_updated = True
        say(f"apt-get install {' '.join(packages)} ...")
        run_quiet(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env)
        say(f"installed {' '.join(packages)} in {time.monotonic() - t0:.1f} s")
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)


def installed(command: str, package: str) -> str:
    """The path of ``command``, installing the Debian ``package`` that provides it if needed."""
    found = shutil.which(command)
    if found:
        return found
    apt_install(package)
    found = shutil.which(command)
    if not found:
        raise BrokerError(f"{command} not found after installing {package}")
    return found


def java_bin() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return str(Path(java_home, "bin", "java"))
    return installed("java", "openjdk-17-jre-headless")


def mvn_bin() -> str:
    return installed("mvn", "maven")


def install_rabbit() -> None:
    """apt-get install rabbitmq-server and make sure the Debian service is not running."""
    apt_install("rabbitmq-server")
    if Path("/run/systemd/system").exists():
        subprocess.run(
            ["systemctl", "disable", "--now", "rabbitmq-server"],
            capture_output=True,
            check=False,
        )
    elif Path("/etc/init.d/rabbitmq-server").exists():
        subprocess.run(
            ["update-rc.d", "rabbitmq-server", "disable"], capture_output=True, check=False
        )
        if port_open(RABBIT_PORT):
            subprocess.run(
                ["/etc/init.d/rabbitmq-server", "stop"], capture_output=True, check=False
            )
    if port_open(RABBIT_PORT):
        raise BrokerError(
            f"after installing rabbitmq-server something answers on {HOST}:{RABBIT_PORT}; "
            "stop the system RabbitMQ service (service rabbitmq-server stop) and retry"
        )


def health_python() -> str | None:
    """A Python interpreter that has aiokafka and aio-pika, for the real round-trip check."""
    candidates = [
        os.environ.get("STREAMLIB_HEALTH_PYTHON", ""),
        str(REPO / ".venv" / "bin" / "python"),
        sys.executable,
    ]
    for cand in candidates:
        if not cand or not Path(cand).exists():
            continue
        probe = subprocess.run(
            [cand, "-c", "import aiokafka, aio_pika"], capture_output=True, check=False
        )
        if probe.returncode == 0:
            return cand
    return None


_HEALTH_PY: list[str | None] = []


def _health_python_cached() -> str | None:
    if not _HEALTH_PY:
        _HEALTH_PY.append(health_python())
    return _HEALTH_PY[0]


def kafka_api_versions(port: int = KAFKA_PORT) -> bool:
    """Raw ApiVersions v0 request; True when the broker answers it without error."""
    client_id = b"streamlib-brokers"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = b""
            while len(head) < 10:
                chunk = sock.recv(10 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    _size, corr, err = struct.unpack(">iih", head)
    return bool(corr == 7 and err == 0)


def amqp_handshake(port: int = RABBIT_PORT) -> bool:
    """Send the AMQP 0-9-1 header; True when the server replies with connection.start."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            head = b""
            while len(head) < 11:
                chunk = sock.recv(11 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    ftype, channel, _size, cls, meth = struct.unpack(">BHIHH", head)
    return ftype == 1 and channel == 0 and (cls, meth) == (10, 10)


def wait_healthy(
    broker: str,
    proc_alive: Callable[[], bool],
    deadline: float,
    logs: list[Path],
    quick_check: Callable[[], bool],
    address: str,
) -> None:
    """Wait until the broker answers a real round trip (or the stdlib check as a fallback)."""

    def fail(why: str) -> BrokerError:
        shown = "\n".join(f"  {log}:\n{tail(log)}" for log in logs)
        return BrokerError(f"{broker}: {why}\n{shown}")

    while not quick_check():
        if not proc_alive():
            raise fail("the process exited during start-up")
        if time.monotonic() > deadline:
            raise fail(f"no answer on {address} within {START_TIMEOUT:.0f} s")
        time.sleep(0.1)
    python = _health_python_cached()
    if python is None:
        return
    remaining = max(deadline - time.monotonic(), 5.0)
    cmd = [python, str(REPO / "tools" / "broker_health.py"), broker, address]
    cmd += ["--timeout", f"{remaining:.0f}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise fail(f"round-trip check failed: {(proc.stdout + proc.stderr).strip()}")


def kafka_libs() -> tuple[str, Path]:
    """Jars of the first Kafka version that resolves; fetched with Maven unless cached."""
    errors = []
    for version in KAFKA_VERSIONS:
        root = CACHE / f"kafka-{version}"
        libs = root / "libs"
        marker = root / "libs.complete"
        if marker.exists():
            try:
                jars = json.loads(marker.read_text())
            except ValueError:
                jars = []
            if jars and all((libs / jar).exists() for jar in jars):
                return version, libs
        partial = root / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        say(f"kafka: fetching Apache Kafka {version} jars with Maven into {libs} ...")
        t0 = time.monotonic()
        cmd = [mvn_bin(), "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies"]
        cmd += [f"-Dkafka.version={version}", f"-DoutputDirectory={partial}"]
        try:
            run_quiet(cmd)
        except BrokerError as exc:
            errors.append(str(exc))
            say(f"kafka: {version} did not resolve")
            continue
        if not (partial / f"kafka_2.13-{version}.jar").exists():
            errors.append(f"{version}: kafka_2.13-{version}.jar missing after download")
            continue
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        marker.write_text(json.dumps(sorted(p.name for p in libs.glob("*.jar"))))
        say(f"kafka: {version} jars fetched in {time.monotonic() - t0:.1f} s")
        return version, libs
    raise BrokerError("could not fetch Apache Kafka jars:\n" + "\n".join(errors))


def kafka_cluster_id() -> str:
    """A random id in Kafka's Uuid text form (URL-safe base64, no padding)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def write_kafka_config(home: Path) -> Path:
    data = home / "data"
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    props = home / "server.properties"
    props.write_text(
        f"""\
# Written by tools/brokers.py: single-node KRaft broker for tests.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={HOST}:{KAFKA_CONTROLLER_PORT}
listeners=PLAINTEXT://{HOST}:{KAFKA_PORT},CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORT},\
PROXIED://{HOST}:{KAFKA_PROXIED_PORT}
# Clients that bootstrap through a fault proxy on {KAFKA_PROXIED} connect to PROXIED and are
# told to reach the broker at the proxy's address, so all their traffic stays on the proxy.
advertised.listeners=PLAINTEXT://{HOST}:{KAFKA_PORT},PROXIED://{KAFKA_PROXIED}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT
log.dirs={data}
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
# A restart after SIGKILL waits for the old registration to time out: keep that short.
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=67108864
"""
    )
    (home / "log4j2.properties").write_text(
        f"""\
# Written by tools/brokers.py: Kafka logs go to a file, not the console.
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {logs / "server.log"}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = WARN
logger.controller.name = kafka.controller
logger.controller.level = INFO
"""
    )
    return props


def start_kafka(state: dict[str, Any]) -> None:
    home = BASE / "kafka"
    entry = state.get("kafka") or {}
    if pid_alive(entry.get("pid"), "kafka"):
        stat = _proc_stat(entry["pid"])
        if stat and stat[0] == "T":
            raise BrokerError(f"kafka: pid {entry['pid']} is paused; run: brokers.py resume kafka")
        if port_open(KAFKA_PORT):
            say(f"kafka: already up (pid {entry['pid']}, {KAFKA_BOOTSTRAP})")
            return
        raise BrokerError(
            f"kafka: pid {entry['pid']} runs but {KAFKA_BOOTSTRAP} does not answer "
            f"(paused? see {home / 'logs' / 'server.log'}); try: brokers.py restart kafka"
        )
    if port_open(KAFKA_PORT) or port_open(KAFKA_CONTROLLER_PORT):
        if port_open(KAFKA_PORT) and kafka_api_versions():
            say(
                f"kafka: {KAFKA_BOOTSTRAP} is served by a process this tool did not start; using it"
            )
            return
        raise BrokerError(
            f"kafka: port {KAFKA_PORT} or {KAFKA_CONTROLLER_PORT} on {HOST} "
            "is taken by another process"
        )
    if port_open(KAFKA_PROXIED_PORT):
        raise BrokerError(
            f"kafka: port {KAFKA_PROXIED_PORT} on {HOST} (the proxied listener, "
            "STREAMLIB_KAFKA_PROXIED_PORT) is taken by another process"
        )
    java = java_bin()
    version, libs = kafka_libs()
    if entry.get("version") and entry["version"] != version and (home / "data").exists():
        shutil.rmtree(home / "data")
    props = write_kafka_config(home)
    log4j = home / "log4j2.properties"
    classpath = f"{libs}/*"
    logging_opt = f"-Dlog4j2.configurationFile={log4j}"
    if not (home / "data" / "meta.properties").exists():
        shutil.rmtree(home / "data", ignore_errors=True)
        cmd = [java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", logging_opt]
        cmd += ["-cp", classpath, "kafka.tools.StorageTool", "format"]
        cmd += ["-t", kafka_cluster_id(), "-c", str(props), "--standalone"]
        run_quiet(cmd, timeout=120)
    stdout_log = home / "logs" / "stdout.log"
    t0 = time.monotonic()
    cmd = [java, *KAFKA_JVM_OPTS, logging_opt, f"-Dkafka.logs.dir={home / 'logs'}"]
    cmd += ["-cp", classpath, "kafka.Kafka", str(props)]
    proc = spawn(cmd, home, dict(os.environ), stdout_log)
    state["kafka"] = {
        "pid": proc.pid,
        "version": version,
        "bootstrap": KAFKA_BOOTSTRAP,
        "proxied": KAFKA_PROXIED,
        "started_at": time.time(),
    }
    save_state(state)
    wait_healthy(
        "kafka",
        lambda: proc.poll() is None,
        t0 + START_TIMEOUT,
        [home / "logs" / "server.log", stdout_log],
        lambda: port_open(KAFKA_PORT) and kafka_api_versions(),
        KAFKA_BOOTSTRAP,
    )
    say(f"kafka {version} up in {time.monotonic() - t0:.1f} s ({KAFKA_BOOTSTRAP}, pid {proc.pid})")


def rabbit_home() -> Path:
    return BASE / "rabbit"


def rabbit_env() -> dict[str, str]:
    """Environment for rabbitmq-server and the CLI tools: our config, our cookie (HOME)."""
    home = rabbit_home()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    env.update(
        HOME=str(home / "home"),
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
        RABBITMQ_NODENAME=RABBIT_NODE,
        RABBITMQ_NODE_IP_ADDRESS=HOST,
        RABBITMQ_NODE_PORT=str(RABBIT_PORT),
        RABBITMQ_DIST_PORT=str(RABBIT_DIST_PORT),
        RABBITMQ_CONFIG_FILE=str(home / "rabbitmq.conf"),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(home / "advanced.config"),
        RABBITMQ_CONF_ENV_FILE=str(home / "rabbitmq-env.conf"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(home / "enabled_plugins"),
        RABBITMQ_MNESIA_BASE=str(home / "mnesia"),
        RABBITMQ_LOG_BASE=str(home / "log"),
        RABBITMQ_LOGS=str(home / "log" / "rabbit.log"),
        RABBITMQ_PID_FILE=str(home / "rabbit.pid"),
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        ERL_EPMD_ADDRESS=HOST,
        ERL_EPMD_PORT=str(EPMD_PORT),
        ERL_CRASH_DUMP=str(home / "erl_crash.dump"),
    )
    return env


def write_rabbit_config() -> None:
    home = rabbit_home()
    for sub in ("home", "mnesia", "log"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    cookie = home / "home" / ".erlang.cookie"
    if not cookie.exists():
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
    (home / "rabbitmq-env.conf").write_text("# Written by tools/brokers.py; settings are in env.\n")
    (home / "enabled_plugins").write_text("[].\n")
    (home / "rabbitmq.conf").write_text(
        f"""\
# Written by tools/brokers.py: one node for tests, loopback only.
listeners.tcp.default = {HOST}:{RABBIT_PORT}
loopback_users.guest = true
default_user = guest
default_pass = guest
log.console = false
log.file.level = info
disk_free_limit.absolute = 50MB
"""
    )


def rabbit_ctl_bin() -> str:
    direct = RABBIT_LIB_BIN / "rabbitmqctl"
    if direct.exists():
        # Not the /usr/sbin wrapper: as root it switches to the rabbitmq user and its cookie.
        return str(direct)
    found = shutil.which("rabbitmqctl")
    if not found:
        raise BrokerError("rabbitmqctl not found (is rabbitmq-server installed?)")
    return found


def start_epmd(state: dict[str, Any]) -> None:
    entry = state.get("epmd") or {}
    if pid_alive(entry.get("pid"), "epmd") or port_open(EPMD_PORT):
        return
    epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
    log = rabbit_home() / "log" / "epmd.log"
    env = dict(os.environ, ERL_EPMD_ADDRESS=HOST)
    proc = spawn([epmd, "-address", HOST, "-port", str(EPMD_PORT)], BASE, env, log)
    state["epmd"] = {"pid": proc.pid}
    save_state(state)
    deadline = time.monotonic() + 10
    while not port_open(EPMD_PORT):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BrokerError(f"epmd did not start; see {log}:\n{tail(log)}")
        time.sleep(0.05)


def epmd_names() -> list[str] | None:
    """Names of the Erlang nodes registered with epmd (NAMES_REQ), or None when it is down."""
    try:
        with socket.create_connection((HOST, EPMD_PORT), timeout=2) as sock:
            sock.sendall(struct.pack(">HB", 1, 110))
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    except OSError:
        return None
    # A 4-byte port number, then one "name <node> at port <port>" line per node.
    lines = data[4:].decode(errors="replace").splitlines()
    return [line.split()[1] for line in lines if line.startswith("name ")]


def start_rabbit(state: dict[str, Any]) -> None:
    home = rabbit_home()
    entry = state.get("rabbit") or {}
    if pid_alive(entry.get("pid"), "rabbit"):
        stat = _proc_stat(entry["pid"])
        if stat and stat[0] == "T":
            raise BrokerError(
                f"rabbit: pid {entry['pid']} is paused; run: brokers.py resume rabbit"
            )
        if port_open(RABBIT_PORT):
            say(f"rabbit: already up (pid {entry['pid']}, {HOST}:{RABBIT_PORT})")
            return
        raise BrokerError(
            f"rabbit: pid {entry['pid']} runs but {HOST}:{RABBIT_PORT} does not answer "
            f"(paused? see {home / 'log' / 'rabbit.log'}); try: brokers.py restart rabbit"
        )
    if port_open(RABBIT_PORT):
        if amqp_handshake():
            say(
                f"rabbit: {HOST}:{RABBIT_PORT} is served by a process "
                "this tool did not start; using it"
            )
            return
        raise BrokerError(f"rabbit: port {RABBIT_PORT} on {HOST} is taken by another process")
    if not (RABBIT_LIB_BIN / "rabbitmq-server").exists():
        install_rabbit()
    if port_open(RABBIT_DIST_PORT):
        raise BrokerError(f"rabbit: port {RABBIT_DIST_PORT} on {HOST} is taken by another process")
    write_rabbit_config()
    start_epmd(state)
    stdout_log = home / "log" / "stdout.log"
    t0 = time.monotonic()
    proc = spawn([str(RABBIT_LIB_BIN / "rabbitmq-server")], home, rabbit_env(), stdout_log)
    state["rabbit"] = {
        "pid": proc.pid,
        "url": RABBIT_URL,
        "node": RABBIT_NODE,
        "started_at": time.time(),
    }
    save_state(state)
    wait_healthy(
        "rabbit",
        lambda: proc.poll() is None,
        t0 + START_TIMEOUT,
        [home / "log" / "rabbit.log", stdout_log],
        amqp_handshake,
        RABBIT_URL,
    )
    say(f"rabbit up in {time.monotonic() - t0:.1f} s ({HOST}:{RABBIT_PORT}, node {RABBIT_NODE})")


POSTGRES_PORT = int(os.environ.get("STREAMLIB_POSTGRES_PORT", "5433"))
POSTGRES_USER = "streamlib"
POSTGRES_DB = "streamlib"
POSTGRES_URL = f"postgresql://{POSTGRES_USER}:{POSTGRES_USER}@{HOST}:{POSTGRES_PORT}/{POSTGRES_DB}"
POSTGRES_OS_USER = "postgres"


def postgres_home() -> Path:
    return BASE / "postgres"


def postgres_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin, installing postgresql when missing."""

    def newest() -> Path | None:
        found = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/postgres"),
            key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        )
        return found[-1].parent if found else None

    bin_dir = newest()
    if bin_dir is None:
        install_postgres()
        bin_dir = newest()
    if bin_dir is None:
        raise BrokerError("postgres not found under /usr/lib/postgresql after installing it")
    return bin_dir


def install_postgres() -> None:
    """apt-get install postgresql; the Debian cluster it creates is left stopped."""
    apt_install("postgresql")
    if Path("/run/systemd/system").exists():
        subprocess.run(
            ["systemctl", "disable", "--now", "postgresql"], capture_output=True, check=False
        )


def postgres_ready(port: int = POSTGRES_PORT) -> bool:
    """True when the server answers an SSLRequest (one byte, S or N), which any PostgreSQL
    does once it accepts connections."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.sendall(struct.pack(">ii", 8, 80877103))
            return sock.recv(1) in (b"S", b"N")
    except OSError:
        return False


def _as_postgres_user() -> dict[str, Any]:
    """Popen arguments that run a command as the postgres system user (PostgreSQL refuses
    to run as root)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        entry = pwd.getpwnam(POSTGRES_OS_USER)
    except KeyError as exc:
        raise BrokerError(
            f"postgres: running as root needs the {POSTGRES_OS_USER} system user "
            "(the postgresql package creates it)"
        ) from exc
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _postgres_owned(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    user = _as_postgres_user()
    if user:
        os.chown(path, user["user"], user["group"])
        os.chmod(path, 0o700)


def init_postgres(bin_dir: Path) -> None:
    """initdb a fresh cluster with our user and database (trust on loopback: test data)."""
    home = postgres_home()
    data = home / "data"
    if (data / "PG_VERSION").exists():
        return
    shutil.rmtree(data, ignore_errors=True)
    BASE.chmod(BASE.stat().st_mode | 0o011)  # the postgres user must reach its directory
    _postgres_owned(home)
    _postgres_owned(data)
    pwfile = home / "pwfile"
    pwfile.write_text(POSTGRES_USER + "\n")
    user = _as_postgres_user()
    if user:
        os.chown(pwfile, user["user"], user["group"])
    cmd = [str(bin_dir / "initdb"), "-D", str(data), "-U", POSTGRES_USER, "--pwfile", str(pwfile)]
    cmd += ["-A", "trust", "-E", "UTF8", "--locale", "C.UTF-8"]
    proc = subprocess.run(
        cmd, cwd=home, capture_output=True, text=True, check=False, timeout=120, **user
    )
    pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise BrokerError(f"postgres: initdb failed:\n{(proc.stdout + proc.stderr).strip()}")
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            "\n# Written by tools/brokers.py: loopback only, our port, small and fast.\n"
            f"listen_addresses = '{HOST}'\nport = {POSTGRES_PORT}\n"
            f"unix_socket_directories = '{home}'\nmax_connections = 200\n"
            "shared_buffers = 64MB\nfsync = off\nsynchronous_commit = off\n"
            "full_page_writes = off\nlogging_collector = off\n"
        )


def create_postgres_db(bin_dir: Path) -> None:
    """Create our database unless it exists."""
    env = dict(os.environ, PGPASSWORD=POSTGRES_USER)
    common = ["-h", HOST, "-p", str(POSTGRES_PORT), "-U", POSTGRES_USER]
    probe = subprocess.run(
        [
            str(bin_dir / "psql"),
            *common,
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{POSTGRES_DB}'",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.stdout.strip() != "1":
        run_quiet([str(bin_dir / "createdb"), *common, POSTGRES_DB], env=env)


def start_postgres(state: dict[str, Any]) -> None:
    home = postgres_home()
    entry = state.get("postgres") or {}
    log = home / "postgres.log"
    if pid_alive(entry.get("pid"), "postgres"):
        if postgres_ready():
            say(f"postgres: already up (pid {entry['pid']}, {HOST}:{POSTGRES_PORT})")
            return
        raise BrokerError(
            f"postgres: pid {entry['pid']} runs but {HOST}:{POSTGRES_PORT} does not answer "
            f"(see {log}); try: brokers.py restart postgres"
        )
    if port_open(POSTGRES_PORT):
        raise BrokerError(
            f"postgres: port {POSTGRES_PORT} on {HOST} is taken by another process "
            "(set STREAMLIB_POSTGRES_PORT to use another)"
        )
    bin_dir = postgres_bin_dir()
    init_postgres(bin_dir)
    t0 = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(home / "data")],
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_as_postgres_user(),
        )
    state["postgres"] = {"pid": proc.pid, "url": POSTGRES_URL, "started_at": time.time()}
    save_state(state)
    deadline = t0 + START_TIMEOUT
    while not postgres_ready():
        if proc.poll() is not None:
            raise BrokerError(f"postgres: the process exited during start-up\n{tail(log)}")
        if time.monotonic() > deadline:
            raise BrokerError(f"postgres: no answer on {HOST}:{POSTGRES_PORT}\n{tail(log)}")
        time.sleep(0.1)
    create_postgres_db(bin_dir)
    say(f"postgres up in {time.monotonic() - t0:.1f} s ({HOST}:{POSTGRES_PORT}, pid {proc.pid})")


def stop_postgres(state: dict[str, Any], hard: bool = False) -> None:
    """Fast shutdown (SIGINT: sessions are ended, nothing waits for clients); SIGKILL when
    hard or when it does not exit in time."""
    pid = (state.get("postgres") or {}).get("pid")
    if not pid or not pid_alive(pid, "postgres"):
        say("postgres: not running")
    else:
        t0 = time.monotonic()
        members = family(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if hard else signal.SIGINT)
        deadline = time.monotonic() + (2.0 if hard else STOP_TIMEOUT)
        while left := still_running(members):
            if time.monotonic() > deadline:
                for member in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(member, signal.SIGKILL)
            time.sleep(0.05)
        verb = "killed" if hard else "stopped"
        say(f"postgres: {verb} pid {pid} in {time.monotonic() - t0:.1f} s")
    if "postgres" in state:
        state["postgres"]["pid"] = None
        save_state(state)


def postgres_status(state: dict[str, Any]) -> int:
    """Print PostgreSQL's line of ``status``; 1 when it is down."""
    pid = (state.get("postgres") or {}).get("pid")
    answers = postgres_ready()
    if pid and pid_alive(pid, "postgres"):
        health = "answers" if answers else "NOT answering"
        say(f"postgres: running pid {pid}, {HOST}:{POSTGRES_PORT} {health}")
        return 0 if answers else 1
    if answers:
        say(f"postgres: {HOST}:{POSTGRES_PORT} answers (not started by this tool)")
        return 0
    say("postgres: down")
    return 1


def postgres_env() -> None:
    say(f"export STREAMLIB_TEST_POSTGRES={POSTGRES_URL}")


STARTERS = {"kafka": start_kafka, "rabbit": start_rabbit, "postgres": start_postgres}


def stop_broker(state: dict[str, Any], broker: str, hard: bool = False) -> None:
    if broker == "postgres":
        return stop_postgres(state, hard)
    entry = state.get(broker) or {}
    pid = entry.get("pid")
    if pid and pid_alive(pid, broker):
        t0 = time.monotonic()
        terminate(pid, broker, hard=hard)
        verb = "killed" if hard else "stopped"
        say(f"{broker}: {verb} pid {pid} in {time.monotonic() - t0:.1f} s")
    elif pid:
        # The leader died; kill what may be left of its group.
        stats = _all_stats()
        for member, st in stats.items():
            if st[1] == pid and st[0] not in ("Z", "X"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL)
        say(f"{broker}: not running")
    else:
        say(f"{broker}: not started by this tool")
    if broker in state:
        state[broker]["pid"] = None
        save_state(state)


def cmd_up(which: str) -> None:
    with locked():
        state = load_state()
        for broker in BROKERS if which == "all" else (which,):
            STARTERS[broker](state)


def cmd_down() -> None:
    with locked():
        state = load_state()
        for broker in BROKERS:
            if state.get(broker, {}).get("pid"):
                stop_broker(state, broker)
        epmd_pid = state.get("epmd", {}).get("pid")
        if epmd_pid and pid_alive(epmd_pid, "epmd"):
            # Another node (a second broker pair) may still be registered with our epmd.
            others = epmd_names() or []
            if others:
                say(f"epmd: left running (pid {epmd_pid}) for nodes {', '.join(others)}")
            else:
                terminate(epmd_pid, "epmd", timeout=5)
                say(f"epmd: stopped pid {epmd_pid}")
        for sub in ("kafka", "rabbit", "postgres"):
            shutil.rmtree(BASE / sub, ignore_errors=True)
        STATE_FILE.unlink(missing_ok=True)
    LOCK_FILE.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        BASE.rmdir()
    say(f"down: data removed from {BASE}")


def cmd_fault(action: str, broker: str) -> None:
    with locked():
        state = load_state()
        entry = state.get(broker) or {}
        pid = entry.get("pid")
        if action in ("stop", "restart"):
            stop_broker(state, broker)
        elif action == "kill":
            stop_broker(state, broker, hard=True)
        elif action in ("pause", "resume"):
            if pid is None or not pid_alive(pid, broker):
                raise BrokerError(f"{broker}: not running under this tool")
            signal_group(pid, signal.SIGSTOP if action == "pause" else signal.SIGCONT)
            say(f"{broker}: {action}d pid {pid}")
        if action in ("start", "restart"):
            STARTERS[broker](state)


def cmd_status() -> int:
    state = load_state()
    down = 0
    for broker, port in (("kafka", KAFKA_PORT), ("rabbit", RABBIT_PORT)):
        entry = state.get(broker) or {}
        pid = entry.get("pid")
        answers = port_open(port)
        if pid is not None and pid_alive(pid, broker):
            stat = _proc_stat(pid)
            paused = " PAUSED" if stat and stat[0] == "T" else ""
            extra = f" {entry.get('version')}" if broker == "kafka" else f" node {RABBIT_NODE}"
            health = "answers" if answers else "NOT answering"
            if broker == "kafka" and port_open(KAFKA_PROXIED_PORT):
                health += f" (proxied: {HOST}:{KAFKA_PROXIED_PORT} as {KAFKA_PROXIED})"
            say(f"{broker}: running{paused} pid {pid}{extra}, {HOST}:{port} {health}")
            down += 0 if answers and not paused else 1
        elif answers:
            say(f"{broker}: {HOST}:{port} answers (not started by this tool)")
        else:
            say(f"{broker}: down")
            down += 1
    down += postgres_status(state)
    say(f"data: {BASE}")
    return 3 if down else 0


LAUNCHER_SETTINGS = (
    "STREAMLIB_BROKERS_DIR",
    "STREAMLIB_KAFKA_PORT",
    "STREAMLIB_KAFKA_CONTROLLER_PORT",
    "STREAMLIB_KAFKA_PROXIED_PORT",
    "STREAMLIB_KAFKA_PROXY_PORT",
    "STREAMLIB_RABBIT_PORT",
    "STREAMLIB_RABBIT_DIST_PORT",
    "STREAMLIB_RABBIT_NODE",
)


def cmd_env() -> None:
    say(f"export STREAMLIB_TEST_KAFKA={KAFKA_BOOTSTRAP}")
    say(f"export STREAMLIB_TEST_KAFKA_PROXIED={KAFKA_PROXIED}")
    say(f"export STREAMLIB_TEST_KAFKA_PROXIED_TARGET={HOST}:{KAFKA_PROXIED_PORT}")
    say(f"export STREAMLIB_TEST_RABBIT={RABBIT_URL}")
    say(f"export STREAMLIB_TEST_RABBIT_NODE={RABBIT_NODE}")
    postgres_env()
    say(f"export STREAMLIB_BROKERS_TOOL={Path(__file__).resolve()}")
    # A second pair: commands run with these variables (broker_ctl, rabbitmqctl) reach it too.
    for name in LAUNCHER_SETTINGS:
        if os.environ.get(name, "").strip():
            say(f"export {name}={os.environ[name].strip()}")


def cmd_rabbitmqctl(args: list[str]) -> int:
    cmd = [rabbit_ctl_bin(), "-n", RABBIT_NODE, *args]
    return subprocess.run(cmd, env=rabbit_env(), check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="brokers.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start brokers and wait until they answer")
    up.add_argument("which", nargs="?", default="all", choices=["all", *BROKERS])
    sub.add_parser("down", help="stop what this tool started and delete its data")
    sub.add_parser("status", help="show what runs")
    sub.add_parser("env", help="print the environment the tests read")
    for action in ("stop", "start", "restart", "kill", "pause", "resume"):
        p = sub.add_parser(action, help=f"{action} one broker (data kept)")
        p.add_argument("broker", choices=BROKERS)
    ctl = sub.add_parser("rabbitmqctl", help="run rabbitmqctl against our node")
    ctl.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    try:
        if ns.command == "up":
            cmd_up(ns.which)
        elif ns.command == "down":
            cmd_down()
        elif ns.command == "status":
            return cmd_status()
        elif ns.command == "env":
            cmd_env()
        elif ns.command == "rabbitmqctl":
            return cmd_rabbitmqctl(ns.args)
        else:
            cmd_fault(ns.command, ns.broker)
    except BrokerError as exc:
        print(f"brokers.py: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
