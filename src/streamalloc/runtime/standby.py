"""Standby replicas: warm copies of store partitions this worker does not own.

Kafka Streams' `num.standby.replicas`: a worker keeps copies of other workers' store
partitions up to date by tailing their changelogs (read_committed), so that when a
failover gives it one of them, its restore starts from the copy's checkpoint and reads
only the tail, not the whole changelog.

Kafka Streams' own assignor places standbys; librdkafka's assignors cannot be extended
from Python, so each worker decides for itself, from the same facts as every other
member: the group as its coordinator describes it (members.py). Members sorted by member
id form a ring; the partitions a member owns are kept warm by the next
`num_standby_replicas` members after it (never by itself). Every member computes the
same ring from the same description, so every partition gets its copies, spread evenly.

A copy is a store partition in the RESTORING state, fed by a Restorer in tail mode
(changelog.py) with its own consumer: it applies only batches known to be committed and
keeps its checkpoint at the last one. When the partition is assigned to this worker,
the copy is closed (its checkpoint written) and the task opens the partition as any
other, restoring from that checkpoint. A copy no longer wanted is closed and its data
kept on disk: should the partition come back, it restores from there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from confluent_kafka import TopicPartition

from streamalloc.runtime.changelog import RestoreJob, Restorer
from streamalloc.runtime.members import GroupView
from streamalloc.runtime.state import Store

_log = logging.getLogger("streamalloc.runtime.standby")

StorePartitionKey = tuple[str, int]  # (store name, partition)


def standby_partitions(
    view: GroupView, me: str, replicas: int, stores_of: Callable[[str], Sequence[str]]
) -> set[StorePartitionKey]:
    """The store partitions `me` keeps warm: those owned by the `replicas` members before it
    in the ring of members sorted by id. `stores_of(topic)` names the stores of the stage
    that consumes `topic` (none for a stage without stores)."""
    ids = [m.member_id for m in view.members]
    if me not in ids or replicas < 1:
        return set()
    mine, count = ids.index(me), len(ids)
    wanted: set[StorePartitionKey] = set()
    for i, member in enumerate(view.members):
        if 1 <= (mine - i) % count <= replicas:
            for topic, partition in member.assignment:
                wanted.update((store, partition) for store in stores_of(topic))
    return wanted


class StandbyReplicas:
    """The copies one worker keeps, and the consumer that tails their changelogs."""

    def __init__(
        self,
        stores: Mapping[str, Store],
        changelog_topic: Callable[[str], str],
        restorer: Restorer,
    ) -> None:
        self._stores = stores
        self._changelog_topic = changelog_topic
        self._restorer = restorer
        self._kept: set[StorePartitionKey] = set()
        #: when to look at the group again (monotonic s); 0: as soon as possible
        self.due = 0.0

    @property
    def kept(self) -> frozenset[StorePartitionKey]:
        return frozenset(self._kept)

    def keep(self, wanted: set[StorePartitionKey]) -> None:
        """Open copies of `wanted` not kept yet; close those no longer wanted."""
        for store, partition in sorted(self._kept - wanted):
            self.release(store, partition)
        for store, partition in sorted(wanted - self._kept):
            self._open(store, partition)

    def release(self, store: str, partition: int) -> None:
        """Close the copy (before the partition is opened as an active task, or dropped)."""
        if (store, partition) not in self._kept:
            return
        self._kept.discard((store, partition))
        job = self._restorer.cancel(self._changelog_topic(store), partition)
        self._stores[store].close_partition(partition)  # writes the copy's checkpoint
        _log.info(
            "standby closed",
            extra={"store": store, "partition": partition, "applied": job.records if job else 0},
        )

    def step(self) -> None:
        """Apply what has arrived on the copies' changelogs (does not wait)."""
        if self._kept:
            self._restorer.step(timeout_s=0.0)

    def close(self) -> None:
        for store, partition in sorted(self._kept):
            self.release(store, partition)
        self._restorer.close()

    def _open(self, store: str, partition: int) -> None:
        part = self._stores[store].partition(partition)
        if part.needs_full_restore:
            part.wipe()
        self._restorer.start(RestoreJob(part, self._changelog_topic(store), {}))
        self._kept.add((store, partition))
        _log.info(
            "standby opened",
            extra={"store": store, "partition": partition, "from_offset": part.checkpoint_offset or 0},
        )


def assignment_of(assigned: list[TopicPartition]) -> frozenset[tuple[str, int]]:
    return frozenset((tp.topic, tp.partition) for tp in assigned)
