"""Spring property names served by a Config Server, as streamlib configuration keys.

Keys outside ``spring.`` are kept as they are. ``spring.*`` keys map where
docs/spring-interop.md lists a streamlib equivalent (camelCase or kebab-case alike,
milliseconds becoming seconds); the others are dropped, so one repository serves Java and
Python services.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from .config import set_path

log = logging.getLogger("streamlib.config_server")

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_INDEX = re.compile(r"^(?P<name>.*)\[(?P<index>\d+)\]$")
_MILLIS = frozenset({"back-off-initial-interval", "back-off-max-interval"})
_STREAM_TOP = {
    "instance-index": "instance-index",
    "instance-count": "instance-count",
    "default-binder": "default-binder",
}
_BINDING_KEYS = frozenset({"destination", "group", "binder", "content-type"})
_CONSUMER_KEYS = frozenset(
    {
        "max-attempts",
        "back-off-initial-interval",
        "back-off-max-interval",
        "back-off-multiplier",
        "partitioned",
        "concurrency",
        "instance-index",
        "instance-count",
    }
)
_PRODUCER_KEYS = {
    "partition-key-expression": "partition-key",
    "partition-count": "partition-count",
    "required-groups": "required-groups",
}
_EXTENDED_CONSUMER = {
    ("kafka", "enable-dlq"): "dlq",
    ("rabbit", "auto-bind-dlq"): "dlq",
    ("rabbit", "republish-to-dlq"): "republish-to-dlq",
}
_BUS_KEYS = frozenset({"destination", "id", "enabled"})


def _kebab_segment(segment: str) -> str:
    """``maxAttempts`` -> ``max-attempts``; ``requiredGroups[0]`` keeps its index."""
    match = _INDEX.match(segment)
    if match:
        return f"{_kebab_segment(match['name'])}[{match['index']}]"
    return _CAMEL.sub(r"-\1", segment).replace("_", "-").lower()


def spring_key(key: str, value: Any) -> tuple[str, Any] | None:
    """The streamlib key (and value) for one Spring-style property; None when it has none.

    Keys outside ``spring.`` are kept as they are; ``spring.*`` keys map as
    docs/spring-interop.md lists, milliseconds becoming seconds, and the rest are dropped.
    """
    parts = key.split(".")
    if parts[0] != "spring":
        return key, value
    if parts[1:3] == ["cloud", "bus"] and len(parts) == 4:
        bus_key = _kebab_segment(parts[3])
        return (f"bus.{bus_key}", value) if bus_key in _BUS_KEYS else None
    if parts[1:3] != ["cloud", "stream"] or len(parts) < 4:
        return None
    rest = parts[3:]
    if len(rest) == 1:
        top = _STREAM_TOP.get(_kebab_segment(rest[0]))
        return (top, value) if top else None
    if rest[0] == "bindings" and len(rest) >= 3:
        binding, tail = rest[1], [_kebab_segment(p) for p in rest[2:]]
        return _binding_key(binding, tail, value)
    if rest[0] in ("kafka", "rabbit") and len(rest) == 5 and rest[1] == "bindings":
        binding, section, name = rest[2], rest[3], _kebab_segment(rest[4])
        target = _EXTENDED_CONSUMER.get((rest[0], name))
        if section == "consumer" and target:
            return f"bindings.{binding}.consumer.{target}", value
    return None


def _binding_key(binding: str, tail: list[str], value: Any) -> tuple[str, Any] | None:
    prefix = f"bindings.{binding}"
    if len(tail) == 1 and tail[0] in _BINDING_KEYS:
        return f"{prefix}.{tail[0]}", value
    if len(tail) == 2 and tail[0] == "consumer" and tail[1] in _CONSUMER_KEYS:
        if tail[1] in _MILLIS:
            return f"{prefix}.consumer.{tail[1]}", float(value) / 1000
        return f"{prefix}.consumer.{tail[1]}", value
    if len(tail) == 2 and tail[0] == "producer":
        base = _INDEX.match(tail[1])
        name = base["name"] if base else tail[1]
        target = _PRODUCER_KEYS.get(name)
        if target:
            return f"{prefix}.producer.{target}{tail[1][len(name) :]}", value
    return None


def to_streamlib(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat (dotted) server properties as a streamlib configuration tree.

    ``a.b[0]`` entries become lists; ``required-groups: "a,b"`` becomes a list too.
    """
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        mapped = spring_key(key, value)
        if mapped is None:
            log.debug("config server: no streamlib key for %s", key)
            continue
        name, item = mapped
        if name.endswith("required-groups") and isinstance(item, str):
            item = [g.strip() for g in item.split(",") if g.strip()]
        set_path(tree, name.split("."), item)
    out: dict[str, Any] = _lists(tree)
    return out


def _lists(node: Any) -> Any:
    """``{"x[0]": a, "x[1]": b}`` -> ``{"x": [a, b]}``, at every level."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    indexed: dict[str, dict[int, Any]] = {}
    for key, value in node.items():
        match = _INDEX.match(key)
        if match:
            indexed.setdefault(match["name"], {})[int(match["index"])] = _lists(value)
        else:
            out[key] = _lists(value)
    for name, items in indexed.items():
        out[name] = [items[i] for i in sorted(items)]
    return out
