import pytest

from streamlib.partitioning import java_hash, select_partition

# (key, Java hashCode, partition of 4, partition of 7) as Spring Cloud Stream chose them.
SPRING_VECTORS = [
    ("k0", 3365, 1, 5),
    ("", 0, 0, 0),
    ("é", 233, 1, 2),
    ("日本", 835047, 3, 3),
    ("😀", 1772899, 3, 2),
    ("polygenelubricants", -2147483648, 0, 0),
    ("Straße", -1808122922, 2, 4),
    ("customer-000042", -1872591027, 3, 6),
    ("tab\there", -986752764, 0, 4),
]


@pytest.mark.parametrize(("key", "hash_code", "p4", "p7"), SPRING_VECTORS)
def test_string_keys_pick_springs_partition(key: str, hash_code: int, p4: int, p7: int) -> None:
    assert java_hash(key) == hash_code
    assert select_partition(key, 4) == p4
    assert select_partition(key, 7) == p7


@pytest.mark.parametrize(
    ("key", "count", "expected"),
    [
        (42, 4, 2),  # Integer.hashCode is the value
        (-7, 4, 3),  # abs(-7) % 4
        (-(2**31), 5, 0),  # Integer.MIN_VALUE -> 0
        (2**40 + 5, 7, (2**8 ^ 5) % 7),  # Long.hashCode = (int)(v ^ v >>> 32)
    ],
)
def test_int_keys_follow_java_integer_and_long_hash(key: int, count: int, expected: int) -> None:
    assert select_partition(key, count) == expected


def test_bytes_key_is_rejected_with_a_reason() -> None:
    with pytest.raises(TypeError, match="bytes"):
        select_partition(b"raw", 3)


def test_custom_selector_result_is_taken_modulo_count() -> None:
    assert select_partition("x", 3, lambda key, count: 10) == 1
    assert select_partition("x", 3, lambda key, count: -1) == 1
