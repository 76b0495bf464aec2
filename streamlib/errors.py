"""Exceptions raised by streamlib.

The whole tree::

    StreamlibError                  base of every streamlib exception
    ├── ConfigError                 bad configuration; names the key path (raised at start-up)
    ├── BinderNotFoundError         a binder type that is not installed (a ConfigError)
    ├── ConfigServerError           no Config Server answered (a ConfigError; retriable)
    ├── MessageConversionError      a payload that cannot be decoded/validated/encoded (not retried)
    ├── BatchFailed                 raised by a batch handler: which records of its list failed
    ├── BindingError                a binding could not be created or used
    └── BrokerError                 a broker-side failure mapped by a binder
        ├── ConnectionLostError     the connection dropped (retriable)
        └── PublishError            the broker did not accept a message

Every exception has ``retriable``: core retry consults it before the configured exception lists,
so a binder can mark transient broker failures without the core knowing the broker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class StreamlibError(Exception):
    """Base class of every streamlib exception."""

    retriable: bool = False


class ConfigError(StreamlibError):
    """A configuration value is missing or invalid; ``key`` is its dotted path."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}" if key else reason)


class BinderNotFoundError(ConfigError):
    """The configured binder type has no installed implementation."""


class ConfigServerError(ConfigError):
    """The Config Server could not be reached or gave no usable answer."""

    retriable = True


class MessageConversionError(StreamlibError):
    """A message body could not be decoded into the handler's type, or a payload encoded."""


class BatchFailed(StreamlibError):
    """Raised by a handler that takes a list: the records at the indexes of ``failures`` (into
    the list it got) failed with those exceptions, the others succeeded.

    The failed records are retried one at a time, then dead-lettered or logged; the others
    are acknowledged and never handled again. ``results`` are a processor's outputs for the
    records that succeeded (each non-None item is sent, as a returned list's would be).
    """

    def __init__(
        self, failures: Mapping[int, BaseException], results: Sequence[Any] | None = None
    ) -> None:
        self.failures = dict(failures)
        self.results = results
        shown = "; ".join(
            f"[{index}] {type(exc).__name__}: {exc}" for index, exc in self.failures.items()
        )
        count = len(self.failures)
        super().__init__(f"{count} record(s) of the batch failed: {shown or 'none listed'}")


class BindingError(StreamlibError):
    """A binding could not be created, started or used."""


class BrokerError(StreamlibError):
    """A failure reported by the broker or its client library."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


class ConnectionLostError(BrokerError):
    """The connection to the broker was lost; the operation may succeed after a reconnect."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=True)


class PublishError(BrokerError):
    """The broker did not accept a published message (nacked, returned or timed out)."""
