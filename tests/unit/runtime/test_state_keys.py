"""Composite keys: round trip, order, and prefixes that select exactly their records."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamalloc.runtime.state import decode_key, encode_key, prefix_of, prefix_upper_bound

part = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
parts = st.lists(part, min_size=1, max_size=4).map(tuple)


@given(parts)
def test_round_trip(key_parts: tuple[str, ...]) -> None:
    assert decode_key(encode_key(*key_parts)) == key_parts


@given(st.lists(parts, min_size=2, max_size=20))
def test_byte_order_is_tuple_order(many: list[tuple[str, ...]]) -> None:
    assert sorted(many, key=lambda p: encode_key(*p)) == sorted(many)


@given(parts, parts, st.lists(part, min_size=1, max_size=3))
def test_prefix_selects_exactly_the_keys_extending_the_parts(
    scope: tuple[str, ...], other: tuple[str, ...], rest: list[str]
) -> None:
    prefix = prefix_of(*scope)
    assert encode_key(*scope, *rest).startswith(prefix)
    assert not encode_key(*scope).startswith(prefix)  # the record named by scope itself
    extends = other[: len(scope)] == scope and len(other) > len(scope)
    assert encode_key(*other).startswith(prefix) == extends


def test_a_prefix_does_not_match_a_longer_sibling() -> None:
    assert not encode_key("sku-10", "a").startswith(prefix_of("sku-1"))
    assert encode_key("sku-1", "a").startswith(prefix_of("sku-1"))
    assert prefix_of() == b""


def test_nul_and_empty_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        encode_key("a\x00b")
    with pytest.raises(ValueError):
        encode_key("a", "\x00")
    with pytest.raises(ValueError):
        encode_key()


def test_non_ascii_parts() -> None:
    assert decode_key(encode_key("größe", "日本")) == ("größe", "日本")


@given(st.binary(max_size=4), st.binary(max_size=6))
def test_upper_bound_brackets_exactly_the_prefixed_keys(prefix: bytes, key: bytes) -> None:
    upper = prefix_upper_bound(prefix)
    if upper is None:
        assert prefix.strip(b"\xff") == b""
        assert key.startswith(prefix) == (key >= prefix)  # nothing sorts above all-0xff
    else:
        assert key.startswith(prefix) == (prefix <= key < upper)


def test_upper_bound_examples() -> None:
    assert prefix_upper_bound(b"ab") == b"ac"
    assert prefix_upper_bound(b"a\xff\xff") == b"b"
    assert prefix_upper_bound(b"\xff") is None
    assert prefix_upper_bound(b"") is None
