#!/usr/bin/env python3
"""Run three-node Kafka and RabbitMQ clusters on 127.0.0.1 for the failover tests.

Standard library only, like brokers.py, whose download, spawn and health-check code it reuses.

    python3 tools/cluster.py up [kafka|rabbit|all]    start (idempotent), wait until clustered
    python3 tools/cluster.py down                     stop what this tool started, delete its data
    python3 tools/cluster.py status                   show each node (exit 3 if one is down)
    python3 tools/cluster.py env                      print the variables the tests read
    python3 tools/cluster.py kill|stop|start kafka|rabbit N
                                                      SIGKILL / stop / start node N (1-3)
    python3 tools/cluster.py rabbitmqctl N ARGS...    rabbitmqctl against RabbitMQ node N

Kafka: three combined broker+controller KRaft nodes (node ids 1-3) with a static controller
quorum, clients on 127.0.0.1:39192-39194, controllers on 39292-39294;
default.replication.factor=3 and min.insync.replicas=2, so a topic survives one dead node and
acks=all still succeeds with two.

RabbitMQ: nodes streamlib-c1..c3@localhost on AMQP 127.0.0.1:35672-35674 (distribution
35772-35774), one Erlang cookie, clustered by classic peer discovery: node 1 starts first, 2
and 3 join it; a killed node rejoins on start.

State and data live in ${STREAMLIB_CLUSTER_DIR:-/tmp/streamlib-cluster}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import brokers as b

BASE = Path(os.environ.get("STREAMLIB_CLUSTER_DIR", "/tmp/streamlib-cluster"))
STATE_FILE = BASE / "state.json"
NODES = (1, 2, 3)
HOST = b.HOST
KAFKA_PORTS = {n: 39191 + n for n in NODES}
KAFKA_CONTROLLER_PORTS = {n: 39291 + n for n in NODES}
RABBIT_PORTS = {n: 35671 + n for n in NODES}
RABBIT_DIST_PORTS = {n: 35771 + n for n in NODES}
KAFKA_BOOTSTRAP = ",".join(f"{HOST}:{KAFKA_PORTS[n]}" for n in NODES)
RABBIT_URLS = ",".join(f"amqp://guest:guest@{HOST}:{RABBIT_PORTS[n]}/" for n in NODES)
KAFKA_JVM_OPTS = os.environ.get(
    "STREAMLIB_CLUSTER_KAFKA_JVM_OPTS",
    "-Xms128m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError"
    " -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true",
).split()
START_TIMEOUT = b.START_TIMEOUT


def rabbit_node(n: int) -> str:
    return f"streamlib-c{n}@localhost"


def locked() -> contextlib.AbstractContextManager[None]:
    return b.locked(BASE)


def load_state() -> dict[str, Any]:
    return b.load_state(STATE_FILE)


def save_state(state: dict[str, Any]) -> None:
    b.save_state(state, STATE_FILE)


def write_kafka_node(n: int) -> Path:
    home = BASE / f"kafka-{n}"
    (home / "logs").mkdir(parents=True, exist_ok=True)
    voters = ",".join(f"{m}@{HOST}:{KAFKA_CONTROLLER_PORTS[m]}" for m in NODES)
    props = home / "server.properties"
    props.write_text(
        f"""\
# Written by tools/cluster.py: node {n} of a three-node KRaft cluster for the failover tests.
process.roles=broker,controller
node.id={n}
controller.quorum.voters={voters}
listeners=PLAINTEXT://{HOST}:{KAFKA_PORTS[n]},CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORTS[n]}
advertised.listeners=PLAINTEXT://{HOST}:{KAFKA_PORTS[n]}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={home / "data"}
num.partitions=3
default.replication.factor=3
min.insync.replicas=2
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
# A node killed with SIGKILL is declared dead quickly, so leadership moves within seconds.
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
replica.lag.time.max.ms=5000
offsets.topic.replication.factor=3
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
num.recovery.threads.per.data.dir=1
log.segment.bytes=16777216
"""
    )
    (home / "log4j2.properties").write_text(
        f"""\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {home / "logs" / "server.log"}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = WARN
