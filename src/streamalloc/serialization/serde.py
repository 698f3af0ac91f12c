"""Serdes: Confluent-framed Avro out; Avro or JSON of the same shape in, detected per record.

An internal topic (the engine talking to itself: allocation-requests) is written in a
compact frame instead: magic byte 0xC1, the schema's local id (schemas/ids.json, 4 bytes
big-endian, whether or not a registry is used) and the marshal of the tuple of its field
values in the schema's order. It costs a third of the Avro writer's time and half the
reader's, and is read by the same decode (both frames are accepted, so records an earlier
release wrote in Avro still decode); a record written with an earlier layout of the
schema (schemas/history) is read field by field into the current one.

Decoding is split in two. The fast path handles the common case, an Avro record written
with this process's own schema, with one dict lookup on the 5-byte header and the
compiled reader. Anything else (another schema id, JSON, or bytes the fast path cannot
read) goes to the slow path, which resolves the writer schema, parses JSON, or works out
exactly what is wrong and raises `DeserializationError` with a reason.
"""

from __future__ import annotations

import io
import json
import marshal
from collections.abc import Callable
from operator import itemgetter
from typing import Any, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from streamalloc.errors import DeserializationError, SchemaError, ValidationError
from streamalloc.serialization.codec import Unsupported, compile_codec
from streamalloc.serialization.ids import SchemaIds
from streamalloc.serialization.normalise import Invalid, compile_schema
from streamalloc.serialization.schemas import local_ids, parsed_schema, raw_schema, retired_schemas

MAGIC = 0
COMPACT_MAGIC = 0xC1
HEADER_SIZE = 5

#: Turns a whole wire record (header included) into the decoded record.
BodyReader = Callable[[bytes], dict[str, Any]]


def header(schema_id: int) -> bytes:
    """The Confluent wire header: magic byte 0 and the schema id as 4 big-endian bytes."""
    return bytes([MAGIC]) + schema_id.to_bytes(4, "big")


