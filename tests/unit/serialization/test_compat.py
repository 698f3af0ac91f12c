"""Schemas stay backward compatible: what an older layout wrote, the current one reads.

schemas/history keeps every retired writer layout under the id it was written with, and
schemas/ids.json records next to each current id the fingerprint of the layout it names.
So these checks read the schema files alone, never git history, and none skips: a schema
that never changed has one id, and then what is checked is that this id names and reads
its current layout.
"""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import fastavro
import pytest

from streamalloc.config import Settings
from streamalloc.serialization import CONTRACT, SCHEMA_NAMES, parsed_schema, raw_schema, topic_serde
from streamalloc.serialization.schemas import (
    layout_fingerprint,
    local_id_table,
    local_ids,
    retired_schemas,
    schema_dir,
)
from streamalloc.serialization.serde import COMPACT_MAGIC, HEADER_SIZE

SETTINGS = Settings()
TOPIC_OF = {c.schema: SETTINGS.topic(c.name) for c in CONTRACT.values()}
FIRST_ID = 1001


def _example(schema: Any, names: dict[str, Any]) -> Any:
    """A record with every field set to a simple value of its type (first union branch not null)."""
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        return _example(branches[0], names) if branches else None
    if isinstance(schema, str):
        simple = {
            "int": 1,
            "long": 2,
            "float": 1.5,
            "double": 2.5,
            "string": "s",
            "boolean": True,
            "bytes": b"b",
        }
        return simple[schema] if schema in simple else _example(names[schema], names)
    kind = schema["type"]
    if kind == "record":
        names[schema["name"]] = schema
        names[f"{schema.get('namespace', '')}.{schema['name']}"] = schema
        return {f["name"]: _example(f["type"], names) for f in schema["fields"]}
    if kind == "enum":
        names[schema["name"]] = schema
        return schema["symbols"][0]
    if kind == "array":
        return [_example(schema["items"], names)]
    return _example(kind, names)


def _reads_with_current(old: dict[str, Any], name: str) -> dict[str, Any]:
    record = _example(old, {})
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), record)
    buffer.seek(0)
    decoded: dict[str, Any] = fastavro.schemaless_reader(
        buffer, fastavro.parse_schema(old), parsed_schema(name)
    )
    return decoded


def test_a_record_written_before_fields_were_added_decodes_with_defaults() -> None:
    current = raw_schema("order")
    added = {"priority", "ship_complete", "region", "reservation_ttl_s"}
    v0 = {**current, "fields": [f for f in current["fields"] if f["name"] not in added]}
    decoded = _reads_with_current(v0, "order")
    assert decoded["priority"] == 0
    assert decoded["ship_complete"] is False
    assert decoded["region"] is None
    assert decoded["order_id"] == "s"


def test_every_field_has_a_doc() -> None:
    def walk(schema: Any) -> None:
        if isinstance(schema, list):
            for branch in schema:
                walk(branch)
        elif isinstance(schema, dict):
            for field in schema.get("fields", []):
                assert field.get("doc"), f"{schema['name']}.{field['name']} has no doc"
                walk(field["type"])
            if "items" in schema:
                walk(schema["items"])

    for name in SCHEMA_NAMES:
        walk(raw_schema(name))


def _layouts(name: str) -> dict[int, dict[str, Any]]:
    """Every layout ever written under an id of `name`: the current one, then those in history."""
    layouts = {local_ids()[name]: raw_schema(name)}
    for schema_id, (owner, _) in sorted(retired_schemas().items()):
        if owner == name:
            layouts[schema_id] = json.loads(
                (schema_dir() / "history" / f"{name}-{schema_id}.avsc").read_text()
            )
    return layouts


def _framed(schema_id: int, layout: dict[str, Any], record: dict[str, Any]) -> bytes:
    """`record` as a producer with `layout` writes it: Confluent header with `schema_id`, then the body."""
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(layout), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_the_current_layout_is_the_one_its_id_names(name: str) -> None:
    entry = local_id_table()[name]
    found = layout_fingerprint(raw_schema(name))
    issued = set(local_ids().values()) | set(retired_schemas())
    assert found == entry.fingerprint, (
        f"schemas/{name}.avsc no longer has the layout that id {entry.id} names in schemas/ids.json, so "
        f"records written under {entry.id} would be misread. Keep the layout it had as "
        f"schemas/history/{name}-{entry.id}.avsc (git show HEAD:schemas/{name}.avsc), then give {name} "
        f'the id {max(issued) + 1} with "fingerprint": "{found}". Docs and defaults do not change the layout.'
    )


def test_every_id_ever_issued_is_current_or_kept_in_history() -> None:
    current, retired = local_ids(), retired_schemas()
    assert len(set(current.values())) == len(current), (
        f"two schemas share an id in schemas/ids.json: {current}"
    )
    reused = set(current.values()) & set(retired)
    assert not reused, f"ids {sorted(reused)} are both current and retired: an id is never reused"
    issued = set(current.values()) | set(retired)
    missing = sorted(set(range(FIRST_ID, max(issued) + 1)) - issued)
    assert not missing, (
        f"ids {missing} were issued but are neither current nor kept: keep the layout each of them named "
        "as schemas/history/<name>-<id>.avsc, so what was written under it still decodes"
    )
    assert min(issued) == FIRST_ID


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_what_was_written_under_every_id_of_a_schema_decodes_with_the_current_one(name: str) -> None:
    serde = topic_serde(SETTINGS, TOPIC_OF[name])
    fields = {f["name"]: f for f in raw_schema(name)["fields"]}
    current_id = local_ids()[name]
    for schema_id, layout in _layouts(name).items():
        record = _example(layout, {})
        framed = _framed(schema_id, layout, record)
        decoded = serde.decode(framed)
        assert set(decoded) == set(fields), f"{name} under id {schema_id}"
        if schema_id == current_id:
            assert decoded == record
            written = serde.encode(record)
            if serde.compact:  # an internal topic: the compact frame under the same id
                assert written[:HEADER_SIZE] == bytes([COMPACT_MAGIC]) + schema_id.to_bytes(4, "big")
                assert serde.decode(written) == record
            else:
                assert written == framed, f"the serde writes {name} under another id or layout"
            continue
        for field, value in decoded.items():
            if field not in record:
                assert value == fields[field]["default"], (
                    f"{name} under id {schema_id}: {field} lacks its default"
                )
            elif not isinstance(value, dict | list):
                assert value == record[field], f"{name} under id {schema_id}: {field}"


def test_the_fingerprint_follows_the_layout_not_docs_or_defaults() -> None:
    schema = raw_schema("location")
    reworded = copy.deepcopy(schema)
    reworded["doc"] = "reworded"
    for field in reworded["fields"]:
        field["doc"] = f"{field['doc']} (reworded)"
        if field["name"] == "priority":
            field["default"] = 7
    assert layout_fingerprint(reworded) == layout_fingerprint(schema)

    added = copy.deepcopy(schema)
    added["fields"].append({"name": "dock_doors", "type": "int", "default": 0, "doc": "Dock doors."})
    reordered = copy.deepcopy(schema)
    reordered["fields"].reverse()
    widened = copy.deepcopy(schema)
    widened["fields"][0]["type"] = ["null", widened["fields"][0]["type"]]
    fingerprints = {layout_fingerprint(s) for s in (schema, added, reordered, widened)}
    assert len(fingerprints) == 4, "each change of layout changes the fingerprint"
