import pytest

from streamlib.config import ConsumerProperties
from streamlib.errors import ConnectionLostError, MessageConversionError
from streamlib.retry import Failure, RetryPolicy
from streamlib.saga import Backoff


class NotFound(LookupError):
    pass


def policy(**props: object) -> RetryPolicy:
    return RetryPolicy.from_properties(ConsumerProperties.model_validate(props))


def test_back_off_grows_exponentially_up_to_the_maximum() -> None:
    p = policy(
        **{"back-off-initial-interval": 1, "back-off-multiplier": 3, "back-off-max-interval": 5}
    )
    assert [p.backoff(n) for n in (1, 2, 3, 4)] == [1.0, 3.0, 5.0, 5.0]


def test_saga_steps_back_off_on_the_consumers_schedule() -> None:
    saga = Backoff(initial=1, multiplier=3, max=5)
    p = policy(
        **{"back-off-initial-interval": 1, "back-off-multiplier": 3, "back-off-max-interval": 5}
    )
    assert [saga.delay(n) for n in (1, 2, 3, 4)] == [p.backoff(n) for n in (1, 2, 3, 4)]


def test_attempts_stop_at_max_attempts() -> None:
    p = policy(**{"max-attempts": 2})
    assert p.should_retry(RuntimeError(), 1)
    assert not p.should_retry(RuntimeError(), 2)


@pytest.mark.parametrize(
    ("props", "exc", "retried"),
    [
        ({}, RuntimeError("x"), True),
        ({}, MessageConversionError("bad body"), False),
        ({}, ConnectionLostError("gone"), True),
        ({"non-retryable-exceptions": ["LookupError"]}, NotFound(), False),
        ({"non-retryable-exceptions": [f"{__name__}.NotFound"]}, NotFound(), False),
        ({"default-retryable": False}, RuntimeError(), False),
        (
            {"default-retryable": False, "retryable-exceptions": ["RuntimeError"]},
            RuntimeError(),
            True,
        ),
        ({"retryable-exceptions": ["MessageConversionError"]}, MessageConversionError("b"), True),
    ],
)
def test_exception_classification(props: dict[str, object], exc: Exception, retried: bool) -> None:
    assert policy(**props).should_retry(exc, 1) is retried


def test_failure_headers_name_the_exception() -> None:
    try:
        raise NotFound("order 7 is unknown")
    except NotFound as exc:
        headers = Failure(exc, 3).dead_letter_headers()
    assert headers["x-exception-fqcn"] == f"{__name__}.NotFound"
    assert headers["x-exception-message"] == "order 7 is unknown"
    assert "order 7 is unknown" in headers["x-exception-stacktrace"]
    assert "test_failure_headers_name_the_exception" in headers["x-exception-stacktrace"]
