"""Store -> StorePartition: the storage contract every implementation fulfils.

A `Store` is one named store across input partitions; a `StorePartition` holds one
partition's keys and values (bytes) plus its checkpoint, the changelog offset its data
reaches. Processing never writes a partition directly: it goes through a
`PartitionTransaction` (transaction.py) whose changes are applied by `flush` after the
Kafka transaction commits.

A partition's lifecycle (named after Kafka Streams' restore phases) is guarded here, in
`_transition` and `_require`, and nowhere else:

    REGISTERED --mark_restoring--> RESTORING --mark_active--> ACTIVE
    REGISTERED --mark_active--> ACTIVE          (a store with nothing to restore)
    any --close--> CLOSED                       (close is idempotent)
"""

from __future__ import annotations

import enum
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType

from streamalloc.errors import StateError
from streamalloc.runtime.state.transaction import PartitionTransaction


class PartitionStatus(enum.Enum):
    REGISTERED = "registered"  # opened; local data not yet trusted or brought up to date
    RESTORING = "restoring"  # replaying the changelog
    ACTIVE = "active"  # processing
    CLOSED = "closed"


_REGISTERED, _RESTORING, _ACTIVE, _CLOSED = PartitionStatus

_TRANSITIONS: Mapping[PartitionStatus, frozenset[PartitionStatus]] = {
    _REGISTERED: frozenset({_RESTORING, _ACTIVE, _CLOSED}),
    _RESTORING: frozenset({_ACTIVE, _CLOSED}),
    _ACTIVE: frozenset({_CLOSED}),
    _CLOSED: frozenset(),
}
_OPEN = frozenset({_REGISTERED, _RESTORING, _ACTIVE})
# REGISTERED may process too: a store without a changelog (or a test harness) skips restore.
_CAN_BEGIN = frozenset({_REGISTERED, _ACTIVE})
# Never under an active partition's open transactions.
_CAN_WIPE = frozenset({_REGISTERED, _RESTORING})


