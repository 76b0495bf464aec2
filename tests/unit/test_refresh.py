"""Configuration refresh: settings sections, live retry settings, restart-only keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from streamlib import ConfigError, StreamApp
from streamlib.refresh import RefreshResult
from streamlib.retry import RetryPolicy

pytestmark = pytest.mark.anyio


class Limits(BaseModel):
    max_items: int = 10
    label: str = "default"


def write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data))


def base(**extra: Any) -> dict[str, Any]:
    return {
        "name": "shop",
        "binders": {"m": {"type": "memory", "namespace": "refresh-tests"}},
        "bindings": {"take-in-0": {"destination": "orders", "group": "shop"}},
        **extra,
    }


def shop(path: Path) -> StreamApp:
    app = StreamApp("shop", config=path)

    @app.sink
    async def take(item: dict[str, Any]) -> None:
        return None

    return app


async def test_settings_section_is_read_and_replaced_on_refresh(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    write(path, base(limits={"max-items": 5}))
    app = shop(path)
    limits = app.settings("limits", Limits)
    seen: list[frozenset[str]] = []
    app.on_refresh(seen.append)
    async with app.run():
        assert limits.value.max_items == 5
        write(path, base(limits={"max-items": 7, "label": "x"}))
        result = await app.refresh()
        assert (limits.value.max_items, limits.value.label) == (7, "x")
        assert result.changed == ("limits.label", "limits.max-items")
        assert result.restart_required == ()
        assert seen == [frozenset({"limits.label", "limits.max-items"})]


async def test_every_refresh_calls_each_listener_once_even_when_nothing_changed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.yaml"
    write(path, base(limits={"max-items": 5}))
    app = shop(path)
    app.settings("limits", Limits)
    plain: list[frozenset[str]] = []
    awaited: list[frozenset[str]] = []

    async def async_listener(keys: frozenset[str]) -> None:
        awaited.append(keys)

    app.on_refresh(plain.append)
    app.on_refresh(async_listener)
    async with app.run():
        assert (await app.refresh()).changed == ()
        assert plain == awaited == [frozenset()]
        write(path, base(limits={"max-items": 6}))
        await app.refresh()
        assert (await app.refresh()).changed == ()
        assert plain == awaited == [frozenset(), frozenset({"limits.max-items"}), frozenset()]


async def test_retry_settings_apply_live_and_the_rest_needs_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    write(path, base())
    app = shop(path)
    async with app.run():
        dispatcher = app._dispatchers["take-in-0"]
        assert dispatcher.policy.max_attempts == 3
        changed = base()
        changed["bindings"]["take-in-0"].update(
            {"group": "other", "consumer": {"max-attempts": 6, "back-off-initial-interval": 0.5}}
        )
        write(path, changed)
        result = await app.refresh()
        assert dispatcher.policy == RetryPolicy(max_attempts=6, initial_interval=0.5)
        assert result.restart_required == ("bindings.take-in-0.group",)
        assert app.config.binding("take-in-0").group == "other"


async def test_invalid_configuration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    write(path, base(limits={"max-items": 5}))
    app = shop(path)
    limits = app.settings("limits", Limits)
    async with app.run():
        write(path, base(limits={"max-items": "many"}))
        with pytest.raises(ConfigError, match=r"limits\.max-items"):
            await app.refresh()
        assert limits.value.max_items == 5
        with pytest.raises(ConfigError, match=r"limits\.max-items"):
            await app.refresh({"limits.max-items": "lots"})
        write(path, base(limits={"max-items": 5}))
        assert (await app.refresh()).changed == ()


async def test_overrides_sit_on_top_of_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "app.yaml"
    write(path, base(limits={"label": "file"}))
    monkeypatch.setenv("STREAMLIB_LIMITS__MAX_ITEMS", "8")
    app = shop(path)
    limits = app.settings("limits", Limits)
    assert (limits.value.max_items, limits.value.label) == (8, "file")
    result = await app.refresh({"limits.label": "override", "feature.flag": "on"})
    assert (limits.value.max_items, limits.value.label) == (8, "override")
    assert result.changed == ("feature.flag", "limits.label")
    write(path, base(limits={"label": "file again", "max-items": 1}))
    await app.refresh()
    assert (limits.value.max_items, limits.value.label) == (8, "override")


def test_settings_prefix_cannot_be_a_streamlib_key() -> None:
    app = StreamApp("x", config={})
    with pytest.raises(ConfigError, match="streamlib configuration key"):
        app.settings("bindings", Limits)


def test_unknown_top_level_key_is_still_rejected_without_a_settings_section() -> None:
    app = StreamApp("x", config={"limits": {"max-items": 1}})
    with pytest.raises(ConfigError, match="limits"):
        _ = app.config


async def test_overridden_retry_setting_applies_live(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    write(path, base())
    app = shop(path)
    async with app.run():
        result = await app.refresh({"bindings.take-in-0.consumer.max-attempts": "5"})
        assert app._dispatchers["take-in-0"].policy.max_attempts == 5
        assert result == RefreshResult(("bindings.take-in-0.consumer.max-attempts",), ())


async def test_a_feature_section_applies_only_its_live_keys_at_once(tmp_path: Path) -> None:
    from streamlib.bus import Bus
    from streamlib.saga import Orchestrator

    path = tmp_path / "app.yaml"
    write(path, base(bus={"ack-wait": 1}, saga={"store": str(tmp_path / "s.db")}))
    app = shop(path)
    bus = Bus(app)
    Orchestrator(app, [], store=None)
    async with app.run():
        changed = base(
            bus={"ack-wait": 2, "destination": "other-bus"},
            saga={"store": str(tmp_path / "s.db"), "lease": 20},
            management={"host": "0.0.0.0"},
        )
        write(path, changed)
        result = await app.refresh()
        assert bus.settings.ack_wait == 2
        assert result.restart_required == (
            "bindings.springcloudbus-in-0.destination",
            "bindings.springcloudbus-out-0.destination",
            "bus.destination",
            "management.host",
            "saga.lease",
        )
