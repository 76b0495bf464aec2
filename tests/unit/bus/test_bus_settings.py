"""``bus:`` configuration keys: validated with their key path; the signing key never shown."""

from __future__ import annotations

import pytest

from streamlib import ConfigError, StreamApp
from streamlib.bus import Bus, BusSettings


def test_invalid_bus_key_names_its_path() -> None:
    app = StreamApp("billing", config={"bus": {"ack-wait": -1}})
    Bus(app)
    with pytest.raises(ConfigError, match=r"bus\.ack-wait"):
        _ = app.config


def test_unknown_bus_key_is_rejected() -> None:
    app = StreamApp("billing", config={"bus": {"destinaton": "x"}})
    Bus(app)
    with pytest.raises(ConfigError, match=r"bus\.destinaton.*unknown key"):
        _ = app.config


def test_signing_key_is_never_printed() -> None:
    app = StreamApp("billing", config={"bus": {"signing-key": "s3cret"}})
    bus = Bus(app)
    assert bus.settings.signing_key is not None
    assert "s3cret" not in repr(bus.settings) and "s3cret" not in str(bus.settings)
    assert "s3cret" not in repr(app.config)


def test_bus_binding_follows_bus_destination_and_is_anonymous() -> None:
    app = StreamApp(
        "billing", config={"bus": {"destination": "estateBus"}, "default": {"group": "billing"}}
    )
    bus = Bus(app)
    props = app.config.binding("springCloudBus-in-0")
    assert (props.destination, props.group) == ("estateBus", None)
    assert app.config.binding("springCloudBus-out-0").destination == "estateBus"
    assert bus.id.startswith("billing:0:") and len(bus.id.split(":")[2]) == 32


def test_defaults() -> None:
    settings = BusSettings()
    assert (settings.enabled, settings.destination, settings.ack_wait) == (
        True,
        "springCloudBus",
        5.0,
    )
    assert settings.signing_key is None and settings.id is None


def test_replay_window_must_be_positive() -> None:
    app = StreamApp("billing", config={"bus": {"replay-window": 0}})
    Bus(app)
    with pytest.raises(ConfigError, match=r"bus\.replay-window"):
        _ = app.config