class StorePartition(ABC):
    """One store's data for one input partition: bytes keys and values, and a checkpoint."""

    def __init__(self, store_name: str, partition: int) -> None:
        self.store_name = store_name
        self.partition = partition
        self._status = _REGISTERED
        self._checkpoint: int | None = None  # subclasses load it when they open
        #: Counts the writes to the data (a transaction's flush, a changelog restore, a wipe):
        #: a cache of the partition's contents is current only at the generation it was made.
        self.generation = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store_name!r}, {self.partition}, {self._status.value})"

    # ------------------------------------------------------------------ status

    @property
    def status(self) -> PartitionStatus:
        return self._status

    def mark_restoring(self) -> None:
        self._transition(_RESTORING)

    def mark_active(self) -> None:
        self._transition(_ACTIVE)

    def close(self) -> None:
        """Release the partition's resources quickly (revocation path); a second close is a no-op."""
        if self._status is _CLOSED:
            return
        self._transition(_CLOSED)
        self._close()

    def _transition(self, to: PartitionStatus) -> None:
        if to not in _TRANSITIONS[self._status]:
            raise StateError(f"{self!r}: illegal transition to {to.value}")
        self._status = to

    def _require(self, allowed: frozenset[PartitionStatus], action: str) -> None:
        if self._status not in allowed:
            raise StateError(f"{self!r}: cannot {action} while {self._status.value}")

    def _require_open(self, action: str) -> None:
        self._require(_OPEN, action)

    # ------------------------------------------------------------------ data

    @abstractmethod
    def get(self, key: bytes) -> bytes | None:
        """The value at `key`, or None. Raises StateError once closed."""

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with `prefix`, sorted by key, as of this call."""
        self._require(_OPEN, "read")
        return self._scan(prefix)

    def write_batch(self, updates: Mapping[bytes, bytes | None]) -> None:
        """Apply `updates` atomically (None deletes); all or nothing. Raises TypeError on non-bytes."""
        self._require(_OPEN, "write")
        if updates:
            self._write(updates)
            self.generation += 1

    def apply_changelog(self, records: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Restore path: apply changelog records (None value = tombstone) atomically, in order."""
        self._require(_OPEN, "apply the changelog")
        # Changelog values are absolute, so the last record of a key is the one that counts.
        updates = dict(records)
        if updates:
            self._write(updates)
            self.generation += 1

    def begin(self) -> PartitionTransaction:
        """A transaction buffering changes to this partition until its flush."""
        self._require(_CAN_BEGIN, "begin a transaction")
        return PartitionTransaction(self)

    def wipe(self) -> None:
        """Drop all local data and the checkpoint: the partition restores from scratch."""
        self._require(_CAN_WIPE, "wipe")
        self._wipe()
        self._checkpoint = None
        self.generation += 1

    # ------------------------------------------------------------------ checkpoint

    @property
    def checkpoint_offset(self) -> int | None:
        """The changelog offset the local data reaches (the next one to read), or None."""
        return self._checkpoint

    @property
    def needs_full_restore(self) -> bool:
        """No checkpoint: whatever data is present cannot be trusted; wipe and restore all."""
        return self._checkpoint is None

    def write_checkpoint(self, changelog_offset: int) -> None:
        """Record that the local data reaches `changelog_offset`.

        Call only after the data it covers was written: data may be newer than the
        checkpoint (replay is idempotent), never older. `checkpoint_offset` reflects it at
        once; RocksDB may defer the durable file write a little (see rocksdb.py).
        """
        if type(changelog_offset) is not int or changelog_offset < 0:
            raise ValueError(f"a changelog offset is an int >= 0, got {changelog_offset!r}")
        self._require(_OPEN, "write a checkpoint")
        self._save_checkpoint(changelog_offset)
        self._checkpoint = changelog_offset

    # ------------------------------------------------------------------ implementation hooks

    def _point_reader(self) -> Callable[[bytes], bytes | None]:
        """What a transaction calls for its reads: `get`, or something faster that fails
        (with any exception) once the partition is closed or its storage replaced."""
        return self.get

    @abstractmethod
    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...

    @abstractmethod
    def _write(self, updates: Mapping[bytes, bytes | None]) -> None: ...

    @abstractmethod
    def _save_checkpoint(self, offset: int) -> None: ...

    @abstractmethod
    def _wipe(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...


_STORE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class Store(ABC):
    """One named store across partitions; opens each partition on demand."""

    def __init__(self, name: str) -> None:
        if not _STORE_NAME.fullmatch(name) or name in (".", ".."):
            raise ValueError(f"a store name is letters, digits, '_', '.' and '-', got {name!r}")
        self.name = name
        self._partitions: dict[int, StorePartition] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def partition(self, p: int) -> StorePartition:
        """The open partition `p`, opening it (status REGISTERED) if needed."""
        part = self._partitions.get(p)
        if part is not None and part.status is not _CLOSED:
            return part
        if self._closed:
            raise StateError(f"{self!r} is closed")
        if type(p) is not int or p < 0:
            raise ValueError(f"a partition is an int >= 0, got {p!r}")
        part = self._partitions[p] = self._open(p)
        return part

    def close_partition(self, p: int) -> None:
        """Close partition `p` if open (revocation)."""
        part = self._partitions.pop(p, None)
        if part is not None:
            part.close()

    def partitions(self) -> Mapping[int, StorePartition]:
        """The partitions opened and not closed through this store, by number (read-only view)."""
        return MappingProxyType(self._partitions)

    def close(self) -> None:
        """Close every partition (all of them, even if one fails); no partitions open afterwards."""
        self._closed = True
        failure: Exception | None = None
        for p in list(self._partitions):
            try:
                self.close_partition(p)
            except Exception as exc:  # close the rest, then report the first failure
                failure = failure or exc
        if failure is not None:
            raise failure

    @abstractmethod
    def _open(self, p: int) -> StorePartition: ...
