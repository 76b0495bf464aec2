"""Destinations and service ids match as Spring Cloud Bus's ant patterns do."""

from __future__ import annotations

import re

import pytest

from streamlib.bus import matches, normalize_destination, service_id


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        (None, "**"),
        ("", "**"),
        ("**", "**"),
        ("billing", "billing:**"),
        ("billing:**", "billing:**"),
        ("billing/1", "billing:1:**"),
        ("billing:1", "billing:1:**"),
        ("billing:1:abc", "billing:1:abc"),
        ("billing:*:abc", "billing:*:abc"),
    ],
)
def test_destination_is_normalized_as_spring_does(given: str | None, normalized: str) -> None:
    assert normalize_destination(given) == normalized


def test_service_id_is_name_index_and_32_hex() -> None:
    assert re.fullmatch(r"billing:3:[0-9a-f]{32}", service_id("billing", 3))
    assert service_id("billing", 0, "abc") == "billing:0:abc"


NODE = "billing:1:e7ac1957228ab0788dd009275f571143"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("**", True),
        ("billing:**", True),
        ("billing:1:**", True),
        ("billing:0:**", False),
        ("audit:**", False),
        ("bill*:**", True),
        ("billing:?:**", True),
        ("billing:*:e7ac1957228ab0788dd009275f571143", True),
        (NODE, True),
        ("billing", False),
        ("billing-eu:**", False),
        ("**:e7ac1957228ab0788dd009275f571143", True),
    ],
)
def test_ant_patterns_match_colon_separated_segments(pattern: str, expected: bool) -> None:
    assert matches(pattern, NODE) is expected
