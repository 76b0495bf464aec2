"""The management endpoint of an app on a real broker: its metrics count what happened, and
PAUSED / RESUMED hold and restart delivery, STOPPED / STARTED leave and join again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamlib import StreamApp
from streamlib.config import deep_merge
from streamlib.testing import BinderHarness, Collector

pytestmark = pytest.mark.anyio

MESSAGES = 200
FAIL_EVERY = 10
MAX_ATTEMPTS = 2


def _app(harness: BinderHarness, destination: str, group: str, **consumer: Any) -> StreamApp:
    config = deep_merge(
        dict(harness.binder_config()),
        {
            "name": "ops",
            "management": {"port": 0},
            "bindings": {
                "work-in-0": {
                    "destination": destination,
                    "group": group,
                    "consumer": {"back-off-initial-interval": 0.01, **consumer},
                },
                "work-out-0": {"destination": f"{destination}.out"},
            },
        },
    )
    return StreamApp("ops", config=config)


@asynccontextmanager
async def _client(app: StreamApp) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    assert app.management_url is not None
    async with aiohttp.ClientSession() as session:
        yield session, app.management_url


async def _metrics(session: aiohttp.ClientSession, url: str) -> dict[tuple[str, str], float]:
    """Every sample of ``/metrics``, parsed by prometheus_client, as (name, labels) -> value."""
    async with session.get(f"{url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return samples


async def _set_state(session: aiohttp.ClientSession, url: str, state: str) -> dict[str, Any]:
    async with session.post(f"{url}/bindings/work-in-0", json={"state": state}) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def test_metrics_count_what_was_sent_handled_failed_and_dead_lettered(
    broker_harness: BinderHarness,
) -> None:
    destination, group = broker_harness.unique("ops-metrics"), "counted"
    app = _app(broker_harness, destination, group, **{"max-attempts": MAX_ATTEMPTS, "dlq": True})
    handled: Collector[int] = Collector()

    @app.processor
    async def work(payload: dict[str, int]) -> dict[str, int]:
        if payload["i"] % FAIL_EVERY == 0:
            raise ValueError(f"refused {payload['i']}")
        handled.add(payload["i"])
        return payload

    failing = MESSAGES // FAIL_EVERY
    binding = "binding=work-in-0"
    async with app.run(), _client(app) as (session, url):
        scrapes = 0
        for i in range(MESSAGES):
            await app.send(destination, {"i": i})
            if i % 50 == 0:  # scraped while the app is busy: each page parses
                await _metrics(session, url)
                scrapes += 1
        await handled.wait_for(MESSAGES - failing, timeout=broker_harness.timeout)
        letters = await broker_harness.dead_letters(destination, group, failing)
        while True:
            samples = await _metrics(session, url)
            if samples[("streamlib_messages_failed_total", binding)] == failing:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(broker_harness.settle)
        samples = await _metrics(session, url)
    assert scrapes == MESSAGES // 50
    assert sorted(handled.items) == [i for i in range(MESSAGES) if i % FAIL_EVERY]
    assert len(letters) == failing
    assert samples[("streamlib_messages_sent_total", f"destination={destination}")] == MESSAGES
    assert samples[("streamlib_send_failures_total", f"destination={destination}")] == 0
    output = f"destination={destination}.out"
    assert samples[("streamlib_messages_sent_total", output)] == MESSAGES - failing
    assert samples[("streamlib_send_failures_total", output)] == 0
    assert samples[("streamlib_messages_received_total", binding)] == MESSAGES
    assert samples[("streamlib_messages_handled_total", binding)] == MESSAGES - failing
    assert samples[("streamlib_messages_failed_total", binding)] == failing
    assert samples[("streamlib_messages_dead_lettered_total", binding)] == failing
    assert samples[("streamlib_messages_retried_total", binding)] == failing * (MAX_ATTEMPTS - 1)
    assert samples[("streamlib_messages_in_flight", binding)] == 0
    assert samples[("streamlib_handler_duration_seconds_count", binding)] == MESSAGES
    assert samples[("streamlib_binding_state", f"{binding},state=running")] == 1
    if broker_harness.name == "kafka":
        lag = {k: v for k, v in samples.items() if k[0] == "streamlib_consumer_lag"}
        assert lag and set(lag.values()) == {0}
    else:
        assert samples[("streamlib_binder_reconnects_total", "binder=rabbit")] == 0


async def test_paused_binding_gets_nothing_until_resumed(broker_harness: BinderHarness) -> None:
    destination, group = broker_harness.unique("ops-pause"), "paused"
    app = _app(broker_harness, destination, group)
    handled: Collector[int] = Collector()

    @app.sink
    async def work(payload: dict[str, int]) -> None:
        handled.add(payload["i"])

    async with app.run(), _client(app) as (session, url):
        for i in range(5):
            await app.send(destination, {"i": i})
        await handled.wait_for(5, timeout=broker_harness.timeout)
        assert (await _set_state(session, url, "PAUSED"))["state"] == "paused"
        before = list(handled.items)
        for i in range(5, 25):  # produced over a second while paused
            await app.send(destination, {"i": i})
            await asyncio.sleep(0.05)
        await asyncio.sleep(broker_harness.settle)
        held = list(handled.items)
        health = app.health()["bindings"]
        async with session.get(f"{url}/bindings") as response:
            listed = await response.json()
        async with session.get(f"{url}/ready") as response:
            ready_while_paused = response.status
        assert (await _set_state(session, url, "RESUMED"))["state"] == "running"
        await handled.wait_for(25, timeout=broker_harness.timeout)
    assert held == before, f"handled while paused: {held[len(before) :]}"
    assert health == {"work-in-0": "paused"}
    assert [(b["name"], b["state"], b["destination"], b["group"]) for b in listed] == [
        ("work-in-0", "paused", destination, group)
    ]
    assert ready_while_paused == 200
    assert sorted(handled.items) == list(range(25))


async def test_stopped_binding_is_not_ready_and_started_again_gets_what_was_sent(
    broker_harness: BinderHarness,
) -> None:
    destination, group = broker_harness.unique("ops-stop"), "stopped"
    app = _app(broker_harness, destination, group)
    handled: Collector[int] = Collector()

    @app.sink
    async def work(payload: dict[str, int]) -> None:
        handled.add(payload["i"])

    async with app.run(), _client(app) as (session, url):
        await app.send(destination, {"i": 0})
        await handled.wait_for(1, timeout=broker_harness.timeout)
        assert (await _set_state(session, url, "STOPPED"))["state"] == "stopped"
        async with session.get(f"{url}/ready") as response:
            stopped_ready = (response.status, await response.json())
        for i in range(1, 6):
            await app.send(destination, {"i": i})
        await asyncio.sleep(broker_harness.settle)
        held = list(handled.items)
        assert (await _set_state(session, url, "STARTED"))["state"] == "running"
        await handled.wait_for(6, timeout=broker_harness.timeout)
        async with session.get(f"{url}/ready") as response:
            started_ready = response.status
    assert stopped_ready == (503, {"status": "not ready", "waiting-for": ["work-in-0"]})
    assert held == [0]
    assert sorted(handled.items) == list(range(6))
    assert started_ready == 200
