"""``streamlib bus refresh`` and ``streamlib bus env``: send a bus event, print the acks.

The command joins the bus as a passive node with the same configuration file as the apps
(binders, ``bus.*``), so it reaches them over whichever broker they use. It exits 1 when
fewer than ``--expect`` nodes acked within ``--wait`` seconds, and 2 without sending when the
configuration selects the in-memory binder, which reaches no other process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from ..app import StreamApp
from ..config import CORE_KEYS, DEFAULT_CONFIG_FILE, SECTIONS, normalize_key, read_yaml
from ..errors import ConfigError, StreamlibError
from .bus import OUTPUT_BINDING, Bus, BusReply
from .matching import service_id

CLI_NAME = "streamlib-bus-cli"


def add_commands(commands: Any) -> None:
    """Add the ``bus`` command and its subcommands to ``streamlib``'s argument parser."""
    bus = commands.add_parser("bus", help="send Spring Cloud Bus events to running apps")
    actions = bus.add_subparsers(dest="bus_command", required=True)
    refresh = actions.add_parser("refresh", help="make the addressed nodes reload configuration")
    env = actions.add_parser("env", help="set configuration keys on the addressed nodes")
    env.add_argument("values", nargs="+", metavar="KEY=VALUE", help="keys to set (dotted names)")
    for parser in (refresh, env):
        parser.add_argument(
            "--destination", help="service pattern, e.g. billing or billing:1 (default: all)"
        )
        parser.add_argument("--wait", type=float, help="seconds to collect acks (bus.ack-wait)")
        parser.add_argument(
            "--expect", type=int, help="exit 1 unless this many nodes ack within --wait"
        )
        parser.add_argument("--config", help="YAML config file (default: ./streamlib.yaml)")
    refresh.set_defaults(func=_refresh)
    env.set_defaults(func=_env)


def _config(path: str | None) -> dict[str, Any]:
    """The streamlib keys of the apps' configuration file (their own sections left out)."""
    file = Path(path or os.environ.get("STREAMLIB_CONFIG") or DEFAULT_CONFIG_FILE)
    data = read_yaml(file) if path or file.exists() else {}
    return {k: v for k, v in data.items() if normalize_key(str(k)) in CORE_KEYS | SECTIONS.keys()}


def _values(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(pair, "expected KEY=VALUE")
        values[key.strip()] = value
    return values


async def _send(args: argparse.Namespace, values: dict[str, str] | None) -> int:
    app = StreamApp(CLI_NAME, config=_config(args.config))
    bus = Bus(app, passive=True, node_id=service_id(CLI_NAME, 0))
    name, type_name, _, _ = app._binder_for(OUTPUT_BINDING, app.config.binding(OUTPUT_BINDING))
    if type_name == "memory":
        raise StreamlibError(
            f"the bus uses the in-memory binder (binder {name!r}), which reaches no other "
            "process; configure the apps' broker (--config FILE or STREAMLIB_* variables)"
        )
    async with app.run():
        if values is None:
            reply = await bus.refresh(args.destination, wait=args.wait, expect=args.expect)
        else:
            reply = await bus.env(values, args.destination, wait=args.wait, expect=args.expect)
    return _report(reply, args.expect)


def _report(reply: BusReply, expect: int | None) -> int:
    event = reply.event
    print(f"sent {event.event_type} {event.id} to {event.destination_service}")
    for node in reply.nodes:
        print(f"ack {node}")
    got = len(reply.nodes)
    if expect is not None and got < expect:
        print(f"{got} of {expect} expected nodes acked")
        return 1
    print(f"{got} node(s) acked")
    return 0


def _quiet(args: argparse.Namespace) -> None:
    # The output is the acks; broker clients' connection chatter only with --verbose.
    if not getattr(args, "verbose", False):
        logging.getLogger().setLevel(logging.WARNING)


def _refresh(args: argparse.Namespace) -> int:
    _quiet(args)
    return asyncio.run(_send(args, None))


def _env(args: argparse.Namespace) -> int:
    values = _values(args.values)
    _quiet(args)
    return asyncio.run(_send(args, values))
