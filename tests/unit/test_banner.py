"""The start-up banner: where the configuration came from, the binders, every binding (the
redacted broker address is checked on RabbitMQ, tests/integration/rabbit/test_operating_cli.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import BaseModel

from streamlib import StreamApp

pytestmark = pytest.mark.anyio


class Order(BaseModel):
    customer: str


async def test_banner_names_the_config_file_and_each_binding(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "billing.yaml"
    config.write_text(
        "instance-count: 2\n"
        "binders:\n"
        "  mem: {type: memory}\n"
        "bindings:\n"
        "  bill-in-0:\n"
        "    destination: orders\n"
        "    group: billing\n"
        "    consumer: {partitioned: true, concurrency: 4}\n"
        "  bill-out-0:\n"
        "    destination: invoices\n"
        "    producer: {partition-key: payload.customer, partition-count: 4}\n"
        "  audit:\n"
        "    destination: audit-log\n"
    )
    app = StreamApp("billing", config=config)

    @app.processor
    async def bill(order: Order) -> Order:
        return order

    with caplog.at_level(logging.INFO, logger="streamlib.app"):
        async with app.run():
            pass
    lines = [r.getMessage() for r in caplog.records if r.name == "streamlib.app"]
    assert lines[:5] == [
        f"billing: config file {config}",
        "binder mem (type memory): no address set",
        "binding bill-in-0: consumes orders, group billing, partitioned, instance-index 0 of "
        "instance-count 2, concurrency 4, binder mem",
        "binding bill-out-0: produces to invoices, 4 partitions by payload.customer, binder mem",
        "binding audit: configured for sends to audit-log, not partitioned, binder mem",
    ]


async def test_banner_says_when_no_config_file_was_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STREAMLIB_CONFIG", raising=False)
    app = StreamApp("plain")
    with caplog.at_level(logging.INFO, logger="streamlib.app"):
        async with app.run():
            pass
    first = next(r.getMessage() for r in caplog.records if r.name == "streamlib.app")
    assert first == (
        f"plain: no config file ({tmp_path / 'streamlib.yaml'} not found); "
        "defaults and STREAMLIB_* variables"
    )
