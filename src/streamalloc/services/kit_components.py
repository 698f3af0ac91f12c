"""A kit's ATS from its components' ATS, exact with any number of channel-sync instances.

An instance of channel-sync reads the availability of its own partitions' SKUs only, and a
kit's components hash to any partition. So the instance that reads a component tells the
kit's owner: a `ComponentAts` keyed by the kit SKU on channel-sync's repartition topic,
with the component's ATS per channel and its `as_of`. The instance that owns the kit's
partition of that topic keeps each component's newest ATS in its `kit-components` table
(`merge`: the newest `as_of` wins, since after a rebalance a component's old and new
reader may both send), and pushes the kit's ATS per channel as whole kits (`kit_values`).
A component the owner was never told of counts as none: a kit is never offered beyond
what is known.

The table's entry of a kit, JSON: each component's newest ATS, the record that changed it
last (the kit pushes carry its `as_of` and event ids), and per channel the kit ATS last
computed and the one last pushed (a restart queues again what was computed and not yet
pushed, as channel-sync's own table does).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streamalloc.domain.kits import Kit, kit_ats
from streamalloc.errors import DeserializationError
from streamalloc.services.coalesce import AtsValue


@dataclass(frozen=True, slots=True)
class ComponentAts:
    """One component's ATS per channel, as one availability record gave it, for one kit."""

    kit_sku: str
    sku: str
    as_of: int
    cause_event_id: str
    availability_event_id: str
    ats: Mapping[str, int]  # channel -> ATS

    @classmethod
    def of(cls, kit_sku: str, values: Iterable[AtsValue]) -> ComponentAts | None:
        """From the values of one availability record (coalesce.ats_values); None if none."""
        values = list(values)
        if not values:
            return None
        first = values[0]
        return cls(
            kit_sku,
            first.sku,
            first.as_of,
            first.cause_event_id,
            first.availability_event_id,
            {value.channel: value.ats for value in values},
        )

    def encode(self) -> bytes:
        return json.dumps(
            {
                "kit_sku": self.kit_sku,
                "sku": self.sku,
                "as_of": self.as_of,
                "cause_event_id": self.cause_event_id,
                "availability_event_id": self.availability_event_id,
                "ats": dict(self.ats),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> ComponentAts:
        """Raises DeserializationError, naming what is wrong, for anything but an encoded one."""
        if data is None:
            raise DeserializationError("a kit component record needs a value")
        try:
            raw = json.loads(data)
            ats = raw["ats"]
            if not isinstance(ats, dict):
                raise TypeError("ats is not an object")
            return cls(
                str(raw["kit_sku"]),
                str(raw["sku"]),
                int(raw["as_of"]),
                str(raw["cause_event_id"]),
                str(raw["availability_event_id"]),
                {str(channel): int(value) for channel, value in ats.items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DeserializationError(f"not a kit component record: {exc!r}") from exc


def merge(entry: Mapping[str, Any] | None, record: ComponentAts) -> dict[str, Any] | None:
    """The kit's entry with `record` taken in, or None when it holds a newer ATS of that
    component (a late record from its former reader): nothing changes then."""
    components: dict[str, Any] = dict(entry["components"]) if entry else {}
    held = components.get(record.sku)
    if held is not None and int(held["as_of"]) > record.as_of:
        return None
    components[record.sku] = {"as_of": record.as_of, "ats": dict(record.ats)}
    return {
        "components": components,
        "last": {
            "as_of": record.as_of,
            "cause_event_id": record.cause_event_id,
            "availability_event_id": record.availability_event_id,
        },
        "kit_ats": dict(entry["kit_ats"]) if entry else {},
        "pushed": dict(entry["pushed"]) if entry else {},
    }


def kit_values(kit: Kit, entry: Mapping[str, Any]) -> list[AtsValue]:
    """The kit's ATS in every channel some component's ATS names, from the entry's newest
    ATS of each component (one never told counts as none), with the last record's ids."""
    components: Mapping[str, Any] = entry["components"]
    channels = sorted({channel for held in components.values() for channel in held["ats"]})
    return [
        _kit_value(
            kit.kit_sku,
            channel,
            kit_ats(kit, {sku: int(held["ats"].get(channel, 0)) for sku, held in components.items()}),
            entry["last"],
        )
        for channel in channels
    ]


def unpushed(kit_sku: str, entry: Mapping[str, Any]) -> list[tuple[AtsValue, int | None]]:
    """The kit ATS computed per channel and not pushed yet (a restart came between), each
    with what was pushed last."""
    return [
        (_kit_value(kit_sku, channel, int(ats), entry["last"]), entry["pushed"].get(channel))
        for channel, ats in entry["kit_ats"].items()
        if entry["pushed"].get(channel) != ats
    ]


def _kit_value(kit_sku: str, channel: str, ats: int, last: Mapping[str, Any]) -> AtsValue:
    return AtsValue(
        channel,
        kit_sku,
        ats,
        int(last["as_of"]),
        str(last["cause_event_id"]),
        str(last["availability_event_id"]),
        kit=True,
    )


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":"), sort_keys=True).encode()
