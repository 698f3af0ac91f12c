"""A transaction against a plain dict model, on both stores: any mix of sets, deletes,
reads and scans must agree with the model, and flush or abort must land exactly."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamalloc.runtime.state import StorePartition

# Short keys over a tiny alphabet, with the edge bytes 0x00 and 0xff, so prefixes collide.
keys = st.binary(max_size=3).map(lambda b: bytes(b"\x00ab\xff"[x % 4] for x in b))
values = st.binary(min_size=0, max_size=3)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), keys, values),
        st.tuples(st.just("delete"), keys, st.none()),
        st.tuples(st.just("scan"), keys, st.none()),
    ),
    max_size=40,
)


def scanned(model: dict[bytes, bytes], prefix: bytes) -> list[tuple[bytes, bytes]]:
    return sorted((k, v) for k, v in model.items() if k.startswith(prefix))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.dictionaries(keys, values, max_size=10), steps=ops, commit=st.booleans())
def test_transaction_agrees_with_a_dict(
    part: StorePartition,
    base: dict[bytes, bytes],
    steps: list[tuple[str, bytes, bytes | None]],
    commit: bool,
) -> None:
    # One partition serves every example: empty it, then lay down the base.
    reset: dict[bytes, bytes | None] = {k: None for k, _ in part.iter_prefix(b"")}
    reset.update(base)
    part.write_batch(reset)
    assert dict(part.iter_prefix(b"")) == base

    txn = part.begin()
    model = dict(base)
    changes: dict[bytes, bytes | None] = {}
    for op, key, value in steps:
        if op == "set":
            assert value is not None
            txn.set(key, value)
            model[key] = changes[key] = value
        elif op == "delete":
            txn.delete(key)
            model.pop(key, None)
            changes[key] = None
        else:
            assert list(txn.iter_prefix(key)) == scanned(model, key)
        assert txn.get(key) == model.get(key)

    assert dict(txn.changes) == changes
    for prefix in (b"", b"\x00", b"a", b"\xff", b"a\xff", b"\xff\xff"):
        assert list(txn.iter_prefix(prefix)) == scanned(model, prefix)
    assert dict(part.iter_prefix(b"")) == base  # nothing leaked before the end

    if commit:
        txn.prepare()
        txn.flush(len(steps))
        assert dict(part.iter_prefix(b"")) == model
        assert part.checkpoint_offset == len(steps)
    else:
        txn.abort()
        assert dict(part.iter_prefix(b"")) == base
    for key in set(model) | set(base):
        assert part.get(key) == (model if commit else base).get(key)
