"""The audit's ledger check: `stock-changes` against the inventory events and itself."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol


class Breaches(Protocol):
    """What the check reports to (audit.AuditReport)."""

    events: Counter[str]
    repeats: int

    def breach(self, text: str) -> None: ...


_LEDGER = ("on_hand", "quality_control", "damaged", "incoming", "in_transit")


def check_ledger(
    report: Breaches,
    changes: Iterable[Mapping[str, Any]],
    inventory: Iterable[Mapping[str, Any]],
    refused: set[str],
    known: set[str],
    final: dict[tuple[str, str], Counter[str]],
) -> None:
    """The inventory ledger (`stock-changes`) against the events and itself.

    Each change names a known cause and moves its location from what the last change there
    left by exactly its deltas; every inventory event applied has its change, and no
    change is there twice. The ledger's last word on a location is what its balance must
    be, which also settles the locations a count made uncheckable from the events alone;
    its in_transit there must be what the events leave in transit (a count never moves it).
    """
    balance: dict[tuple[str, str], dict[str, int]] = {}
    seen: set[str] = set()
    inventory_causes: set[str] = set()
    for change in changes:
        event_id = change["event_id"]
        if event_id in seen:
            report.repeats += 1
            continue
        seen.add(event_id)
        report.events["stock.change"] += 1
        cause = change["cause_event_id"]
        if cause not in known:
            report.breach(f"stock change {event_id} has an unknown cause {cause}")
        if change.get("line_id") is None:
            inventory_causes.add(cause)
        where = (change["sku"], change["location"])
        before = balance.get(where, dict.fromkeys(_LEDGER, 0))
        after = {bucket: change.get(bucket, 0) for bucket in _LEDGER}  # (in_transit: since schema 1022)
        moved = {bucket: before[bucket] + change.get(f"{bucket}_delta", 0) for bucket in _LEDGER}
        if moved != after:
            report.breach(
                f"stock change {event_id} at {where}: {before} moved by its deltas is {moved}, not {after}"
            )
        balance[where] = after
    applied = {e["event_id"] for e in inventory if e["event_id"] not in refused}
    for missing in sorted(applied - inventory_causes):
        report.breach(f"inventory event {missing} was applied but has no stock change")
    for where, after in balance.items():
        buckets = final[where]
        if buckets.get("in_transit", 0) != after["in_transit"]:
            report.breach(
                f"{where[0]} at {where[1]}: the ledger ends at in_transit={after['in_transit']}, "
                f"the events give {buckets.get('in_transit', 0)}"
            )
        if buckets.get("uncheckable"):  # a count: the ledger says what the events cannot
            del buckets["uncheckable"]
            for bucket in ("on_hand", "quality_control", "damaged"):
                buckets[bucket] = after[bucket]
        else:
            for bucket in ("on_hand", "quality_control", "damaged"):
                if buckets.get(bucket, 0) != after[bucket]:
                    report.breach(
                        f"{where[0]} at {where[1]}: the ledger ends at {bucket}={after[bucket]}, "
                        f"the events give {buckets.get(bucket, 0)}"
                    )
