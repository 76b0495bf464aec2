"""The start-up banner: where the configuration came from, the binders (addresses redacted)
and every binding with its destination, group, partitioning and concurrency."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config import DEFAULT_CONFIG_FILE, BindingProperties, redact

log = logging.getLogger("streamlib.app")

ADDRESS_KEYS = ("bootstrap-servers", "url", "addresses", "host", "port", "virtual-host")
"""Binder settings that say where the broker is."""

BinderOf = Callable[[str, BindingProperties], tuple[str, str, dict[str, Any], str]]


def config_origin(source: Mapping[str, Any] | str | Path | None) -> str:
    """Where the configuration was read from, as the banner says it."""
    if isinstance(source, str | Path):
        return f"config file {Path(source).resolve()}"
    if source is not None:
        return "configuration given in code (no config file read)"
    named = os.environ.get("STREAMLIB_CONFIG")
    path = Path(named or DEFAULT_CONFIG_FILE)
    if path.exists():
        return f"config file {path.resolve()}"
    return f"no config file ({path.resolve()} not found); defaults and STREAMLIB_* variables"


def _partitioning(props: BindingProperties, consumer: bool, instance: tuple[int, int]) -> str:
    if consumer:
        c = props.consumer
        if not c.partitioned:
            return "not partitioned"
        if c.instance_index_list:
            return f"partitions {list(c.instance_index_list)}"
        index = instance[0] if c.instance_index is None else c.instance_index
        count = instance[1] if c.instance_count is None else c.instance_count
        return f"partitioned, instance-index {index} of instance-count {count}"
    p = props.producer
    if not p.partitioned:
        return "not partitioned"
    return f"{p.partition_count} partitions by {p.partition_key or 'key'}"


def log_banner(
    app_name: str,
    source: Mapping[str, Any] | str | Path | None,
    bindings: Mapping[str, tuple[BindingProperties, str]],
    binder_of: BinderOf,
    instance: tuple[int, int],
) -> None:
    """Log the banner at INFO; ``bindings`` maps each name to (settings, role), the role being
    ``consumer``, ``producer`` (a handler's output) or ``configured`` (bound on first send),
    and ``instance`` is the app's (instance-index, instance-count)."""
    log.info("%s: %s", app_name, config_origin(source))
    binders: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, (props, _) in bindings.items():
        binder, type_name, settings, _ = binder_of(name, props)
        binders.setdefault(binder, (type_name, settings))
    for binder, (type_name, settings) in binders.items():
        address = {k: v for k, v in redact(settings).items() if k in ADDRESS_KEYS}
        where = " ".join(f"{k}={v}" for k, v in address.items()) or "no address set"
        log.info("binder %s (type %s): %s", binder, type_name, where, extra={"binder": binder})
    for name, (props, role) in bindings.items():
        binder = binder_of(name, props)[0]
        destination = props.destination or name
        if role == "consumer":
            log.info(
                "binding %s: consumes %s, group %s, %s, concurrency %d, binder %s",
                name,
                destination,
                props.group or "none (anonymous)",
                _partitioning(props, True, instance),
                props.consumer.concurrency,
                binder,
                extra={"binding": name, "destination": destination},
            )
        else:
            log.info(
                "binding %s: %s %s, %s, binder %s",
                name,
                "produces to" if role == "producer" else "configured for sends to",
                destination,
                _partitioning(props, False, instance),
                binder,
                extra={"binding": name, "destination": destination},
            )
