"""Which schema each contract topic carries and which field is its record key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamalloc.config import Settings
from streamalloc.errors import SchemaError, ValidationError
from streamalloc.serialization.ids import LocalSchemaIds, RegistrySchemaIds, SchemaIds
from streamalloc.serialization.serde import Serde


@dataclass(frozen=True, slots=True)
class TopicContract:
    schema: str
    key_field: str | None  # None: the key is carried over (dead-letter)
    accepts_json: bool


#: Contract topic names (without prefix) -> schema and key. `orders.<channel>` is `orders`.
CONTRACT: dict[str, TopicContract] = {
    "orders": TopicContract("order", "order_id", True),
    "inventory": TopicContract("inventory", "sku", True),
    "locations": TopicContract("location", "location_id", True),
    "channels": TopicContract("channel", "channel_id", True),
    "allocation-requests": TopicContract("allocation_request", "sku", True),
    "allocations": TopicContract("allocation", "order_id", False),
    "availability": TopicContract("availability", "sku", False),
    "order-status": TopicContract("order_status", "order_id", False),
    "dead-letter": TopicContract("dead_letter", None, False),
}


def contract_for(settings: Settings, topic: str) -> TopicContract:
    """The contract entry of a full topic name, e.g. `streamalloc.orders.web` -> orders."""
    if not topic.startswith(settings.topic_prefix):
        raise SchemaError(f"{topic} is not a contract topic (names start with {settings.topic_prefix!r})")
    name = topic.removeprefix(settings.topic_prefix)
    if name.startswith("orders."):
        name = "orders"
    try:
        return CONTRACT[name]
    except KeyError:
        known = ", ".join(settings.topic(n) for n in CONTRACT)
        raise SchemaError(f"{topic} is not a contract topic; known: {known}") from None


_IDS: dict[str | None, SchemaIds] = {}


def schema_ids(settings: Settings) -> SchemaIds:
    """One id source per registry URL per process (the registry client caches)."""
    url = settings.schema_registry_url
    if url not in _IDS:
        _IDS[url] = RegistrySchemaIds(url) if url else LocalSchemaIds()
    return _IDS[url]


class TopicSerde(Serde):
    """A serde that also knows how its topic is keyed."""

    def __init__(self, name: str, ids: SchemaIds, topic: str, key_field: str | None) -> None:
        super().__init__(name, ids, topic)
        self.key_field = key_field

    def key_of(self, record: dict[str, Any]) -> bytes | None:
        if self.key_field is None:
            key = record.get("key")
            return key if isinstance(key, bytes) else None
        value = record.get(self.key_field)
        if not isinstance(value, str) or not value:
            raise ValidationError(f"{self.key_field} (the record key) must be a non-empty string")
        return value.encode("utf-8")


def topic_serde(settings: Settings, topic: str) -> TopicSerde:
    entry = contract_for(settings, topic)
    return TopicSerde(entry.schema, schema_ids(settings), topic, entry.key_field)


def dead_letter_serde(settings: Settings) -> TopicSerde:
    return topic_serde(settings, settings.topic("dead-letter"))
