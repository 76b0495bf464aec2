"""A batch's envelopes (``envelopes_of``) are exactly the records' ``envelope_of``."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st
from streamlib_kafka.consumer import envelope_of, envelopes_of
from streamlib_kafka.headers import encode_headers

_HEADERS = [
    (),
    tuple(encode_headers({"contentType": "application/json"}, None)),
    tuple(encode_headers({"contentType": "text/plain", "n": 3}, 1)),
    [("raw", b"\x00"), ("nothing", None)],
]


def _record(offset: int, headers: int, value: bytes | None, key: bytes | None) -> ConsumerRecord:
    raw = _HEADERS[headers]
    # A fresh, equal object per record, as the fetcher makes them.
    copied = tuple(raw) if isinstance(raw, tuple) else list(raw)
    return ConsumerRecord("t", 0, offset, 1_700_000_000_123, 0, key, value, None, 0, 0, copied)


records = st.lists(
    st.tuples(
        st.integers(0, len(_HEADERS) - 1),
        st.none() | st.binary(max_size=8),
        st.none() | st.binary(max_size=4),
    ),
    max_size=20,
).map(lambda specs: [_record(i, *spec) for i, spec in enumerate(specs)])


@given(records)
def test_envelopes_of_a_batch_equal_each_records_envelope(batch: list[ConsumerRecord]) -> None:
    assert envelopes_of(batch) == [envelope_of(record) for record in batch]


def test_each_envelope_of_a_batch_has_its_own_headers() -> None:
    batch = [_record(i, 1, b"{}", None) for i in range(3)]
    envelopes = envelopes_of(batch)
    envelopes[0].headers["x"] = "changed"
    assert [e.headers for e in envelopes[1:]] == [{"contentType": "application/json"}] * 2
