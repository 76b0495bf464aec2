"""Orchestrated sagas over streamlib bindings: definitions, orchestrator, participants, store.

See docs/saga.md for the concepts and guarantees.
"""

from .definition import Backoff, Local, Remote, Saga, Step, StepFailed
from .events import DEFAULT_EVENTS_DESTINATION, SagaEvent, SagaEventType
from .orchestrator import Orchestrator
from .participant import Participant
from .postgres_store import PostgresSagaStore
from .sqlite_store import SqliteSagaStore
from .store import (
    DedupeRecord,
    HistoryEntry,
    MemorySagaStore,
    OutboxMessage,
    SagaRecord,
    SagaState,
    SagaStore,
    StaleSagaError,
    StoreTransaction,
    Wait,
)

__all__ = [
    "DEFAULT_EVENTS_DESTINATION",
    "Backoff",
    "DedupeRecord",
    "HistoryEntry",
    "Local",
    "MemorySagaStore",
    "Orchestrator",
    "OutboxMessage",
    "Participant",
    "PostgresSagaStore",
    "Remote",
    "Saga",
    "SagaEvent",
    "SagaEventType",
    "SagaRecord",
    "SagaState",
    "SagaStore",
    "SqliteSagaStore",
    "StaleSagaError",
    "Step",
    "StepFailed",
    "StoreTransaction",
    "Wait",
]
