"""A short run of multi_orchestrator_trial.py in the suite: three orchestrator processes on
PostgreSQL, one SIGKILLed every two seconds (while it holds a saga's lease when it can be
caught doing so) and restarted under a new name; every saga ends once, nothing runs twice.
The full runs (500 sagas on Kafka, 200 on RabbitMQ) are on demand."""

from __future__ import annotations

from pathlib import Path

import pytest
from multi_orchestrator_trial import arguments, trial

from streamlib.testing import BinderHarness

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.postgres]


async def test_three_orchestrators_with_one_killed_every_two_seconds(
    broker_harness: BinderHarness, postgres_url: str, tmp_path: Path
) -> None:
    config = broker_harness.binder_config()
    binder = config["binders"][broker_harness.name]
    address = binder.get("bootstrap-servers") or binder["url"]
    args = arguments(broker=broker_harness.name, sagas=60, rate=10.0, kill_every=2.0, seed=1)
    figures = await trial(args, tmp_path, str(address), postgres_url)
    print(f"\nmulti-orchestrator trial: {figures}")
    assert figures["failures"] == {
        "stuck": [],
        "compensated_twice": [],
        "done_twice": [],
        "repeated": [],
    }
    assert figures["states"] == {"completed": 40, "compensated": 20}
    assert figures["kills"] >= 1
