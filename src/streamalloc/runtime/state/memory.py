"""The in-memory store: for tests, the stage harness and stores that need no durability.

What a partition holds (data and checkpoint) lives in the store object, like files on a
disk: closing a partition and opening it again sees the same data and checkpoint; a new
`InMemoryStore` starts empty. So a worker that restarts with in-memory stores finds no
checkpoint and restores everything from the changelog.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

from streamalloc.errors import StateError
from streamalloc.runtime.state.base import Store, StorePartition
from streamalloc.runtime.state.keys import prefix_upper_bound


class _Disk:
    """What survives a partition's close in an in-memory store."""

    __slots__ = ("data", "checkpoint")

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.checkpoint: int | None = None


class _ClosedData(dict[bytes, bytes]):
    __slots__ = ()

    def get(self, *args: Any) -> NoReturn:
        raise StateError("store partition is closed")


_CLOSED_DATA = _ClosedData()


class InMemoryStorePartition(StorePartition):
    def __init__(self, store_name: str, partition: int, disk: _Disk) -> None:
        super().__init__(store_name, partition)
        self._disk = disk
        self._data = disk.data
        self._index: list[bytes] | None = None  # sorted keys, rebuilt when keys come or go
        self._checkpoint = disk.checkpoint

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        index = self._index
        if index is None:
            index = self._index = sorted(self._data)
        lo = bisect_left(index, prefix)
        upper = prefix_upper_bound(prefix)
        hi = len(index) if upper is None else bisect_left(index, upper, lo)
        data = self._data
        return iter([(key, data[key]) for key in index[lo:hi]])  # a snapshot, like RocksDB's

    def _write(self, updates: Mapping[bytes, bytes | None]) -> None:
        # Check everything first so a bad entry leaves the partition untouched (atomic),
        # and refuse what RocksDB would refuse so tests on this store catch it too.
        for key, value in updates.items():
            if type(key) is not bytes or not (value is None or type(value) is bytes):
                raise TypeError(f"store keys and values are bytes, got {key!r}: {value!r}")
        data = self._data
        reindex = False
        for key, value in updates.items():
            if value is None:
                if data.pop(key, None) is not None:
                    reindex = True
            else:
                if key not in data:
                    reindex = True
                data[key] = value
        if reindex:
            self._index = None

    def _save_checkpoint(self, offset: int) -> None:
        self._disk.checkpoint = offset

    def _wipe(self) -> None:
        self._disk.checkpoint = None
        self._data.clear()
        self._index = None

    def _close(self) -> None:
        self._data = _CLOSED_DATA
        self._index = None


class InMemoryStore(Store):
    """A store whose partitions live in this object's memory."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._disks: dict[int, _Disk] = {}

    def _open(self, p: int) -> StorePartition:
        disk = self._disks.get(p)
        if disk is None:
            disk = self._disks[p] = _Disk()
        return InMemoryStorePartition(self.name, p, disk)