class Serde:
    """Encode and decode one schema's records for one topic."""

    def __init__(
        self, name: str, ids: SchemaIds, topic: str, *, accept_json: bool = True, compact: bool = False
    ) -> None:
        self.name = name
        self.topic = topic
        self.accept_json = accept_json
        #: Write the compact frame (module doc) instead of Avro.
        self.compact = compact
        self._ids = ids
        self._schema = parsed_schema(name)
        self._canonical = to_parsing_canonical_form(self._schema)
        self._normalise = compile_schema(raw_schema(name))
        try:
            self._read, self._write = compile_codec(self._schema)
        except Unsupported:
            self._read, self._write = self._fastavro_read, self._fastavro_write
        self._header: bytes | None = None
        #: Header bytes (magic + id) -> reader of the whole record; grows as ids are met.
        self._readers: dict[bytes, BodyReader] = {}
        self._fields: tuple[str, ...] = tuple(f["name"] for f in self._schema["fields"])
        self._values = itemgetter(*self._fields)
        own_id = local_ids().get(name)
        self._compact_header = None if own_id is None else bytes([COMPACT_MAGIC]) + own_id.to_bytes(4, "big")
        if self._compact_header is not None:
            self._readers[self._compact_header] = self._compact_reader(self._fields)

    # -- validation and encoding -----------------------------------------------------------

    def validate(self, record: Any) -> dict[str, Any]:
        """The record checked against the schema, defaults filled; ValidationError names the field."""
        try:
            normalised: dict[str, Any] = self._normalise(record, "")
        except Invalid as exc:
            raise ValidationError(f"{self.name}: {exc}") from None
        return normalised

    def encode(self, record: dict[str, Any]) -> bytes:
        """Confluent wire format: magic byte, 4-byte schema id, Avro body; the compact frame for
        an internal topic (module doc). Expects a valid record."""
        if self.compact and self._compact_header is not None:
            try:
                return self._compact_header + marshal.dumps(self._values(record))
            except (KeyError, ValueError) as exc:  # a field missing, or a value marshal refuses
                self.validate(record)
                raise ValidationError(f"{self.name} record does not fit its schema: {exc!r}") from exc
        own = self._header if self._header is not None else self._own_header()
        try:
            return self._write(record, own)
        except Exception as exc:  # noqa: BLE001 - a bad record fails with many types; name the field
            self.validate(record)  # raises with the field's path when the record is the problem
            raise ValidationError(f"{self.name} record does not fit its schema: {exc!r}") from exc

    def _own_header(self) -> bytes:
        # Resolved on first write: with a registry, the id comes from registering the schema.
        self._header = header(self._ids.id_for(self.name, self.topic))
        return self._header

    # -- decoding --------------------------------------------------------------------------

    def decode(
        self,
        data: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> dict[str, Any]:
        """Avro (magic byte 0) or JSON (starts with `{`); DeserializationError says why not."""
        reader = self._readers.get(data[:HEADER_SIZE]) if data else None
        if reader is not None:
            try:
                return reader(data)
            except Exception:  # noqa: BLE001, S110 - the slow path below says what is wrong
                pass
        return self._decode_slow(data, topic, partition, offset)

    def _decode_slow(
        self, data: bytes, topic: str | None, partition: int | None, offset: int | None
    ) -> dict[str, Any]:
        def fail(reason: str) -> DeserializationError:
            return DeserializationError(
                f"{self.name}: {reason}", topic=topic, partition=partition, offset=offset, value=data
            )

        if not isinstance(data, bytes):
            if data is None:
                raise fail("no value (a tombstone or null record)")
            data = bytes(data)
        if not data:
            raise fail("empty value")
        if data[0] == MAGIC:
            if len(data) < HEADER_SIZE:
                raise fail(
                    f"Avro record of {len(data)} byte(s) is shorter than the {HEADER_SIZE}-byte header"
                )
            reader = self._readers.get(data[:HEADER_SIZE])
            if reader is None:
                reader = self._reader_for(int.from_bytes(data[1:HEADER_SIZE], "big"), fail)
            try:
                return reader(data)
            except _TrailingBytes as exc:
                raise fail(str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - fastavro and the codec raise many types on bad bytes
                raise fail(f"corrupt or truncated Avro body ({type(exc).__name__}: {exc})") from None
        if data[0] == COMPACT_MAGIC:
            if len(data) < HEADER_SIZE:
                raise fail(
                    f"compact record of {len(data)} byte(s) is shorter than its {HEADER_SIZE}-byte header"
                )
            reader = self._readers.get(data[:HEADER_SIZE])
            if reader is None:
                reader = self._compact_reader_for(int.from_bytes(data[1:HEADER_SIZE], "big"), fail)
            try:
                return reader(data)
            except Exception as exc:  # noqa: BLE001 - marshal raises several types on bad bytes
                raise fail(f"corrupt compact record ({type(exc).__name__}: {exc})") from None
        if data.lstrip()[:1] == b"{":
            if not self.accept_json:
                raise fail(f"JSON is accepted only on input topics; {self.topic} carries Avro")
            return self._decode_json(data, fail)
        raise fail(
            f"neither Avro (magic byte 0), a compact record (0xc1) nor a JSON object (starts with '{{'): "
            f"first byte is {data[0]:#04x}"
        )

    def _reader_for(self, schema_id: int, fail: Callable[[str], DeserializationError]) -> BodyReader:
        """The reader for records written with `schema_id`: ours compiled, or fastavro resolving."""
        try:
            writer = self._ids.writer_schema(schema_id)
        except SchemaError as exc:
            raise fail(f"cannot look up schema id {schema_id}: {exc}") from None
        if writer is None:
            raise fail(f"unknown schema id {schema_id} (not in schemas/ids.json or the registry)")
        writer_name = str(writer.get("name")) if isinstance(writer, dict) else repr(writer)
        own_name = self._schema["name"]
        if writer_name.rsplit(".", 1)[-1] != own_name.rsplit(".", 1)[-1]:  # Avro matches unqualified names
            raise fail(f"schema id {schema_id} is {writer_name}, not {own_name}: wrong topic?")
        if to_parsing_canonical_form(writer) == self._canonical:
            reader = self._compiled_reader()
        else:
            reader = self._resolving_reader(writer)
        self._readers[header(schema_id)] = reader
        return reader

    def _compact_reader(self, fields: tuple[str, ...]) -> BodyReader:
        count = len(fields)

        def compact(data: bytes) -> dict[str, Any]:
            values = marshal.loads(data[HEADER_SIZE:])  # noqa: S302 - the engine's own internal topic
            if type(values) is not tuple or len(values) != count:
                raise ValueError(f"expected {count} field values")
            return dict(zip(fields, values, strict=True))

        return compact

    def _compact_reader_for(self, schema_id: int, fail: Callable[[str], DeserializationError]) -> BodyReader:
        """A compact record written with an earlier layout of this schema: its fields by name,
        the defaults of the current schema for those it did not have."""
        retired = retired_schemas().get(schema_id)
        if retired is None or retired[0] != self.name:
            raise fail(f"unknown compact layout id {schema_id} for {self.name}")
        writer_fields = tuple(f["name"] for f in retired[1]["fields"])
        read_writer = self._compact_reader(writer_fields)
        defaults = {f["name"]: f.get("default") for f in self._schema["fields"]}

        def earlier(data: bytes) -> dict[str, Any]:
            written = read_writer(data)
            return {name: written.get(name, default) for name, default in defaults.items()}

        self._readers[bytes([COMPACT_MAGIC]) + schema_id.to_bytes(4, "big")] = earlier
        return earlier

    def _compiled_reader(self) -> BodyReader:
        read = self._read

        def compiled(data: bytes) -> dict[str, Any]:
            record, end = read(data, HEADER_SIZE)
            if end != len(data):
                raise _TrailingBytes(len(data) - end)
            return record

        return compiled

    def _resolving_reader(self, writer: Any) -> BodyReader:
        """Schema resolution: a record written with another version of the schema, read as ours."""
        reader_schema = self._schema

        def resolving(data: bytes) -> dict[str, Any]:
            body = io.BytesIO(data)
            body.seek(HEADER_SIZE)
            record = cast("dict[str, Any]", schemaless_reader(body, writer, reader_schema))
            if body.tell() != len(data):
                raise _TrailingBytes(len(data) - body.tell())
            return record

        return resolving

    def _decode_json(self, data: bytes, fail: Callable[[str], DeserializationError]) -> dict[str, Any]:
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise fail(f"invalid JSON: {exc}") from None
        try:
            normalised: dict[str, Any] = self._normalise(raw, "")
        except Invalid as exc:
            raise fail(f"JSON does not match the schema: {exc}") from None
        return normalised

    # -- fastavro fallbacks, used only when the codec cannot compile the schema ------------

    def _fastavro_read(self, data: bytes, pos: int) -> tuple[dict[str, Any], int]:
        body = io.BytesIO(data)
        body.seek(pos)
        record = cast("dict[str, Any]", schemaless_reader(body, self._schema, None))
        return record, body.tell()

    def _fastavro_write(self, record: dict[str, Any], head: bytes) -> bytes:
        out = io.BytesIO()
        out.write(head)
        schemaless_writer(out, self._schema, record)
        return out.getvalue()


class _TrailingBytes(Exception):
    """The Avro body ended before the record did: bytes of something else follow."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} unexpected byte(s) after the Avro body")
