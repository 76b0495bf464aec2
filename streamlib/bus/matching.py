"""Service ids and destinations: Spring Cloud Bus's ``:``-separated ant patterns.

A node's id is ``name:index:<32 hex>``. An event addresses the nodes whose id matches its
``destinationService``: ``*`` matches within one segment, ``**`` any number of segments,
``?`` one character.
"""

from __future__ import annotations

import re
import uuid
from functools import lru_cache

SEPARATOR = ":"
ALL = "**"


def service_id(name: str, index: int, instance: str | None = None) -> str:
    """``name:index:<32 hex>``; a random instance part unless one is given."""
    return f"{name}{SEPARATOR}{index}{SEPARATOR}{instance or uuid.uuid4().hex}"


def normalize_destination(destination: str | None) -> str:
    """A destination as Spring Cloud Bus writes it.

    None or empty -> ``**``; ``billing`` -> ``billing:**``; ``billing/1`` or ``billing:1`` ->
    ``billing:1:**``; ``billing:**`` and patterns with two or more colons are kept.
    """
    if not destination or not destination.strip():
        return ALL
    path = destination.strip().replace("/", SEPARATOR)
    if path == ALL or path.count(SEPARATOR) > 1 or path.endswith(f"{SEPARATOR}{ALL}"):
        return path
    return f"{path}{SEPARATOR}{ALL}"


@lru_cache(maxsize=256)
def _segment(pattern: str) -> re.Pattern[str]:
    parts = ("[^:]*" if c == "*" else "[^:]" if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts))


def matches(pattern: str, service: str) -> bool:
    """Whether ``service`` (an id) is addressed by ``pattern`` (a normalised destination)."""
    return _match(tuple(pattern.split(SEPARATOR)), tuple(service.split(SEPARATOR)))


@lru_cache(maxsize=1024)
def _match(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == ALL:
        return any(_match(rest, path[i:]) for i in range(len(path) + 1))
    if not path or not _segment(head).fullmatch(path[0]):
        return False
    return _match(rest, path[1:])
