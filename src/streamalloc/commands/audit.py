"""`streamalloc audit`: read the engine's input and output topics and check its promises.

`read_committed` is the one reader of the engine's outputs as the engine stands by them
(leaked batches left out); the demo and its tests read outcomes through it as well."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

from streamalloc.audit import TABLE_CAUSES, AuditReport, audit
from streamalloc.commands.io import order_topics, read_records, read_table, read_to_end, read_with_batches
from streamalloc.config import Settings
from streamalloc.domain.kits import Kit
from streamalloc.errors import StreamallocError
from streamalloc.kafka import admin_client
from streamalloc.runtime.changelog import SRC_HEADER, BatchSource, RestoreJob
from streamalloc.runtime.lineage import Batch, void_batches
from streamalloc.runtime.state import StorePartition
from streamalloc.serialization import topic_serde
from streamalloc.stages.intake import expand_kits
from streamalloc.stages.tables import kits_of


def punctuation_batches(records: Iterable[tuple[bytes | None, Mapping[str, Any]]]) -> set[bytes]:
    """The batches whose every record the engine's clock or a table caused: they consumed no input."""
    engine_only: dict[bytes, bool] = {}
    for batch, record in records:
        if batch is not None:
            cause = str(record.get("cause_event_id") or "")
            engine_only[batch] = engine_only.get(batch, True) and cause.startswith(TABLE_CAUSES)
    return {batch for batch, only in engine_only.items() if only}


def dropped_by_restore(settings: Settings) -> set[tuple[int, int, int]]:
    """(partition, writer, seq) of the batches in the app's changelogs that a restore drops.

    A punctuation (timers, a table change) consumed no input, so the `batch` header rule
    cannot judge it, and it is kept as the restore keeps one at the end of the changelog.
    But a punctuation that leaked while another worker had already taken its partitions
    over is dropped by every later restore: the embedded broker shows it only when its own
    worker restarts, behind batches the new owner built without it (changelog.py). The
    changelog says so; a batch named here never reached the engine's state.
    """
    admin = admin_client(settings)
    prefix = f"{settings.app_id}-"
    topics = [
        t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix) and t.endswith("-changelog")
    ]
    dropped: set[tuple[int, int, int]] = set()
    for topic in sorted(topics):
        runs: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
        for record in read_records(settings, topic):
            header = next((v for k, v in record.headers or () if k == SRC_HEADER), None)
            if header is not None:
                runs[record.partition].append((record.offset, header))
        for partition, headers in runs.items():
            dropped |= {
                (partition, writer, seq) for writer, seq in dropped_batches(topic, partition, headers)
            }
    return dropped


def dropped_batches(topic: str, partition: int, headers: Iterable[tuple[int, bytes]]) -> set[tuple[int, int]]:
    """(writer, seq) of the batches a restore of one changelog partition drops, from the
    `src` header of each record in offset order.

    The restore's own rules (changelog.py), with nothing committed to judge the last batch
    by: it is kept, as a restore at the end keeps a punctuation. Batches of earlier
    releases (no writer or number) are not named.
    """
    job = RestoreJob(cast(StorePartition, SimpleNamespace(partition=partition)), topic, {})
    kept: set[bytes] = set()
    seen: set[bytes] = set()
    for offset, header in headers:
        seen.add(header)
        kept.update(h for h, _ in job.offer(offset, header, (header, None)))
    kept.update(h for h, _ in job.at_end())
    found = set()
    for header in seen - kept:
        source = BatchSource.parse(header)
        if source.writer is not None and source.seq is not None:
            found.add((source.writer, source.seq))
    return found


def _dropped_punctuations(settings: Settings, punctuation: set[bytes]) -> set[bytes]:
    """The punctuation batches whose store changes no restore keeps (`dropped_by_restore`)."""
    if not punctuation:
        return set()
    dropped = dropped_by_restore(settings)
    found = set()
    for header in punctuation:
        try:
            batch = Batch.parse(header)
        except (ValueError, KeyError, TypeError):
            continue
        if (
            batch.seq is not None
            and (int(batch.task.rsplit(":", 1)[1]), batch.incarnation, batch.seq) in dropped
        ):
            found.add(header)
    return found


