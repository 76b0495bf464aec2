"""The streamlib command: run an app, send a message; bus and saga commands when present.

Logging options (-v, --log-level) are accepted before or after the subcommand."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import yaml

from . import __version__, _bindings_cli
from ._logs import use_json_logs
from .app import StreamApp
from .errors import ConfigError, StreamlibError

log = logging.getLogger("streamlib.cli")

Command = Callable[[argparse.Namespace], int]


def load_app(target: str) -> StreamApp:
    """``package.module:attribute`` (or ``path/file.py:attribute``) -> the StreamApp it names
    (cwd is importable)."""
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise StreamlibError(f"expected module:app, got {target!r}")
    if module_name.endswith(".py"):
        # A file: its directory becomes importable, as `python path/app.py` would make it.
        path = Path(module_name)
        if not path.is_file():
            raise StreamlibError(f"cannot import {module_name} (from {target}): no such file")
        sys.path.insert(0, str(path.resolve().parent))
        module_name = path.stem
    elif "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # a module the app imports is missing: its traceback says where
        raise StreamlibError(f"cannot import {module_name} (from {target}): {exc}") from None
    app: object = module
    for part in attr.split("."):
        if not hasattr(app, part):
            raise StreamlibError(f"{module_name} has no attribute {attr!r} (from {target})")
        app = getattr(app, part)
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


def _overrides(pairs: Sequence[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs (dotted keys, values read as YAML scalars) as a mapping."""
    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(pair, "expected KEY=VALUE after --set")
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            values[key.strip()] = raw
    return values


def _run(args: argparse.Namespace) -> int:
    asyncio.run(serve(_configured_app(args)))
    return 0


def _headers(pairs: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise StreamlibError(f"expected NAME=VALUE after --header, got {pair!r}")
        headers[name.strip()] = value
    return headers


def _sender(args: argparse.Namespace) -> StreamApp:
    """An app with no handlers and the configuration the command names: that of ``--app``
    (its binding defaults included), else ``--config`` or ``./streamlib.yaml``; ``--set`` on
    top. The app's own handlers are never started."""
    if args.app:
        app = _configured_app(args)
        config = app.config.model_dump(by_alias=True, exclude_defaults=True)
        return StreamApp(app.name, config=config)
    sender = StreamApp(None, config=args.config) if args.config else StreamApp()
    if args.set:
        sender.override_config(_overrides(args.set), "--set")
    return sender


async def _send_one(args: argparse.Namespace) -> int:
    try:
        payload = orjson.loads(args.json)
    except orjson.JSONDecodeError as exc:
        raise StreamlibError(f"the message is not JSON ({exc}): {args.json!r}") from None
    headers = _headers(args.header)
    sender = _sender(args)
    name, type_name, _, _ = sender._binder_for(
        args.destination, sender.config.binding(args.destination)
    )
    if type_name == "memory":
        raise StreamlibError(
            f"{args.destination} is bound to the in-memory binder (binder {name!r}), which "
            "reaches no other process; configure a broker (--app, --config FILE, --set or "
            "STREAMLIB_* variables)"
        )
    async with sender.run():
        await sender.send(args.destination, payload, key=args.key, headers=headers)
    destination = sender.config.binding(args.destination).destination or args.destination
    print(f"sent to {destination}")
    return 0


def _send(args: argparse.Namespace) -> int:
    return asyncio.run(_send_one(args))


def _configured_app(args: argparse.Namespace) -> StreamApp:
    app = load_app(args.app)
    if args.config:
        app.use_config(args.config)
    if args.set:
        app.override_config(_overrides(args.set), "--set")
    return app


def _write(text: str, output: str | None) -> None:
    if output is None or output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")


def _docs(args: argparse.Namespace) -> int:
    from .asyncapi import asyncapi_document

    document = asyncapi_document(_configured_app(args), version=args.api_version)
    if args.docs_command == "html":
        from .asyncapi_html import render_html

        _write(render_html(document), args.output)
    elif args.format == "yaml":
        _write(yaml.safe_dump(document, sort_keys=False), args.output)
    else:
        _write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n", args.output)
    return 0


def _logging_options(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the logging options wherever they are, the other arguments), so that ``-v`` and
    ``--log-level`` work after a subcommand too."""
    found: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            rest.append(arg)
            rest.extend(args)
        elif arg in ("-v", "--verbose") or arg.startswith("--log-level="):
            found.append(arg)
        elif arg == "--log-level":
            found.extend([arg, next(args, "")])
        else:
            rest.append(arg)
    return found, rest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamlib", description=__doc__)
    parser.add_argument("--version", action="version", version=f"streamlib {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default: INFO; -v is DEBUG)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an app until SIGINT/SIGTERM")
    run.add_argument("app", help="module:attribute of a StreamApp")
    run.add_argument("--config", help="YAML config file (default: ./streamlib.yaml)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a configuration key over file and environment (dotted key, YAML value); "
        "repeatable",
    )
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: one JSON object per line, with binding and destination where known",
    )
    run.set_defaults(func=_run)
    send = commands.add_parser(
        "send",
        help="send one JSON message to a binding or destination and wait for the broker",
        description="Send one JSON message with the configuration of an app (--app) or of a "
        "file (--config, default ./streamlib.yaml); the app's handlers are not started. "
        "DESTINATION is a binding name (its configured destination and producer settings "
        "apply) or a destination.",
    )
    send.add_argument("destination", metavar="DESTINATION", help="binding name or destination")
    send.add_argument("json", metavar="JSON", help="the payload, as JSON")
    send.add_argument("--app", help="module:attribute of a StreamApp whose configuration to use")
    send.add_argument("--config", help="YAML config file (default: ./streamlib.yaml)")
    send.add_argument("--key", help="message key (also the partition key where none is set)")
    send.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="message header; repeatable",
    )
    send.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a configuration key (dotted key, YAML value); repeatable",
    )
    send.set_defaults(func=_send)
    docs = commands.add_parser("docs", help="document an app's bindings (AsyncAPI 3.0)")
    kinds = docs.add_subparsers(dest="docs_command", required=True)
    asyncapi = kinds.add_parser("asyncapi", help="write the AsyncAPI 3.0 document")
    asyncapi.add_argument("--format", choices=["json", "yaml"], default="json")
    html = kinds.add_parser("html", help="write a static HTML page of the AsyncAPI document")
    for sub in (asyncapi, html):
        sub.add_argument("app", help="module:attribute (or file.py:attribute) of a StreamApp")
        sub.add_argument("--config", help="YAML config file (default: ./streamlib.yaml)")
        sub.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="set a configuration key (dotted key, YAML value); repeatable",
        )
        sub.add_argument("-o", "--output", help="file to write (default: standard output)")
        sub.add_argument(
            "--api-version", default="1.0.0", help="info.version of the document (1.0.0)"
        )
        sub.set_defaults(func=_docs)
    _bindings_cli.add_commands(commands)
    for name in ("streamlib.bus.cli", "streamlib.dlq.cli", "streamlib.saga.cli"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue
        module.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 2 when the app cannot be found or started (one line on stderr)."""
    parser = _parser()
    logging_options, rest = _logging_options(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(logging_options + rest)
    level = args.log_level or ("DEBUG" if args.verbose else "INFO")
    args.verbose = level == "DEBUG"
    if getattr(args, "log_format", "text") == "json":
        use_json_logs(level)
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func: Command = args.func
    try:
        code = func(args)
        sys.stdout.flush()
        return code
    except StreamlibError as exc:
        log.error("%s", exc)
        return 2
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep the interpreter's final
        # flush from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
