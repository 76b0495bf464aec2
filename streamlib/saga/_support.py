"""Small helpers shared by the orchestrator and participants."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..app import StreamApp
from .settings import saga_settings
from .sqlite_store import SqliteSagaStore
from .store import SagaStore

DEFAULT_STORE_PATH = "saga.db"


def header_text(headers: Mapping[str, Any], name: str) -> str | None:
    """A header as text (binders may hand back bytes)."""
    value = headers.get(name)
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def identifier(text: str) -> str:
    """``orders.saga-replies`` -> ``orders_saga_replies``: usable as a handler name."""
    name = re.sub(r"\W", "_", text)
    return name if name and not name[0].isdigit() else f"_{name}"


def named(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``fn`` renamed, so the app derives binding names (``<name>-in-0``) from ``name``."""
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


def store_from(location: str, schema: str | None = None) -> SagaStore:
    """``postgresql://...`` (or ``postgres://``): a PostgresSagaStore in ``schema``; anything
    else: the path of a SQLite file."""
    if location.startswith(("postgresql://", "postgres://")):
        from .postgres_store import PostgresSagaStore

        return PostgresSagaStore(location, schema=schema or "public")
    return SqliteSagaStore(Path(location))


def config_store(app: StreamApp) -> SagaStore:
    """The store configured by ``saga.store`` (a SQLite file path or a PostgreSQL URL; default
    ``saga.db``) and ``saga.schema`` (PostgreSQL only)."""
    settings = saga_settings(app)
    return store_from(settings.store or DEFAULT_STORE_PATH, settings.schema_)