"""
    )
    return props


def start_kafka_node(state: dict[str, Any], n: int, cluster_id: str) -> None:
    key = f"kafka-{n}"
    entry = state.get(key) or {}
    port = KAFKA_PORTS[n]
    if b.pid_alive(entry.get("pid"), "kafka") and b.port_open(port):
        b.say(f"{key}: already up (pid {entry['pid']}, {HOST}:{port})")
        return
    for taken in (port, KAFKA_CONTROLLER_PORTS[n]):
        if b.port_open(taken):
            raise b.BrokerError(f"{key}: port {taken} on {HOST} is taken by another process")
    java = b.java_bin()
    version, libs = b.kafka_libs()
    home = BASE / key
    props = write_kafka_node(n)
    logging_opt = f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}"
    classpath = f"{libs}/*"
    if not (home / "data" / "meta.properties").exists():
        shutil.rmtree(home / "data", ignore_errors=True)
        cmd = [java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", logging_opt]
        cmd += ["-cp", classpath, "kafka.tools.StorageTool", "format"]
        cmd += ["-t", cluster_id, "-c", str(props)]
        b.run_quiet(cmd, timeout=120)
    stdout_log = home / "logs" / "stdout.log"
    cmd = [java, *KAFKA_JVM_OPTS, logging_opt, f"-Dkafka.logs.dir={home / 'logs'}"]
    cmd += ["-cp", classpath, "kafka.Kafka", str(props)]
    proc = b.spawn(cmd, home, dict(os.environ), stdout_log)
    state[key] = {"pid": proc.pid, "version": version, "port": port, "started_at": time.time()}
    save_state(state)


def wait_kafka_node(state: dict[str, Any], n: int, t0: float) -> None:
    key = f"kafka-{n}"
    pid = state[key]["pid"]
    home = BASE / key
    deadline = t0 + START_TIMEOUT
    while not b.kafka_api_versions(KAFKA_PORTS[n]):
        if not b.pid_alive(pid, "kafka"):
            log = home / "logs" / "server.log"
            raise b.BrokerError(f"{key}: exited during start-up; see {log}:\n{b.tail(log)}")
        if time.monotonic() > deadline:
            raise b.BrokerError(f"{key}: no answer on {HOST}:{KAFKA_PORTS[n]}")
        time.sleep(0.2)


def start_kafka(state: dict[str, Any], nodes: tuple[int, ...] = NODES) -> None:
    cluster_id = state.get("kafka-cluster-id")
    if not cluster_id:
        cluster_id = state["kafka-cluster-id"] = b.kafka_cluster_id()
        save_state(state)
    t0 = time.monotonic()
    # All at once: a controller quorum of three elects a leader only when two are up.
    for n in nodes:
        start_kafka_node(state, n, cluster_id)
    for n in nodes:
        wait_kafka_node(state, n, t0)
    b.say(f"kafka cluster: nodes {', '.join(map(str, nodes))} up in {time.monotonic() - t0:.1f} s")


def rabbit_home(n: int) -> Path:
    return BASE / f"rabbit-{n}"


def rabbit_env(n: int) -> dict[str, str]:
    home = rabbit_home(n)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    env.update(
        # One HOME, so every node and the CLI share the cookie.
        HOME=str(BASE / "rabbit-home"),
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
        RABBITMQ_NODENAME=rabbit_node(n),
        RABBITMQ_NODE_IP_ADDRESS=HOST,
        RABBITMQ_NODE_PORT=str(RABBIT_PORTS[n]),
        RABBITMQ_DIST_PORT=str(RABBIT_DIST_PORTS[n]),
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
        ERL_EPMD_PORT=str(b.EPMD_PORT),
        ERL_CRASH_DUMP=str(home / "erl_crash.dump"),
    )
    return env


def write_rabbit_node(n: int) -> None:
    home = rabbit_home(n)
    for sub in ("mnesia", "log"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    shared = BASE / "rabbit-home"
    shared.mkdir(parents=True, exist_ok=True)
    cookie = shared / ".erlang.cookie"
    if not cookie.exists():
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
    (home / "rabbitmq-env.conf").write_text("# Written by tools/cluster.py; settings are in env.\n")
    (home / "enabled_plugins").write_text("[].\n")
    peers = "\n".join(
        f"cluster_formation.classic_config.nodes.{m} = {rabbit_node(m)}" for m in NODES
    )
    (home / "rabbitmq.conf").write_text(
        f"""\
