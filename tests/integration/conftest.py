from __future__ import annotations

import pytest

from streamlib.testing import BinderHarness


@pytest.fixture(
    params=[
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("rabbit", marks=pytest.mark.rabbit),
    ]
)
def broker_harness(request: pytest.FixtureRequest) -> BinderHarness:
    """The Kafka or the RabbitMQ binder's conformance harness: features tested on both."""
    harness: BinderHarness = request.getfixturevalue(f"{request.param}_harness")
    return harness
