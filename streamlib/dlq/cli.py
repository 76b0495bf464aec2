"""``streamlib dlq list|show|replay|purge``: look at dead letters and send them back.

The commands read the apps' configuration as ``streamlib send`` does (``--app``, else
``--config`` or ``./streamlib.yaml``, ``--set`` on top): a binding's binder, destination and
group name its DLQ. They work on any DLQ with Spring Cloud Stream's names and headers,
whichever app wrote it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ..app import StreamApp
from ..binder import ConsumerSpec
from ..errors import StreamlibError
from .letters import DeadLetter, DeadLetterQueues, SupportsDeadLetters
from .progress import Progress
from .replay import replay

PREVIEW = 200
"""Characters of a payload ``show`` prints by default."""


def add_commands(commands: Any) -> None:
    """Add the ``dlq`` command and its subcommands to ``streamlib``'s argument parser."""
    dlq = commands.add_parser(
        "dlq",
        help="list, show, replay and purge dead-letter queues",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = actions.add_parser(
        "list", help="per DLQ: messages, oldest, newest, counts by exception"
    )
    listing.add_argument(
        "bindings",
        nargs="*",
        metavar="BINDING",
        help="consumer bindings (default: every one with a group and a DLQ in the configuration)",
    )
    show = actions.add_parser("show", help="the messages of a binding's DLQ")
    show.add_argument("binding", metavar="BINDING", help="consumer binding")
    show.add_argument(
        "--exception",
        metavar="CLASS",
        help="only messages whose exception (or Java cause) is CLASS, by full or simple name",
    )
    show.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="only messages with this header value; repeatable",
    )
    show.add_argument("--since", metavar="TIME", help="only messages from TIME on (ISO 8601)")
    show.add_argument("--until", metavar="TIME", help="only messages before TIME (ISO 8601)")
    show.add_argument("--limit", type=int, metavar="N", help="show at most N messages")
    show.add_argument(
        "--preview",
        type=int,
        default=PREVIEW,
        metavar="CHARS",
        help=f"characters of each payload to print ({PREVIEW}; 0 for all)",
    )
    show.add_argument(
        "--stacktrace", action="store_true", help="print each message's stack trace too"
    )
    replaying = actions.add_parser(
        "replay",
        help="send a binding's dead letters back; each leaves the DLQ once the broker "
        "confirmed its copy",
    )
    replaying.add_argument("binding", metavar="BINDING", help="consumer binding")
    replaying.add_argument(
        "--to",
        metavar="DESTINATION",
        help="send here instead of each message's original destination",
    )
    replaying.add_argument(
        "--rate", type=float, metavar="PER_SECOND", help="at most this many messages a second"
    )
    replaying.add_argument("--limit", type=int, metavar="N", help="replay at most N messages")
    replaying.add_argument(
        "--window",
        type=int,
        default=100,
        metavar="N",
        help="copies awaiting confirmation at most (100; 1 with --rate): what a killed replay "
        "may send twice",
    )
    replaying.add_argument(
        "--dry-run", action="store_true", help="print what would be sent where; change nothing"
    )
    purge = actions.add_parser("purge", help="drop every message of a binding's DLQ")
    purge.add_argument("binding", metavar="BINDING", help="consumer binding")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    for parser in (listing, show, replaying):
        parser.add_argument("--json", action="store_true", help="one JSON object per line")
    for parser in (listing, show, replaying, purge):
        parser.add_argument("--app", help="module:attribute of a StreamApp whose config to use")
        parser.add_argument("--config", help="YAML config file (default: ./streamlib.yaml)")
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="set a configuration key (dotted key, YAML value); repeatable",
        )
    listing.set_defaults(func=_list)
    show.set_defaults(func=_show)
    replaying.set_defaults(func=_replay)
    purge.set_defaults(func=_purge)


@dataclass(frozen=True, slots=True)
class Target:
    """A binding's DLQ and the binder's access to it."""

    binding: str
    dlq: str
    queues: DeadLetterQueues


