"""Root of this repository's tests: the async backend, the launcher's brokers and their liveness."""

from __future__ import annotations

import pytest
from support import launcher

from streamlib.testing import brokers


def pytest_configure(config: pytest.Config) -> None:
    # Brokers the launcher runs are found through the variables streamlib's fixtures read.
    launcher.export_addresses()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def broker_liveness(request: pytest.FixtureRequest) -> None:
    """Before each test that uses a broker fixture, fail at once if that broker stopped answering
    (instead of letting the client retry until the test times out)."""
    names = request.fixturenames
    if "kafka_bootstrap" in names:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        brokers.require_kafka(bootstrap, launcher.dead_broker_hint("kafka", bootstrap))
    if "rabbit_url" in names:
        url = request.getfixturevalue("rabbit_url")
        brokers.require_rabbit(url, launcher.dead_broker_hint("rabbit", url))
    if "postgres_url" in names:
        url = request.getfixturevalue("postgres_url")
        brokers.require_postgres(url, launcher.dead_broker_hint("postgres", url))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Cluster tests run last: their six broker nodes then cost nothing to the rest of the run.
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from support.cluster import figures

    if figures:
        terminalreporter.section("failover figures")
        for line in figures:
            terminalreporter.write_line(line)
