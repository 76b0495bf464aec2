"""Fixtures of the rabbit binder's integration tests (real broker from ``rabbit_url``)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
