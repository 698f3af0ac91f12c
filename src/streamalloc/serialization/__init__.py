"""Avro (fastavro) and JSON serdes for the contract, in the Confluent wire format."""

from streamalloc.serialization.contract import (
    CONTRACT,
    TopicContract,
    TopicSerde,
    contract_for,
    dead_letter_serde,
    schema_ids,
    topic_serde,
)
from streamalloc.serialization.ids import LocalSchemaIds, RegistrySchemaIds, SchemaIds
from streamalloc.serialization.schemas import SCHEMA_NAMES, parsed_schema, raw_schema
from streamalloc.serialization.serde import Serde

__all__ = [
    "CONTRACT",
    "SCHEMA_NAMES",
    "LocalSchemaIds",
    "RegistrySchemaIds",
    "SchemaIds",
    "Serde",
    "TopicContract",
    "TopicSerde",
    "contract_for",
    "dead_letter_serde",
    "parsed_schema",
    "raw_schema",
    "schema_ids",
    "topic_serde",
]
