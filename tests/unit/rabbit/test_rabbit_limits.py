"""Dead-letter headers trimmed to the frame limit: largest first, with a marker."""

from __future__ import annotations

import pytest
from pamqp.commands import Basic
from streamlib_rabbit.limits import fit_headers, header_frame_size


def props(**headers: object) -> Basic.Properties:
    return Basic.Properties(content_type="application/json", headers=dict(headers))


def test_headers_that_fit_are_untouched() -> None:
    p = props(a="x" * 100)
    assert fit_headers(p, 10, 4096) == []
    assert p.headers == {"a": "x" * 100}


def test_the_largest_values_are_trimmed_first_with_a_marker() -> None:
    message, trace = "m" * 30_000, "t" * 50_000
    p = props(**{"x-exception-message": message, "x-exception-stacktrace": trace, "n": 7})
    assert fit_headers(p, 10, 40_000) == ["x-exception-stacktrace"]
    assert header_frame_size(p, 10) <= 40_000
    assert p.headers is not None
    assert p.headers["x-exception-message"] == message
    assert p.headers["n"] == 7
    kept = p.headers["x-exception-stacktrace"]
    assert kept.startswith("ttt")
    cut = 50_000 - kept.index("...")
    assert kept.endswith(f"... [truncated {cut} bytes]")


def test_several_values_are_trimmed_when_one_is_not_enough() -> None:
    p = props(a="a" * 9_000, b="b" * 8_000, c="c" * 100)
    assert fit_headers(p, 0, 4_096) == ["a", "b"]
    assert header_frame_size(p, 0) <= 4_096
    assert p.headers is not None and p.headers["c"] == "c" * 100


def test_multibyte_text_is_cut_on_a_character_boundary() -> None:
    p = props(a="é" * 10_000)
    fit_headers(p, 0, 4_096)
    assert p.headers is not None
    assert p.headers["a"].startswith("éé")
    assert p.headers["a"].encode()  # valid UTF-8


def test_too_many_small_headers_cannot_fit() -> None:
    p = props(**{f"h{i}": i for i in range(2_000)})
    with pytest.raises(ValueError, match="frame_max"):
        fit_headers(p, 0, 4_096)
