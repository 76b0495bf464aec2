from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from streamlib.config import deep_merge

Config = Callable[..., dict[str, Any]]


@pytest.fixture
def kafka_config(kafka_bootstrap: str) -> Config:
    """``kafka_config(bindings, **top)``: an app config on the test broker."""

    def make(
        bindings: Mapping[str, Any] | None = None,
        binder: Mapping[str, Any] | None = None,
        **top: Any,
    ) -> dict[str, Any]:
        settings = deep_merge({"type": "kafka", "bootstrap-servers": kafka_bootstrap}, binder or {})
        return {
            "binders": {"kafka": settings},
            "default-binder": "kafka",
            "bindings": dict(bindings or {}),
            **{k.replace("_", "-"): v for k, v in top.items()},
        }

    return make
