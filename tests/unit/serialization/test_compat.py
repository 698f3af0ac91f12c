"""Schemas stay backward compatible: what an older version wrote, the current one reads."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import fastavro
import pytest

from streamalloc.serialization import SCHEMA_NAMES, parsed_schema, raw_schema

REPO = Path(__file__).resolve().parents[3]


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


def _previous_version(name: str) -> dict[str, Any] | None:
    """The committed version before the current one, or None when there is none."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return None
    path = f"schemas/{name}.avsc"

    def show(rev: str) -> str | None:
        done = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    head = show("HEAD")
    if head is not None and json.loads(head) != raw_schema(name):
        return dict(json.loads(head))  # the working copy changed it: HEAD is the previous version
    commits = subprocess.run(
        ["git", "log", "--format=%H", "-n", "2", "--", path], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    if len(commits) < 2:
        return None
    older = show(commits[1])
    return None if older is None else dict(json.loads(older))


def _reads_with_current(old: dict[str, Any], name: str) -> dict[str, Any]:
    record = _example(old, {})
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), record)
    buffer.seek(0)
    decoded: dict[str, Any] = fastavro.schemaless_reader(
        buffer, fastavro.parse_schema(old), parsed_schema(name)
    )
    return decoded


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_previous_committed_version_decodes_with_the_current_schema(name: str) -> None:
    old = _previous_version(name)
    if old is None:
        pytest.skip(f"{name}.avsc has no previous committed version yet")
    decoded = _reads_with_current(old, name)
    assert set(decoded) == {f["name"] for f in raw_schema(name)["fields"]}


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


def test_every_retired_layout_has_its_own_id_and_decodes_with_the_current_schema() -> None:
    from streamalloc.serialization.schemas import local_ids, retired_schemas

    current = set(local_ids().values())
    for schema_id, (name, parsed) in retired_schemas().items():
        assert schema_id not in current, f"retired {name} layout {schema_id} is still a current id"
        old = json.loads((REPO / "schemas" / "history" / f"{name}-{schema_id}.avsc").read_text())
        assert fastavro.parse_schema(old) == parsed
        assert set(_reads_with_current(old, name)) == {f["name"] for f in raw_schema(name)["fields"]}


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_a_changed_layout_got_a_new_id_and_the_old_one_was_kept(name: str) -> None:
    from fastavro.schema import to_parsing_canonical_form

    from streamalloc.serialization.schemas import retired_schemas

    old = _previous_version(name)
    if old is None:
        pytest.skip(f"{name}.avsc has no previous committed version yet")
    layout = to_parsing_canonical_form(fastavro.parse_schema(old))
    if layout == to_parsing_canonical_form(parsed_schema(name)):
        return  # docs or defaults changed, not the layout: the id still names it
    kept = [i for i, (n, parsed) in retired_schemas().items() if n == name]
    assert any(to_parsing_canonical_form(retired_schemas()[i][1]) == layout for i in kept), (
        f"{name}.avsc changed its layout: give it a new id in schemas/ids.json and keep the previous "
        f"layout as schemas/history/{name}-<its old id>.avsc"
    )


def test_a_record_written_under_a_retired_id_decodes_with_the_current_serde() -> None:
    from streamalloc.config import Settings
    from streamalloc.serialization import topic_serde
    from streamalloc.serialization.schemas import retired_schemas

    settings = Settings()
    for schema_id, (name, parsed) in retired_schemas().items():
        topic = {"channel": "channels", "availability": "availability", "location": "locations"}.get(name)
        if topic is None:
            continue
        record = _example(json.loads(json.dumps(parsed)), {})
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed, record)
        framed = b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()
        decoded = topic_serde(settings, settings.topic(topic)).decode(framed)
        assert set(decoded) == {f["name"] for f in raw_schema(name)["fields"]}
