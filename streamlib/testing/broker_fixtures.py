"""Pytest fixtures for tests that need a real broker.

    kafka_bootstrap   session: bootstrap servers of a Kafka broker that answers
    rabbit_url        session: AMQP URL of a RabbitMQ broker that answers
    postgres_url      session: URL of a PostgreSQL server that answers
    unique            function: ``unique("orders")`` -> ``"orders-1f3a9c0b2e"``, a fresh name for
                      topics, exchanges, queues and groups

See streamlib.testing.brokers for how the brokers are found.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streamlib.testing import brokers


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of a Kafka that answers: ``$STREAMLIB_TEST_KAFKA`` or Testcontainers."""
    return brokers.kafka_bootstrap()


@pytest.fixture(scope="session")
def rabbit_url() -> str:
    """AMQP URL of a RabbitMQ broker that answers: ``$STREAMLIB_TEST_RABBIT`` or Testcontainers."""
    return brokers.rabbit_url()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a PostgreSQL server that answers: ``$STREAMLIB_TEST_POSTGRES`` or Testcontainers."""
    return brokers.postgres_url()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """``unique("orders")`` -> ``"orders-1f3a9c0b2e"``: a name no other test uses."""
    return brokers.unique_name
