"""The RocksDB store: one rocksdict database and one checkpoint file per partition.

Layout: ``<root>/<store>/<partition>/data/`` (RocksDB) and ``.../<partition>/checkpoint``
(JSON ``{"changelog_offset": N}``, see checkpoint_file.py).

Durability. The changelog topic is the source of truth; local data only has to be at
least as new as the checkpoint, so that a replay from the checkpoint (idempotent: values
are absolute) rebuilds the rest. So:

- Writes go through the write-ahead log with no fsync each: a killed process loses
  nothing that reached the OS. The WAL stays on: without it a crash would drop memtable
  writes that the checkpoint already claims, and a replay starting at the checkpoint
  would never bring them back (Kafka Streams turns the WAL off only because it flushes
  the memtables before every checkpoint; measured here, that costs as much as it saves).
- A durable checkpoint fsyncs the WAL first, then writes the file (tmp, fsync, rename),
  so even after a power loss the data on disk is never older than the checkpoint.
- Like Kafka Streams under exactly-once, the file is rewritten only every
  `checkpoint_every_records` offsets or `checkpoint_every_s` seconds (and on close):
  `checkpoint_offset` is always current, while the file may lag a little, which after
  a crash only means replaying a little more. Three fsyncs per partition per commit
  would otherwise cost more than the batch itself. Set both to 0 to write every time.
"""

from __future__ import annotations

import shutil
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, Protocol

