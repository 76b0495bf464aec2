"""Retry, back-off and dead-letter decisions shared by every binder.

A consumer tries a message up to ``max-attempts`` times with exponential back-off between
attempts, in place (so order within a partition holds). When the attempts are used up, or the
error is not retryable, the message becomes a ``Failure``: the binder dead-letters it when the
binding has a DLQ, otherwise the core logs it with its reason and it is acknowledged.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from .config import ConsumerProperties
from .errors import StreamlibError
from .messages import X_EXCEPTION_FQCN, X_EXCEPTION_MESSAGE, X_EXCEPTION_STACKTRACE


def exponential_backoff(attempt: int, initial: float, multiplier: float, maximum: float) -> float:
    """Seconds to wait after failed ``attempt`` (counted from 1): ``initial``, multiplied by
    ``multiplier`` for every further attempt, at most ``maximum``. The one back-off schedule of
    consumer retries and saga steps."""
    return float(min(maximum, initial * multiplier ** max(0, attempt - 1)))


def _names(exc_type: type[BaseException]) -> set[str]:
    names: set[str] = set()
    for cls in exc_type.__mro__:
        names.add(cls.__name__)
        names.add(f"{cls.__module__}.{cls.__qualname__}")
    return names


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a consumer retries a failing message."""

    max_attempts: int = 3
    initial_interval: float = 1.0
    multiplier: float = 2.0
    max_interval: float = 10.0
    retryable: frozenset[str] = frozenset()
    non_retryable: frozenset[str] = frozenset()
    default_retryable: bool = True

    @classmethod
    def from_properties(cls, props: ConsumerProperties) -> RetryPolicy:
        return cls(
            max_attempts=props.max_attempts,
            initial_interval=props.back_off_initial_interval,
            multiplier=props.back_off_multiplier,
            max_interval=props.back_off_max_interval,
            retryable=frozenset(props.retryable_exceptions),
            non_retryable=frozenset(props.non_retryable_exceptions),
            default_retryable=props.default_retryable,
        )

    def is_retryable(self, exc: BaseException) -> bool:
        """Configured lists first, then the exception's own ``retriable``, then the default."""
        if self.non_retryable or self.retryable:
            names = _names(type(exc))
            if names & self.non_retryable:
                return False
            if names & self.retryable:
                return True
        if isinstance(exc, StreamlibError):
            return exc.retriable
        return self.default_retryable

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        return attempt < self.max_attempts and self.is_retryable(exc)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed ``attempt`` (1-based) before the next one."""
        return exponential_backoff(
            attempt, self.initial_interval, self.multiplier, self.max_interval
        )


@dataclass(frozen=True, slots=True)
class Failure:
    """A message that failed for good: its last exception and how many attempts were made."""

    exception: BaseException
    attempts: int

    @property
    def fqcn(self) -> str:
        """Module-qualified class name of the exception (``builtins.ValueError``)."""
        cls = type(self.exception)
        return f"{cls.__module__}.{cls.__qualname__}"

    @property
    def reason(self) -> str:
        return str(self.exception) or type(self.exception).__name__

    def stacktrace(self) -> str:
        return "".join(traceback.format_exception(self.exception))

    def dead_letter_headers(self) -> dict[str, str]:
        """The ``x-exception-*`` headers every binder adds to a dead letter."""
        return {
            X_EXCEPTION_FQCN: self.fqcn,
            X_EXCEPTION_MESSAGE: self.reason,
            X_EXCEPTION_STACKTRACE: self.stacktrace(),
        }
