"""Bus event JSON is Spring Cloud Bus's, field for field, in both directions (WIRE.md)."""

from __future__ import annotations

import logging
import uuid

import orjson
import pytest

from streamlib.bus import (
    AckRemoteApplicationEvent,
    EnvironmentChangeRemoteApplicationEvent,
    RefreshRemoteApplicationEvent,
    RemoteApplicationEvent,
    parse_event,
    register_event,
)
from streamlib.bus.events import EventFormatError

ORIGIN = "billing:0:e7ac1957228ab0788dd009275f571143"
SPRING_REFRESH = (
    b'{"type":"RefreshRemoteApplicationEvent","destinationService":"**",'
    b'"id":"c9805279-ad03-4869-8ad4-66b2ab289319",'
    b'"originService":"billing:0:e7ac1957228ab0788dd009275f571143","timestamp":1795628167686}'
)
SPRING_ENV = (
    b'{"type":"EnvironmentChangeRemoteApplicationEvent","destinationService":"**",'
    b'"id":"535589d7-02d1-4c3e-924a-1747cccc2b5b",'
    b'"originService":"billing:0:e7ac1957228ab0788dd009275f571143","timestamp":1795628164825,'
    b'"values":{"greeting":"hi"}}'
)
SPRING_ACK = (
    b'{"type":"AckRemoteApplicationEvent","ackDestinationService":"**",'
    b'"ackId":"535589d7-02d1-4c3e-924a-1747cccc2b5b","destinationService":"**",'
    b'"event":"org.springframework.cloud.bus.event.EnvironmentChangeRemoteApplicationEvent",'
    b'"id":"221c96d7-6e34-45f3-9b00-cbcd62539bec",'
    b'"originService":"billing:0:e7ac1957228ab0788dd009275f571143","timestamp":1795628165297}'
)


def test_spring_refresh_event_parses_and_serializes_byte_identical() -> None:
    event = parse_event(SPRING_REFRESH)
    assert isinstance(event, RefreshRemoteApplicationEvent)
    assert event.id == "c9805279-ad03-4869-8ad4-66b2ab289319"
    assert event.origin_service == ORIGIN
    assert event.destination_service == "**"
    assert event.timestamp == 1795628167686
    ours = RefreshRemoteApplicationEvent(
        id="c9805279-ad03-4869-8ad4-66b2ab289319",
        origin_service=ORIGIN,
        destination_service="**",
        timestamp=1795628167686,
    )
    assert ours.to_json() == SPRING_REFRESH


def test_spring_environment_change_event_parses_and_serializes_byte_identical() -> None:
    event = parse_event(SPRING_ENV)
    assert isinstance(event, EnvironmentChangeRemoteApplicationEvent)
    assert event.values == {"greeting": "hi"}
    assert event.timestamp == 1795628164825
    ours = EnvironmentChangeRemoteApplicationEvent(
        id="535589d7-02d1-4c3e-924a-1747cccc2b5b",
        origin_service=ORIGIN,
        destination_service="**",
        timestamp=1795628164825,
        values={"greeting": "hi"},
    )
    assert ours.to_json() == SPRING_ENV


def test_spring_ack_event_parses_and_serializes_byte_identical() -> None:
    event = parse_event(SPRING_ACK)
    assert isinstance(event, AckRemoteApplicationEvent)
    assert event.ack_id == "535589d7-02d1-4c3e-924a-1747cccc2b5b"
    assert event.ack_destination_service == "**"
    assert event.event == EnvironmentChangeRemoteApplicationEvent.java_class
    ours = AckRemoteApplicationEvent(
        id="221c96d7-6e34-45f3-9b00-cbcd62539bec",
        origin_service=ORIGIN,
        destination_service="**",
        timestamp=1795628165297,
        ack_id="535589d7-02d1-4c3e-924a-1747cccc2b5b",
        ack_destination_service="**",
        event="org.springframework.cloud.bus.event.EnvironmentChangeRemoteApplicationEvent",
    )
    assert ours.to_json() == SPRING_ACK


def test_new_events_get_a_uuid4_id_and_an_epoch_millisecond_timestamp() -> None:
    event = RefreshRemoteApplicationEvent(origin_service=ORIGIN)
    assert uuid.UUID(event.id).version == 4
    assert event.timestamp > 1_600_000_000_000  # milliseconds, not seconds
    keys = list(orjson.loads(event.to_json()))
    assert keys == ["type", "destinationService", "id", "originService", "timestamp"]


class OrderShippedRemoteApplicationEvent(RemoteApplicationEvent):
    order_id: str


def test_custom_event_round_trips_by_its_registered_type_name() -> None:
    register_event(OrderShippedRemoteApplicationEvent)
    event = OrderShippedRemoteApplicationEvent(origin_service=ORIGIN, order_id="o-1")
    body = event.to_json()
    assert body.startswith(b'{"type":"OrderShippedRemoteApplicationEvent","destinationService"')
    assert b'"orderId":"o-1"' in body
    assert parse_event(body) == event


def test_unknown_event_type_is_ignored_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    body = b'{"type":"SomethingNewRemoteApplicationEvent","id":"x","originService":"a:0:b"}'
    with caplog.at_level(logging.INFO, logger="streamlib.bus"):
        assert parse_event(body) is None
    assert "unknown type SomethingNewRemoteApplicationEvent" in caplog.text


@pytest.mark.parametrize(
    "body", [b"not json", b"[1]", b'{"id":"x"}', b'{"type":"AckRemoteApplicationEvent"}']
)
def test_malformed_event_raises_event_format_error(body: bytes) -> None:
    with pytest.raises(EventFormatError):
        parse_event(body)
