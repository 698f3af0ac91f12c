"""The topics of the public contract (docs/contract.md): schema, record key and role of each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from streamalloc.client_properties import ClientProperties
from streamalloc.config import Settings
from streamalloc.errors import SchemaError, ValidationError
from streamalloc.serialization.ids import LocalSchemaIds, RegistrySchemaIds, SchemaIds
from streamalloc.serialization.serde import Serde

#: input: written by other systems, Avro or JSON accepted. internal: the engine talks to
#: itself. output: the engine's decisions, read by routing, channel-sync, users.
Role = Literal["input", "internal", "output"]

ORDERS = "orders"


@dataclass(frozen=True, slots=True)
class TopicContract:
    """One contract topic: its name without prefix, schema, key field and role."""

    name: str
    schema: str
    #: Field of the record whose value is the Kafka key; None: the key is carried over (dead-letter).
    key_field: str | None
    role: Role
    compacted: bool = False

    @property
    def accepts_json(self) -> bool:
        """Channels may start with a plain JSON producer on input topics; elsewhere only Avro."""
        return self.role == "input"

    @property
    def internal(self) -> bool:
        return self.role == "internal"


#: Contract topic names (without prefix). `orders.<channel>` topics share the `orders` entry.
CONTRACT: dict[str, TopicContract] = {
    c.name: c
    for c in (
        TopicContract(ORDERS, "order", "order_id", "input"),
        TopicContract("inventory", "inventory", "sku", "input"),
        TopicContract("locations", "location", "location_id", "input", compacted=True),
        TopicContract("channels", "channel", "channel_id", "input", compacted=True),
        TopicContract("kits", "kit", "kit_sku", "input", compacted=True),
        TopicContract("allocation-requests", "allocation_request", "sku", "internal"),
        TopicContract("allocations", "allocation", "order_id", "output"),
        TopicContract("availability", "availability", "sku", "output", compacted=True),
        TopicContract("order-status", "order_status", "order_id", "output"),
        TopicContract("stock-changes", "stock_change", "sku", "output"),
        TopicContract("dead-letter", "dead_letter", None, "output"),
        # written by the downstream services (streamalloc.services), not by the engine
        TopicContract("channel-ats", "channel_ats", "feed_key", "output", compacted=True),
        TopicContract("fulfilment-requests", "fulfilment_request", "request_id", "output"),
        TopicContract("fulfilment-acks", "fulfilment_ack", "order_id", "input"),  # the WMS's, for routing
        TopicContract("transfer-recommendations", "transfer_recommendation", "sku", "output"),
    )
}

INPUT_TOPICS = tuple(name for name, c in CONTRACT.items() if c.role == "input")
INTERNAL_TOPICS = tuple(name for name, c in CONTRACT.items() if c.role == "internal")
OUTPUT_TOPICS = tuple(name for name, c in CONTRACT.items() if c.role == "output")
COMPACTED_TOPICS = tuple(name for name, c in CONTRACT.items() if c.compacted)


def resolve_topic(topic: str, prefix: str) -> TopicContract:
    """The contract entry of a full topic name: `streamalloc.orders.web` (prefix `streamalloc.`) -> orders."""
    known = ", ".join(f"{prefix}{n}" for n in CONTRACT)
    if not topic.startswith(prefix):
        raise SchemaError(f"{topic} is not a contract topic: names start with {prefix!r} (known: {known})")
    name = topic[len(prefix) :]
    if name.startswith(f"{ORDERS}."):
        channel = name[len(ORDERS) + 1 :]
        if not channel or "." in channel:
            raise SchemaError(f"{topic} is not a contract topic: orders.<channel> needs one dotless channel")
        name = ORDERS
    entry = CONTRACT.get(name)
    if entry is None:
        raise SchemaError(f"{topic} is not a contract topic (known: {known}, and {prefix}orders.<channel>)")
    return entry


def contract_for(settings: Settings, topic: str) -> TopicContract:
    """The contract entry of a full topic name under the configured prefix."""
    return resolve_topic(topic, settings.topic_prefix)


_IDS: dict[tuple[str | None, ClientProperties], SchemaIds] = {}


def schema_ids(settings: Settings) -> SchemaIds:
    """One id source per registry per process, so registrations and lookups are cached once."""
    url, properties = settings.schema_registry_url, settings.schema_registry_properties
    if (url, properties) not in _IDS:
        _IDS[url, properties] = RegistrySchemaIds(url, properties=properties) if url else LocalSchemaIds()
    return _IDS[url, properties]


class TopicSerde(Serde):
    """A serde that also knows its topic's contract entry, hence how records are keyed."""

    def __init__(self, contract: TopicContract, ids: SchemaIds, topic: str) -> None:
        super().__init__(
            contract.schema, ids, topic, accept_json=contract.accepts_json, compact=contract.internal
        )
        self.contract = contract
        self.key_field = contract.key_field

    def key_of(self, record: dict[str, Any]) -> bytes | None:
        """The Kafka key of `record` as the contract says (dead letters keep the original key)."""
        if self.key_field is None:
            key = record.get("key")
            return key if isinstance(key, bytes) else None
        value = record.get(self.key_field)
        if not isinstance(value, str) or not value:
            raise ValidationError(f"{self.key_field} (the record key) must be a non-empty string")
        return value.encode("utf-8")


def topic_serde(settings: Settings, topic: str) -> TopicSerde:
    """The serde for a full topic name (`orders.<channel>` included); SchemaError if not in the contract."""
    return TopicSerde(contract_for(settings, topic), schema_ids(settings), topic)


def dead_letter_serde(settings: Settings) -> TopicSerde:
    return topic_serde(settings, settings.topic("dead-letter"))
