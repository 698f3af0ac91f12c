"""PartitionTransaction: one batch's changes to one store partition, buffered until flush.

Reads see the transaction's own writes; nothing reaches the partition before `flush`,
which the commit protocol calls only after the Kafka transaction committed. Status:

    STARTED --prepare--> PREPARED --flush--> COMPLETE
    STARTED --flush--> COMPLETE
    STARTED | PREPARED --abort (or a failed flush)--> FAILED

`get`, `set` and `delete` are the hot path (a get and a set per record), so they carry no
status check of their own: `_transition` swaps the change buffer for one that refuses
writes once PREPARED and refuses everything once COMPLETE or FAILED. The status is thus
guarded in `_transition` and `_require` only, and a plain dict serves the STARTED state.
"""

from __future__ import annotations

import enum
from bisect import bisect_left, insort
from collections.abc import Iterator, Mapping
from itertools import islice
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn

from streamalloc.errors import StateError
from streamalloc.runtime.state.keys import prefix_upper_bound

if TYPE_CHECKING:
    from streamalloc.runtime.state.base import StorePartition


class TransactionStatus(enum.Enum):
    STARTED = "started"
    PREPARED = "prepared"
    COMPLETE = "complete"
    FAILED = "failed"


_STARTED, _PREPARED, _COMPLETE, _FAILED = TransactionStatus

_TRANSITIONS: Mapping[TransactionStatus, frozenset[TransactionStatus]] = {
    _STARTED: frozenset({_PREPARED, _COMPLETE, _FAILED}),
    _PREPARED: frozenset({_COMPLETE, _FAILED}),
    _COMPLETE: frozenset(),
    _FAILED: frozenset(),
}
_READABLE = frozenset({_STARTED, _PREPARED})
_MISSING: Any = object()


class _Prepared(dict[bytes, bytes | None]):
    """The change buffer once prepared: its changes are being written to the changelog."""

    __slots__ = ()

    def __setitem__(self, key: bytes, value: bytes | None) -> None:
        raise StateError("transaction is prepared: no more writes")


class _Finished(dict[bytes, bytes | None]):
    """Stands in for the change buffer once the transaction is complete or failed."""

    __slots__ = ("status",)

    def __init__(self, status: TransactionStatus) -> None:
        super().__init__()
        self.status = status

    def _refuse(self, *args: Any) -> NoReturn:
        raise StateError(f"transaction is {self.status.value}: begin a new one")

    get = __getitem__ = __setitem__ = __contains__ = _refuse


