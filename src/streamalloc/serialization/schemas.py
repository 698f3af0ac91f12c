"""Loading the Avro contract (schemas/*.avsc), once per process.

How the contract evolves (namespace `streamalloc.v1`; every change must stay BACKWARD
compatible: the current schema reads what any earlier version wrote):

- A new field always has a default, so records written without it still decode.
- An Avro reader fails on an enum symbol it does not know unless its enum has a
  `default`, so each closed set is an enum only when an unknown symbol has a sensible
  reading, and a string when the set will grow:
  - `Location.status` is an enum with default `offline`: a status an older engine does
    not understand (say, a future `draining`) must never be allocated from.
  - `Order.type` and `InventoryEvent.type` are enums without a default on purpose:
    they are the contract's verbs, and no known verb is a safe reading of an unknown
    one. An engine that meets a newer verb fails the decode, so the record goes to
    `dead-letter` with its bytes, to be replayed once the engine is upgraded.
  - `Allocation.type` is a string: it grows with every policy (`reallocated`,
    `expired`, `waitlisted`, the internal `cancel_requested`, ...), and routing,
    channel-sync and users must keep reading records of types they do not act on.
    `Allocation.reason` is a plain string for the same reason.
  - `OrderStatus.status`, its lines' `status`, `AllocationRequest.command`,
    `InventoryEvent.result` and the availability location `status` are strings too:
    each set grows with the policies (waitlisted, expired, stale, ...), and the
    consumers that check them (the allocator, sales channels) refuse or ignore a value
    they do not know with a reason of their own.
- Local schema ids (schemas/ids.json) name one writer layout each, and ids.json records
  that layout's fingerprint next to its id (`layout_fingerprint`: Avro's CRC-64 of the
  parsing canonical form, which docs and defaults do not change). A change to the
  layout needs a new id, the next one above the highest ever issued (ids are never
  reused), with the new fingerprint; the layout it retires goes to
  schemas/history/<name>-<old id>.avsc, so records written before the change (a
  compacted table above all) still decode. tests/unit/serialization/test_compat.py
  fails on a layout that does not match its fingerprint, on an issued id that is
  neither current nor kept, and on a kept layout the current schema cannot read.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

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
    "stock_change",
    "channel_ats",
    "fulfilment_request",
    "fulfilment_ack",
    "transfer_recommendation",
    "kit",
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


@dataclass(frozen=True, slots=True)
class LocalId:
    """A schema's entry in schemas/ids.json: its id, and the fingerprint of the layout it names."""

    id: int
    fingerprint: str


def layout_fingerprint(schema: Any) -> str:
    """Avro's CRC-64 fingerprint (hex) of the schema's parsing canonical form: its writer layout."""
    canonical = to_parsing_canonical_form(fastavro.parse_schema(schema))
    value: str = fingerprint(canonical, "CRC-64-AVRO")
    return value


@functools.cache
def local_id_table() -> dict[str, LocalId]:
    """schemas/ids.json: name -> {"id": ..., "fingerprint": ...} for every current schema."""
    path = schema_dir() / "ids.json"
    try:
        entries = json.loads(path.read_text())
        return {name: LocalId(int(e["id"]), str(e["fingerprint"])) for name, e in entries.items()}
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"cannot load {path}: {exc}") from exc
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        shape = '{"id": <int>, "fingerprint": <hex>}'
        raise SchemaError(f"{path}: each schema maps to {shape} ({exc!r})") from exc


@functools.cache
def local_ids() -> dict[str, int]:
    """The committed schema-id table used when no schema registry is configured."""
    return {name: entry.id for name, entry in local_id_table().items()}


@functools.cache
def retired_schemas() -> dict[int, tuple[str, Any]]:
    """Layouts earlier versions wrote under local ids no longer current: id -> (name, parsed)."""
    retired: dict[int, tuple[str, Any]] = {}
    folder = schema_dir() / "history"
    if not folder.is_dir():
        return retired
    for path in sorted(folder.glob("*.avsc")):
        name, _, schema_id = path.stem.rpartition("-")
        if name not in SCHEMA_NAMES or not schema_id.isdigit():
            raise SchemaError(f"{path}: a retired schema is named <schema>-<id>.avsc")
        try:
            retired[int(schema_id)] = (name, fastavro.parse_schema(json.loads(path.read_text())))
        except (OSError, ValueError) as exc:
            raise SchemaError(f"cannot load {path}: {exc}") from exc
    return retired
