"""The chaos verifier with hand-made topics: a consistent run passes, and each way of losing
or doubling something (a decision, an output, an applied command, a request) is caught."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from streamalloc.chaos_verify import Positioned, Verification, verify
from streamalloc.config import Settings
from streamalloc.domain import SkuState, Tables, apply
from streamalloc.domain.events import AllocationEvent, StockChanged
from streamalloc.domain.kits import Kit
from streamalloc.domain.tables import Channel, Location
from streamalloc.domain.views import availability
from streamalloc.serialization import topic_serde
from streamalloc.stages.allocator import availability_record, inventory_command, request_command
from streamalloc.stages.intake import expand_kits

T0 = 1_764_000_000_000
SETTINGS = Settings()
TABLES = Tables(
    locations={"WH": Location(location_id="WH")},
    channels={"web": Channel(channel_id="web")},
)


def placed(event_id: str, order_id: str, *lines: tuple[str, str, int]) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "placed",
        "order_id": order_id,
        "channel": "web",
        "occurred_at": T0,
        "lines": [{"line_id": i, "sku": sku, "qty": qty} for i, sku, qty in lines],
    }


def request(offset: int, order: dict[str, Any], line_id: str, command: str = "allocate") -> Positioned:
    line = next(line for line in order["lines"] if line["line_id"] == line_id)
    record = topic_serde(SETTINGS, SETTINGS.topic("allocation-requests")).validate(
        {
            "event_id": f"{order['event_id']}:{line_id}",
            "cause_event_id": order["event_id"],
            "command": command,
            "order_id": order["order_id"],
            "line_id": line_id,
            "sku": line["sku"],
            "qty": line["qty"],
            "channel": order["channel"],
            "location": line.get("location"),
            "occurred_at": order["occurred_at"],
        }
    )
    return Positioned(0, offset, T0 + 10 * offset, record)


def receipt(offset: int, event_id: str, sku: str, qty: int, at_ms: int) -> Positioned:
    record = topic_serde(SETTINGS, SETTINGS.topic("inventory")).validate(
        {
            "event_id": event_id,
            "type": "received",
            "sku": sku,
            "location": "WH",
            "qty": qty,
            "occurred_at": T0,
        }
    )
    return Positioned(0, offset, T0 + at_ms, record)


def engine(
    requests: list[Positioned], inventory: list[Positioned]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """What a correct engine commits for these inputs, in timestamp order: allocations,
    stock changes, and one availability record per SKU per command."""
    merged = sorted(
        [(r.timestamp_ms, 0, request_command(dict(r.value))) for r in requests]
        + [(r.timestamp_ms, 1, inventory_command(dict(r.value))) for r in inventory],
        key=lambda item: (item[0], item[1]),
    )
    states: dict[str, SkuState] = {}
    allocations: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    snapshots: list[dict[str, Any]] = []
    for at, _, command in merged:
        state = states.setdefault(command.sku, SkuState(command.sku))
        for event in apply(state, command, TABLES, at):
            if isinstance(event, AllocationEvent):
                allocations.append(event.as_record())
            elif isinstance(event, StockChanged):
                changes.append(event.as_record())
        snapshots.append(availability_record(availability(state, TABLES, at), command.event_id))
    return allocations, changes, snapshots


def scenario() -> dict[str, Any]:
    """SKU-A: 5 received, then orders for 2 and 4 (the second rejected), and 3 more received."""
    o1 = placed("o1-placed", "o1", ("1", "SKU-A", 2))
    o2 = placed("o2-placed", "o2", ("1", "SKU-A", 4))
    requests = [request(1, o1, "1"), request(2, o2, "1")]
    inventory = [receipt(0, "recv-1", "SKU-A", 5, 0), receipt(1, "recv-2", "SKU-A", 3, 100)]
    allocations, changes, snapshots = engine(requests, inventory)
    return {
        "orders": [o1, o2],
        "requests": requests,
        "inventory": inventory,
        "allocations": allocations,
        "stock_changes": changes,
        "availability_records": snapshots,
    }


def run(inputs: dict[str, Any]) -> Verification:
    return verify(**inputs, tables=TABLES)


def test_a_run_whose_outputs_follow_from_its_inputs_passes() -> None:
    inputs = scenario()
    result = run(inputs)

    assert result.ok, result.details
    assert result.skus_checked == 1
    assert result.requests_checked == 2
    assert result.decisions_checked == 4  # two receipts, one allocation, one rejection
    assert {a["type"] for a in inputs["allocations"]} == {"allocated", "rejected"}
    last = inputs["availability_records"][-1]["locations"][0]
    assert (last["on_hand"], last["allocated"]) == (8, 2)


def test_a_decision_the_engine_never_committed_is_lost() -> None:
    inputs = scenario()
    inputs["allocations"] = [a for a in inputs["allocations"] if a["type"] != "rejected"]
    result = run(inputs)

    assert result.lost_decisions == 1 and not result.ok
    assert "o2-placed:o2:1:rejected" in result.details[0]


def test_an_output_committed_twice_is_doubled() -> None:
    inputs = scenario()
    inputs["allocations"].append(dict(inputs["allocations"][0]))
    result = run(inputs)

    assert result.doubled_outputs == 1 and not result.ok


def test_a_command_applied_twice_shows_in_the_last_balances() -> None:
    inputs = scenario()
    last = copy.deepcopy(inputs["availability_records"][-1])
    last["locations"][0]["allocated"] = 4  # the allocation counted twice in the state
    inputs["availability_records"].append(last)
    result = run(inputs)

    assert result.balance_mismatches == 1 and not result.ok
    assert "allocated=4, the inputs give 2" in result.details[0]


def test_a_decision_the_inputs_do_not_give_is_extra() -> None:
    inputs = scenario()
    extra = dict(inputs["allocations"][0], event_id="ghost:o9:1:allocated", cause_event_id="ghost")
    inputs["allocations"].append(extra)
    result = run(inputs)

    assert result.extra_decisions == 1 and not result.ok


def test_an_order_line_with_no_allocation_request_was_lost_at_intake() -> None:
    inputs = scenario()
    inputs["orders"].append(placed("o3-placed", "o3", ("1", "SKU-B", 1)))
    result = run(inputs)

    assert result.lost_requests == 1 and not result.ok
    assert "o3-placed line 1" in result.details[0]


def test_a_request_on_the_topic_twice_is_doubled() -> None:
    inputs = scenario()
    inputs["requests"] = [*inputs["requests"], inputs["requests"][0]._replace(offset=3)]
    result = run(inputs)

    assert result.doubled_requests == 1 and not result.ok


def test_a_sku_with_no_last_availability_is_a_mismatch() -> None:
    inputs = scenario()
    inputs["availability_records"] = []
    result = run(inputs)

    assert result.balance_mismatches == 1 and not result.ok


@pytest.mark.parametrize("cause", ["clock:expire:o1:1@123", "locations:WH:offline@123"])
def test_a_sku_the_clock_or_a_table_decided_for_is_not_replayable_and_not_counted_as_checked(
    cause: str,
) -> None:
    inputs = scenario()
    inputs["allocations"].append(
        dict(
            inputs["allocations"][0], event_id=f"{cause}:o1:1:released", cause_event_id=cause, type="released"
        )
    )
    result = run(inputs)

    assert result.skus_not_replayable == 1 and result.skus_checked == 0
    assert result.ok  # reported as not replayable, not as a mismatch


def test_the_replay_takes_the_inputs_in_the_order_the_engine_decided_them_not_by_timestamp() -> None:
    """The receipt is stamped before the order, but the engine took the order first (it
    arrived first, and alignment did not wait): the order was rejected, and so it must be
    in the replay, which follows decided_at."""
    o1 = placed("o1-placed", "o1", ("1", "SKU-A", 2))
    requests = [request(0, o1, "1")._replace(timestamp_ms=T0 + 50)]
    inventory = [receipt(0, "recv-1", "SKU-A", 5, 10)]
    state = SkuState("SKU-A")
    allocations: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    for at, command in ((T0 + 60, request_command(dict(requests[0].value))),
                        (T0 + 70, inventory_command(dict(inventory[0].value)))):  # fmt: skip
        for event in apply(state, command, TABLES, at):
            target = allocations if isinstance(event, AllocationEvent) else changes
            target.append(event.as_record())
    assert [a["type"] for a in allocations] == ["rejected"]
    inputs = {
        "orders": [o1],
        "requests": requests,
        "inventory": inventory,
        "allocations": allocations,
        "stock_changes": changes,
        "availability_records": [availability_record(availability(state, TABLES, T0 + 70), "recv-1")],
    }
    result = run(inputs)

    assert result.ok, result.details
    assert result.decisions_checked == 2


def test_an_order_event_its_producer_sent_twice_gives_two_requests_and_that_is_no_doubling() -> None:
    inputs = scenario()
    inputs["orders"].append(dict(inputs["orders"][0]))  # the channel sent o1 twice
    inputs["requests"] = [*inputs["requests"], inputs["requests"][0]._replace(offset=3)]
    result = run(inputs)

    assert result.ok, result.details
    inputs["requests"] = [*inputs["requests"], inputs["requests"][0]._replace(offset=4)]
    assert run(inputs).doubled_requests == 1  # three requests for two placements


def test_a_kit_line_has_one_request_per_component_as_intake_expands_it() -> None:
    """Intake makes a kit line one request per component, `{event}:{line_id}/{sku}`: with the
    kits table the run passes; without it the same run would show its lines as lost."""
    kits = {"KIT": Kit("KIT", (("SKU-A", 1), ("SKU-B", 2)))}
    order = placed("o1-placed", "o1", ("1", "KIT", 2), ("2", "SKU-A", 1))
    expanded = expand_kits(order, kits)
    requests = [request(n, expanded, line_id) for n, line_id in enumerate(("1/SKU-A", "1/SKU-B", "2"), 1)]
    assert [r.value["event_id"] for r in requests] == [
        "o1-placed:1/SKU-A",
        "o1-placed:1/SKU-B",
        "o1-placed:2",
    ]
    inventory = [receipt(0, "recv-a", "SKU-A", 5, 0), receipt(1, "recv-b", "SKU-B", 5, 0)]
    allocations, changes, snapshots = engine(requests, inventory)
    inputs = {
        "orders": [order],
        "requests": requests,
        "inventory": inventory,
        "allocations": allocations,
        "stock_changes": changes,
        "availability_records": snapshots,
    }

    result = verify(**inputs, tables=TABLES, kits=kits)
    assert result.ok, result.details
    assert result.requests_checked == 3 and result.skus_checked == 2

    without = verify(**inputs, tables=TABLES)
    assert without.lost_requests == 1 and "line 1 has no allocation request" in without.details[0]

    inputs["requests"] = [r for r in requests if r.value["line_id"] != "1/SKU-B"]
    lost = verify(**inputs, tables=TABLES, kits=kits)
    assert lost.lost_requests == 1 and "placed o1-placed line 1/SKU-B" in lost.details[0]
