"""The three-node clusters of tools/cluster.py, started on first use and stopped at the end of
the session when this session started them. A cluster that cannot start fails the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import cluster


@pytest.fixture(scope="session", autouse=True)
def _cluster_down_at_the_end() -> Iterator[None]:
    yield
    if cluster.started:
        cluster.cluster("down")


@pytest.fixture(scope="session")
def clusters() -> dict[str, str]:
    """Both clusters, started together (their start-ups are mostly waiting)."""
    cluster.up("all")
    return cluster.addresses()


@pytest.fixture(scope="session")
def kafka_cluster(clusters: dict[str, str]) -> list[str]:
    """Bootstrap servers of the three Kafka nodes."""
    return clusters["STREAMLIB_CLUSTER_KAFKA"].split(",")


@pytest.fixture(scope="session")
def rabbit_cluster(clusters: dict[str, str]) -> list[str]:
    """AMQP URLs of the three RabbitMQ nodes."""
    return clusters["STREAMLIB_CLUSTER_RABBIT"].split(",")
