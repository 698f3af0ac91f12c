"""Loading the Avro contract (schemas/*.avsc), once per process."""

from __future__ import annotations

import functools
import importlib.resources
import json
from pathlib import Path
from typing import Any

import fastavro

from streamalloc.errors import SchemaError

SCHEMA_NAMES = (
    "order",
    "inventory",
    "location",
    "channel",
    "allocation",
    "allocation_request",
    "availability",
    "order_status",
    "dead_letter",
)


@functools.cache
def schema_dir() -> Path:
    """The installed copy (wheel: streamalloc/_schemas) or the repository's schemas/."""
    packaged = importlib.resources.files("streamalloc").joinpath("_schemas")
    if packaged.is_dir():
        return Path(str(packaged))
    repo = Path(__file__).resolve().parents[3] / "schemas"
    if repo.is_dir():
        return repo
    raise SchemaError("cannot find the Avro schemas (neither streamalloc/_schemas nor ./schemas)")


@functools.cache
def raw_schema(name: str) -> dict[str, Any]:
    """The schema as written in its .avsc file."""
    if name not in SCHEMA_NAMES:
        raise SchemaError(f"no schema named {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    path = schema_dir() / f"{name}.avsc"
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"cannot load {path}: {exc}") from exc
    return loaded


@functools.cache
def parsed_schema(name: str) -> Any:
    """The fastavro-parsed schema, for readers and writers."""
    return fastavro.parse_schema(raw_schema(name))


@functools.cache
def local_ids() -> dict[str, int]:
    """The committed schema-id table used when no schema registry is configured."""
    path = schema_dir() / "ids.json"
    try:
        ids: dict[str, int] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"cannot load {path}: {exc}") from exc
    return ids
