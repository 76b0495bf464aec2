"""Kafka binder settings: client arguments, SASL/TLS pass-through, secrets kept out of sight."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from streamlib_kafka import KafkaBinder
from streamlib_kafka.settings import (
    KafkaBinderSettings,
    KafkaConsumerSettings,
    KafkaProducerSettings,
    client_kwargs,
    consumer_extension,
    producer_kwargs,
)

from streamlib import (
    BinderContext,
    ConfigError,
    ConnectionLostError,
    ConsumerProperties,
    ConsumerSpec,
    StreamApp,
)
from streamlib.config import StreamConfig, model_keys, validate

CONTEXT = BinderContext("app", 0, 1, "kafka")


def settings(data: Mapping[str, Any]) -> KafkaBinderSettings:
    return validate(KafkaBinderSettings, data, "binders.kafka")


def test_defaults_are_plaintext_with_idempotent_acks_all() -> None:
    s = settings({"bootstrap-servers": "b:9092"})
    assert client_kwargs(s, "binders.kafka") == {
        "bootstrap_servers": "b:9092",
        "security_protocol": "PLAINTEXT",
    }
    produce = producer_kwargs(s)
    assert produce["acks"] == "all" and produce["enable_idempotence"] is True


def test_sasl_settings_map_to_aiokafka_arguments() -> None:
    s = settings(
        {
            "client-id": "billing",
            "security": {
                "sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "password": "s3cret"}
            },
        }
    )
    kwargs = client_kwargs(s, "binders.kafka")
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "u"
    assert kwargs["sasl_plain_password"] == "s3cret"
    assert kwargs["client_id"] == "billing"


def test_tls_gives_an_ssl_context_and_sasl_ssl_with_sasl() -> None:
    s = settings(
        {
            "security": {
                "tls": {"check-hostname": False},
                "sasl": {"username": "u", "password": "p"},
            }
        }
    )
    kwargs = client_kwargs(s, "binders.kafka")
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "PLAIN"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].check_hostname is False


def test_missing_tls_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    s = settings({"security": {"tls": {"ca-file": str(tmp_path / "missing.pem")}}})
    with pytest.raises(ConfigError) as info:
        client_kwargs(s, "binders.kafka")
    assert info.value.key == "binders.kafka.security.tls"


def test_password_never_shows_in_repr_or_errors() -> None:
    data = {"security": {"sasl": {"mechanism": "PLAIN", "username": "u", "password": "s3cret"}}}
    s = settings(data)
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)
    binder = KafkaBinder(data, CONTEXT)
    assert "s3cret" not in repr(binder.settings)
    assert "s3cret" not in str(binder.health())
    bad = {"security": {"sasl": {"mechanism": "GSSAPI", "username": "u", "password": "s3cret"}}}
    with pytest.raises(ConfigError) as info:
        KafkaBinder(bad, CONTEXT)
    assert info.value.key == "binders.kafka.security.sasl.mechanism"
    assert "s3cret" not in str(info.value)


def test_unknown_binder_key_names_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        KafkaBinder({"producer": {"lingr-ms": 3}}, CONTEXT)
    assert info.value.key == "binders.kafka.producer.lingr-ms"


def test_consumer_extension_is_validated_with_the_binding_key_path() -> None:
    props = ConsumerProperties.model_validate({"start-offset": "middle"})
    spec = ConsumerSpec("take-in-0", "orders", "g", props, 0, 1)
    with pytest.raises(ConfigError) as info:
        consumer_extension(spec)
    assert info.value.key == "bindings.take-in-0.consumer.start-offset"
    ok = ConsumerSpec(
        "take-in-0",
        "orders",
        "g",
        ConsumerProperties.model_validate({"max-in-flight": 10, "auto-rebalance": False}),
        0,
        1,
    )
    ext = consumer_extension(ok)
    assert (ext.max_in_flight, ext.auto_rebalance, ext.start_offset) == (10, False, None)


def test_acks_below_all_need_idempotence_off() -> None:
    with pytest.raises(ConfigError) as info:
        settings({"producer": {"acks": 1}})
    assert info.value.key == "binders.kafka.producer"
    relaxed = settings({"producer": {"acks": 1, "enable-idempotence": False}})
    assert producer_kwargs(relaxed)["acks"] == 1


@pytest.mark.anyio
async def test_unreachable_broker_is_a_connection_error_without_secrets() -> None:
    app = StreamApp(
        "unreachable",
        config={
            "binders": {
                "kafka": {
                    "type": "kafka",
                    "bootstrap-servers": "127.0.0.1:1",
                    "security": {"sasl": {"username": "u", "password": "s3cret"}},
                }
            },
            "bindings": {"take-in-0": {"destination": "d", "group": "g"}},
        },
    )

    @app.sink
    async def take(data: bytes) -> None:
        return None

    with pytest.raises(ConnectionLostError) as info:
        async with app.run():
            pass
    assert info.value.retriable
    assert "s3cret" not in str(info.value)


@pytest.mark.anyio
async def test_a_dead_letter_queue_without_a_group_fails_naming_the_group_key() -> None:
    props = ConsumerProperties.model_validate({"dlq": True})
    spec = ConsumerSpec("take-in-0", "orders", None, props, 0, 1)
    binder = KafkaBinder({"bootstrap-servers": "127.0.0.1:1"}, CONTEXT)

    async def dispatch(envelope: Any) -> Any:
        raise AssertionError("nothing is consumed")

    with pytest.raises(ConfigError) as info:
        await binder.bind_consumer(spec, dispatch)  # type: ignore[arg-type]
    assert info.value.key == "bindings.take-in-0.group"
    assert "dlq" in info.value.reason
    await binder.aclose()


def test_max_poll_interval_is_a_consumer_setting() -> None:
    assert (
        settings({"consumer": {"max-poll-interval-ms": 3000}}).consumer.max_poll_interval_ms == 3000
    )


def test_no_kafka_key_is_taken_for_a_misspelt_common_key() -> None:
    consumer = {key: True for key in model_keys(KafkaConsumerSettings)}
    producer = {key: True for key in model_keys(KafkaProducerSettings)}
    config = StreamConfig.model_validate(
        {"bindings": {"x": {"consumer": consumer, "producer": producer}}}
    )
    props = config.binding("x")
    assert set(props.consumer.extension) == set(consumer)
