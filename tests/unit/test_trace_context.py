"""Reading trace contexts from message headers, and tracing being off without an SDK."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from streamlib.tracing import Tracing, extract

TRACE = "80f198ee56343ba864fe8b2a57d3eff7"
SPAN = "e457b5a2e4d86bd1"


def context_of(headers: dict[str, Any]) -> tuple[str, str, bool] | None:
    span = trace.get_current_span(extract(headers)).get_span_context()
    if not span.is_valid:
        return None
    return format(span.trace_id, "032x"), format(span.span_id, "016x"), span.trace_flags.sampled


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"traceparent": f"00-{TRACE}-{SPAN}-01"}, (TRACE, SPAN, True)),
        ({"traceparent": f"00-{TRACE}-{SPAN}-00".encode()}, (TRACE, SPAN, False)),
        ({"b3": f"{TRACE}-{SPAN}-1"}, (TRACE, SPAN, True)),
        ({"b3": f"{TRACE}-{SPAN}-0-05e3ac9a4f6e3b90".encode()}, (TRACE, SPAN, False)),
        ({"b3": f"{TRACE}-{SPAN}"}, (TRACE, SPAN, True)),
        ({"b3": f"{TRACE[16:]}-{SPAN}-1"}, ("0" * 16 + TRACE[16:], SPAN, True)),
        (
            {"X-B3-TraceId": TRACE.encode(), "X-B3-SpanId": SPAN.encode(), "X-B3-Sampled": b"1"},
            (TRACE, SPAN, True),
        ),
        ({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN}, (TRACE, SPAN, True)),
        (
            {"traceparent": f"00-{TRACE}-{SPAN}-01", "b3": f"{'1' * 32}-{'2' * 16}-1"},
            (TRACE, SPAN, True),
        ),
        ({"b3": "0"}, None),
        ({"b3": f"{TRACE}-nothex00000000-1"}, None),
        ({"b3": f"{'0' * 32}-{SPAN}-1"}, None),
        ({"X-B3-TraceId": TRACE}, None),
        ({"contentType": "application/json"}, None),
        ({}, None),
    ],
)
def test_context_is_read_from_w3c_then_b3_headers(
    headers: dict[str, Any], expected: tuple[str, str, bool] | None
) -> None:
    assert context_of(headers) == expected


def test_tracing_is_off_without_an_sdk() -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert Tracing.create() is None
    assert Tracing.create(trace.NoOpTracerProvider()) is None
    assert Tracing.create(TracerProvider()) is not None
