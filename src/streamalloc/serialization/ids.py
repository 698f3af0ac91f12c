"""Schema ids for the Confluent wire format: a committed local table, or a schema registry."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

import fastavro

from streamalloc.client_properties import REDACTED, url_password
from streamalloc.errors import ConfigError, SchemaError
from streamalloc.logs import redact
from streamalloc.serialization.schemas import local_ids, parsed_schema, raw_schema, retired_schemas

#: The registry's "schema not found" error code (HTTP 404).
_NOT_FOUND = 40403
#: Registry client properties that the client wants as numbers (a properties file gives text).
_NUMERIC = (
    "timeout",
    "cache.capacity",
    "cache.latest.ttl.sec",
    "max.retries",
    "retries.wait.ms",
    "retries.max.wait.ms",
)


class SchemaIds(Protocol):
    """Where a serde gets the id it writes and the writer schema of an id it reads."""

    def id_for(self, name: str, topic: str) -> int:
        """The id to put in front of records of schema `name` written to `topic`."""
        ...

    def writer_schema(self, schema_id: int) -> Any | None:
        """The parsed schema a record with this id was written with; None if no such id.

        Raises SchemaError when the answer cannot be had (registry unreachable).
        """
        ...


class LocalSchemaIds:
    """Ids from schemas/ids.json, so bytes have the registry's shape without a registry.

    An id names exactly one writer layout, whose fingerprint ids.json records next to it: a
    change to a schema's parsing canonical form needs a new id, and the retired layout is
    kept in schemas/history so what it wrote still decodes (schemas.py says how; the
    tests in tests/unit/serialization/test_compat.py fail on a change that skips a step).
    """

    def __init__(self) -> None:
        self._ids = local_ids()
        self._by_id = {schema_id: name for name, schema_id in self._ids.items()}
        self._retired = retired_schemas()

    def id_for(self, name: str, topic: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise SchemaError(f"schemas/ids.json has no id for {name!r}") from None

    def writer_schema(self, schema_id: int) -> Any | None:
        name = self._by_id.get(schema_id)
        if name is not None:
            return parsed_schema(name)
        retired = self._retired.get(schema_id)
        return None if retired is None else retired[1]


class RegistrySchemaIds:
    """Ids from a Confluent schema registry, subject `<topic>-value` (TopicNameStrategy).

    Writing registers the local schema (the registry's compatibility rules then guard the
    contract); reading fetches an unknown id's schema and uses it as the writer schema, so
    records written by a newer or older producer are resolved to the local schema.
    """

    def __init__(
        self, url: str, *, properties: Mapping[str, str] | None = None, client: Any | None = None
    ) -> None:
        if client is None:
            client = _registry_client(url, properties or {})
        password = url_password(url)
        #: The URL as messages show it: no password from its user info.
        self.url = url.replace(f":{password}@", f":{REDACTED}@", 1) if password else url
        self._client = client
        self._registered: dict[tuple[str, str], int] = {}
        self._writers: dict[int, Any | None] = {}

    def id_for(self, name: str, topic: str) -> int:
        key = (name, topic)
        if key not in self._registered:
            from confluent_kafka.schema_registry import Schema

            schema = Schema(json.dumps(raw_schema(name)), "AVRO")
            try:
                schema_id = self._client.register_schema(f"{topic}-value", schema)
            except Exception as exc:  # noqa: BLE001 - the client raises several unrelated types
                raise SchemaError(
                    redact(f"registering {name} as {topic}-value at {self.url}: {exc}")
                ) from exc
            self._registered[key] = int(schema_id)
        return self._registered[key]

    def writer_schema(self, schema_id: int) -> Any | None:
        if schema_id in self._writers:
            return self._writers[schema_id]
        try:
            schema = self._client.get_schema(schema_id)
        except Exception as exc:  # noqa: BLE001 - the client raises several unrelated types
            if getattr(exc, "error_code", None) == _NOT_FOUND:
                self._writers[schema_id] = None  # ids are never reused: remember the miss
                return None
            raise SchemaError(redact(f"fetching schema id {schema_id} from {self.url}: {exc}")) from exc
        if schema.schema_type not in (None, "AVRO") or schema.schema_str is None:
            raise SchemaError(f"schema id {schema_id} is {schema.schema_type}, not Avro")
        try:
            parsed = fastavro.parse_schema(json.loads(schema.schema_str))
        except Exception as exc:  # noqa: BLE001 - fastavro raises several types on bad schemas
            raise SchemaError(f"schema id {schema_id} from {self.url} does not parse: {exc}") from exc
        self._writers[schema_id] = parsed
        return parsed


def _registry_client(url: str, properties: Mapping[str, str]) -> Any:
    """A SchemaRegistryClient with the user's properties (credentials, CA), numbers as numbers."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    config: dict[str, Any] = {"url": url}
    for key, value in properties.items():
        if key in _NUMERIC:
            try:
                config[key] = float(value) if key == "timeout" else int(value)
            except ValueError:
                raise ConfigError(f"schema registry property {key} must be a number, not {value!r}") from None
        else:
            config[key] = value
    try:
        return SchemaRegistryClient(config)
    except (ValueError, TypeError, OSError) as exc:  # unknown keys, bad pairs, unreadable CA
        raise ConfigError(redact(f"schema registry client properties: {exc}")) from exc