from rocksdict import (
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    DBRecoveryMode,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from streamalloc.errors import StateError
from streamalloc.runtime.state.base import Store, StorePartition
from streamalloc.runtime.state.checkpoint_file import read_checkpoint, remove_checkpoint, write_checkpoint
from streamalloc.runtime.state.keys import prefix_upper_bound

MiB = 1 << 20


def rocksdb_options(*, block_cache: Cache | None = None, write_buffer_bytes: int = 4 * MiB) -> Options:
    """Options for many small records written often and read by point lookups.

    `block_cache` (a rocksdict Cache) can be shared by all partitions of a process.
    """
    opts = Options(raw_mode=True)  # bytes in, bytes out: no pickling
    opts.create_if_missing(True)
    # Bounds memory per partition and the memtable flush that rocksdict's close() performs,
    # which keeps revocation quick; several buffers absorb write bursts while one flushes.
    # A worker holds one per store and partition (8 in the bench: 2 stores, 4 partitions): at 16 MiB
    # the memtables alone put the 200,000-line bench's worker at 313-336 MB peak RSS, at
    # 4 MiB 268-274 MB, for the same CPU (2 interleaved pairs, 2026-12-03).
    opts.set_write_buffer_size(write_buffer_bytes)
    opts.set_max_write_buffer_number(3)
    opts.set_compression_type(DBCompressionType.lz4())  # cheap to compress small values
    opts.set_level_compaction_dynamic_level_bytes(True)
    opts.set_bytes_per_sync(MiB)  # smooth background writeback instead of bursts
    # A torn WAL tail after a crash recovers to a consistent prefix instead of failing open.
    opts.set_wal_recovery_mode(DBRecoveryMode.point_in_time())
    # Gets on the hot path: a whole-key bloom filter in SST files and in the memtable spares
    # reads for keys that are absent (the first sight of every SKU or order).
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_block_cache(block_cache if block_cache is not None else Cache(32 * MiB))
    opts.set_block_based_table_factory(table)
    opts.set_memtable_prefix_bloom_ratio(0.05)
    opts.set_memtable_whole_key_filtering(True)
    # RocksDB keeps an info LOG per open; do not let them pile up across restarts.
    opts.set_keep_log_file_num(2)
    opts.set_max_log_file_size(4 * MiB)
    return opts


class _DB(Protocol):
    """The part of rocksdict.Rdict used here (a closed partition swaps in _ClosedDB)."""

    def get(self, key: bytes) -> bytes | None: ...
    def items(
        self, backwards: bool = ..., from_key: bytes | None = ..., read_opt: ReadOptions | None = ...
    ) -> Iterator[tuple[Any, Any]]: ...
    def write(self, write_batch: WriteBatch, write_opt: WriteOptions | None = ...) -> None: ...
    def flush_wal(self, sync: bool = ...) -> None: ...
    def close(self) -> None: ...


class _ClosedDB:
    """Stands in for the database once the partition is closed, so reads fail clearly."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise StateError("store partition is closed")

    get = items = write = flush_wal = close = _refuse


_CLOSED_DB: _DB = _ClosedDB()


class _Scan:
    """An iterator over a RocksDB iterator that the partition can cut off when it closes.

    A live RocksDB iterator keeps the database open (and its lock held), so a suspended
    scan would otherwise stop a revoked partition from really closing or being reopened.
    """

    __slots__ = ("_source", "_keep", "__weakref__")

    def __init__(self, source: Iterator[tuple[bytes, bytes]], keep: object = None) -> None:
        self._source: Iterator[tuple[bytes, bytes]] | None = source
        # rocksdict's iterator points into the upper-bound bytes without holding them:
        # they must live as long as the iterator, or the scan ends early (found in tests).
        self._keep = keep

    def __iter__(self) -> _Scan:
        return self

    def __next__(self) -> tuple[bytes, bytes]:
        source = self._source
        if source is None:
            raise StateError("store partition closed during a scan")
        return next(source)

    def release(self) -> None:
        self._source = None  # the RocksDB iterator goes first, then what it points into
        self._keep = None


class _PrefixFilter:
    """Stops at the first key outside `prefix` (for prefixes without an upper bound)."""

    __slots__ = ("_source", "_prefix")

    def __init__(self, source: Iterator[tuple[bytes, bytes]], prefix: bytes) -> None:
        self._source = source
        self._prefix = prefix

    def __iter__(self) -> _PrefixFilter:
        return self

    def __next__(self) -> tuple[bytes, bytes]:
        item = next(self._source)
        if not item[0].startswith(self._prefix):
            raise StopIteration
        return item


class RocksDBStorePartition(StorePartition):
    def __init__(
        self,
        store_name: str,
        partition: int,
        path: Path,
        options: Options,
        *,
        checkpoint_every_records: int = 10_000,
        checkpoint_every_s: float = 10.0,
    ) -> None:
        super().__init__(store_name, partition)
        self.path = path
        self._every_records = checkpoint_every_records
        self._every_s = checkpoint_every_s
        self._data_dir = path / "data"
        self._checkpoint_path = path / "checkpoint"
        self._options = options
        # No fsync per write (durability comes from the changelog); the WAL stays on.
        self._write_options = WriteOptions()
        self._scans: weakref.WeakSet[_Scan] = weakref.WeakSet()
        path.mkdir(parents=True, exist_ok=True)
        self._checkpoint = self._durable = read_checkpoint(self._checkpoint_path)
        self._durable_at = time.monotonic()
        self._db: _DB = self._open_db()

    def _open_db(self) -> _DB:
        try:
            db: _DB = Rdict(str(self._data_dir), self._options)
        except Exception as exc:  # rocksdict raises bare Exception (e.g. the LOCK is held)
            raise StateError(f"cannot open {self!r} at {self._data_dir}: {exc}") from exc
        return db

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def _point_reader(self) -> Callable[[bytes], bytes | None]:
        # Rdict.get itself: no Python frame per read. It raises once the database is
        # closed, and wipe swaps the database, which PartitionTransaction checks for.
        return self._db.get

    @property
    def durable_checkpoint_offset(self) -> int | None:
        """The offset in the checkpoint file (it may lag `checkpoint_offset`, see above)."""
        return self._durable

    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        # Created now, so the scan sees the data as of this call (an implicit snapshot).
        upper = prefix_upper_bound(prefix)
        read_options = ReadOptions()
        if upper is not None:
            read_options.set_iterate_upper_bound(upper)  # RocksDB stops at the bound itself
        items = iter(self._db.items(from_key=prefix or None, read_opt=read_options))
        if upper is None and prefix:
            items = _PrefixFilter(items, prefix)
        scan = _Scan(items, keep=(upper, read_options))
        self._scans.add(scan)
        return scan

    def _write(self, updates: Mapping[bytes, bytes | None]) -> None:
        batch = WriteBatch(raw_mode=True)
        put, delete = batch.put, batch.delete
        try:
            for key, value in updates.items():
                if value is None:
                    delete(key)
                else:
                    put(key, value)
        except (KeyError, ValueError, TypeError) as exc:  # rocksdict's refusal of non-bytes
            raise TypeError(f"store keys and values are bytes: {exc}") from exc
        try:
            self._db.write(batch, self._write_options)
        except StateError:
            raise
        except Exception as exc:  # an I/O error from RocksDB
            raise StateError(f"{self!r}: write failed: {exc}") from exc

    def _save_checkpoint(self, offset: int) -> None:
        durable = self._durable
        if (
            durable is not None
            and 0 <= offset - durable < self._every_records
            and time.monotonic() - self._durable_at < self._every_s
        ):
            return  # recorded in memory; the file catches up later or on close
        # The WAL holds every write so far; sync it first so the data on disk is at least
        # as new as the checkpoint even if the machine (not only the process) dies.
        self._db.flush_wal(True)
        self._persist_checkpoint(offset)

    def _persist_checkpoint(self, offset: int) -> None:
        write_checkpoint(self._checkpoint_path, offset)
        self._durable = offset
        self._durable_at = time.monotonic()

    def _wipe(self) -> None:
        # Checkpoint first: a crash in the middle must leave the partition untrusted.
        remove_checkpoint(self._checkpoint_path)
        self._durable = None
        self._shut()
        shutil.rmtree(self._data_dir, ignore_errors=True)
        self._db = self._open_db()

    def _close(self) -> None:
        self._shut()  # syncs the WAL, so the data is on disk before the checkpoint below
        if self._checkpoint is not None and self._checkpoint != self._durable:
            self._persist_checkpoint(self._checkpoint)

    def _shut(self) -> None:
        for scan in list(self._scans):
            scan.release()  # drop live iterators, or the database would stay open
        db, self._db = self._db, _CLOSED_DB
        try:
            db.close()  # syncs the WAL and flushes the memtable (bounded by write_buffer_bytes)
        except Exception as exc:
            raise StateError(f"{self!r}: close failed: {exc}") from exc


class RocksDBStore(Store):
    """A store whose partitions are RocksDB databases under `root/<name>/<partition>/`."""

    def __init__(
        self,
        name: str,
        root: str | Path,
        *,
        options: Options | None = None,
        checkpoint_every_records: int = 10_000,
        checkpoint_every_s: float = 10.0,
    ) -> None:
        super().__init__(name)
        self.root = Path(root) / name
        self._options = options if options is not None else rocksdb_options()
        self._checkpoint_every = (checkpoint_every_records, checkpoint_every_s)

    def _open(self, p: int) -> StorePartition:
        records, seconds = self._checkpoint_every
        return RocksDBStorePartition(
            self.name,
            p,
            self.root / str(p),
            self._options,
            checkpoint_every_records=records,
            checkpoint_every_s=seconds,
        )
