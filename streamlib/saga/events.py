"""Lifecycle events a saga orchestrator publishes (destination ``saga.events-destination``,
default ``saga-events``), keyed by saga id."""

from __future__ import annotations

import time
from enum import StrEnum

from pydantic import BaseModel, Field

DEFAULT_EVENTS_DESTINATION = "saga-events"


class SagaEventType(StrEnum):
    STARTED = "started"
    STEP_DONE = "step_done"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    NEEDS_ATTENTION = "needs_attention"


class SagaEvent(BaseModel):
    """One lifecycle event; ``error`` is set on ``compensating`` and ``needs_attention``."""

    type: SagaEventType
    saga_id: str
    saga: str
    step: str | None = None
    state: str
    error: str | None = None
    timestamp: float = Field(default_factory=time.time)