def read_kits(settings: Settings) -> dict[str, Kit]:
    """The kits table as the `kits` topic ends, read as the workers read it (`read_table`): each
    kit SKU's last record, a tombstone deleting it (an inactive or invalid record is no kit).
    Orders are expanded with the table as it ends, where intake used it as it was when each
    order came: a kit changed or deleted while its orders were open is not followed."""
    return kits_of(read_table(settings, settings.topic("kits")))


#: (batch header, event) as read from an output topic: `read_with_batches`.
Batched = list[tuple[bytes | None, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class CommittedOutputs:
    """The engine's output topics as the engine stands by them: every event but those of
    batches that never committed although the broker showed them (`read_committed`)."""

    allocations: tuple[dict[str, Any], ...]
    availability: tuple[dict[str, Any], ...]
    stock_changes: tuple[dict[str, Any], ...]
    order_statuses: tuple[dict[str, Any], ...]
    #: what was left out: the allocation events themselves (the audit tells a leaked decision
    #: apart from a missing one by them), and the counts over all four topics
    leaked_allocations: tuple[dict[str, Any], ...] = ()
    leaked_batches: int = 0
    leaked_events: int = 0


def committed_outputs(
    allocations: Batched,
    availability: Batched,
    stock_changes: Batched,
    order_statuses: Batched,
    void: Set[bytes],
) -> CommittedOutputs:
    """The outputs read with their batch headers, without the events of the `void` batches."""

    def kept(records: Batched) -> tuple[dict[str, Any], ...]:
        return tuple(event for batch, event in records if batch not in void)

    outputs = allocations + availability + stock_changes + order_statuses
    return CommittedOutputs(
        kept(allocations),
        kept(availability),
        kept(stock_changes),
        kept(order_statuses),
        leaked_allocations=tuple(event for batch, event in allocations if batch in void),
        leaked_batches=len(void),
        leaked_events=sum(1 for batch, _ in outputs if batch in void),
    )


def read_committed(settings: Settings) -> CommittedOutputs:
    """`allocations`, `availability`, `stock-changes` and `order-status` read to the end, as
    the engine stands by them: what a reader of the topics may report as its decisions.

    A batch that never committed (a crashed worker's last one, say), if the broker showed it,
    is not a decision the engine stands by: its successor redid that input (lineage.py). Only
    the embedded broker shows such batches; real Kafka never shows a read_committed reader a
    batch that did not commit, so there nothing is left out.
    """
    allocations = read_with_batches(settings, settings.topic("allocations"))
    availability = read_with_batches(settings, settings.topic("availability"))
    ledger = read_with_batches(settings, settings.topic("stock-changes"))
    statuses = read_with_batches(settings, settings.topic("order-status"))
    void: set[bytes] = set()
    if settings.broker_profile == "embedded":
        outputs = allocations + availability + ledger + statuses
        punctuation = punctuation_batches(outputs)
        dropped = _dropped_punctuations(settings, punctuation)
        headers = (batch for batch, _ in outputs if batch is not None)
        void = void_batches(headers, punctuation - dropped) | dropped
    return committed_outputs(allocations, availability, ledger, statuses, void)


def run_audit(settings: Settings) -> AuditReport:
    orders = [event for topic in order_topics(settings) for event in read_to_end(settings, topic)]
    kits = read_kits(settings)
    if kits:  # the engine decided kit lines as their components' lines (intake's expansion)
        orders = [dict(expand_kits(order, kits)) for order in orders]
    inventory_topic = settings.topic("inventory")
    inventory_serde = topic_serde(settings, inventory_topic)
    refused = []
    for letter in read_to_end(settings, settings.topic("dead-letter")):
        if letter["source_topic"] == inventory_topic and letter["value"]:
            try:
                refused.append(inventory_serde.decode(letter["value"])["event_id"])
            except StreamallocError:
                continue  # never decoded, so never applied either
    outputs = read_committed(settings)
    report = audit(
        orders,
        read_to_end(settings, inventory_topic),
        outputs.allocations,
        outputs.availability,
        refused,
        leaked_allocations=outputs.leaked_allocations,
        stock_changes=outputs.stock_changes,
        order_statuses=outputs.order_statuses,
    )
    report.leaked_batches = outputs.leaked_batches
    report.leaked_events = outputs.leaked_events
    return report
