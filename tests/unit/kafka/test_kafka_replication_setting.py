"""``replication-factor``: the broker's default unless set, and a clear error for 0."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from streamlib_kafka.settings import KafkaBinderSettings


def test_topics_take_the_brokers_default_replication_factor_unless_set() -> None:
    assert KafkaBinderSettings().replication_factor == -1
    assert KafkaBinderSettings(replication_factor=3).replication_factor == 3


def test_a_replication_factor_of_zero_names_the_allowed_values() -> None:
    with pytest.raises(ValidationError, match="must be -1"):
        KafkaBinderSettings(replication_factor=0)
