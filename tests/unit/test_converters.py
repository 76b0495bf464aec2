from typing import Any

import pytest
from pydantic import BaseModel

from streamlib.converters import PayloadDecoder, encode
from streamlib.errors import MessageConversionError


class Item(BaseModel):
    id: int


def test_header_content_type_wins_over_binding_which_wins_over_json() -> None:
    as_text = PayloadDecoder(object, binding_default="text/plain")
    assert as_text(b'{"id": 1}', {}) == '{"id": 1}'
    assert as_text(b'{"id": 1}', {"contentType": "application/json"}) == {"id": 1}
    assert PayloadDecoder(object)(b'{"id": 1}', {}) == {"id": 1}
    assert PayloadDecoder(object)(b"\x00", {"contentType": b"application/octet-stream"}) == b"\x00"


def test_parameters_and_quotes_around_the_content_type_are_ignored() -> None:
    decode = PayloadDecoder(Item)
    assert decode(b'{"id": 2}', {"contentType": '"application/json;charset=UTF-8"'}) == Item(id=2)


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b"{nope", {}, "cannot convert application/json body to Item"),
        (b'{"id": "x"}', {}, "cannot convert application/json body to Item"),
        (b"\x00", {"contentType": "application/octet-stream"}, "not a JSON content type"),
    ],
)
def test_undecodable_bodies_raise_a_conversion_error_with_the_reason(
    body: bytes, headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(MessageConversionError, match=reason):
        PayloadDecoder(Item)(body, headers)


def test_generic_types_are_validated() -> None:
    assert PayloadDecoder(list[int])(b"[1, 2]", {}) == [1, 2]
    with pytest.raises(MessageConversionError):
        PayloadDecoder(list[int])(b'["a"]', {})


@pytest.mark.parametrize("target", [dict, dict[str, Any]])
def test_a_dict_payload_is_a_json_object_whatever_parses_it(target: Any) -> None:
    decode = PayloadDecoder(target)
    assert decode(b'{"a": [1, {"b": null}], "c": 1.5}', {}) == {"a": [1, {"b": None}], "c": 1.5}
    assert decode(b'{"big": %d}' % 2**70, {}) == {"big": 2**70}
    for body in (b"[1]", b"3", b"{nope"):
        with pytest.raises(MessageConversionError, match="cannot convert application/json body"):
            decode(body, {})


def test_encoding_picks_the_content_type_from_the_payload() -> None:
    assert encode(Item(id=1), None) == (b'{"id":1}', "application/json")
    assert encode("hé", None) == ("hé".encode(), "text/plain")
    assert encode(b"\x01", None) == (b"\x01", "application/octet-stream")
    assert encode({"a": [1]}, None) == (b'{"a":[1]}', "application/json")
    assert encode("raw", "application/json") == (b"raw", "application/json")
    with pytest.raises(MessageConversionError, match="object"):
        encode(object(), None)