# Written by tools/cluster.py: node {n} of a three-node cluster, loopback only.
listeners.tcp.default = {HOST}:{RABBIT_PORTS[n]}
loopback_users.guest = true
default_user = guest
default_pass = guest
log.console = false
log.file.level = info
disk_free_limit.absolute = 50MB
cluster_formation.peer_discovery_backend = classic_config
{peers}
cluster_partition_handling = pause_minority
"""
    )


def start_rabbit_node(state: dict[str, Any], n: int) -> subprocess.Popen[bytes] | None:
    key = f"rabbit-{n}"
    entry = state.get(key) or {}
    if b.pid_alive(entry.get("pid"), "rabbit") and b.port_open(RABBIT_PORTS[n]):
        b.say(f"{key}: already up (pid {entry['pid']}, node {rabbit_node(n)})")
        return None
    for taken in (RABBIT_PORTS[n], RABBIT_DIST_PORTS[n]):
        if b.port_open(taken):
            raise b.BrokerError(f"{key}: port {taken} on {HOST} is taken by another process")
    write_rabbit_node(n)
    home = rabbit_home(n)
    proc = b.spawn(
        [str(b.RABBIT_LIB_BIN / "rabbitmq-server")], home, rabbit_env(n), home / "log" / "out.log"
    )
    state[key] = {"pid": proc.pid, "node": rabbit_node(n), "started_at": time.time()}
    save_state(state)
    return proc


def wait_rabbit_node(state: dict[str, Any], n: int, t0: float) -> None:
    key = f"rabbit-{n}"
    pid = state[key]["pid"]
    deadline = t0 + START_TIMEOUT
    while not b.amqp_handshake(RABBIT_PORTS[n]):
        if not b.pid_alive(pid, "rabbit"):
            log = rabbit_home(n) / "log" / "rabbit.log"
            raise b.BrokerError(f"{key}: exited during start-up; see {log}:\n{b.tail(log)}")
        if time.monotonic() > deadline:
            raise b.BrokerError(f"{key}: no answer on {HOST}:{RABBIT_PORTS[n]}")
        time.sleep(0.2)


def rabbit_running_nodes(n: int) -> list[str]:
    """The cluster's running nodes as node ``n`` sees them (empty when it cannot tell)."""
    cmd = [b.rabbit_ctl_bin(), "-n", rabbit_node(n), "cluster_status", "--formatter", "json"]
    proc = subprocess.run(cmd, env=rabbit_env(n), capture_output=True, text=True, check=False)
    try:
        status = json.loads(proc.stdout)
    except ValueError:
        return []
    return list(status.get("running_nodes", []))


def start_rabbit(state: dict[str, Any], nodes: tuple[int, ...] = NODES) -> None:
    if not (b.RABBIT_LIB_BIN / "rabbitmq-server").exists():
        b.install_rabbit()
    b.start_epmd(state)
    t0 = time.monotonic()
    first, rest = nodes[0], nodes[1:]
    # The first node forms the cluster (or rejoins it); the others then join it in parallel.
    start_rabbit_node(state, first)
    wait_rabbit_node(state, first, t0)
    for n in rest:
        start_rabbit_node(state, n)
    for n in rest:
        wait_rabbit_node(state, n, t0)
    if nodes == NODES:
        deadline = t0 + START_TIMEOUT
        while len(running := rabbit_running_nodes(1)) < len(NODES):
            if time.monotonic() > deadline:
                raise b.BrokerError(f"rabbit cluster: only {running} joined")
            time.sleep(0.5)
    b.say(f"rabbit cluster: nodes {', '.join(map(str, nodes))} up in {time.monotonic() - t0:.1f} s")


def stop_node(state: dict[str, Any], key: str, hard: bool = False) -> None:
    kind = key.split("-")[0]
    pid = (state.get(key) or {}).get("pid")
    if pid and b.pid_alive(pid, kind):
        t0 = time.monotonic()
        b.terminate(pid, kind, hard=hard)
        verb = "killed" if hard else "stopped"
        b.say(f"{key}: {verb} pid {pid} in {time.monotonic() - t0:.1f} s")
    if key in state:
        state[key]["pid"] = None
        save_state(state)


