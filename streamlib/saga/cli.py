"""``streamlib saga list`` and ``streamlib saga show ID``: read a saga store and print it.

The store is ``--store PATH``, else ``saga.store`` from the configuration (``--config``,
``$STREAMLIB_CONFIG`` or ``./streamlib.yaml``), else ``saga.db``.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import load_config
from ..errors import StreamlibError
from ._support import DEFAULT_STORE_PATH
from .sqlite_store import SqliteSagaStore
from .store import SagaRecord, SagaState


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
    for parser in (listing, show):
        parser.add_argument("--store", help="SQLite saga store (default: saga.store or saga.db)")
        parser.add_argument("--config", help="YAML config file to read saga.store from")
    listing.set_defaults(func=_list)
    show.set_defaults(func=_show)


def store_path(args: argparse.Namespace) -> Path:
    """The store named on the command line or in the configuration; it must exist."""
    if args.store:
        path = Path(args.store)
    else:
        config = load_config(args.config)
        path = Path(str(config.saga.get("store") or DEFAULT_STORE_PATH))
    if not path.is_file():
        raise StreamlibError(f"no saga store at {path}")
    return path


def _time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _step(record: SagaRecord) -> str:
    return str(record.step) if record.step >= 0 else "-"


def _list(args: argparse.Namespace) -> int:
    store = SqliteSagaStore(store_path(args))
    try:
        records = asyncio.run(store.list(SagaState(args.state) if args.state else None))
    finally:
        store.close()
    print(f"{'ID':<36}  {'SAGA':<20}  {'STATE':<15}  STEP  {'UPDATED (UTC)':<23}  ERROR")
    for r in records:
        print(
            f"{r.id:<36}  {r.saga:<20}  {r.state.value:<15}  {_step(r):>4}  "
            f"{_time(r.updated_at):<23}  {r.error or ''}"
        )
    print(f"{len(records)} saga(s)")
    return 0


def _show(args: argparse.Namespace) -> int:
    store = SqliteSagaStore(store_path(args))

    async def read() -> tuple[SagaRecord | None, list[Any]]:
        return await store.get(args.id), await store.history(args.id)

    try:
        record, history = asyncio.run(read())
    finally:
        store.close()
    if record is None:
        raise StreamlibError(f"no saga {args.id}")
    print(f"saga     {record.id}")
    print(f"type     {record.saga}")
    print(f"state    {record.state.value}")
    print(f"step     {_step(record)}")
    if record.error:
        print(f"error    {record.error}")
    print(f"data     {record.data}")
    print(f"created  {_time(record.created_at)}")
    print(f"updated  {_time(record.updated_at)}")
    print("history:")
    for e in history:
        parts = [_time(e.at), f"{e.event:<18}", e.step or "-"]
        if e.detail:
            parts.append(e.detail)
        print("  " + "  ".join(parts))
    return 0
