"""The ``streamlib`` command: ``run`` an app; ``bus`` and ``saga`` commands when present."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .app import StreamApp
from .errors import StreamlibError

log = logging.getLogger("streamlib.cli")

Command = Callable[[argparse.Namespace], int]


def load_app(target: str) -> StreamApp:
    """``package.module:attribute`` -> the StreamApp it names (cwd is importable)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise StreamlibError(f"expected module:app, got {target!r}")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    module = importlib.import_module(module_name)
    app = getattr(module, attr, None)
    if not isinstance(app, StreamApp):
        raise StreamlibError(f"{target} is not a StreamApp (got {type(app).__name__})")
    return app


async def serve(app: StreamApp) -> None:
    """Run ``app`` until SIGINT or SIGTERM, then drain in-flight work and stop.

    A task of the app that dies (a source) stops it too; leaving raises StreamlibError.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with app.run():
            log.info("%s started; bindings: %s", app.config.name, ", ".join(app.bindings) or "none")
            signalled = asyncio.create_task(stop.wait())
            failed = asyncio.create_task(app.wait_failed())
            try:
                await asyncio.wait((signalled, failed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (signalled, failed):
                    task.cancel()
                await asyncio.gather(signalled, failed, return_exceptions=True)
            log.info("stopping: draining in-flight messages")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("stopped")


def _run(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    if args.config:
        app.use_config(args.config)
    asyncio.run(serve(app))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamlib", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an app until SIGINT/SIGTERM")
    run.add_argument("app", help="module:attribute of a StreamApp")
    run.add_argument("--config", help="YAML config file (default: ./streamlib.yaml)")
    run.set_defaults(func=_run)
    for name in ("streamlib.bus.cli", "streamlib.saga.cli"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue
        module.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Command = args.func
    try:
        return func(args)
    except StreamlibError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
