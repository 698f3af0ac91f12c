"""What only the RocksDB store promises: files on disk, their layout, locks and durability."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamalloc.errors import StateError
from streamalloc.runtime.state import InMemoryStore, RocksDBStore, RocksDBStorePartition


def rocks(tmp_path: Path, **kwargs: float) -> RocksDBStore:
    return RocksDBStore("alloc", tmp_path, **kwargs)  # type: ignore[arg-type]


def checkpoint_file(tmp_path: Path, p: int = 0) -> Path:
    return tmp_path / "alloc" / str(p) / "checkpoint"


def test_data_and_checkpoint_survive_a_new_store_object(tmp_path: Path) -> None:
    store = rocks(tmp_path)
    part = store.partition(3)
    txn = part.begin()
    txn.set(b"a", b"1")
    txn.flush(42)
    store.close()
    reopened = rocks(tmp_path)
    again = reopened.partition(3)
    assert again.get(b"a") == b"1" and again.checkpoint_offset == 42
    reopened.close()


def test_in_memory_data_lives_only_as_long_as_its_store() -> None:
    store = InMemoryStore("alloc")
    store.partition(0).write_batch({b"a": b"1"})
    store.partition(0).write_checkpoint(1)
    store.close()
    fresh = InMemoryStore("alloc").partition(0)
    assert fresh.get(b"a") is None and fresh.needs_full_restore


def test_layout_and_checkpoint_format(tmp_path: Path) -> None:
    store = rocks(tmp_path)
    part = store.partition(0)
    assert isinstance(part, RocksDBStorePartition) and part.path == tmp_path / "alloc" / "0"
    part.write_checkpoint(7)
    assert json.loads(checkpoint_file(tmp_path).read_text()) == {"changelog_offset": 7}
    assert sorted(p.name for p in part.path.iterdir()) == ["checkpoint", "data"]  # no .tmp left
    store.close()


def test_checkpoint_file_is_written_every_n_offsets_and_on_close(tmp_path: Path) -> None:
    store = rocks(tmp_path, checkpoint_every_records=100, checkpoint_every_s=3600)
    part = store.partition(0)
    assert isinstance(part, RocksDBStorePartition)
    part.write_checkpoint(10)  # the first one is written at once
    assert part.durable_checkpoint_offset == 10
    part.write_checkpoint(50)
    assert part.checkpoint_offset == 50  # current in memory
    assert json.loads(checkpoint_file(tmp_path).read_text())["changelog_offset"] == 10  # lagging on disk
    part.write_checkpoint(110)
    assert json.loads(checkpoint_file(tmp_path).read_text())["changelog_offset"] == 110
    part.write_checkpoint(120)
    store.close_partition(0)
    assert json.loads(checkpoint_file(tmp_path).read_text())["changelog_offset"] == 120
    store.close()


def test_checkpoint_file_every_time_when_asked(tmp_path: Path) -> None:
    store = rocks(tmp_path, checkpoint_every_records=0, checkpoint_every_s=0)
    part = store.partition(0)
    for offset in (1, 2, 3):
        part.write_checkpoint(offset)
        assert json.loads(checkpoint_file(tmp_path).read_text())["changelog_offset"] == offset
    store.close()


def test_a_lagging_checkpoint_file_only_means_replaying_more(tmp_path: Path) -> None:
    # A crash while the file lags: the data is newer than the file says, never older.
    store = rocks(tmp_path, checkpoint_every_records=100, checkpoint_every_s=3600)
    part = store.partition(0)
    part.write_batch({b"a": b"1"})
    part.write_checkpoint(1)
    part.write_batch({b"a": b"2"})
    part.write_checkpoint(2)
    crashed = json.loads(checkpoint_file(tmp_path).read_text())["changelog_offset"]
    assert crashed == 1 and part.get(b"a") == b"2"
    store.close()


def test_wipe_deletes_the_rocksdb_files_and_the_checkpoint(tmp_path: Path) -> None:
    store = rocks(tmp_path)
    part = store.partition(0)
    assert isinstance(part, RocksDBStorePartition)
    part.write_batch({b"k%05d" % i: b"v" * 50 for i in range(5000)})
    part.write_checkpoint(5000)
    store.close_partition(0)  # rocksdict's close flushes the memtable: an .sst exists now
    part = store.partition(0)
    data = tmp_path / "alloc" / "0" / "data"
    assert list(data.glob("*.sst"))
    part.wipe()
    assert not checkpoint_file(tmp_path).exists()
    assert not list(data.glob("*.sst"))
    assert part.get(b"k00001") is None and list(part.iter_prefix(b"")) == []
    store.close()


def test_corrupt_checkpoint_means_untrusted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = rocks(tmp_path)
    store.partition(0).write_checkpoint(5)
    store.close()
    for garbage in ("", "{", '{"changelog_offset": -1}', '{"changelog_offset": "5"}', "[5]"):
        checkpoint_file(tmp_path).write_text(garbage)
        again = rocks(tmp_path)
        with caplog.at_level(logging.WARNING, logger="streamalloc.runtime.state"):
            part = again.partition(0)
        assert part.checkpoint_offset is None and part.needs_full_restore, garbage
        assert "unreadable checkpoint" in caplog.text
        again.close()


def test_a_partition_open_elsewhere_is_refused(tmp_path: Path) -> None:
    first = rocks(tmp_path)
    first.partition(0)
    second = rocks(tmp_path)
    with pytest.raises(StateError, match="cannot open"):
        second.partition(0)
    first.close()
    second.partition(0)  # the lock went with the close
    second.close()


def test_close_cuts_off_a_suspended_scan_so_the_partition_can_reopen(tmp_path: Path) -> None:
    store = rocks(tmp_path)
    part = store.partition(0)
    part.write_batch({b"a": b"1", b"b": b"2"})
    scan = part.iter_prefix(b"")
    merged = part.begin().iter_prefix(b"")
    assert next(scan) == (b"a", b"1") and next(merged) == (b"a", b"1")
    store.close_partition(0)
    again = store.partition(0)  # would fail on RocksDB's LOCK if the iterators kept it open
    assert again.get(b"b") == b"2"
    with pytest.raises(StateError):
        next(scan)
    with pytest.raises(StateError):
        next(merged)
    store.close()


def test_prefix_scans_keep_their_computed_upper_bound_alive(tmp_path: Path) -> None:
    # Regression: rocksdict does not own the iterate_upper_bound bytes; when they were
    # freed, scans stopped after one record.
    store = rocks(tmp_path)
    part = store.partition(0)
    part.write_batch({b"p%02d-%03d" % (p, i): b"v" for p in range(20) for i in range(50)})
    scans = [part.iter_prefix(b"p%02d-" % p) for p in range(20)]
    churn = [bytes([i % 256]) * (i % 7 + 2) for i in range(10_000)]
    assert [len(list(scan)) for scan in scans] == [50] * 20
    assert churn
    store.close()


def test_a_transaction_across_a_wipe_fails_cleanly(tmp_path: Path) -> None:
    store = rocks(tmp_path)
    part = store.partition(0)
    part.write_batch({b"a": b"1"})
    txn = part.begin()
    part.wipe()
    with pytest.raises(StateError, match="wiped or reopened"):
        txn.get(b"a")
    store.close()


def test_writes_without_checkpoint_survive_reopen_but_are_untrusted(tmp_path: Path) -> None:
    store = rocks(tmp_path)
    store.partition(0).write_batch({b"a": b"1"})
    store.close()
    part = rocks(tmp_path).partition(0)
    assert part.get(b"a") == b"1" and part.needs_full_restore
    part.close()


_WRITER = """
import sys
from streamalloc.runtime.state import RocksDBStore
store = RocksDBStore("alloc", sys.argv[1], checkpoint_every_records=int(sys.argv[2]), checkpoint_every_s=0.05)
part = store.partition(0)
offset = 0
while True:
    txn = part.begin()
    for _ in range(50):
        txn.set(b"rec-%08d" % offset, b"x")
        offset += 1
    txn.set(b"last", b"%d" % offset)
    txn.flush(offset)  # changelog offset == records written so far
    if offset == 5000:
        print("going", flush=True)
"""


@pytest.mark.parametrize("every", [0, 1000])
def test_after_kill_9_the_data_is_never_older_than_the_checkpoint(tmp_path: Path, every: int) -> None:
    args = [sys.executable, "-c", _WRITER, str(tmp_path), str(every)]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "going\n"
            time.sleep(0.3)
        finally:
            proc.kill()  # SIGKILL: no close, no flush
    store = rocks(tmp_path)
    part = store.partition(0)
    checkpoint = part.checkpoint_offset
    assert checkpoint is not None and checkpoint >= 5000
    last = part.get(b"last")
    assert last is not None and int(last) >= checkpoint
    recs = [k for k, _ in part.iter_prefix(b"rec-")]
    assert recs == [b"rec-%08d" % i for i in range(int(last))]  # whole batches, none torn
    store.close()
