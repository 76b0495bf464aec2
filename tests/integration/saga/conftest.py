from __future__ import annotations

import sys
from pathlib import Path

import pytest

from streamlib.testing import BinderHarness

_ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(_ROOT / "tests"), str(_ROOT / "examples" / "saga")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(
    params=[
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("rabbit", marks=pytest.mark.rabbit),
    ]
)
def harness(request: pytest.FixtureRequest) -> BinderHarness:
    """The Kafka or RabbitMQ binder's conformance harness."""
    value: BinderHarness = request.getfixturevalue(f"{request.param}_harness")
    return value
