"""Fixtures that run the Spring Cloud Stream application in ``spring/`` beside streamlib.

    spring_jar   session: the application's executable jar, built with Maven into
                 ``$STREAMLIB_CACHE/interop/<hash of the sources>/app.jar`` (default cache
                 ``~/.cache/streamlib``) and reused while the sources are unchanged
    spring       function: ``spring.start(profile, properties)`` starts the jar as a JVM on
                 the broker of ``broker`` and stops every JVM it started when the test ends
    broker       function, parametrized kafka / rabbit: the broker's settings for both sides

Java and Maven must be installed: without them these tests fail, they never skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from interop_support import Broker, Spring, build_spring_jar, kafka_broker, rabbit_broker


@pytest.fixture(scope="session")
def spring_jar() -> Path:
    return build_spring_jar()


@pytest.fixture(
    params=[
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("rabbit", marks=pytest.mark.rabbit),
    ]
)
def broker(request: pytest.FixtureRequest) -> Broker:
    if request.param == "kafka":
        return kafka_broker(request.getfixturevalue("kafka_bootstrap"))
    return rabbit_broker(request.getfixturevalue("rabbit_url"))


@pytest.fixture
def spring(spring_jar: Path, broker: Broker, tmp_path: Path) -> Iterator[Spring]:
    launcher = Spring(spring_jar, broker, tmp_path)
    try:
        yield launcher
    finally:
        launcher.stop_all()
