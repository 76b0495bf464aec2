"""The replay guard of signed bus events: a timestamp window and a bounded memory of ids."""

from __future__ import annotations

import time

from streamlib.bus.signing import ReplayGuard


def _now_ms() -> int:
    return int(time.time() * 1000)


def test_an_id_is_refused_the_second_time_and_others_pass() -> None:
    guard = ReplayGuard()
    assert guard.refusal("a", _now_ms(), 300) is None
    assert guard.refusal("b", _now_ms(), 300) is None
    assert guard.refusal("a", _now_ms(), 300) == (
        "an event with this id was already received (a replay)"
    )


def test_timestamps_outside_the_window_are_refused_either_way() -> None:
    guard = ReplayGuard()
    old = guard.refusal("old", _now_ms() - 301_000, 300)
    future = guard.refusal("future", _now_ms() + 301_000, 300)
    assert old is not None and "s old, outside bus.replay-window (300s)" in old
    assert future is not None and "s in the future, outside bus.replay-window" in future


def test_remembered_ids_are_bounded_forgetting_those_closest_to_leaving_the_window() -> None:
    guard = ReplayGuard(limit=3)
    now = _now_ms()
    for i, age_ms in enumerate([4000, 3000, 2000, 1000, 0]):
        assert guard.refusal(f"e{i}", now - age_ms, 300) is None
    # e0 and e1 (the oldest timestamps) were forgotten; the three newest are remembered.
    assert guard.refusal("e0", now - 4000, 300) is None
    assert [guard.refusal(f"e{i}", now, 300) is not None for i in (2, 3, 4)] == [True] * 3
