"""A bulk's envelopes (``Output.send_many``) are exactly ``Output.envelope`` of each item."""

from __future__ import annotations

from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from streamlib import Message
from streamlib._outputs import Output
from streamlib.config import BindingProperties


class Order(BaseModel):
    id: int
    note: str = Field(default="", alias="theNote")


class Refund(BaseModel):
    id: int


def _output(content_type: str | None) -> Output:
    props = BindingProperties.model_validate(
        {"destination": "orders", "content-type": content_type}
    )
    # Building envelopes never touches the producer.
    return Output("orders-out-0", props, cast(Any, None))


items = st.lists(
    st.one_of(
        st.builds(Order, id=st.integers(0, 9)),
        st.builds(Refund, id=st.integers(0, 9)),
        st.builds(lambda n: {"id": n}, st.integers(0, 9)),
        st.builds(lambda n: Message(Order(id=n), key="k", headers={"h": 1}), st.integers(0, 9)),
        st.binary(max_size=4),
    ),
    max_size=12,
)


@given(
    items,
    st.sampled_from([None, "text/plain"]),
    st.sampled_from([None, "key", 7, b"b"]),
    st.sampled_from([None, {"x": "y"}, {"contentType": "application/vnd+json"}]),
)
def test_a_bulk_gets_each_items_envelope(
    batch: list[Any], content_type: str | None, key: Any, headers: dict[str, Any] | None
) -> None:
    output = _output(content_type)
    expected = [output.envelope(item, key, headers) for item in batch]
    assert output._envelopes(batch, key, headers) == expected


def test_each_envelope_of_a_bulk_has_its_own_headers() -> None:
    envelopes = _output(None)._envelopes([Order(id=1), Order(id=2)], None, {"x": "y"})
    envelopes[0].headers["traceparent"] = "00-1"
    assert envelopes[1].headers == {"x": "y", "contentType": "application/json"}
