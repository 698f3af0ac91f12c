"""`streamalloc audit`: read the engine's input and output topics and check its promises."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from streamalloc.audit import TABLE_CAUSES, AuditReport, audit
from streamalloc.commands.io import order_topics, read_to_end, read_with_batches
from streamalloc.config import Settings
from streamalloc.errors import StreamallocError
from streamalloc.runtime.lineage import void_batches
from streamalloc.serialization import topic_serde


def punctuation_batches(records: Iterable[tuple[bytes | None, Mapping[str, Any]]]) -> set[bytes]:
    """The batches whose every record the engine's clock or a table caused: they consumed no input."""
    engine_only: dict[bytes, bool] = {}
    for batch, record in records:
        if batch is not None:
            cause = str(record.get("cause_event_id") or "")
            engine_only[batch] = engine_only.get(batch, True) and cause.startswith(TABLE_CAUSES)
    return {batch for batch, only in engine_only.items() if only}


def run_audit(settings: Settings) -> AuditReport:
    orders = [event for topic in order_topics(settings) for event in read_to_end(settings, topic)]
    inventory_topic = settings.topic("inventory")
    inventory_serde = topic_serde(settings, inventory_topic)
    refused = []
    for letter in read_to_end(settings, settings.topic("dead-letter")):
        if letter["source_topic"] == inventory_topic and letter["value"]:
            try:
                refused.append(inventory_serde.decode(letter["value"])["event_id"])
            except StreamallocError:
                continue  # never decoded, so never applied either
    allocations = read_with_batches(settings, settings.topic("allocations"))
    availability = read_with_batches(settings, settings.topic("availability"))
    ledger = read_with_batches(settings, settings.topic("stock-changes"))
    statuses = read_with_batches(settings, settings.topic("order-status"))
    outputs = allocations + availability + ledger + statuses
    # A crashed worker's last batch, if the broker leaked it, is not a decision the engine
    # stands by: its successor redid that input (lineage.py). Only the embedded broker leaks;
    # real Kafka never shows a read_committed reader a batch that did not commit.
    if settings.broker_profile == "embedded":
        void = void_batches(
            (batch for batch, _ in outputs if batch is not None), punctuation_batches(outputs)
        )
    else:
        void = set()
    leaked = [event for batch, event in allocations if batch in void]
    report = audit(
        orders,
        read_to_end(settings, inventory_topic),
        [event for batch, event in allocations if batch not in void],
        [record for batch, record in availability if batch not in void],
        refused,
        leaked_allocations=leaked,
        stock_changes=[change for batch, change in ledger if batch not in void],
        order_statuses=[status for batch, status in statuses if batch not in void],
    )
    report.leaked_batches = len(void)
    report.leaked_events = len(leaked) + sum(
        1 for batch, _ in availability + ledger + statuses if batch in void
    )
    return report
