"""The chaos test's verifier: what the committed inputs say every SKU must end at.

Kafka Streams' exactly-once system test recomputes its aggregates from the input topic and
compares them with the last output per key. This does the same for the allocator, whose
state is not an aggregate but the outcome of decisions: it replays the allocator's own
committed inputs (`allocation-requests` and `inventory`, read_committed) through the pure
domain (`domain.apply`), SKU by SKU, and compares

- the replayed balances per location (`on_hand`, `allocated`, `picked`,
  `quality_control`, `damaged`) with the SKU's last `availability` record;
- the replayed decisions (allocation events and stock changes, by event id, with type,
  qty, location and lot) with the ones the engine committed: a decision the engine lacks
  was lost, one it has more than the inputs explain was doubled or came from state that
  differs from the inputs;
- and the hop before, intake: every line of every committed order event has exactly one
  allocation request (`{order event}:{line_id}`), none twice; a kit line is expanded first,
  as intake expands it (`stages.intake.expand_kits`), into one request per component
  (`{order event}:{line_id}/{sku}`), with the kits table as the `kits` topic ends (the chaos
  load changes no table, so that is the table intake used).

How the replay stands in for the engine (docs/exactly-once.md, "The chaos test"):
a SKU's inputs are taken in offset order per topic, the two topics merged by record
timestamp, requests first on a tie, as the allocator's alignment takes them; each
command is decided at the time the engine decided it (`decided_at` of the engine's
events with that cause; the record's timestamp when it emitted none). Decisions of the
engine's clock or of a table change (causes `clock:...`, `locations:...`: reservation
expiries, sweeps) are not inputs: a SKU that has any is reported as not replayable and
left out, never silently passed (the chaos load gives no reservation a deadline and
changes no table, so there are none). Nothing here reads Kafka.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from streamalloc.audit import BUCKETS, TABLE_CAUSES
from streamalloc.domain import Command, SkuState, Tables, apply
from streamalloc.domain.events import AllocationEvent, StockChanged
from streamalloc.domain.kits import Kit
from streamalloc.domain.views import availability
from streamalloc.stages.allocator import inventory_command, request_command
from streamalloc.stages.intake import expand_kits

#: Order event types whose every listed line becomes one allocation request at intake.
LINE_EVENTS = frozenset({"placed", "cancelled", "picked", "fulfilled", "returned", "amended"})
#: At most this many mismatches are described in the report; all are counted.
MAX_DETAILS = 50


class Positioned(NamedTuple):
    """One committed input record: where it sits in its topic, its timestamp, its value."""

    partition: int
    offset: int
    timestamp_ms: int
    value: Mapping[str, Any]


@dataclass
class Verification:
    """What the verifier found; `ok` when nothing was lost, doubled or mismatched."""

    skus_checked: int = 0
    skus_not_replayable: int = 0
    locations_checked: int = 0
    decisions_checked: int = 0
    requests_checked: int = 0
    balance_mismatches: int = 0
    lost_decisions: int = 0
    extra_decisions: int = 0
    doubled_outputs: int = 0
    lost_requests: int = 0
    doubled_requests: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        return (
            self.balance_mismatches
            + self.lost_decisions
            + self.extra_decisions
            + self.doubled_outputs
            + self.lost_requests
            + self.doubled_requests
        )

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def note(self, text: str) -> None:
        if len(self.details) < MAX_DETAILS:
            self.details.append(text)

    def as_record(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "skus_checked": self.skus_checked,
            "skus_not_replayable": self.skus_not_replayable,
            "locations_checked": self.locations_checked,
            "decisions_checked": self.decisions_checked,
            "requests_checked": self.requests_checked,
            "balance_mismatches": self.balance_mismatches,
            "lost_decisions": self.lost_decisions,
            "extra_decisions": self.extra_decisions,
            "doubled_outputs": self.doubled_outputs,
            "lost_requests": self.lost_requests,
            "doubled_requests": self.doubled_requests,
            "details": self.details,
        }


Shape = tuple[str, int, str | None, str | None]  # (type or reason, qty, location, lot)


def verify(
    *,
    orders: Iterable[Mapping[str, Any]],
    requests: Sequence[Positioned],
    inventory: Sequence[Positioned],
    allocations: Iterable[Mapping[str, Any]],
    stock_changes: Iterable[Mapping[str, Any]],
    availability_records: Iterable[Mapping[str, Any]],
    tables: Tables,
    refused_ids: Iterable[str] = (),
    kits: Mapping[str, Kit] | None = None,
) -> Verification:
    """Check the engine's committed outputs against a replay of its committed inputs.

    `orders` are the committed order events; `requests` and `inventory` the allocator's
    committed inputs with their positions; `allocations`, `stock_changes` and
    `availability_records` the engine's committed outputs, each topic in partition
    order; `refused_ids` the event ids the engine dead-lettered (never applied); `kits`
    the kits table intake expanded kit lines with (kit SKU -> Kit; none: no kits).
    """
    result = Verification()
    refused = set(refused_ids)
    _check_intake(result, orders, requests, allocations := list(allocations), refused, kits or {})
    decided, engine, not_replayable = _engine_decisions(result, allocations, stock_changes)
    last: dict[str, Mapping[str, Any]] = {}
    for record in availability_records:
        last[record["sku"]] = record
    inventory = [item for item in inventory if item.value["event_id"] not in refused]
    states, replayed = _replay(requests, inventory, tables, decided)
    for sku in sorted(states.keys() | last.keys() | engine.keys()):
        if sku in not_replayable:
            result.skus_not_replayable += 1
            result.note(f"{sku}: decided by the clock or a table change, not replayable from inputs")
            continue
        result.skus_checked += 1
        _compare_decisions(result, sku, replayed.get(sku, {}), engine.get(sku, {}))
        _compare_balances(result, sku, states.get(sku) or SkuState(sku), tables, last.get(sku))
    return result


def _check_intake(
    result: Verification,
    orders: Iterable[Mapping[str, Any]],
    requests: Sequence[Positioned],
    allocations: Sequence[Mapping[str, Any]],
    refused: set[str],
    kits: Mapping[str, Kit],
) -> None:
    """Every line of every committed order event has one request, and no more than that; a
    kit line, expanded as intake expands it, one per component line.

    An upstream producer may send an order event twice (an at-least-once channel: the
    chaos load's warehouse re-reads `allocations` when its group loses the broker); intake
    then rightly emits its requests twice, with the same ids, and the allocator drops the
    repeat. So an id counts as doubled only when it is on the topic more often than its
    order event is on the order topics (once, for the order stage's own releases).
    """
    orders = list(orders)
    sent = Counter(event["event_id"] for event in orders)
    have = Counter(item.value["event_id"] for item in requests)
    cancels = {a["event_id"] for a in allocations if a["type"] == "cancel_requested"}
    allowed: dict[str, int] = {}
    seen: set[str] = set()
    for event in orders:
        event_id = event["event_id"]
        if event_id in seen or event_id in refused or event["type"] not in LINE_EVENTS:
            continue
        seen.add(event_id)
        if kits:
            event = expand_kits(event, kits)
        if event["type"] == "cancelled" and not event["lines"]:
            result.requests_checked += 1
            if f"{event_id}:cancel_requested" not in cancels:
                result.lost_requests += 1
                result.note(f"whole-order cancellation {event_id} has no cancel_requested")
            continue
        for line in event["lines"]:
            result.requests_checked += 1
            request_id = f"{event_id}:{line['line_id']}"
            allowed[request_id] = sent[event_id]
            if request_id not in have:
                result.lost_requests += 1
                result.note(f"{event['type']} {event_id} line {line['line_id']} has no allocation request")
    for request_id, n in have.items():
        if n > allowed.get(request_id, 1):
            result.doubled_requests += 1
            result.note(f"allocation request {request_id} is on the topic {n} times")


def _engine_decisions(
    result: Verification, allocations: Iterable[Mapping[str, Any]], stock_changes: Iterable[Mapping[str, Any]]
) -> tuple[dict[tuple[str, str], int], dict[str, dict[str, Shape]], set[str]]:
    """The allocator's committed decisions per SKU by event id; when each cause was decided;
    the SKUs the clock or a table decided something for."""
    decided: dict[tuple[str, str], int] = {}
    engine: dict[str, dict[str, Shape]] = defaultdict(dict)
    not_replayable: set[str] = set()
    # (an `amend_requested` names its line's SKU, but intake writes it, not the allocator)
    outputs = [
        (a, _allocation_shape(a))
        for a in allocations
        if a.get("sku") is not None and a["type"] != "amend_requested"
    ]
    outputs += [(c, _change_shape(c)) for c in stock_changes]
    for record, shape in outputs:
        sku, event_id, cause = record["sku"], record["event_id"], record["cause_event_id"]
        if str(cause).startswith(TABLE_CAUSES):
            not_replayable.add(sku)
        if event_id in engine[sku]:
            result.doubled_outputs += 1
            result.note(f"{sku}: output {event_id} is committed more than once")
            continue
        engine[sku][event_id] = shape
        at = record.get("decided_at") or 0
        key = (sku, cause)
        decided[key] = min(decided.get(key, at), at)
    return decided, engine, not_replayable


def _allocation_shape(record: Mapping[str, Any]) -> Shape:
    return (record["type"], record["qty"], record.get("location"), record.get("lot"))


def _change_shape(record: Mapping[str, Any]) -> Shape:
    return (f"stock:{record['reason']}", record["on_hand_delta"], record["location"], record.get("lot"))


def _replay(
    requests: Sequence[Positioned],
    inventory: Sequence[Positioned],
    tables: Tables,
    decided: Mapping[tuple[str, str], int],
) -> tuple[dict[str, SkuState], dict[str, dict[str, Shape]]]:
    """Every SKU's state after its inputs, and the decisions they give, by event id.

    The two topics are co-partitioned: partition n of both is one allocator task, which
    takes each in offset order and interleaves them as they arrive (merged by timestamp
    within what it has, alignment waiting a little for the slower input). Which came
    first is in the engine's outputs: every command it applied emitted at least one event
    stamped with the batch's `decided_at`. So each topic's commands keep their offset
    order and the two are merged by when the engine decided them, then by timestamp,
    requests first. A command with no committed event (a duplicate, which changes
    nothing; or one whose decision was lost, which the comparison reports) takes the
    time of the one before it in its topic.
    """
    states: dict[str, SkuState] = {}
    replayed: dict[str, dict[str, Shape]] = defaultdict(dict)
    for partition in sorted({r.partition for r in requests} | {r.partition for r in inventory}):
        ordered = heapq.merge(
            _keyed([request_command(dict(r.value)) for r in _in_order(requests, partition)],
                   _in_order(requests, partition), 0, decided),
            _keyed([inventory_command(dict(r.value)) for r in _in_order(inventory, partition)],
                   _in_order(inventory, partition), 1, decided),
            key=lambda item: item[0],
        )  # fmt: skip
        for (_, timestamp, _), command in ordered:
            state = states.setdefault(command.sku, SkuState(command.sku))
            now = decided.get((command.sku, command.event_id), timestamp)
            out = replayed[command.sku]
            for event in apply(state, command, tables, now):
                if isinstance(event, AllocationEvent):
                    out[event.event_id] = (event.type, event.qty, event.location, event.lot)
                elif isinstance(event, StockChanged):
                    out[event.event_id] = (
                        f"stock:{event.reason}",
                        event.on_hand_delta,
                        event.location,
                        event.lot,
                    )
    return states, replayed


def _keyed(
    commands: list[Command], items: list[Positioned], tag: int, decided: Mapping[tuple[str, str], int]
) -> list[tuple[tuple[int, int, int], Command]]:
    """((when decided, timestamp, tag), command) in offset order; see `_replay`."""
    out: list[tuple[tuple[int, int, int], Command]] = []
    when: int | None = None
    for command, item in zip(commands, items, strict=True):
        when = decided.get((command.sku, command.event_id), when if when is not None else item.timestamp_ms)
        out.append(((when, item.timestamp_ms, tag), command))
    return out


def _in_order(items: Sequence[Positioned], partition: int) -> list[Positioned]:
    return sorted((item for item in items if item.partition == partition), key=_pos)


def _pos(item: Positioned) -> tuple[int, int]:
    return (item.partition, item.offset)


def _compare_decisions(
    result: Verification, sku: str, replayed: Mapping[str, Shape], engine: Mapping[str, Shape]
) -> None:
    result.decisions_checked += len(replayed)
    for event_id in replayed.keys() - engine.keys():
        result.lost_decisions += 1
        result.note(f"{sku}: the inputs give {event_id} {replayed[event_id]}, the engine never committed it")
    for event_id in engine.keys() - replayed.keys():
        result.extra_decisions += 1
        result.note(f"{sku}: the engine committed {event_id} {engine[event_id]}, the inputs do not give it")
    for event_id in replayed.keys() & engine.keys():
        if replayed[event_id] != engine[event_id]:
            result.extra_decisions += 1
            result.note(
                f"{sku}: {event_id} is {engine[event_id]} in the engine, {replayed[event_id]} replayed"
            )


def _compare_balances(
    result: Verification, sku: str, state: SkuState, tables: Tables, record: Mapping[str, Any] | None
) -> None:
    view = availability(state, tables, 0)
    expected = {row.location_id: {b: getattr(row, b) for b in BUCKETS} for row in view.locations}
    if record is None:
        if any(any(buckets.values()) for buckets in expected.values()):
            result.balance_mismatches += 1
            result.note(f"{sku}: the inputs give it units, but it has no availability record")
        return
    rows = {row["location"]: row for row in record["locations"]}
    for location in sorted(expected.keys() | rows.keys()):
        result.locations_checked += 1
        want = expected.get(location, {})
        row = rows.get(location, {})
        for bucket in BUCKETS:
            if row.get(bucket, 0) != want.get(bucket, 0):
                result.balance_mismatches += 1
                result.note(
                    f"{sku} at {location}: last availability has {bucket}={row.get(bucket, 0)}, "
                    f"the inputs give {want.get(bucket, 0)}"
                )
