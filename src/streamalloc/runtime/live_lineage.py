"""The `batch` header rule (lineage.py) applied live, by a stage that follows another's outputs.

`void_batches` judges a batch with the whole history at hand: a batch of incarnation A of a
task is void when a later incarnation B of the same task opened at or before the batch's
start on every input both name. A live reader (the order stage, reading `allocations`)
meets the records in offset order instead. On one partition, a leaked batch's records come
before those of the incarnation that redid its input (the embedded broker shows the leaked
transaction when the successor initialises its transactional id, before the successor
writes anything), so the reader learns that a batch is void at the first record of the
later incarnation, after it has applied the batch. `LiveBatches` tells it then which batch
it was and which keys (orders) it touched, so the reader can take those records back.

It keeps, per writing task, the last few batches seen on the partition (a batch that turns
void is its incarnation's last, or close to it) and remembers the void ones, so that a
record of a batch already known void is left out at once. A batch whose records seen here
all name the engine's clock or a table as cause consumed no input, as far as this reader
can tell, and is never void: the audit keeps such batches too (commands/audit.py
`punctuation_batches`), since the restore keeps them. The audit sees every topic; a batch
that mixes input and timers and shows only its timer records here is the one case where
the two can disagree, and then only if the successor's redo of those timers differs.

The state is a plain value (`dump`/`load`) that the stage keeps in its store, so that it
survives a restart of the reader as its orders do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from streamalloc.runtime.lineage import Batch, kept_batch

#: Batches kept per writing task, and void sources remembered.
KEEP_BATCHES = 4
KEEP_VOID = 64


def source_of(header: bytes | None) -> str:
    """A short stable name for the batch of `header` ("" without one)."""
    return "" if header is None else hashlib.blake2b(header, digest_size=8).hexdigest()


@dataclass
class _Seen:
    source: str
    batch: Batch
    engine_only: bool = True
    keys: dict[str, None] = field(default_factory=dict)  # in the order first seen


@dataclass
class LiveBatches:
    """What one input partition has shown of each writing task's batches (module doc)."""

    tasks: dict[str, list[_Seen]] = field(default_factory=dict)
    void: list[str] = field(default_factory=list)
    # The batch of the record observed last, while it stands: a batch's records come one
    # after another, and nothing but a record of another batch changes what is known of it.
    _last: tuple[bytes, str, _Seen] | None = field(default=None, repr=False, compare=False)

    def observe(
        self, header: bytes | None, key: str, engine_caused: bool
    ) -> tuple[str | None, dict[str, list[str]]]:
        """Note a record of the batch `header` about `key`.

        Returns the record's source (None: its batch is known void, leave it out) and the
        batches this record showed to be void, each with the keys it touched here.
        """
        if header is None:
            return "", {}
        last = self._last
        if last is not None and last[0] == header:  # what the full path below would find again
            current = last[2]
            current.engine_only = current.engine_only and engine_caused
            current.keys[key] = None
            return last[1], {}
        self._last = None
        source = source_of(header)
        if source in self.void:
            return None, {}
        try:
            batch = Batch.parse(header)
        except (ValueError, KeyError, TypeError):
            return source, {}  # not ours: nothing to judge
        seen = self.tasks.setdefault(batch.task, [])
        entry = next((e for e in reversed(seen) if e.source == source), None)
        voided: dict[str, list[str]] = {}
        if entry is None:
            if any(e.batch.incarnation > batch.incarnation and batch.redone_by(e.batch) for e in seen):
                self._void(source)
                return None, {}
            for e in seen:
                if e.batch.incarnation < batch.incarnation and not e.engine_only and e.batch.redone_by(batch):
                    voided[e.source] = list(e.keys)
                    self._void(e.source)
            seen[:] = [e for e in seen if e.source not in voided][-(KEEP_BATCHES - 1) :]
            entry = _Seen(source, batch)
            seen.append(entry)
        entry.engine_only = entry.engine_only and engine_caused
        entry.keys[key] = None
        self._last = (header, source, entry)
        return source, voided

    def _void(self, source: str) -> None:
        self.void.append(source)
        del self.void[:-KEEP_VOID]

    def dump(self) -> Any:
        """A marshal-able value of the state."""
        return (
            {
                task: [
                    (
                        e.source,
                        e.batch.incarnation,
                        dict(e.batch.opened),
                        dict(e.batch.start),
                        e.engine_only,
                        _dump_keys(e.keys),
                        tuple((inc, dict(at), seq) for inc, at, seq in e.batch.kept),
                        e.batch.seq,
                    )
                    for e in seen
                ]
                for task, seen in self.tasks.items()
            },
            list(self.void),
        )

    @classmethod
    def load(cls, value: Any) -> LiveBatches:
        tasks, void = value
        return cls(
            {task: [_load_seen(task, entry) for entry in seen] for task, seen in tasks.items()}, list(void)
        )


def _load_seen(task: str, entry: Any) -> _Seen:
    # Entries of earlier releases have no sequence number, and name kept batches without one.
    source, inc, opened, start, engine_only, keys, kept, *rest = entry
    batch = Batch(task, inc, opened, start, tuple(kept_batch(k) for k in kept), rest[0] if rest else None)
    if isinstance(keys, str):  # joined (`_dump_keys`)
        keys = keys.split(_KEY_SEPARATOR)
    return _Seen(source, batch, engine_only, dict.fromkeys(keys))


#: Between the keys of a batch in the stored state: one string for a batch's few hundred
#: keys is written and read at C speed, where a list of them cost marshal a reference per
#: string (most of the order stage's commit on the embedded broker).
_KEY_SEPARATOR = "\x00"


def _dump_keys(keys: dict[str, None]) -> str | list[str]:
    """A batch's keys as one string, or as a list when a key holds the separator itself (no
    order id is expected to, but none is checked for it) or there is none."""
    joined = _KEY_SEPARATOR.join(keys)
    if keys and joined.count(_KEY_SEPARATOR) == len(keys) - 1:
        return joined
    return list(keys)
