"""The compiled Avro codec writes the same bytes as fastavro and reads them back the same.

Records are generated from each contract schema (hypothesis), so every field type, every
union branch, empty and long arrays and maps, and large and negative longs are covered.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamalloc.serialization import SCHEMA_NAMES, parsed_schema
from streamalloc.serialization.codec import Unsupported, compile_codec

HEADER = b"\x00\x00\x00\x03\xe9"
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOAT32 = st.floats(width=32, allow_nan=False)
TEXT = st.text(max_size=12)


def records(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for `schema` (a fastavro-parsed schema), with named types from `named`."""
    if isinstance(schema, str):
        primitive = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": INT32,
            "long": INT64,
            "float": FLOAT32,
            "double": st.floats(allow_nan=False),
            "bytes": st.binary(max_size=12),
            "string": TEXT,
        }
        return primitive[schema] if schema in primitive else records(named[schema], named)
    if isinstance(schema, list):
        return st.one_of(*(records(branch, named) for branch in schema))
    kind = schema["type"]
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: records(f["type"], named) for f in schema["fields"]})
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(records(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(TEXT, records(schema["values"], named), max_size=3)
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    return records(kind, named)  # {"type": "long", "logicalType": ...} and the like


def fastavro_bytes(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(HEADER)
    schemaless_writer(out, schema, record)
    return out.getvalue()


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_contract_schema_compiles(name: str) -> None:
    read, write = compile_codec(parsed_schema(name))
    assert callable(read) and callable(write)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_compiled_codec_matches_fastavro_byte_for_byte(name: str, data: st.DataObject) -> None:
    schema = parsed_schema(name)
    read, write = compile_codec(schema)
    record = data.draw(records(schema, dict(schema.get("__named_schemas", {}))))

    expected = fastavro_bytes(schema, record)
    assert write(record, HEADER) == expected

    decoded, end = read(expected, len(HEADER))
    assert end == len(expected)
    body = io.BytesIO(expected)
    body.seek(len(HEADER))
    assert decoded == schemaless_reader(body, schema, None)


def test_a_truncated_body_does_not_read_as_a_record() -> None:
    schema = parsed_schema("allocation")
    read, write = compile_codec(schema)
    sample = {
        "event_id": "e1:1:allocated", "cause_event_id": "e1", "type": "allocated", "order_id": "web-1",
        "line_id": "1", "sku": "TEE", "channel": "web", "qty": 2, "location": "WH", "lot": None,
        "reason": None, "line_count": None, "occurred_at": 1, "decided_at": 2,
    }  # fmt: skip
    data = write(sample, HEADER)
    assert read(data, len(HEADER)) == ({**sample, "ship_complete": False, "promised_at": None}, len(data))
    with pytest.raises(Exception):  # noqa: B017 - any error will do; the serde turns it into a typed one
        read(data[:-3], len(HEADER))


def test_a_schema_it_cannot_compile_is_refused_for_fastavro_to_handle() -> None:
    with pytest.raises(Unsupported):
        compile_codec({"type": "array", "items": "long"})


def test_longs_read_and_written_again_come_from_the_tables_unchanged() -> None:
    """Multi-byte longs are kept by value and by bytes (six-byte ones, mostly epoch ms): the
    second read or write of each, served from the table, matches fastavro as the first did;
    so do its neighbours of other lengths, which the tables must never answer for."""
    schema = {
        "type": "record",
        "name": "T",
        "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "long"}],
    }
    read, write = compile_codec(schema)
    values = [
        1_764_000_000_000,
        -1_764_000_000_000,
        2**40,
        2**41 - 1,
        2**41,
        2**48,
        2**34,
        2**35 - 1,
        300,
        -300,
    ]
    for _ in range(2):
        for a in values:
            for b in (a, -a, a + 1):
                expected = io.BytesIO()
                schemaless_writer(expected, schema, {"a": a, "b": b})
                assert write({"a": a, "b": b}, b"") == expected.getvalue()
                assert read(expected.getvalue(), 0) == ({"a": a, "b": b}, len(expected.getvalue()))
