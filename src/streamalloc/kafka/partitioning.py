"""Which partition a key lands on: Kafka's murmur2, as the engine's producers use it.

The producers partition with librdkafka's `murmur2_random` (clients.py), which is the Java
client's default partitioner for keyed records: `toPositive(murmur2(key)) % partitions`.
A query needs the same answer without producing anything, to find the worker that owns a
SKU's store partition.
"""

from __future__ import annotations

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2` (a signed 32-bit int, as Java returns it)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a keyed record among `partitions` (Java's `toPositive(murmur2) % n`)."""
    if partitions < 1:
        raise ValueError(f"a topic has at least 1 partition, not {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions
