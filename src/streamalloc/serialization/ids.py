"""Schema ids for the Confluent wire format: a committed local table, or a schema registry."""

from __future__ import annotations

import json
from typing import Any, Protocol

import fastavro

from streamalloc.errors import SchemaError
from streamalloc.serialization.schemas import local_ids, parsed_schema, raw_schema


class SchemaIds(Protocol):
    def id_for(self, name: str, topic: str) -> int:
        """The id to put in front of records of schema `name` written to `topic`."""
        ...

    def writer_schema(self, schema_id: int) -> Any | None:
        """The parsed schema a record with this id was written with, or None if unknown."""
        ...


class LocalSchemaIds:
    """Ids from schemas/ids.json: the bytes have the registry's shape without a registry."""

    def __init__(self) -> None:
        self._ids = local_ids()
        self._by_id = {schema_id: name for name, schema_id in self._ids.items()}

    def id_for(self, name: str, topic: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise SchemaError(f"schemas/ids.json has no id for {name!r}") from None

    def writer_schema(self, schema_id: int) -> Any | None:
        name = self._by_id.get(schema_id)
        return None if name is None else parsed_schema(name)


class RegistrySchemaIds:
    """Ids from a Confluent schema registry: subject `<topic>-value` (TopicNameStrategy)."""

    def __init__(self, url: str) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self._client = SchemaRegistryClient({"url": url})
        self._registered: dict[tuple[str, str], int] = {}
        self._writers: dict[int, Any] = {}

    def id_for(self, name: str, topic: str) -> int:
        key = (name, topic)
        if key not in self._registered:
            from confluent_kafka.schema_registry import Schema

            try:
                schema_id = self._client.register_schema(
                    f"{topic}-value", Schema(json.dumps(raw_schema(name)), "AVRO")
                )
            except Exception as exc:  # the registry client raises several unrelated types
                raise SchemaError(f"registering {name} for {topic}: {exc}") from exc
            self._registered[key] = int(schema_id)
        return self._registered[key]

    def writer_schema(self, schema_id: int) -> Any | None:
        if schema_id not in self._writers:
            try:
                schema = self._client.get_schema(schema_id)
            except Exception:  # noqa: BLE001 - unknown id or unreachable registry: caller reports
                return None
            if schema.schema_str is None:
                return None
            self._writers[schema_id] = fastavro.parse_schema(json.loads(schema.schema_str))
        return self._writers[schema_id]
