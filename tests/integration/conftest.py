from __future__ import annotations

from streamlib.testing.broker_fixtures import (  # noqa: F401
    broker_liveness,
    kafka_bootstrap,
    rabbit_url,
    unique,
)
