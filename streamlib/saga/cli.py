"""``streamlib saga``: list, show, retry/compensate/skip and prune sagas in a store, and print
a saga's diagram.

The store is ``--store PATH|URL``, else ``saga.store`` from the configuration (``--config``,
``$STREAMLIB_CONFIG`` or ``./streamlib.yaml``), else ``saga.db``; a ``postgresql://`` URL is a
PostgreSQL store (schema ``--schema``, else ``saga.schema``, else ``public``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ..config import load_section
from ..errors import StreamlibError
from ._support import DEFAULT_STORE_PATH, store_from
from .definition import Saga
from .operations import mermaid, resolve
from .settings import SagaSettings
from .store import SagaRecord, SagaState, SagaStore, StaleSagaError

T = TypeVar("T")


def add_commands(subparsers: Any) -> None:
    """Add the ``saga`` command to the ``streamlib`` command's subparsers."""
    saga = subparsers.add_parser("saga", help="list and show sagas in a saga store")
    commands = saga.add_subparsers(dest="saga_command", required=True)
    listing = commands.add_parser("list", help="one line per saga")
    listing.add_argument(
        "--state", choices=[s.value for s in SagaState], help="only sagas in this state"
    )
    show = commands.add_parser("show", help="a saga's state, data and history")
    show.add_argument("id", help="saga id")
    parsers = [listing, show]
    for action, text in (
        ("retry", "run the failing step or compensation of a needs_attention saga again"),
        ("compensate", "compensate the steps a needs_attention saga has done"),
        ("skip", "treat the failing step or compensation of a needs_attention saga as done"),
    ):
        parser = commands.add_parser(action, help=text)
        parser.add_argument("id", help="saga id")
        parser.set_defaults(func=_resolve, action=action)
        parsers.append(parser)
    prune = commands.add_parser(
        "prune", help="delete finished sagas and de-duplication records older than an age"
    )
    prune.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    prune.set_defaults(func=_prune)
    parsers.append(prune)
    for parser in parsers:
        parser.add_argument(
            "--store", help="SQLite file or postgresql:// URL (default: saga.store or saga.db)"
        )
        parser.add_argument("--schema", help="PostgreSQL schema (default: saga.schema or public)")
        parser.add_argument("--config", help="YAML config file to read saga.store from")
    listing.set_defaults(func=_list)
    show.set_defaults(func=_show)
    diagram = commands.add_parser("diagram", help="a saga's steps as a Mermaid flowchart")
    diagram.add_argument("saga", metavar="MODULE:NAME", help="a Saga object, e.g. orders:saga")
    diagram.set_defaults(func=_diagram)


def store_path(args: argparse.Namespace) -> Path:
    """The SQLite store named on the command line or in the configuration; it must exist."""
    location = _location(args)
    path = Path(location)
    if not path.is_file():
        raise StreamlibError(f"no saga store at {path}")
    return path


def _location(args: argparse.Namespace) -> str:
    if args.store:
        return str(args.store)
    return _settings(args).store or DEFAULT_STORE_PATH


def _settings(args: argparse.Namespace) -> SagaSettings:
    """The ``saga:`` section of the configuration file (the whole file validated)."""
    return load_section(args.config, "saga", SagaSettings)


def open_store(args: argparse.Namespace) -> SagaStore:
    """The store named on the command line or in the configuration (a SQLite file must
    exist)."""
    location = _location(args)
    if location.startswith(("postgresql://", "postgres://")):
        schema = args.schema
        if schema is None and not args.store:
            schema = _settings(args).schema_
        return store_from(location, schema)
    return store_from(str(store_path(args)))


def _with_store(args: argparse.Namespace, fn: Callable[[SagaStore], Awaitable[T]]) -> T:
    store = open_store(args)

    async def run() -> T:
        try:
            return await fn(store)
        finally:
            await store.aclose()

    return asyncio.run(run())


def _time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _step(record: SagaRecord) -> str:
    return str(record.step) if record.step >= 0 else "-"


def _list(args: argparse.Namespace) -> int:
    state = SagaState(args.state) if args.state else None
    records = _with_store(args, lambda store: store.list(state))
    print(f"{'ID':<36}  {'SAGA':<20}  {'STATE':<15}  STEP  {'UPDATED (UTC)':<23}  ERROR")
    for r in records:
        print(
            f"{r.id:<36}  {r.saga:<20}  {r.state.value:<15}  {_step(r):>4}  "
            f"{_time(r.updated_at):<23}  {r.error or ''}"
        )
    print(f"{len(records)} saga(s)")
    return 0


def _show(args: argparse.Namespace) -> int:
    async def read(store: SagaStore) -> tuple[SagaRecord | None, list[Any]]:
        return await store.get(args.id), await store.history(args.id)

    record, history = _with_store(args, read)
    if record is None:
        raise StreamlibError(f"no saga {args.id}")
    print(f"saga     {record.id}")
    print(f"type     {record.saga}")
    print(f"state    {record.state.value}")
    print(f"step     {_step(record)}")
    if record.error:
        print(f"error    {record.error}")
    print(f"data     {record.data}")
    if record.owner:
        print(f"owner    {record.owner} (lease until {_time(record.lease_until or 0)})")
    print(f"created  {_time(record.created_at)}")
    print(f"updated  {_time(record.updated_at)}")
    print("history:")
    for e in history:
        parts = [_time(e.at), f"{e.event:<18}", e.step or "-"]
        if e.detail:
            parts.append(e.detail)
        print("  " + "  ".join(parts))
    return 0


def _resolve(args: argparse.Namespace) -> int:
    try:
        record = _with_store(args, lambda store: resolve(store, args.id, args.action))
    except (LookupError, ValueError, StaleSagaError) as exc:
        raise StreamlibError(str(exc)) from None
    print(f"saga {record.id}: {args.action}; now {record.state.value} at step {_step(record)}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    before = time.time() - args.older_than * 86400
    count = _with_store(args, lambda store: store.prune(before))
    print(f"pruned {count} row(s) older than {_time(before)}")
    return 0


def _diagram(args: argparse.Namespace) -> int:
    module_name, _, attribute = args.saga.partition(":")
    if not attribute:
        raise StreamlibError(f"{args.saga!r}: expected MODULE:NAME, e.g. orders:saga")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise StreamlibError(f"cannot load {args.saga}: {exc}") from None
    if inspect.isfunction(target):
        target = target()  # a factory such as order_saga(); its defaults name destinations
    if not isinstance(target, Saga):
        raise StreamlibError(f"{args.saga} is a {type(target).__name__}, not a Saga")
    print(mermaid(target))
    return 0