class PartitionTransaction:
    """Changes to one store partition, coalesced per key; `flush` applies them atomically."""

    __slots__ = ("partition", "flushed_generation", "_read", "_changes", "_seen", "_sorted", "_status")

    def __init__(self, partition: StorePartition) -> None:
        self.partition = partition
        self._read = partition._point_reader()  # bound once: the fastest read it offers
        #: key -> new value, None for a delete; keys are never removed (see _sorted_keys).
        self._changes: dict[bytes, bytes | None] = {}
        #: key -> the partition's value, None for none: each key is read from it at most once
        #: (a key written since is answered from `_changes`, which is looked at first).
        self._seen: dict[bytes, bytes | None] = {}
        self._sorted: list[bytes] = []  # the changed keys, sorted; caught up lazily
        self._status = _STARTED
        #: The partition's `generation` right after this transaction's flush (None before it).
        self.flushed_generation: int | None = None

    def __repr__(self) -> str:
        return f"PartitionTransaction({self.partition!r}, {self._status.value}, {len(self._changes)} changes)"

    @property
    def status(self) -> TransactionStatus:
        return self._status

    # ------------------------------------------------------------------ hot path

    def get(self, key: bytes) -> bytes | None:
        """The value at `key` as this transaction sees it (its own writes first)."""
        value = self._changes.get(key, _MISSING)
        if value is _MISSING:
            value = self._seen.get(key, _MISSING)
            if value is _MISSING:
                try:
                    value = self._seen[key] = self._read(key)
                except Exception as exc:
                    self._check_reader(exc)
                    raise
        return value  # type: ignore[no-any-return]

    def set(self, key: bytes, value: bytes) -> None:
        self._changes[key] = value

    def delete(self, key: bytes) -> None:
        self._changes[key] = None

    # ------------------------------------------------------------------ scans and changes

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The partition's keys under `prefix` overlaid with this transaction's, sorted.

        Both sides are taken as of this call; writes made while iterating are not seen.
        """
        self._require(_READABLE, "read")
        keys = self._sorted_keys()
        lo = bisect_left(keys, prefix)
        upper = prefix_upper_bound(prefix)
        hi = len(keys) if upper is None else bisect_left(keys, upper, lo)
        base = self.partition.iter_prefix(prefix)
        if lo == hi:
            return base
        changes = self._changes
        return _overlay(base, [(key, changes[key]) for key in keys[lo:hi]])

    @property
    def changes(self) -> Mapping[bytes, bytes | None]:
        """The last write of each changed key (None = delete): the batch's changelog records."""
        self._require(_READABLE, "read changes")
        return MappingProxyType(self._changes)

    # ------------------------------------------------------------------ completion

    def prepare(self) -> Mapping[bytes, bytes | None]:
        """Freeze the changes (no more writes) and return them for the changelog."""
        self._transition(_PREPARED)
        return MappingProxyType(self._changes)

    def flush(self, changelog_offset: int | None) -> None:
        """Apply the changes to the partition atomically, then checkpoint `changelog_offset`.

        The order matters: a crash between the two leaves data newer than the checkpoint,
        which a replay from the checkpoint corrects; the reverse would lose changes.
        """
        self._require(_READABLE, "flush")
        partition = self.partition
        try:
            if self._changes:
                partition.write_batch(self._changes)
            if changelog_offset is not None:
                partition.write_checkpoint(changelog_offset)
        except BaseException:
            self._transition(_FAILED)
            raise
        self.flushed_generation = partition.generation
        self._transition(_COMPLETE)

    def abort(self) -> None:
        """Drop the changes; the partition is untouched. Aborting a failed transaction is a no-op."""
        if self._status is not _FAILED:
            self._transition(_FAILED)

    # ------------------------------------------------------------------ guard

    def _require(self, allowed: frozenset[TransactionStatus], action: str) -> None:
        if self._status not in allowed:
            raise StateError(f"cannot {action}: transaction is {self._status.value}")

    def _transition(self, to: TransactionStatus) -> None:
        if to not in _TRANSITIONS[self._status]:
            raise StateError(f"transaction is {self._status.value}: cannot become {to.value}")
        self._status = to
        if to is _PREPARED:
            self._changes = _Prepared(self._changes)
        else:  # COMPLETE or FAILED
            self._changes = _Finished(to)
            self._seen = {}
            self._sorted = []

    def _check_reader(self, exc: Exception) -> None:
        """Turn a read on a closed or reopened partition into StateError."""
        partition = self.partition
        partition._require_open("read")
        if self._read != partition._point_reader():
            raise StateError(f"{partition!r} was wiped or reopened under this transaction") from exc

    def _sorted_keys(self) -> list[bytes]:
        # Keys are only ever added to the dict and a dict keeps insertion order, so the
        # last len(changes) - len(sorted) keys are exactly the new ones; reversed() reaches
        # them without walking the old ones. That keeps a scan after a set cheap even when
        # the batch has changed thousands of keys, with no bookkeeping in set().
        keys = self._sorted
        changes = self._changes
        new = len(changes) - len(keys)
        if new:
            fresh = islice(reversed(changes), new)
            if new <= _INSORT_MAX:
                for key in fresh:
                    insort(keys, key)
            else:  # timsort merges the sorted run with the sorted tail
                keys.extend(fresh)
                keys.sort()
        return keys


_INSORT_MAX = 16  # below this many new keys, insertion (a memmove each) beats a re-sort


def _overlay(
    base: Iterator[tuple[bytes, bytes]], own: list[tuple[bytes, bytes | None]]
) -> Iterator[tuple[bytes, bytes]]:
    """Merge two key-sorted sequences; `own` wins on equal keys and None in it deletes."""
    i, n = 0, len(own)
    for key, value in base:
        while i < n and own[i][0] < key:
            own_key, own_value = own[i]
            i += 1
            if own_value is not None:
                yield own_key, own_value
        if i < n and own[i][0] == key:
            own_value = own[i][1]
            i += 1
            if own_value is not None:
                yield key, own_value
            continue
        yield key, value
    for own_key, own_value in own[i:]:
        if own_value is not None:
            yield own_key, own_value
