"""Rabbit binder settings, wire names and headers: no broker needed."""

from __future__ import annotations

import re
import ssl
from typing import Any

import pytest
from streamlib_rabbit import RabbitBinder, naming
from streamlib_rabbit.binder import ssl_context
from streamlib_rabbit.errors import map_error
from streamlib_rabbit.producer import amqp_headers
from streamlib_rabbit.settings import (
    RabbitBinderSettings,
    RabbitConsumerSettings,
    RabbitProducerSettings,
)

from streamlib import BinderContext, ConfigError, Envelope
from streamlib.config import StreamConfig, model_keys, validate
from streamlib.errors import ConnectionLostError

CONTEXT = BinderContext("app", 0, 1, "rabbit")


def binder_settings(data: dict[str, Any]) -> RabbitBinderSettings:
    return validate(RabbitBinderSettings, data, "binders.rabbit")


def test_password_never_shows() -> None:
    for data in (
        {"url": "amqp://user:s3cret@host:5672/vh"},
        {"host": "host", "username": "user", "password": "s3cret"},
    ):
        s = binder_settings(data)
        assert "s3cret" not in repr(s)
        assert "s3cret" not in s.safe_url()
        assert "s3cret" not in repr(RabbitBinder(data, CONTEXT))
        assert "s3cret" in str(s.amqp_url())


def test_separate_keys_build_the_url() -> None:
    s = binder_settings(
        {"host": "h", "port": 5673, "username": "u", "password": "p", "virtual-host": "v"}
    )
    assert str(s.amqp_url()) == "amqp://u:p@h:5673/v"
    assert s.safe_url() == "amqp://u:***@h:5673/v"


def test_bad_url_names_the_key_without_the_password() -> None:
    with pytest.raises(ConfigError, match=r"^binders\.rabbit\.url") as info:
        binder_settings({"url": "http://user:s3cret@host/"})
    assert "s3cret" not in str(info.value)


def test_tls_by_scheme_or_setting() -> None:
    assert binder_settings({"url": "amqps://h/"}).uses_tls
    assert binder_settings({"ssl": {"enabled": True}}).uses_tls
    assert not binder_settings({}).uses_tls


def test_consumer_keys_validate_with_their_path() -> None:
    key = "bindings.in-0.consumer"
    s = validate(RabbitConsumerSettings, {"prefetch": 10, "single-active-consumer": True}, key)
    assert (s.prefetch, s.single_active_consumer, s.republish_to_dlq) == (10, True, True)
    with pytest.raises(ConfigError, match=r"bindings\.in-0\.consumer\.prefetch"):
        validate(RabbitConsumerSettings, {"prefetch": 0}, key)
    with pytest.raises(ConfigError, match=r"bindings\.in-0\.consumer\.overflow"):
        validate(RabbitConsumerSettings, {"overflow": "spill"}, key)


def test_producer_defaults_are_persistent_and_not_mandatory() -> None:
    s = validate(RabbitProducerSettings, {}, "bindings.out-0.producer")
    assert (s.delivery_mode, s.mandatory) == ("persistent", False)


def test_anonymous_queue_name_is_spring_shaped() -> None:
    name = naming.anonymous_queue("events")
    assert re.fullmatch(r"events\.anonymous\.[A-Za-z0-9_-]{22}", name)


def test_partitioned_group_shares_one_dlq() -> None:
    plans = naming.group_queues("d", "g", (0, 1), RabbitConsumerSettings(), dlq_enabled=True)
    assert [(p.name, p.binding_key, p.partition) for p in plans] == [
        ("d.g-0", "d-0", 0),
        ("d.g-1", "d-1", 1),
    ]
    assert plans[1].arguments == {
        "x-dead-letter-exchange": "DLX",
        "x-dead-letter-routing-key": "d.g-1",
    }
    assert plans[1].dlq is not None
    assert (plans[1].dlq.exchange, plans[1].dlq.queue) == ("DLX", "d.g.dlq")
    assert plans[1].dlq.routing_keys == ("d.g", "d.g-1")


