"""Which batch wrote an output record, and telling a crashed worker's leaked batch apart.

Every record a task produces on the embedded broker carries a `batch` header (on Kafka none:
`Settings.tags_outputs`): the task (stage and partition), its
incarnation (when this owner opened it, in ns since the epoch), the input positions it
opened at (the committed offsets) and the positions its batch started at.

On real Kafka a read_committed reader never sees a batch whose transaction did not
commit. The embedded broker can show one: the open transaction of a worker killed
mid-batch becomes visible when its successor initialises the same transactional id
(docs/brokers.md). The successor redoes that input from the committed offsets, and its
decisions can differ (records of two input topics may interleave differently), so the
leaked records are not mere repeats. A reader that has the whole history tells them apart:

    a batch of incarnation A is void when a later incarnation B of the same task opened at
    or before the batch's start on every input both name.

Every committed batch of A that consumed something before B opened starts before B's
opening offsets on at least one input; the leaked batch started exactly at the offsets
B opened at. A batch that consumed nothing (a punctuation: expiry timers, sweeps) starts
there too, committed or not, so the offsets cannot judge it. The restore keeps such a
batch when it finds it at the end of the changelog (changelog.py: it is as good as a
committed one), and the next owner's state includes it; so the reader keeps it too. A
reader names those batches from their records: every record's cause is the engine's clock
or a table, none an input event (`punctuation` in `void_batches`).
`streamalloc audit` applies this; the engine's own state never depends on it.

One exception keeps the rule in agreement with the restore (changelog.py): B's headers
name (`kept`: incarnation and start) the earlier batches whose store changes B's restore
kept although they start where B opened or later, and those are not void. The embedded
broker can lose the consumed offsets of batches that committed; their records, changelog
included, stay, the restore keeps them (each is followed by a batch that starts at its
end), the redo finds their commands already applied, and their outputs must stand.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BATCH_HEADER = "batch"

Positions = Mapping[tuple[str, int], int]


#: An earlier batch a restore kept: its incarnation, start and sequence number (None in
#: headers of earlier releases, which named a batch by incarnation and start alone).
KeptBatch = tuple[int, Mapping[str, int], int | None]


def encode_batch(
    task: str,
    incarnation: int,
    opened: Positions,
    start: Positions,
    kept: Sequence[KeptBatch] = (),
    seq: int | None = None,
) -> bytes:
    """The `batch` header value of one batch's outputs.

    `seq` numbers the incarnation's batches: two batches can start at the same positions (a
    punctuation consumes nothing, so the batch after it starts where it did), and only the
    number tells their records apart. `kept`: the earlier batches this incarnation's restore
    kept although they start where it opened or later (see the module doc), left out when
    there are none.
    """
    value: dict[str, object] = {
        "task": task,
        "inc": incarnation,
        "opened": {f"{t}:{p}": o for (t, p), o in opened.items()},
        "start": {f"{t}:{p}": o for (t, p), o in start.items()},
    }
    if seq is not None:
        value["seq"] = seq
    if kept:
        value["kept"] = [[inc, dict(at)] if n is None else [inc, dict(at), n] for inc, at, n in kept]
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Batch:
    task: str
    incarnation: int
    opened: Mapping[str, int]
    start: Mapping[str, int]
    kept: tuple[KeptBatch, ...] = ()
    seq: int | None = None  # None in headers of earlier releases

    @classmethod
    def parse(cls, header: bytes) -> Batch:
        data = json.loads(header)
        kept = tuple(kept_batch(entry) for entry in data.get("kept", ()))
        seq = data.get("seq")
        return cls(
            data["task"],
            int(data["inc"]),
            dict(data["opened"]),
            dict(data["start"]),
            kept,
            None if seq is None else int(seq),
        )

    def redone_by(self, later: Batch) -> bool:
        """True when `later`'s incarnation opened at or before this batch's start on every common
        input, and its restore did not keep this batch's store changes."""
        common = self.start.keys() & later.opened.keys()
        if not common or any(later.opened[tp] > self.start[tp] for tp in common):
            return False
        return not any(self.is_named_by(entry) for entry in later.kept)

    def is_named_by(self, entry: KeptBatch) -> bool:
        """Whether a restore's `kept` entry names this batch: by sequence number where both
        have one; by start alone in headers of earlier releases."""
        inc, at, seq = entry
        if inc != self.incarnation:
            return False
        if seq is not None and self.seq is not None:
            return seq == self.seq
        return at == self.start


def kept_batch(entry: Sequence[Any]) -> KeptBatch:
    """A `kept` entry as written: [inc, start] in earlier releases, [inc, start, seq] now."""
    inc, at, *rest = entry
    return int(inc), dict(at), int(rest[0]) if rest and rest[0] is not None else None


def void_batches(headers: Iterable[bytes], punctuation: Container[bytes] = ()) -> set[bytes]:
    """The headers, among all those seen, of batches that never committed (see module doc).

    `punctuation`: headers of batches that consumed no input (their records name no input
    event as cause); they are never void.
    """
    batches: dict[str, dict[bytes, Batch]] = defaultdict(dict)
    for header in headers:
        try:
            batch = Batch.parse(header)
        except (ValueError, KeyError, TypeError):
            continue  # not ours: nothing to judge
        batches[batch.task][header] = batch
    void: set[bytes] = set()
    for of_task in batches.values():
        openings: dict[int, Batch] = {}
        for batch in of_task.values():
            openings.setdefault(batch.incarnation, batch)
        for header, batch in of_task.items():
            if header not in punctuation and any(
                other.incarnation > batch.incarnation and batch.redone_by(other)
                for other in openings.values()
            ):
                void.add(header)
    return void


def batch_of(headers: list[tuple[str, bytes]] | None) -> bytes | None:
    """The `batch` header of a consumed record, if it has one."""
    if headers:
        for name, value in headers:
            if name == BATCH_HEADER:
                return value
    return None
