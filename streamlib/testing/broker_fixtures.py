"""Pytest fixtures for tests that need a real broker.

    kafka_bootstrap   session: bootstrap servers of a Kafka broker that answers
    rabbit_url        session: AMQP URL of a RabbitMQ broker that answers
    postgres_url      session: URL of a PostgreSQL server that answers
    unique            function: ``unique("orders")`` -> ``"orders-1f3a9c0b2e"``, a fresh name for
                      topics, exchanges, queues and groups
    broker_liveness   function, autouse where registered: before each test that uses one of the
                      broker fixtures, fail at once if that broker stopped answering (instead of
                      letting the client retry until the test times out)

See streamlib.testing.brokers for how the brokers are found.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streamlib.testing import brokers


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return brokers.kafka_bootstrap()


@pytest.fixture(scope="session")
def rabbit_url() -> str:
    return brokers.rabbit_url()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return brokers.postgres_url()


@pytest.fixture
def unique() -> Callable[[str], str]:
    return brokers.unique_name


@pytest.fixture(autouse=True)
def broker_liveness(request: pytest.FixtureRequest) -> None:
    names = request.fixturenames
    if "kafka_bootstrap" in names:
        brokers.require_kafka(request.getfixturevalue("kafka_bootstrap"))
    if "rabbit_url" in names:
        brokers.require_rabbit(request.getfixturevalue("rabbit_url"))
    if "postgres_url" in names:
        brokers.require_postgres(request.getfixturevalue("postgres_url"))