def test_routing_keys() -> None:
    assert naming.routing_key("orders", None) == "orders"
    assert naming.routing_key("orders", 3) == "orders-3"


def test_content_type_moves_to_the_property_and_key_to_a_header() -> None:
    plain = Envelope(b"{}", {"contentType": "application/json"})
    assert amqp_headers(plain) == ("application/json", None)
    keyed = Envelope(
        b"{}",
        {"contentType": "text/plain", "scst_partition": 1, "x-trace": "t"},
        key=b"k-1",
        partition=1,
    )
    assert amqp_headers(keyed) == ("text/plain", {"x-trace": "t", naming.KEY_HEADER: "k-1"})


def test_client_errors_map_to_streamlib_errors_without_secrets() -> None:
    error = map_error(ConnectionRefusedError("amqp://u:s3cret@h/ refused"), "connect")
    assert isinstance(error, ConnectionLostError) and error.retriable
    assert "s3cret" not in str(error)


def test_tls_context() -> None:
    assert ssl_context(binder_settings({})) is None
    context = ssl_context(binder_settings({"url": "amqps://h/", "ssl": {"verify": False}}))
    assert context is not None
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)
    strict = ssl_context(binder_settings({"ssl": {"enabled": True}}))
    assert strict is not None and strict.verify_mode == ssl.CERT_REQUIRED


def test_no_rabbit_key_is_taken_for_a_misspelt_common_key() -> None:
    consumer = {key: True for key in model_keys(RabbitConsumerSettings)}
    producer = {key: True for key in model_keys(RabbitProducerSettings)}
    config = StreamConfig.model_validate(
        {"bindings": {"x": {"consumer": consumer, "producer": producer}}}
    )
    props = config.binding("x")
    assert set(props.consumer.extension) == set(consumer)


def test_addresses_name_several_brokers_in_order_with_the_shared_credentials() -> None:
    s = binder_settings(
        {"addresses": "n1:5673, n2, amqp://other:pw@n3:5674/vh", "password": "s3cret"}
    )
    urls = [str(url) for url in s.amqp_urls()]
    assert urls == [
        "amqp://guest:s3cret@n1:5673/",
        "amqp://guest:s3cret@n2:5672/",
        "amqp://other:pw@n3:5674/vh",
    ]
    assert "s3cret" not in s.safe_url() and "n3:5674" in s.safe_url()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"addresses": []}, "at least one broker"),
        ({"addresses": ["n1", "bad host"]}, "'bad host' is not host"),
        ({"addresses": ["http://n1"]}, "is not an amqp:// URL"),
        ({"addresses": ["n1"], "url": "amqp://n2"}, "url or addresses, not both"),
    ],
)
def test_bad_addresses_fail_naming_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"binders\.rabbit") as failure:
        binder_settings(data)
    assert message in str(failure.value)


def test_quorum_options_become_queue_arguments() -> None:
    options = validate(
        RabbitConsumerSettings,
        {"quorum": True, "delivery-limit": 5, "dead-letter-strategy": "at-least-once"},
        "bindings.in.consumer",
    )
    args = naming.queue_arguments(options)
    assert args == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 5,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"delivery-limit": 5}, "delivery-limit applies to quorum queues only"),
        ({"dead-letter-strategy": "at-least-once"}, "dead-letter-strategy applies to quorum"),
        (
            {"quorum": True, "dead-letter-strategy": "at-least-once", "overflow": "drop-head"},
            "needs overflow reject-publish",
        ),
    ],
)
def test_quorum_options_on_the_wrong_queue_fail_naming_the_key(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=r"bindings\.in\.consumer") as failure:
        validate(RabbitConsumerSettings, data, "bindings.in.consumer")
    assert message in str(failure.value)
