"""Serdes: Confluent-framed Avro out; Avro or JSON of the same shape in, detected per record."""

from __future__ import annotations

import io
import json
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from streamalloc.errors import DeserializationError, ValidationError
from streamalloc.serialization.ids import SchemaIds
from streamalloc.serialization.normalise import Invalid, compile_schema
from streamalloc.serialization.schemas import parsed_schema, raw_schema

MAGIC = 0
HEADER_SIZE = 5
_JSON_START = frozenset(b"{ \t\r\n")


class Serde:
    """Encode and decode one schema's records for one topic."""

    def __init__(self, name: str, ids: SchemaIds, topic: str) -> None:
        self.name = name
        self.topic = topic
        self._ids = ids
        self._schema = parsed_schema(name)
        self._normalise = compile_schema(raw_schema(name))
        self._header: bytes | None = None
        self._local_id = -1

    def _own_header(self) -> bytes:
        # Resolved lazily: with a registry, the id comes from registering on first write.
        if self._header is None:
            self._local_id = self._ids.id_for(self.name, self.topic)
            self._header = bytes([MAGIC]) + self._local_id.to_bytes(4, "big")
        return self._header

    def validate(self, record: Any) -> dict[str, Any]:
        """The record checked against the schema, defaults filled; ValidationError names the field."""
        try:
            normalised: dict[str, Any] = self._normalise(record, "")
        except Invalid as exc:
            raise ValidationError(str(exc)) from None
        return normalised

    def encode(self, record: dict[str, Any]) -> bytes:
        """Confluent wire format: magic byte, 4-byte schema id, Avro body. Expects a valid record."""
        out = io.BytesIO()
        out.write(self._own_header())
        try:
            schemaless_writer(out, self._schema, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValidationError(f"{self.name} record does not fit its schema: {exc}") from exc
        return out.getvalue()

    def decode(
        self,
        data: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> dict[str, Any]:
        """Avro (magic byte 0) or JSON (starts with `{`); DeserializationError says why not."""
        if not data:
            raise DeserializationError(
                "empty value", topic=topic, partition=partition, offset=offset, value=data
            )
        first = data[0]
        if first == MAGIC:
            return self._decode_avro(data, topic, partition, offset)
        if first in _JSON_START:
            return self._decode_json(data, topic, partition, offset)
        raise DeserializationError(
            f"neither Avro (magic byte 0) nor JSON (starts with '{{'): first byte is {first:#04x}",
            topic=topic,
            partition=partition,
            offset=offset,
            value=data,
        )

    def _decode_avro(
        self, data: bytes, topic: str | None, partition: int | None, offset: int | None
    ) -> dict[str, Any]:
        def fail(reason: str) -> DeserializationError:
            return DeserializationError(reason, topic=topic, partition=partition, offset=offset, value=data)

        if len(data) < HEADER_SIZE:
            raise fail(f"Avro record shorter than its {HEADER_SIZE}-byte header")
        self._own_header()
        schema_id = int.from_bytes(data[1:HEADER_SIZE], "big")
        if schema_id == self._local_id:
            writer, reader = self._schema, None
        else:
            writer, reader = self._ids.writer_schema(schema_id), self._schema
            if writer is None:
                raise fail(f"unknown schema id {schema_id} for {self.name}")
        body = io.BytesIO(data)
        body.seek(HEADER_SIZE)
        try:
            record: Any = schemaless_reader(body, writer, reader)
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types on corrupt bytes
            raise fail(f"corrupt or truncated {self.name} Avro body: {type(exc).__name__}: {exc}") from exc
        if not isinstance(record, dict):
            raise fail(f"{self.name} Avro body is not a record")
        if body.tell() != len(data):
            raise fail(f"{len(data) - body.tell()} unexpected byte(s) after the {self.name} Avro body")
        return record

    def _decode_json(
        self, data: bytes, topic: str | None, partition: int | None, offset: int | None
    ) -> dict[str, Any]:
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            reason = f"invalid JSON: {exc}"
            raise DeserializationError(
                reason, topic=topic, partition=partition, offset=offset, value=data
            ) from None
        try:
            normalised: dict[str, Any] = self._normalise(raw, "")
        except Invalid as exc:
            reason = f"JSON {self.name} does not match the schema: {exc}"
            raise DeserializationError(
                reason, topic=topic, partition=partition, offset=offset, value=data
            ) from None
        return normalised
