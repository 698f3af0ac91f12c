"""Composite keys: one store record per entity, so a write never grows with its neighbours.

A key is its string parts in UTF-8 joined by NUL. UTF-8 never puts a zero byte inside a
character, so NUL cannot occur in an encoded part (parts containing U+0000 are refused),
and NUL sorts below every other byte. Hence, for NUL-free parts:

- byte order of keys equals tuple order of their parts (a shorter tuple sorts first);
- ``prefix_of("sku-1")`` matches ``("sku-1", ...)`` but neither ``("sku-1",)`` itself
  nor ``("sku-10", ...)``, so a per-SKU scan reads exactly that SKU's records.

Example layout: ``encode_key("sku-1")`` for the balance and ``encode_key("sku-1",
"alloc", line_id)`` per open allocation; scan with ``prefix_of("sku-1", "alloc")``.
"""

from __future__ import annotations

SEPARATOR = b"\x00"
_SEP = "\x00"


def encode_key(*parts: str) -> bytes:
    """The store key for `parts` (at least one; none may contain U+0000)."""
    if not parts:
        raise ValueError("a key needs at least one part")
    joined = _SEP.join(parts)
    if joined.count(_SEP) != len(parts) - 1:
        raise ValueError(f"a key part cannot contain NUL: {parts!r}")
    return joined.encode()


def decode_key(key: bytes) -> tuple[str, ...]:
    """The parts `encode_key` was given: ``decode_key(encode_key(*p)) == p``."""
    return tuple(key.decode().split(_SEP))


def prefix_of(*parts: str) -> bytes:
    """The scan prefix of every key whose leading parts are `parts` (all keys for none)."""
    if not parts:
        return b""
    return encode_key(*parts) + SEPARATOR


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """The smallest key above every key starting with `prefix`; None when there is none.

    Drop trailing 0xff bytes and increment the last remaining one (b"ab" -> b"ac",
    b"a\\xff" -> b"b"); an empty or all-0xff prefix has no upper bound.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))
