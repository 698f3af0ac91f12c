"""The checkpoint file: how far into its changelog a store partition's local data reaches.

Written atomically (temporary file, fsync, rename, fsync of the directory), so a crash
leaves either the old checkpoint or the new one, never a torn file. A file that cannot be
read as a checkpoint is treated as missing: the partition is then untrusted and restored
from scratch, which is always correct (Kafka Streams treats a corrupt .checkpoint alike).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

_log = logging.getLogger("streamalloc.runtime.state")

FIELD = "changelog_offset"


def read_checkpoint(path: Path) -> int | None:
    """The offset recorded at `path`, or None if there is no (valid) checkpoint."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        offset = json.loads(raw)[FIELD]
    except (ValueError, KeyError, TypeError):
        offset = None
    if type(offset) is not int or offset < 0:
        _log.warning(
            "ignoring unreadable checkpoint",
            extra={"path": str(path), "content": raw[:100].decode(errors="replace")},
        )
        return None
    return offset


def write_checkpoint(path: Path, offset: int) -> None:
    """Record `offset` at `path` durably and atomically."""
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps({FIELD: offset}).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)  # make the rename itself durable


def remove_checkpoint(path: Path) -> None:
    """Delete the checkpoint (and any leftover temporary file) durably."""
    path.with_name(path.name + ".tmp").unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    if path.parent.exists():
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
