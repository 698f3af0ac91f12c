"""The recorded history as replay steps, and the table records a run is decided under."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from streamalloc.domain import (
    Channel,
    Command,
    Location,
    Tables,
)
from streamalloc.domain.kits import Kit
from streamalloc.errors import ValidationError
from streamalloc.stages.allocator import inventory_command, request_command
from streamalloc.stages.intake import check_order, expand_kits, line_requests
from streamalloc.stages.tables import channel_of, kit_of, kits_of, location_of

# ---------------------------------------------------------------- history


@dataclass(frozen=True, slots=True)
class OrderStep:
    """One order event, with the per-line commands intake would have made of it."""

    occurred_at: int
    event_id: str
    type: str
    order_id: str
    channel: str
    ship_complete: bool
    commands: tuple[Command, ...]

    @property
    def whole_order_cancel(self) -> bool:
        return self.type == "cancelled" and not self.commands


@dataclass(frozen=True, slots=True)
class InventoryStep:
    """One inventory event as its domain command."""

    occurred_at: int
    command: Command


Step = OrderStep | InventoryStep


def order_step(order: Mapping[str, Any], kits: Mapping[str, Kit] | None = None) -> OrderStep:
    """A decoded order event (topic shape, defaults filled) as a history step, its kit lines
    expanded with `kits` into their components' lines, the order then ship-complete, as
    intake expands them (`stages.intake.expand_kits`).

    Refuses, with ValidationError, what intake would send to the dead-letter topic.
    """
    check_order(order)  # as intake decodes it: before the expansion
    if kits:
        order = expand_kits(order, kits)
    commands = tuple(request_command(request.as_record()) for request in line_requests(order))
    return OrderStep(
        occurred_at=order["occurred_at"],
        event_id=order["event_id"],
        type=order["type"],
        order_id=order["order_id"],
        channel=order["channel"],
        ship_complete=order["ship_complete"],
        commands=commands,
    )


def inventory_step(event: Mapping[str, Any]) -> InventoryStep:
    """A decoded inventory event as a history step (ValidationError as the allocator refuses it)."""
    return InventoryStep(occurred_at=event["occurred_at"], command=inventory_command(dict(event)))


def history(orders: Iterable[OrderStep], inventory: Iterable[InventoryStep]) -> list[Step]:
    """Both inputs merged by occurred_at; on a tie inventory first, then input order."""
    merged: list[Step] = [*inventory, *orders]
    merged.sort(key=lambda step: (step.occurred_at, type(step) is OrderStep))  # stable: input order
    return merged


# ---------------------------------------------------------------- tables

TableKind = Literal["location", "channel", "kit"]
#: The field that tells a table record's kind, per kind.
_ID_FIELDS: dict[TableKind, str] = {"location": "location_id", "channel": "channel_id", "kit": "kit_sku"}


def table_kind(record: Mapping[str, Any]) -> TableKind:
    """Whether a table record is a location (has location_id), a channel (has channel_id) or a
    kit (has kit_sku)."""
    kinds = [kind for kind, name in _ID_FIELDS.items() if name in record]
    if len(kinds) != 1:
        raise ValidationError(
            "a table record has one of location_id (a location), channel_id (a channel) or "
            "kit_sku (a kit)" + (f", not {' and '.join(_ID_FIELDS[k] for k in kinds)}" if kinds else "")
        )
    return kinds[0]


@dataclass(frozen=True, slots=True)
class TableRecords:
    """Location, channel and kit records by row id, as decoded from the tables; later records win."""

    locations: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    channels: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    #: by kit SKU; an inactive or invalid record is kept, and is no kit (`kits`)
    kit_records: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def add(self, record: Mapping[str, Any], key: str | None = None) -> TableKind:
        """Add (or replace) one record under its row id: `key`, the Kafka key of a record read
        from a topic (the workers key rows by it), else the record's id field (a file's line,
        which `produce` would key by it). ValidationError if the domain cannot read it."""
        kind = table_kind(record)
        try:
            if kind == "location":
                location_of(record)
                self.locations[record["location_id"] if key is None else key] = record
            elif kind == "channel":
                channel_of(record)
                self.channels[record["channel_id"] if key is None else key] = record
            else:
                kit_of(record)
                self.kit_records[record["kit_sku"] if key is None else key] = record
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"not a valid {kind} record: {exc!r}") from exc
        return kind

    def overlay(self, policy: TableRecords) -> TableRecords:
        """These records with `policy`'s on top: a policy record replaces the whole record,
        as publishing it to the compacted topic would."""
        return TableRecords(
            {**self.locations, **policy.locations},
            {**self.channels, **policy.channels},
            {**self.kit_records, **policy.kit_records},
        )

    def tables(self) -> Tables:
        locations: dict[str, Location] = {k: location_of(v) for k, v in self.locations.items()}
        channels: dict[str, Channel] = {k: channel_of(v) for k, v in self.channels.items()}
        return Tables(locations=locations, channels=channels)

    def kits(self) -> dict[str, Kit]:
        """The kits table as intake reads it: kit SKU -> Kit, for the records that are kits."""
        return kits_of(self.kit_records)

    def __len__(self) -> int:
        return len(self.locations) + len(self.channels) + len(self.kit_records)


def policy_changes(baseline: TableRecords, policy: TableRecords) -> list[str]:
    """What the policy changes in the baseline, one line per record, e.g.
    `channel store: pool_share 0.2 -> 0.5`."""
    changes: list[str] = []
    for kind, base, new in (
        ("location", baseline.locations, policy.locations),
        ("channel", baseline.channels, policy.channels),
    ):
        for key in sorted(new):
            record, before = new[key], base.get(key)
            if before is None:
                changes.append(f"{kind} {key}: added")
                continue
            fields = [
                f"{name} {_show(before.get(name))} -> {_show(record.get(name))}"
                for name in sorted(set(before) | set(record))
                if before.get(name) != record.get(name)
            ]
            changes.append(f"{kind} {key}: " + (", ".join(fields) if fields else "unchanged"))
    return changes


def _show(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
