"""Kafka dead letters fit the DLQ topic's max.message.bytes, without a broker."""

from __future__ import annotations

import re

from streamlib_kafka.dead_letters import cut, fit
from streamlib_kafka.limits import record_size

KEY = b"k-1"
VALUE = b'{"order": 42}'


def letter(message: str, stacktrace: str) -> list[tuple[str, bytes]]:
    return [
        ("contentType", b"application/json"),
        ("x-original-topic", b"orders"),
        ("x-exception-fqcn", b"builtins.ValueError"),
        ("x-exception-message", message.encode()),
        ("x-exception-stacktrace", stacktrace.encode()),
    ]


def removed(value: bytes) -> int:
    match = re.search(rb"\.\.\. \[truncated (\d+) bytes\]$", value)
    assert match is not None, value[-60:]
    return int(match.group(1))


def test_a_dead_letter_that_fits_is_unchanged() -> None:
    headers = letter("refused", "Traceback ...\nValueError: refused\n")
    assert fit(KEY, VALUE, headers, 10_000) == headers


def test_long_exception_headers_are_cut_with_a_marker_to_fit_the_limit() -> None:
    message = "m" * 50_000
    stacktrace = "Traceback (most recent call last):\n" + "  frame\n" * 5_000 + message
    headers = letter(message, stacktrace)
    for limit in (600, 2_000, 10_000, 60_000):
        fitted = dict(fit(KEY, VALUE, headers, limit))
        assert record_size(KEY, VALUE, list(fitted.items())) <= limit
        # Cut as little as possible: a few more bytes would not fit.
        assert record_size(KEY, VALUE, list(fitted.items())) > limit - 100
        assert fitted["contentType"] == b"application/json"
        assert fitted["x-original-topic"] == b"orders"
        assert fitted["x-exception-fqcn"] == b"builtins.ValueError"
        for name, original in (
            ("x-exception-message", message.encode()),
            ("x-exception-stacktrace", stacktrace.encode()),
        ):
            value = fitted[name]
            head = value[: len(value) - len(b"... [truncated %d bytes]" % removed(value))]
            assert original.startswith(head)
            assert len(head) + removed(value) == len(original)


def test_cut_keeps_whole_utf8_characters() -> None:
    value = "é" * 100
    for cap in range(30, 60):
        out = cut(value.encode(), cap)
        assert len(out) <= cap
        head = out[: out.index(b"...")]
        assert head.decode("utf-8") == "é" * (len(head) // 2)
        assert len(head) + removed(out) == 200


def test_the_original_record_is_never_cut() -> None:
    headers = letter("m" * 1_000, "s" * 1_000)
    fitted = fit(KEY, b"v" * 5_000, headers, 1_000)
    assert dict(fitted)["x-exception-message"] == b"... [truncated 1000 bytes]"
    assert record_size(KEY, b"v" * 5_000, fitted) > 1_000
