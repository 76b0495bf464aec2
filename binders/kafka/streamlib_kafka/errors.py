"""The one place where aiokafka errors become streamlib errors.

    aiokafka error                                    streamlib error
    KafkaConnectionError, NodeNotReadyError,
    KafkaUnavailableError, NoBrokersAvailable         ConnectionLostError (retriable)
    OutOfOrderSequenceNumber, UnknownProducerId,
    InvalidProducerEpoch, ProducerFenced,
    InvalidProducerIdMapping while publishing         PublishError (retriable: the record was
                                                      not written, the producer is replaced)
    any other KafkaError while publishing             PublishError (retriable as aiokafka says)
    any other KafkaError                              BrokerError (retriable as aiokafka says)

Messages name the action, the topic and the broker's reason (its error name and text);
they never hold credentials (aiokafka's errors do not carry them, and bootstrap addresses
hold none).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from aiokafka import errors as kafka  # type: ignore[import-untyped]

from streamlib.binder import BrokerError, ConnectionLostError, PublishError, StreamlibError

KafkaError: type[Exception] = kafka.KafkaError

_CONNECTION = (
    kafka.KafkaConnectionError,
    kafka.NodeNotReadyError,
    kafka.KafkaUnavailableError,
    kafka.NoBrokersAvailable,
)


# The broker refuses the producer's identity or sequence: the producer cannot send again.
PRODUCER_FATAL: tuple[type[Exception], ...] = (
    kafka.OutOfOrderSequenceNumber,
    kafka.UnknownProducerId,
    kafka.InvalidProducerEpoch,
    kafka.ProducerFenced,
    kafka.InvalidProducerIdMapping,
)


def describe(exc: BaseException) -> str:
    """An aiokafka error as text: a broker error's name, code and description, else str()."""
    if isinstance(exc, kafka.BrokerResponseError):
        detail = str(exc.args[0]) if exc.args else exc.description
        return f"{exc.message} (error {exc.errno}): {detail}" if detail else exc.message
    return str(exc) or type(exc).__name__


def to_streamlib(exc: BaseException, action: str, *, publish: bool = False) -> StreamlibError:
    """The streamlib error for an aiokafka error raised while doing ``action``."""
    if isinstance(exc, StreamlibError):
        return exc
    reason = f"{action}: {describe(exc)}"
    if isinstance(exc, _CONNECTION):
        return ConnectionLostError(reason)
    retriable = bool(getattr(exc, "retriable", False))
    if publish:
        return PublishError(reason, retriable=retriable or isinstance(exc, PRODUCER_FATAL))
    return BrokerError(reason, retriable=retriable)


async def start_client(client: Any, action: str) -> None:
    """Start an aiokafka client; if that fails, close it and raise the mapped error."""
    try:
        await client.start()
    except kafka.KafkaError as exc:
        with suppress(Exception):
            await (client.close() if hasattr(client, "close") else client.stop())
        raise to_streamlib(exc, action) from exc


@contextmanager
def mapped(action: str, *, publish: bool = False) -> Iterator[None]:
    """Re-raise aiokafka errors inside the block as streamlib errors (``raise ... from``)."""
    try:
        yield
    except kafka.KafkaError as exc:
        raise to_streamlib(exc, action, publish=publish) from exc
