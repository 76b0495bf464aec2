from pathlib import Path

import pytest

from streamlib import StreamApp
from streamlib.config import load_config, redact
from streamlib.errors import BinderNotFoundError, ConfigError


def test_env_overrides_every_key_and_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "streamlib.yaml"
    path.write_text(
        "name: billing\nbindings:\n  bill_order-in-0:\n    destination: orders\n"
        "    consumer: {max-attempts: 5}\n"
    )
    env = {
        "STREAMLIB_BINDINGS__BILL_ORDER_IN_0__GROUP": "billing",
        "STREAMLIB_BINDINGS__BILL_ORDER_IN_0__CONSUMER__MAX_ATTEMPTS": "7",
        "STREAMLIB_INSTANCE_COUNT": "2",
        "STREAMLIB_TEST_KAFKA": "not config",
    }
    cfg = load_config(path, environ=env)
    binding = cfg.binding("bill_order-in-0")
    assert binding.destination == "orders"
    assert binding.group == "billing"
    assert binding.consumer.max_attempts == 7
    assert cfg.instance_count == 2


def test_default_section_is_shared_and_bindings_override_it() -> None:
    cfg = load_config(
        {
            "default": {"group": "shared", "consumer": {"max-attempts": 4, "concurrency": 2}},
            "bindings": {"a-in-0": {"consumer": {"concurrency": 8}}},
        },
        environ={},
    )
    a, b = cfg.binding("a-in-0"), cfg.binding("b-in-0")
    assert (a.group, a.consumer.max_attempts, a.consumer.concurrency) == ("shared", 4, 8)
    assert (b.group, b.consumer.max_attempts, b.consumer.concurrency) == ("shared", 4, 2)


def test_wrongly_typed_value_names_the_key() -> None:
    cfg = load_config(
        {"bindings": {"bill-in-0": {"consumer": {"max-attempts": "many"}}}}, environ={}
    )
    with pytest.raises(ConfigError) as err:
        cfg.binding("bill-in-0")
    assert err.value.key == "bindings.bill-in-0.consumer.max-attempts"
    assert "many" in str(err.value)


def test_unknown_top_level_key_is_rejected() -> None:
    with pytest.raises(ConfigError) as err:
        load_config({"bindngs": {}}, environ={})
    assert err.value.key == "bindngs"
    assert "unknown key" in str(err.value)


def test_instance_index_must_be_below_count() -> None:
    with pytest.raises(ConfigError, match="instance-index 2 must be below instance-count 2"):
        load_config({"instance-index": 2, "instance-count": 2}, environ={})


async def _start(config: dict[str, object]) -> None:
    app = StreamApp("svc", config=config)

    @app.sink
    async def take(data: bytes) -> None: ...

    async with app.run():
        pass


@pytest.mark.anyio
async def test_unknown_binder_type_fails_at_start_naming_the_key() -> None:
    with pytest.raises(BinderNotFoundError) as err:
        await _start({"binders": {"main": {"type": "carrier-pigeon"}}})
    assert err.value.key == "binders.main.type"
    assert "carrier-pigeon" in str(err.value) and "memory" in str(err.value)


@pytest.mark.anyio
async def test_missing_binder_distribution_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.metadata

    from streamlib import binder

    real = importlib.metadata.entry_points

    def without_kafka(**kw: object) -> object:
        eps = real(**kw)  # type: ignore[arg-type]
        return [ep for ep in eps if ep.name != "kafka"]

    monkeypatch.setattr(importlib.metadata, "entry_points", without_kafka)
    monkeypatch.delitem(binder._factories, "kafka", raising=False)
    with pytest.raises(BinderNotFoundError) as err:
        await _start({"default-binder": "kafka"})
    assert err.value.key == "default-binder"
    assert "pip install streamlib-kafka" in str(err.value)


@pytest.mark.anyio
async def test_bad_binder_setting_fails_at_start_naming_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        await _start({"binders": {"mem": {"type": "memory", "namespce": "x"}}})
    assert err.value.key == "binders.mem.namespce"


def test_secrets_are_redacted_from_repr_and_errors() -> None:
    cfg = load_config(
        {
            "binders": {
                "rabbit": {
                    "type": "rabbit",
                    "url": "amqp://app:s3cret@broker:5672/",
                    "sasl-password": "hunter2",
                }
            }
        },
        environ={},
    )
    text = repr(cfg)
    assert "s3cret" not in text and "hunter2" not in text
    assert "amqp://app:***@broker:5672/" in text
    assert redact({"password": "x", "nested": {"token": "y"}}) == {
        "password": "***",
        "nested": {"token": "***"},
    }
    with pytest.raises(ConfigError) as err:
        load_config({"instance-count": "amqp://u:pw@h/"}, environ={})
    assert "pw" not in str(err.value)