def cmd_up(which: str) -> None:
    with locked():
        state = load_state()
        errors: list[BaseException] = []

        def run(start: Any) -> None:
            try:
                start(state)
            except BaseException as exc:
                errors.append(exc)

        # Both clusters start at once: their start-ups are mostly waiting.
        starters = {"kafka": start_kafka, "rabbit": start_rabbit}
        chosen = list(starters) if which == "all" else [which]
        threads = [threading.Thread(target=run, args=(starters[c],)) for c in chosen]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        save_state(state)
        if errors:
            raise errors[0]


def cmd_down() -> None:
    with locked():
        state = load_state()
        # Replicas first, so the last Kafka node does not wait for a quorum that is gone.
        for key in [k for k in state if k.startswith(("kafka-", "rabbit-")) and k[-1].isdigit()]:
            stop_node(state, key, hard=key.startswith("kafka"))
        epmd_pid = (state.get("epmd") or {}).get("pid")
        if epmd_pid and b.pid_alive(epmd_pid, "epmd") and not (b.epmd_names() or []):
            b.terminate(epmd_pid, "epmd", timeout=5)
        shutil.rmtree(BASE, ignore_errors=True)
    b.say(f"cluster down: data removed from {BASE}")


def cmd_node(action: str, kind: str, n: int) -> None:
    with locked():
        state = load_state()
        key = f"{kind}-{n}"
        if action in ("kill", "stop"):
            stop_node(state, key, hard=action == "kill")
            return
        if kind == "kafka":
            start_kafka(state, (n,))
        else:
            start_rabbit(state, (n,))


def cmd_status() -> int:
    state = load_state()
    down = 0
    for n in NODES:
        up = b.pid_alive((state.get(f"kafka-{n}") or {}).get("pid"), "kafka")
        up = up and b.kafka_api_versions(KAFKA_PORTS[n])
        b.say(f"kafka-{n}: {'up' if up else 'down'} ({HOST}:{KAFKA_PORTS[n]})")
        down += not up
    for n in NODES:
        up = b.pid_alive((state.get(f"rabbit-{n}") or {}).get("pid"), "rabbit")
        up = up and b.amqp_handshake(RABBIT_PORTS[n])
        b.say(f"rabbit-{n}: {'up' if up else 'down'} ({HOST}:{RABBIT_PORTS[n]}, {rabbit_node(n)})")
        down += not up
    return 3 if down else 0


def cmd_env() -> None:
    print(f"export STREAMLIB_CLUSTER_KAFKA={KAFKA_BOOTSTRAP}")
    print(f"export STREAMLIB_CLUSTER_RABBIT={RABBIT_URLS}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cluster.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the clusters and wait until they are formed")
    up.add_argument("which", nargs="?", default="all", choices=("kafka", "rabbit", "all"))
    sub.add_parser("down", help="stop what this tool started and delete its data")
    sub.add_parser("status", help="show each node")
    sub.add_parser("env", help="print the environment the tests read")
    for action in ("kill", "stop", "start"):
        p = sub.add_parser(action, help=f"{action} one node (data kept)")
        p.add_argument("kind", choices=("kafka", "rabbit"))
        p.add_argument("node", type=int, choices=NODES)
    ctl = sub.add_parser("rabbitmqctl", help="run rabbitmqctl against RabbitMQ node N")
    ctl.add_argument("node", type=int, choices=NODES)
    ctl.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "rabbitmqctl":
        cmd = [b.rabbit_ctl_bin(), "-n", rabbit_node(args.node), *args.args]
        return subprocess.run(cmd, env=rabbit_env(args.node), check=False).returncode
    try:
        if args.command == "up":
            cmd_up(args.which)
        elif args.command == "down":
            cmd_down()
        elif args.command == "status":
            return cmd_status()
        elif args.command == "env":
            cmd_env()
        else:
            cmd_node(args.command, args.kind, args.node)
    except b.BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
