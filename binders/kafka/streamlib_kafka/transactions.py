"""Which Kafka transaction, if any, the current task's sends belong to.

A transactional consumer sets ``current_transaction`` in the task that dispatches its
messages; producers of the same binder then send through that transaction's producer, so
a processor's output and the consumed offsets commit together.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Transaction:
    """A transactional aiokafka producer, and the binder whose producers send through it."""

    producer: Any
    owner: object


current_transaction: ContextVar[Transaction | None] = ContextVar(
    "streamlib_kafka_transaction", default=None
)
