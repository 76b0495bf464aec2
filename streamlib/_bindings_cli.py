"""``streamlib bindings list|pause|resume|stop|start``: a running app's consumer bindings,
through its management endpoint (standard library HTTP, so the client needs no extra)."""

from __future__ import annotations

import argparse
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from .config import ManagementProperties, load_section
from .errors import StreamlibError

TIMEOUT = 30.0
"""Seconds to wait for an answer; a stop drains in-flight messages first."""

_STATES = {"pause": "PAUSED", "resume": "RESUMED", "stop": "STOPPED", "start": "STARTED"}


def endpoint_url(args: argparse.Namespace) -> str:
    """``--url``, else the ``management`` section of ``--config`` (or ./streamlib.yaml and
    ``STREAMLIB_MANAGEMENT__*``); StreamlibError when neither sets a port."""
    if args.url:
        return str(args.url).rstrip("/")
    management = load_section(args.config, "management", ManagementProperties)
    if not management.port:
        raise StreamlibError(
            "no management endpoint to talk to: pass --url http://HOST:PORT, or set "
            "management.port in the config file (--config) or STREAMLIB_MANAGEMENT__PORT"
        )
    host = "127.0.0.1" if management.host in ("0.0.0.0", "::") else management.host
    return f"http://{host}:{management.port}"


def _call(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = orjson.loads(exc.read()).get("error", exc.reason)
        except (orjson.JSONDecodeError, AttributeError):
            reason = exc.reason
        raise StreamlibError(f"{method} {url}: {exc.code} {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StreamlibError(f"cannot reach the management endpoint at {url}: {reason}") from None


def _table(bindings: list[dict[str, Any]]) -> str:
    columns = ("name", "state", "destination", "group", "binder")
    rows = [[str(b.get(c) or "-") for c in columns] for b in bindings]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _bindings(args: argparse.Namespace) -> int:
    base = endpoint_url(args)
    if args.bindings_command == "list":
        bindings = _call(f"{base}/bindings")
        print(orjson.dumps(bindings).decode() if args.json else _table(bindings), end="")
        if args.json:
            print()
        return 0
    state = _STATES[args.bindings_command]
    for name in args.names:
        result = _call(
            f"{base}/bindings/{urllib.parse.quote(name, safe='')}", "POST", {"state": state}
        )
        print(f"{name}: {result.get('state')}")
    return 0


def add_commands(commands: Any) -> None:
    """Add ``bindings`` to the ``streamlib`` command's subparsers."""
    parser = commands.add_parser(
        "bindings",
        help="list, pause, resume, stop or start a running app's consumer bindings",
        description="Talk to a running app's management endpoint (management.port).",
    )
    actions = parser.add_subparsers(dest="bindings_command", required=True)
    subs = [actions.add_parser("list", help="each binding with its state")]
    subs[0].add_argument("--json", action="store_true", help="print the endpoint's JSON")
    for action, help_text in (
        ("pause", "stop delivery without leaving the group or giving up the queue"),
        ("resume", "deliver again after pause"),
        ("stop", "drain in-flight messages and stop consuming"),
        ("start", "start consuming again after stop"),
    ):
        sub = actions.add_parser(action, help=help_text)
        sub.add_argument("names", nargs="+", metavar="BINDING", help="binding name")
        subs.append(sub)
    for sub in subs:
        sub.add_argument("--url", help="the endpoint, http://HOST:PORT (default: from config)")
        sub.add_argument("--config", help="YAML config file to read management.port from")
        sub.set_defaults(func=_bindings)
