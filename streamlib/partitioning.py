"""Key -> partition selection compatible with Spring Cloud Stream's default selector.

Spring computes ``abs(hashCode(key))`` (with ``Integer.MIN_VALUE`` mapped to 0) and then
``abs(h % partition_count)``; Java and Python producers therefore agree on every key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_INT32_MIN = -(2**31)

PartitionSelector = Callable[[Any, int], int]


def _to_int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - 0x1_0000_0000 if value & 0x8000_0000 else value


def java_string_hash(text: str) -> int:
    """``java.lang.String.hashCode``: int32 arithmetic over UTF-16 code units."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return _to_int32(h)


def java_hash(key: object) -> int:
    """The Java ``hashCode`` of a key as Spring would see it (String, Integer/Long, Boolean).

    Raises TypeError for keys Java would hash by identity (bytes, arbitrary objects).
    """
    if isinstance(key, bool):
        return 1231 if key else 1237
    if isinstance(key, int):
        if _INT32_MIN <= key < 2**31:
            return key  # Integer.hashCode
        value = key & 0xFFFFFFFFFFFFFFFF
        return _to_int32(value ^ (value >> 32))  # Long.hashCode
    if isinstance(key, str):
        return java_string_hash(key)
    raise TypeError(
        f"partition key {key!r} of type {type(key).__name__} has no Java-compatible hash; "
        "use a str or int key"
    )


def default_partition_selector(key: object, partition_count: int) -> int:
    """Spring Cloud Stream's ``DefaultPartitionSelector`` followed by its modulo."""
    h = java_hash(key)
    if h == _INT32_MIN:
        h = 0
    return abs(h) % partition_count


def select_partition(
    key: object, partition_count: int, selector: PartitionSelector = default_partition_selector
) -> int:
    """Partition for ``key`` among ``partition_count`` partitions, using ``selector``."""
    if partition_count < 1:
        raise ValueError(f"partition_count must be >= 1, not {partition_count}")
    # Java's Math.abs(x % n): the remainder truncates toward zero, so it equals abs(x) % n.
    return abs(int(selector(key, partition_count))) % partition_count
