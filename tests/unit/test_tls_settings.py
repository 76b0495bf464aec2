"""One TLS settings model for both binders: same keys, same meaning."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from streamlib_kafka.settings import KafkaBinderSettings, client_kwargs
from streamlib_rabbit.binder import ssl_context
from streamlib_rabbit.settings import RabbitBinderSettings

from streamlib import ConfigError
from streamlib.config import validate


def test_a_tls_section_turns_tls_on_for_both_binders_unless_disabled() -> None:
    kafka = validate(KafkaBinderSettings, {"security": {"tls": {}}}, "binders.kafka")
    assert isinstance(client_kwargs(kafka, "binders.kafka")["ssl_context"], ssl.SSLContext)
    rabbit = validate(RabbitBinderSettings, {"ssl": {}}, "binders.rabbit")
    assert rabbit.uses_tls and str(rabbit.amqp_url()).startswith("amqps://")
    off = validate(RabbitBinderSettings, {"ssl": {"enabled": False}}, "binders.rabbit")
    assert not off.uses_tls and ssl_context(off) is None
    kafka_off = validate(
        KafkaBinderSettings, {"security": {"tls": {"enabled": False}}}, "binders.kafka"
    )
    assert "ssl_context" not in client_kwargs(kafka_off, "binders.kafka")


@pytest.mark.parametrize(
    ("tls", "verify_mode", "check_hostname"),
    [
        ({}, ssl.CERT_REQUIRED, True),
        ({"check-hostname": False}, ssl.CERT_REQUIRED, False),
        ({"verify": False}, ssl.CERT_NONE, False),
    ],
)
def test_verify_and_check_hostname_mean_the_same_on_both(
    tls: dict[str, bool], verify_mode: ssl.VerifyMode, check_hostname: bool
) -> None:
    kafka = validate(KafkaBinderSettings, {"security": {"tls": tls}}, "binders.kafka")
    rabbit = validate(RabbitBinderSettings, {"ssl": tls}, "binders.rabbit")
    contexts = [client_kwargs(kafka, "binders.kafka")["ssl_context"], ssl_context(rabbit)]
    for context in contexts:
        assert (context.verify_mode, context.check_hostname) == (verify_mode, check_hostname)


def test_an_unreadable_tls_file_names_the_key_on_both(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    kafka = validate(
        KafkaBinderSettings, {"security": {"tls": {"ca-file": missing}}}, "binders.kafka"
    )
    with pytest.raises(ConfigError) as kafka_error:
        client_kwargs(kafka, "binders.kafka")
    assert kafka_error.value.key == "binders.kafka.security.tls"
    rabbit = validate(RabbitBinderSettings, {"ssl": {"ca-file": missing}}, "binders.rabbit")
    with pytest.raises(ConfigError) as rabbit_error:
        ssl_context(rabbit)
    assert rabbit_error.value.key == "binders.rabbit.ssl"
