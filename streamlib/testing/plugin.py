"""pytest plugin ``streamlib``: the memory binder's harness and the real-broker fixtures.

Binder distributions add their own harness fixtures (``kafka_harness``, ``rabbit_harness``)
through plugins of their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .broker_fixtures import kafka_bootstrap, postgres_url, rabbit_url, unique
from .harness import BinderHarness, MemoryHarness

__all__ = [
    "kafka_bootstrap",
    "memory_harness",
    "postgres_url",
    "rabbit_url",
    "unique",
]


@pytest.fixture
async def memory_harness() -> AsyncIterator[BinderHarness]:
    """The in-memory binder's conformance harness."""
    harness = MemoryHarness()
    yield harness
    await harness.aclose()
