"""`streamalloc audit`: read the engine's input and output topics and check its promises."""

from __future__ import annotations

from streamalloc.audit import AuditReport, audit
from streamalloc.commands.io import order_topics, read_to_end
from streamalloc.config import Settings
from streamalloc.errors import StreamallocError
from streamalloc.serialization import topic_serde


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
    return audit(
        orders,
        read_to_end(settings, inventory_topic),
        read_to_end(settings, settings.topic("allocations")),
        read_to_end(settings, settings.topic("availability")),
        refused,
    )
