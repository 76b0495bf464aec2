"""Spring's Kafka header encoding, both ways, without a broker."""

from __future__ import annotations

from streamlib_kafka.headers import decode_headers, encode_headers


def test_partitioned_headers_in_spring_order() -> None:
    assert encode_headers({"contentType": "application/json"}, 3) == [
        ("scst_partition", b"3"),
        ("contentType", b"application/json"),
        (
            "spring_json_header_types",
            b'{"scst_partition":"java.lang.Integer","contentType":"java.lang.String"}',
        ),
    ]


def test_user_headers_follow_content_type_with_their_java_types() -> None:
    encoded = encode_headers(
        {"x": "é", "contentType": "text/plain", "n": 2**40, "ok": True, "raw": b"\x00"}, None
    )
    assert encoded == [
        ("contentType", b"text/plain"),
        ("x", "é".encode()),
        ("n", b"1099511627776"),
        ("ok", b"true"),
        ("raw", b"\x00"),
        (
            "spring_json_header_types",
            b'{"contentType":"java.lang.String","x":"java.lang.String",'
            b'"n":"java.lang.Long","ok":"java.lang.Boolean"}',
        ),
    ]


def test_decoding_follows_the_declared_types() -> None:
    encoded = encode_headers({"contentType": "application/json", "n": 7, "raw": b"\xff"}, 1)
    assert decode_headers(encoded) == {
        "scst_partition": 1,
        "contentType": "application/json",
        "n": 7,
        "raw": b"\xff",
    }


def test_records_without_or_with_foreign_headers_are_accepted() -> None:
    assert decode_headers([]) == {}
    assert decode_headers([("a", b"1"), ("spring_json_header_types", b"not json")]) == {"a": b"1"}
    assert decode_headers([("a", b"{bad"), ("spring_json_header_types", b'{"a":"x.Y"}')]) == {
        "a": b"{bad"
    }
