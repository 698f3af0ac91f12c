"""The SKU -> partition mapping must be the producers' (murmur2), or queries ask the wrong worker."""

from __future__ import annotations

import pytest

from streamalloc.kafka.partitioning import murmur2, partition_for

# Kafka's UtilsTest.testMurmur2: what the Java client computes for these keys.
JAVA = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "expected"), JAVA.items())
def test_murmur2_matches_the_java_client(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


def test_partition_is_the_positive_hash_modulo_the_partitions() -> None:
    assert partition_for(b"foobar", 4) == (-790332482 & 0x7FFFFFFF) % 4
    assert {partition_for(f"SKU-{i}".encode(), 4) for i in range(100)} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="at least 1"):
        partition_for(b"x", 0)
