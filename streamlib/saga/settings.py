"""The ``saga:`` section of the configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from ..models import SettingsModel

if TYPE_CHECKING:
    from ..app import StreamApp


class SagaSettings(SettingsModel):
    """``saga.*`` keys, read when an Orchestrator or Participant is created; errors name
    ``saga.<key>``. Arguments given in code win over them."""

    store: str | None = None
    """A SQLite file path or a PostgreSQL URL; default ``saga.db``."""
    schema_: str | None = Field(None, alias="schema")
    """The PostgreSQL schema of the store (default ``public``)."""
    instance: str | None = None
    """This orchestrator's name in leases; default ``<host>-<pid>-<random>``."""
    lease: float | None = None
    """Seconds an orchestrator holds a saga it works on before another may take it over."""
    retention: float | None = None
    """Seconds finished sagas are kept; default forever."""
    events_destination: str | None = None
    """Where saga lifecycle events go."""


def saga_settings(app: StreamApp) -> SagaSettings:
    """The app's ``saga:`` section, declared on it; its keys are read once, so a change is
    reported by a refresh as needing a restart."""
    return app.settings("saga", SagaSettings, live_keys=()).value