class Targets:
    """The DLQs of named bindings, on the binders the configuration gives them; ``aclose``
    closes what was opened."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ..cli import _sender

        self._app: StreamApp = _sender(args)
        self._queues: dict[int, DeadLetterQueues] = {}

    def names(self) -> list[str]:
        return list(self._app.config.bindings)

    def resolve(self, binding: str, explicit: bool = True) -> Target | None:
        """The DLQ of ``binding``; None when it has none and was not named. Raises
        StreamlibError when a named binding has no DLQ or its binder serves none."""
        config = self._app.config
        props = config.binding(binding)
        key = f"bindings.{binding}"
        if not props.group:
            if not explicit:
                return None
            if not config.has_binding(binding):
                raise StreamlibError(f"no binding {binding!r} in the configuration ({key})")
            raise StreamlibError(f"{key}.group is not set: only a consumer group has a DLQ")
        name, type_name, _, _ = self._app._binder_for(binding, props)
        binder = self._app._binder(binding, props)
        if not isinstance(binder, SupportsDeadLetters):
            raise StreamlibError(
                f"{key} is bound to binder {name!r} (type {type_name}), which has no DLQ "
                "commands; configure the apps' broker (--app, --config FILE, --set or "
                "STREAMLIB_* variables)"
            )
        queues = self._queues.get(id(binder))
        if queues is None:
            queues = self._queues[id(binder)] = binder.dead_letters()
        spec = ConsumerSpec(
            binding,
            props.destination or binding,
            props.group,
            props.consumer,
            config.instance_index,
            config.instance_count,
        )
        dlq = queues.dlq_of(spec)
        if dlq is None:
            if not explicit:
                return None
            raise StreamlibError(f"{key}.consumer.dlq is off: the binding has no DLQ")
        return Target(binding, dlq, queues)

    async def aclose(self) -> None:
        for queues in self._queues.values():
            await queues.aclose()
        for binder in self._app._binders.values():
            await binder.aclose()


def _quiet(args: argparse.Namespace) -> None:
    # The output is the dead letters; broker clients' chatter only with --verbose.
    if not getattr(args, "verbose", False):
        logging.getLogger().setLevel(logging.WARNING)


def _run(args: argparse.Namespace, work: Callable[[Targets], Any]) -> int:
    _quiet(args)

    async def run() -> int:
        targets = Targets(args)
        try:
            code: int = await work(targets)
            return code
        finally:
            await targets.aclose()

    return asyncio.run(run())


def _time(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _emit(record: Mapping[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(record, default=_jsonable).decode() + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _list(args: argparse.Namespace) -> int:
    async def work(targets: Targets) -> int:
        explicit = bool(args.bindings)
        found = [targets.resolve(b, explicit) for b in args.bindings or targets.names()]
        rows = []
        for target in (t for t in found if t is not None):
            count, oldest, newest = 0, None, None
            kinds: Counter[str] = Counter()
            async with aclosing(target.queues.browse(target.dlq)) as letters:
                async for letter in letters:
                    count += 1
                    kinds[letter.exception or "(none)"] += 1
                    if letter.timestamp is not None:
                        oldest = min(oldest or letter.timestamp, letter.timestamp)
                        newest = max(newest or letter.timestamp, letter.timestamp)
            rows.append((target, count, oldest, newest, kinds))
        if args.json:
            for target, count, oldest, newest, kinds in rows:
                _emit(
                    {
                        "binding": target.binding,
                        "dlq": target.dlq,
                        "count": count,
                        "oldest": _iso(oldest),
                        "newest": _iso(newest),
                        "exceptions": dict(kinds.most_common()),
                    }
                )
            return 0
        if not rows:
            print("no binding with a group and a DLQ in the configuration")
            return 0
        width = max(len(t.dlq) for t, *_ in rows)
        oldest_title, newest_title = "OLDEST (UTC)", "NEWEST (UTC)"
        print(f"{'DLQ':<{width}}  {'BINDING':<20}  MESSAGES  {oldest_title:<23}  {newest_title}")
        for target, count, oldest, newest, kinds in rows:
            print(
                f"{target.dlq:<{width}}  {target.binding:<20}  {count:>8}  "
                f"{_time(oldest):<23}  {_time(newest)}"
            )
            for kind, n in kinds.most_common():
                print(f"{'':<{width}}  {n:>6} x {kind}")
        return 0

    return _run(args, work)


def _moment(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise StreamlibError(f"{option} {text!r}: expected an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _pairs(pairs: Iterable[str]) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise StreamlibError(f"expected NAME=VALUE after --header, got {pair!r}")
        wanted[name.strip()] = value
    return wanted


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _matcher(args: argparse.Namespace) -> Callable[[DeadLetter], bool]:
    since = _moment(args.since, "--since")
    until = _moment(args.until, "--until")
    headers = _pairs(args.header)
    kind = args.exception

    def matches(letter: DeadLetter) -> bool:
        if kind is not None:
            names = {n for n in (letter.exception, letter.cause) if n}
            if kind not in names and kind not in {n.rpartition(".")[2] for n in names}:
                return False
        for name, value in headers.items():
            if name not in letter.headers or _text(letter.headers[name]) != value:
                return False
        stamp = letter.timestamp
        if (since is not None or until is not None) and stamp is None:
            return False
        if since is not None and stamp is not None and stamp < since:
            return False
        return not (until is not None and stamp is not None and stamp >= until)

    return matches


def _preview(body: bytes, chars: int) -> str:
    text = body.decode("utf-8", "replace")
    if chars and len(text) > chars:
        return text[:chars] + f"... ({len(text)} characters)"
    return text


def _key(key: str | bytes | None) -> str | None:
    return None if key is None else _text(key)


def _describe(letter: DeadLetter, args: argparse.Namespace) -> dict[str, Any]:
    shown = {
        k: v for k, v in letter.headers.items() if k != "x-exception-stacktrace" or args.stacktrace
    }
    return {
        "dlq": letter.dlq,
        "position": letter.position,
        "timestamp": _iso(letter.timestamp),
        "original": letter.original,
        "origin": letter.origin,
        "exception": letter.exception,
        "cause": letter.cause,
        "reason": letter.reason,
        "times_dead_lettered": letter.times_dead_lettered,
        "replay_count": letter.replay_count,
        "key": _key(letter.key),
        "headers": shown,
        "payload": _preview(letter.body, args.preview),
    }


def _print_letter(letter: DeadLetter, args: argparse.Namespace) -> None:
    print(f"{letter.dlq} {letter.position}  {_time(letter.timestamp)} UTC")
    print(f"  from       {letter.origin}")
    exception = letter.exception or "(no exception headers)"
    print(f"  exception  {exception}" + (f": {letter.reason}" if letter.reason else ""))
    if letter.cause:
        print(f"  cause      {letter.cause}")
    times = letter.times_dead_lettered
    print(
        f"  attempts   dead-lettered {times if times is not None else '?'} time(s), "
        f"replayed {letter.replay_count} time(s)"
    )
    if letter.key is not None:
        print(f"  key        {_key(letter.key)}")
    print(f"  payload    {_preview(letter.body, args.preview)}")
    if args.stacktrace and letter.stacktrace:
        print("  stacktrace")
        for line in letter.stacktrace.splitlines():
            print(f"    {line}")


def _show(args: argparse.Namespace) -> int:
    matches = _matcher(args)

    async def work(targets: Targets) -> int:
        target = targets.resolve(args.binding)
        assert target is not None
        shown = 0
        async with aclosing(target.queues.browse(target.dlq)) as letters:
            async for letter in letters:
                if args.limit is not None and shown >= args.limit:
                    break
                if not matches(letter):
                    continue
                shown += 1
                if args.json:
                    _emit(_describe(letter, args))
                else:
                    _print_letter(letter, args)
        if not args.json:
            print(f"{shown} message(s) shown from {target.dlq}")
        return 0

    return _run(args, work)


def _replay(args: argparse.Namespace) -> int:
    if args.window < 1:
        raise StreamlibError("--window must be at least 1")
    if args.rate is not None and args.rate <= 0:
        raise StreamlibError("--rate must be above 0")

    async def work(targets: Targets) -> int:
        target = targets.resolve(args.binding)
        assert target is not None
        if args.dry_run:
            return await _dry_run(target, args)
        async with target.queues.replay(target.dlq) as session:
            total = session.size if args.limit is None else min(session.size, args.limit)
            bar = Progress(total, f"replaying {target.dlq}")
            try:
                count = await replay(
                    session,
                    args.to,
                    limit=args.limit,
                    rate=args.rate,
                    window=args.window,
                    progress=bar.advance,
                )
            finally:
                bar.close()
        where = args.to or "their original destinations"
        if args.json:
            _emit({"dlq": target.dlq, "replayed": count, "to": args.to})
        else:
            print(f"replayed {count} message(s) from {target.dlq} to {where}")
        return 0

    return _run(args, work)


async def _dry_run(target: Target, args: argparse.Namespace) -> int:
    count = 0
    async with aclosing(target.queues.browse(target.dlq)) as letters:
        async for letter in letters:
            if args.limit is not None and count >= args.limit:
                break
            count += 1
            to = args.to or letter.original
            if args.json:
                replays = letter.replay_count + 1
                _emit({"position": letter.position, "to": to, "replay_count": replays})
            else:
                print(f"would replay {letter.position} to {to or '(unknown: use --to)'}")
    if not args.json:
        print(f"{count} message(s) would be replayed from {target.dlq}; nothing was changed")
    return 0


def _purge(args: argparse.Namespace) -> int:
    async def count(targets: Targets) -> int:
        target = targets.resolve(args.binding)
        assert target is not None
        async with target.queues.replay(target.dlq) as session:
            size: int = session.size
        if size == 0:
            print(f"{target.dlq} is empty")
            return 0
        if not args.yes:
            answer = await asyncio.to_thread(
                _ask, f"drop {size} message(s) from {target.dlq}? [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing was dropped")
                return 1
        dropped = await target.queues.purge(target.dlq)
        print(f"dropped {dropped} message(s) from {target.dlq}")
        return 0

    return _run(args, count)


def _ask(prompt: str) -> str:
    try:
        return input(prompt)
    except EOFError:
        return ""
