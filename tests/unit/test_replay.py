"""The what-if replay core with plain values: history order, tables, the order stage's rules,
exact differences for a known policy change, and the same decisions as the engine's stages."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest

from streamalloc.config import Settings
from streamalloc.domain import Tables
from streamalloc.domain.kits import Kit
from streamalloc.errors import ValidationError
from streamalloc.replay import (
    PARTIAL,
    PLACED,
    SERVED,
    SPLIT,
    InventoryStep,
    OrderStep,
    TableRecords,
    compare,
    history,
    inventory_step,
    order_step,
    policy_changes,
    run,
    table_kind,
)
from streamalloc.serialization import topic_serde
from streamalloc.stages.allocator import AllocatorStage
from streamalloc.stages.intake import IntakeStage, line_requests
from streamalloc.stages.order_stage import OrderStage
from streamalloc.testing import StageHarness

T0 = 1_764_000_000_000
SETTINGS = Settings()


def order(
    event_id: str,
    order_id: str,
    at: int,
    *lines: tuple[str, str, int],
    channel: str = "web",
    type: str = "placed",
    ship_complete: bool = False,
) -> dict[str, Any]:
    """An order event as the topic decodes it (defaults filled)."""
    record = {
        "event_id": event_id,
        "type": type,
        "order_id": order_id,
        "channel": channel,
        "occurred_at": T0 + at,
        "ship_complete": ship_complete,
        "lines": [{"line_id": i, "sku": sku, "qty": qty} for i, sku, qty in lines],
    }
    return topic_serde(SETTINGS, SETTINGS.topic("orders")).validate(record)


def received(event_id: str, at: int, sku: str, location: str, qty: int) -> dict[str, Any]:
    record = {
        "event_id": event_id,
        "type": "received",
        "sku": sku,
        "location": location,
        "qty": qty,
        "occurred_at": T0 + at,
    }
    return topic_serde(SETTINGS, SETTINGS.topic("inventory")).validate(record)


TOPIC_OF = {"location": "locations", "channel": "channels", "kit": "kits"}


def tables(*records: dict[str, Any]) -> TableRecords:
    table = TableRecords()
    for record in records:
        topic = SETTINGS.topic(TOPIC_OF[table_kind(record)])
        table.add(topic_serde(SETTINGS, topic).validate(record))
    return table


# ---------------------------------------------------------------- a known policy change

BASELINE = tables(
    {"location_id": "WH", "priority": 10},
    {"location_id": "STORE", "priority": 5},
    {"channel_id": "web", "locations": ["WH"]},
    {"channel_id": "store"},
)
POLICY = tables({"channel_id": "web", "locations": None, "allow_split": True})

INVENTORY = [
    received("i1", 1, "A", "WH", 2),
    received("i2", 2, "A", "STORE", 2),
    received("i3", 3, "B", "WH", 5),
]
ORDERS = [
    order("o1", "web-1", 10, ("1", "A", 1)),
    # ship-complete: line 2 needs 3 of A; only WH (1 left) is allowed and no split
    order("o2", "web-2", 20, ("1", "B", 1), ("2", "A", 3), ship_complete=True),
    order("o3", "web-3", 30, ("1", "A", 1)),
    order("o4", "web-1", 40, type="cancelled"),  # the whole order
    order("o5", "web-5", 50, ("1", "A", 1)),
    order("o6", "store-1", 60, ("1", "B", 2), channel="store"),  # a channel the policy leaves alone
]


def the_history() -> list[InventoryStep | OrderStep]:
    return history([order_step(o) for o in ORDERS], [inventory_step(i) for i in INVENTORY])


def test_a_wider_allow_list_with_splits_changes_exactly_the_orders_it_should() -> None:
    comparison = compare(the_history(), BASELINE.tables(), BASELINE.overlay(POLICY).tables())

    before, after = comparison.figures("baseline", "web"), comparison.figures("what_if", "web")
    # baseline: web-2 line 2 is rejected, so its line 1 is released (ship-complete); web-3 gets
    # WH's last unit. What-if: web-2 line 2 splits over WH and STORE; web-3 finds no A left.
    assert before["lines", "allocated"] == 4 and after["lines", "allocated"] == 4
    assert before["lines", "rejected"] == 1 and after["lines", "rejected"] == 1
    assert before["reason", "rejected", "insufficient_stock"] == 1
    assert after["reason", "rejected", "insufficient_stock"] == 1
    assert before["lines", "released"] == 2 and after["lines", "released"] == 1
    assert before["reason", "released", "ship_complete_failed"] == 1
    assert after["reason", "released", "ship_complete_failed"] == 0
    assert before["reason", "released", "cancelled"] == after["reason", "released", "cancelled"] == 1
    assert before[SPLIT] == 0 and after[SPLIT] == 1
    assert before["units", "allocated"] == 4 and after["units", "allocated"] == 6

    difference = comparison.difference("web")
    assert difference["lines", "allocated"] == 0
    assert difference["lines", "released"] == -1
    assert difference[SPLIT] == 1
    assert difference["units", "allocated"] == 2
    # The same number of orders in each status, but two orders swapped outcomes.
    assert before["orders", "allocated"] == after["orders", "allocated"] == 2
    assert [c.order_id for c in comparison.changed] == ["web-2", "web-3"]
    web2, web3 = comparison.changed
    assert (web2.baseline, web2.what_if) == ("rejected", "allocated")
    assert web2.lines == (
        ("1", "released (ship_complete_failed)", "allocated WH:1"),
        ("2", "rejected (insufficient_stock)", "allocated STORE:2+WH:1"),
    )
    assert (web3.baseline, web3.what_if) == ("allocated", "rejected")

    # the channel the policy does not touch does not move
    assert comparison.figures("baseline", "store") == comparison.figures("what_if", "store")
    assert comparison.figures("what_if", "store")["lines", "allocated"] == 1
    assert comparison.changed_in("store") == 0


def test_the_json_comparison_nests_the_figures_and_lists_examples() -> None:
    comparison = compare(the_history(), BASELINE.tables(), BASELINE.overlay(POLICY).tables())
    data = json.loads(json.dumps(comparison.as_json(examples=1)))
    web = data["channels"]["web"]
    assert web["baseline"]["lines"]["released"] == 2
    assert web["what_if"]["lines"]["released"] == 1
    assert web["difference"]["lines"] == {"allocated": 0, "backordered": 0, "rejected": 0, "released": -1}
    assert web["difference"]["units"]["allocated"] == 2
    assert web["difference"]["split"] == 1
    assert web["difference"]["reasons"]["released"] == {"cancelled": 0, "ship_complete_failed": -1}
    assert web["orders_changed"] == 2
    assert data["total"]["difference"]["units"]["allocated"] == 2
    assert data["orders_changed"] == 2
    assert [e["order_id"] for e in data["examples"]] == ["web-2"]


def test_the_baseline_replayed_against_itself_changes_nothing() -> None:
    comparison = compare(the_history(), BASELINE.tables(), BASELINE.overlay(TableRecords()).tables())
    assert comparison.changed == []
    assert all(v == 0 for v in comparison.difference().values())


# ---------------------------------------------------------------- history and inputs


def test_events_run_in_occurred_at_order_inventory_first_on_a_tie_then_input_order() -> None:
    orders = [order_step(order(f"o{i}", f"web-{i}", at, ("1", "A", 1))) for i, at in enumerate((5, 1, 5))]
    inventory = [inventory_step(received(f"i{i}", at, "A", "WH", 1)) for i, at in enumerate((5, 9, 5))]
    merged = history(orders, inventory)
    names = [s.event_id if isinstance(s, OrderStep) else s.command.event_id for s in merged]
    assert names == ["o1", "i0", "i2", "o0", "o2", "i1"]


def test_a_receipt_at_the_same_millisecond_as_an_order_is_there_for_it() -> None:
    steps = history(
        [order_step(order("o1", "web-1", 5, ("1", "A", 1)))], [inventory_step(received("i", 5, "A", "WH", 1))]
    )
    result = run(steps, BASELINE.tables())
    assert result.figures["web"]["lines", "allocated"] == 1


def test_an_order_from_a_channel_the_tables_do_not_know_is_rejected() -> None:
    steps = history(
        [order_step(order("o1", "pop-up-1", 10, ("1", "A", 1), channel="pop-up"))],
        [inventory_step(received("i1", 1, "A", "WH", 5))],
    )
    result = run(steps, BASELINE.tables())
    assert result.figures["pop-up"]["reason", "rejected", "unknown_channel"] == 1
    assert str(result.orders["pop-up-1"].lines["1"]) == "rejected (unknown_channel)"
    assert result.orders["pop-up-1"].status == "rejected"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (order("o", "web-1", 1, type="placed"), "needs at least one line"),
        (order("o", "web-1", 1, ("1", "A", 1), ("1", "B", 1)), "appears twice"),
    ],
)
def test_order_events_intake_would_dead_letter_are_refused(event: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        order_step(event)


def test_order_steps_carry_the_commands_intake_makes() -> None:
    event = order("o9", "web-9", 3, ("1", "A", 2), ("2", "B", 1), ship_complete=True)
    step = order_step(event)
    assert [(c.line_id, c.sku) for c in step.commands] == [("1", "A"), ("2", "B")]
    assert len(line_requests(event)) == 2
    assert all(c.event_id == "o9" for c in step.commands)  # the order event is every decision's cause
    assert step.ship_complete and step.occurred_at == T0 + 3


def test_table_records_are_told_apart_by_their_id_field() -> None:
    assert table_kind({"location_id": "X"}) == "location"
    assert table_kind({"channel_id": "web"}) == "channel"
    assert table_kind({"kit_sku": "DUO"}) == "kit"
    with pytest.raises(ValidationError, match="one of location_id"):
        table_kind({"priority": 1})
    with pytest.raises(ValidationError, match="not location_id and channel_id"):
        table_kind({"location_id": "X", "channel_id": "web"})
    with pytest.raises(ValidationError, match="not channel_id and kit_sku"):
        table_kind({"channel_id": "web", "kit_sku": "DUO"})


def test_a_policy_record_replaces_the_whole_record_and_the_changes_are_named() -> None:
    policy = tables({"channel_id": "web", "allow_split": True}, {"location_id": "DS-1", "priority": 1})
    merged = BASELINE.overlay(policy)
    assert merged.channels["web"]["locations"] is None  # not kept from the baseline record
    assert set(merged.locations) == {"WH", "STORE", "DS-1"}
    assert BASELINE.channels["web"]["allow_split"] is False  # the baseline is untouched
    assert policy_changes(BASELINE, policy) == [
        "location DS-1: added",
        'channel web: allow_split false -> true, locations ["WH"] -> null',
    ]
    assert policy_changes(BASELINE, tables({"channel_id": "web", "locations": ["WH"]})) == [
        "channel web: unchanged"
    ]


# ---------------------------------------------------------------- the order stage's rules


def test_a_whole_order_cancel_releases_lines_that_hold_units_and_later_ones_too() -> None:
    steps = history(
        [
            order_step(order("o1", "web-1", 10, ("1", "A", 1), ("2", "B", 1))),
            order_step(order("o2", "web-1", 20, type="cancelled")),
        ],
        [inventory_step(received("i1", 1, "A", "WH", 5)), inventory_step(received("i2", 1, "B", "WH", 5))],
    )
    result = run(steps, BASELINE.tables())
    web = result.figures["web"]
    assert web["lines", "released"] == 2 and web["reason", "released", "cancelled"] == 2
    assert web["units", "released"] == 2
    assert result.orders["web-1"].status == "cancelled"


def test_a_refused_pick_does_not_fail_a_ship_complete_order() -> None:
    steps = history(
        [
            order_step(order("o1", "web-1", 10, ("1", "A", 1), ("2", "B", 1), ship_complete=True)),
            order_step(order("o2", "web-1", 20, ("1", "A", 5), type="picked")),  # more than it holds
            order_step(order("o3", "web-1", 30, ("2", "B", 1), type="picked")),
            order_step(order("o4", "web-1", 40, ("2", "B", 1), type="fulfilled")),
        ],
        [inventory_step(received("i1", 1, "A", "WH", 5)), inventory_step(received("i2", 1, "B", "WH", 5))],
    )
    result = run(steps, BASELINE.tables())
    web = result.figures["web"]
    assert web["lines", "rejected"] == 1 and web["reason", "rejected", "exceeds_allocation"] == 1
    assert web["lines", "released"] == 0
    # event types are counted as they come, without a list of them here
    assert web["lines", "picked"] == 1 and web["lines", "fulfilled"] == 1 and web["units", "fulfilled"] == 1
    assert result.orders["web-1"].status == "allocated"


def test_lines_of_a_failed_ship_complete_order_decided_after_the_failure_are_released() -> None:
    steps = history(
        [
            order_step(
                order("o1", "web-1", 10, ("1", "A", 1), ("2", "C", 1), ("3", "B", 1), ship_complete=True)
            )
        ],
        [inventory_step(received("i1", 1, "A", "WH", 5)), inventory_step(received("i2", 1, "B", "WH", 5))],
    )
    result = run(steps, BASELINE.tables())
    web = result.figures["web"]
    assert web["reason", "rejected", "unknown_sku"] == 1
    assert web["lines", "allocated"] == 2
    assert web["reason", "released", "ship_complete_failed"] == 2
    assert result.orders["web-1"].status == "rejected"


def test_reservations_expire_when_due_before_the_next_event_unless_picked() -> None:
    reserved = order("o1", "web-1", 10, ("1", "A", 1))
    reserved["reservation_ttl_s"] = 60
    later = [
        order_step(order("o2", "web-2", 30_000, ("1", "A", 1))),  # within the reservation
        order_step(order("o3", "web-3", 60_010, ("1", "A", 1))),  # at the expiry: it is gone
    ]
    stock = [inventory_step(received("i1", 1, "A", "WH", 1))]

    result = run(history([order_step(reserved), *later], stock), BASELINE.tables())
    web = result.figures["web"]
    assert web["reason", "rejected", "insufficient_stock"] == 1  # web-2
    assert web["reason", "released", "expired"] == 1
    assert web["lines", "allocated"] == 2  # web-1, then web-3 with the unit that came back
    assert str(result.orders["web-1"].lines["1"]) == "released (expired)"
    assert str(result.orders["web-3"].lines["1"]) == "allocated WH:1"

    pick = order_step(order("p1", "web-1", 20_000, ("1", "A", 1), type="picked"))
    result = run(history([order_step(reserved), pick, *later], stock), BASELINE.tables())
    assert result.figures["web"]["reason", "released", "expired"] == 0
    assert str(result.orders["web-3"].lines["1"]) == "rejected (insufficient_stock)"

    # a timer still pending when the history ends does not fire
    result = run(history([order_step(reserved)], stock), BASELINE.tables())
    assert str(result.orders["web-1"].lines["1"]) == "allocated WH:1"


def test_an_order_edit_changes_quantities_and_releases_the_line_it_leaves_out() -> None:
    steps = history(
        [
            order_step(order("o1", "web-1", 10, ("1", "A", 3), ("2", "B", 1))),
            order_step(order("o2", "web-1", 20, ("1", "A", 1), ("3", "A", 2), type="amended")),
            order_step(order("o3", "web-2", 30, ("1", "A", 2))),  # takes the units the edit gave back
        ],
        [inventory_step(received("i1", 1, "A", "WH", 5)), inventory_step(received("i2", 1, "B", "WH", 5))],
    )
    result = run(steps, BASELINE.tables())
    web = result.figures["web"]
    assert web["lines", "amended"] == 1 and web["units", "amended"] == 1
    assert web["reason", "released", "amended"] == 2  # two units of line 1, and line 2
    assert web["units", "released"] == 3
    assert result.orders["web-1"].status == "allocated"
    assert {k: str(v) for k, v in result.orders["web-1"].lines.items()} == {
        "1": "allocated WH:1",
        "2": "released (amended)",
        "3": "allocated WH:2",
    }
    assert result.orders["web-2"].status == "allocated"


# ---------------------------------------------------------------- kits

KITS = tables(
    {"kit_sku": "DUO", "components": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]},
    {"kit_sku": "OFF", "components": [{"sku": "A", "qty": 1}], "active": False},
    {"kit_sku": "GONE", "components": [{"sku": "C", "qty": 1}]},
    {"kit_sku": "GONE", "components": [{"sku": "C", "qty": 1}], "active": False},  # the last one counts
)
KIT_STOCK = [inventory_step(received("i1", 1, "A", "WH", 5)), inventory_step(received("i2", 1, "B", "WH", 5))]


def test_the_baseline_kits_are_the_last_record_of_each_kit_that_is_a_kit() -> None:
    assert KITS.kits() == {"DUO": Kit("DUO", (("A", 1), ("B", 2)))}
    assert len(KITS) == 3  # the records, kits or not


def test_a_kit_line_becomes_its_components_lines_and_the_order_ship_complete() -> None:
    kits = KITS.kits()
    step = order_step(order("o1", "web-1", 10, ("1", "DUO", 2), ("2", "C", 1)), kits)
    assert [(c.line_id, c.sku, c.qty) for c in step.commands] == [
        ("1/A", "A", 2),
        ("1/B", "B", 4),
        ("2", "C", 1),
    ]
    assert step.ship_complete
    plain = order_step(order("o2", "web-2", 10, ("1", "OFF", 1), ("2", "GONE", 1)), kits)
    assert [c.sku for c in plain.commands] == ["OFF", "GONE"] and not plain.ship_complete
    # intake's own checks come first, on the event as it came
    with pytest.raises(ValidationError, match="appears twice"):
        order_step(order("o3", "web-3", 10, ("1", "DUO", 1), ("1", "A", 1)), kits)


def test_a_kit_order_replays_to_an_allocation_of_each_component_line() -> None:
    placed = order("o1", "web-1", 10, ("1", "DUO", 2))
    result = run(history([order_step(placed, KITS.kits())], KIT_STOCK), BASELINE.tables())
    outcome = result.orders["web-1"]
    assert outcome.status == "allocated"
    assert {k: str(v) for k, v in outcome.lines.items()} == {"1/A": "allocated WH:2", "1/B": "allocated WH:4"}
    web = result.figures["web"]
    assert web["lines", "allocated"] == 2 and web["units", "allocated"] == 6
    assert web["lines", "rejected"] == 0

    # without the kits table the kit SKU is a plain SKU nobody stocks (replay before kits)
    plain = run(history([order_step(placed)], KIT_STOCK), BASELINE.tables())
    assert {k: str(v) for k, v in plain.orders["web-1"].lines.items()} == {"1": "rejected (unknown_sku)"}


@pytest.mark.parametrize(
    ("short", "other"),
    [("B", "A"), ("A", "B")],
    ids=["the-other-allocated-first", "the-other-allocated-after-the-failure"],
)
def test_a_short_component_rejects_the_kit_as_a_whole(short: str, other: str) -> None:
    """The order is ship-complete: the component that finds too few units is rejected and the
    other one gives its units back (ship_complete_failed), whether it was decided before the
    failure or after it; a later order then gets them."""
    stock = [
        inventory_step(received("i1", 1, other, "WH", 5)),
        inventory_step(received("i2", 1, short, "WH", 1)),
    ]
    kit = order_step(order("o1", "web-1", 10, ("1", "DUO", 2)), KITS.kits())
    later = order_step(order("o2", "web-2", 20, ("1", other, 5)))
    result = run(history([kit, later], stock), BASELINE.tables())

    lines = {k: str(v) for k, v in result.orders["web-1"].lines.items()}
    assert lines[f"1/{short}"] == "rejected (insufficient_stock)"
    assert lines[f"1/{other}"] == "released (ship_complete_failed)"
    assert result.orders["web-1"].status == "rejected"
    web = result.figures["web"]
    assert web["reason", "released", "ship_complete_failed"] == 1
    assert str(result.orders["web-2"].lines["1"]) == "allocated WH:5"  # every unit came back


def test_kit_orders_replay_exactly_as_the_engine_stages_decide_them() -> None:
    """Kit orders through intake (with the same kits), allocator and order stage give the same
    decisions as the replay: placed whole, short (released as one), a pick and an edit naming
    the kit line, a cancel of the kit line, and a plain line bound to a kit's fate."""
    kits = KITS.kits()
    orders = [
        order("o1", "web-1", 10, ("1", "DUO", 1), ("2", "C", 1)),  # all of it
        order("o2", "web-2", 20, ("1", "DUO", 3)),  # B short: 6 of 3 left; A released
        order("o3", "web-3", 30, ("1", "DUO", 1), ("2", "C", 5)),  # C short: the kit goes too
        order("o4", "web-1", 40, ("1", "DUO", 1), type="picked"),  # picks 1 A, 2 B
        order("o5", "web-5", 50, ("1", "DUO", 1)),
        order("o6", "web-5", 60, ("1", "DUO", 1), ("2", "A", 1), type="amended"),  # the same, and a line
        order("o7", "web-5", 70, ("1", "DUO", 1), type="cancelled"),  # its components' lines
    ]
    inventory = [
        received("i1", 1, "A", "WH", 5),
        received("i2", 1, "B", "WH", 5),
        received("i3", 1, "C", "WH", 2),
    ]
    domain_tables = BASELINE.tables()
    steps = history([order_step(o, kits) for o in orders], [inventory_step(i) for i in inventory])
    result = run(steps, domain_tables)
    replayed = {
        (channel, *key): n
        for channel, counts in result.figures.items()
        for key, n in counts.items()
        if key[0] != "orders" and key not in (PLACED, SERVED) and n
    }
    assert replayed == _engine_figures(orders, inventory, domain_tables, kits)
    assert result.orders["web-1"].status == "allocated"
    assert str(result.orders["web-1"].lines["1/B"]) == "picked WH:2"
    assert result.orders["web-2"].status == "rejected" and result.orders["web-3"].status == "rejected"
    assert str(result.orders["web-3"].lines["1/A"]) == "released (ship_complete_failed)"
    assert str(result.orders["web-5"].lines["1/A"]) == "released (cancelled)"
    assert str(result.orders["web-5"].lines["2"]) == "allocated WH:1"


# ---------------------------------------------------------------- the engine agrees


@pytest.mark.parametrize(
    ("partial", "holds", "edits"),
    [(False, False, False), (True, False, False), (False, True, False), (True, False, True)],
    ids=["all-or-nothing", "allow_partial", "checkout-holds", "order-edits"],
)
def test_the_baseline_replay_decides_exactly_as_the_engine_stages_do(
    partial: bool, holds: bool, edits: bool
) -> None:
    """A random history through intake, allocator and order stage (in-memory harness, each
    input pumped to quiescence) gives the same allocation decisions as the replay; with
    partial allocation on two channels too (then lines allocated in part are counted); with
    carts held, then confirmed or extended (checkout holds) too; with orders edited
    (`amended`: quantities up and down, a line left out, added, or moved to another SKU)."""
    orders, inventory = _random_history(random.Random(11), orders=150, holds=holds, edits=edits)
    table_records = tables(
        {"location_id": "WH", "priority": 10, "region": "east", "regions_served": ["east"]},
        {"location_id": "WEST", "priority": 7, "region": "west", "regions_served": ["west"]},
        {"location_id": "STORE", "priority": 5, "safety_stock": 1},
        {"channel_id": "web", "allow_split": True, "allow_partial": partial},
        {"channel_id": "store", "locations": ["STORE", "WH"], "safety_stock": 1},
        {"channel_id": "marketplace", "allow_partial": partial},
    )
    domain_tables = table_records.tables()

    steps = history([order_step(o) for o in orders], [inventory_step(i) for i in inventory])
    replayed = run(steps, domain_tables).figures
    engine = _engine_figures(orders, inventory, domain_tables)

    def decisions(figures: dict[str, Counter[tuple[str, ...]]]) -> dict[tuple[str, ...], int]:
        return {
            (channel, *key): n
            for channel, counts in figures.items()
            for key, n in counts.items()
            if key[0] != "orders" and key not in (PLACED, SERVED) and n
        }

    assert decisions(replayed) == engine
    # Placements counted once per line decided; those served at once are among them.
    for counts in replayed.values():
        assert counts[PLACED] >= counts[SERVED] > 0
    assert sum(n for key, n in engine.items() if key[1:] == ("lines", "allocated")) > 20
    assert sum(n for key, n in engine.items() if key[1:3] == ("reason", "released")) > 0
    assert (sum(n for key, n in engine.items() if key[1:] == ("partial",)) > 5) is partial
    for kind in ("held", "confirmed", "extended"):
        assert (sum(n for key, n in engine.items() if key[1:] == ("lines", kind)) > 3) is holds, kind
    assert (sum(n for key, n in engine.items() if key[1:] == ("lines", "amended")) > 5) is edits
    assert (sum(n for key, n in engine.items() if key[1:] == ("reason", "released", "amended")) > 3) is edits


def _random_history(
    r: random.Random, orders: int, *, holds: bool = False, edits: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    skus, locations = ["A", "B", "C", "D"], ["WH", "WEST", "STORE"]
    inventory = [
        received(f"i{n}", n * 40, r.choice(skus), r.choice(locations), r.randint(1, 6)) for n in range(40)
    ]
    events: list[dict[str, Any]] = []
    placed: list[tuple[str, str, list[tuple[str, str, int]], bool]] = []
    carts: list[tuple[str, str, list[tuple[str, str, int]]]] = []  # held (checkout holds)
    # Picks of any order, a line maybe twice (then refused: it holds too little), ship-complete
    # ones too: a refused pick fails nothing, in the stage as in the replay (domain.orders).
    for n in range(orders):
        at = n * 10 + 3
        channel = r.choice(["web", "store", "marketplace"])
        kind = r.random()
        if kind < 0.1 and placed:
            order_id, ch, _, _ = r.choice(placed)
            events.append(order(f"c{n}", order_id, at, channel=ch, type="cancelled"))
        elif kind < 0.2 and placed:
            order_id, ch, lines, _ = r.choice(placed)
            line = r.choice(lines)
            events.append(order(f"p{n}", order_id, at, line[:2] + (1,), channel=ch, type="picked"))
        elif edits and kind < 0.4 and placed:  # an edit lists the order's lines as they are now
            i = r.randrange(len(placed))
            order_id, ch, lines, ship_complete = placed[i]
            edited = [(line_id, sku, r.randint(1, 5)) for line_id, sku, _ in lines]
            if len(edited) > 1 and r.random() < 0.3:
                edited.pop(r.randrange(len(edited)))  # a line left out
            if r.random() < 0.3:
                edited.append((f"x{n}", r.choice(skus), r.randint(1, 3)))  # a line added
            if r.random() < 0.15:
                line_id, _, qty = edited[0]
                edited[0] = (line_id, r.choice(skus), qty)  # maybe another SKU: out, then in
            events.append(order(f"e{n}", order_id, at, *edited, channel=ch, type="amended"))
            placed[i] = (order_id, ch, edited, ship_complete)
        elif holds and kind < 0.4 and carts:  # a cart confirmed (paid) or its hold extended
            order_id, ch, lines = r.choice(carts)
            confirm_or_extend = r.choice(["confirmed", "extended"])
            events.append(order(f"h{n}", order_id, at, *lines, channel=ch, type=confirm_or_extend))
        elif holds and kind < 0.6:
            lines = [(str(i), r.choice(skus), r.randint(1, 3)) for i in range(r.randint(1, 2))]
            order_id = f"cart-{n}"
            events.append(order(f"o{n}", order_id, at, *lines, channel=channel, type="held"))
            carts.append((order_id, channel, lines))
        else:
            lines = [(str(i), r.choice(skus), r.randint(1, 4)) for i in range(r.randint(1, 3))]
            ship_complete = r.random() < 0.3
            order_id = f"{channel}-{n}"
            events.append(order(f"o{n}", order_id, at, *lines, channel=channel, ship_complete=ship_complete))
            placed.append((order_id, channel, lines, ship_complete))
    return events, inventory


def _engine_figures(
    orders: list[dict[str, Any]],
    inventory: list[dict[str, Any]],
    domain_tables: Tables,
    kits: Mapping[str, Kit] | None = None,
) -> dict[tuple[str, ...], int]:
    """Figures as the replay counts them, from the allocation events the real stages emit."""
    intake = StageHarness(IntakeStage(SETTINGS, lambda: kits or {}))
    allocator = StageHarness(AllocatorStage(SETTINGS, lambda: domain_tables))
    order_stage = StageHarness(OrderStage(SETTINGS))
    requests_topic, allocations_topic = SETTINGS.topic("allocation-requests"), SETTINGS.topic("allocations")
    allocations = topic_serde(SETTINGS, allocations_topic)
    emitted: list[dict[str, Any]] = []

    def pump(outputs: list[Any]) -> None:
        while outputs:
            requests = [(o.key, o.value) for o in outputs if o.topic == requests_topic]
            decided = [(o.key, o.value) for o in outputs if o.topic == allocations_topic]
            outputs = []
            for key, value in requests:
                outputs += allocator.feed(requests_topic, [(key, value)])
            for key, value in decided:
                event = allocations.decode(value)
                if event["type"] not in ("accepted", "cancel_requested", "amend_requested"):
                    emitted.append(event)
                outputs += order_stage.feed(allocations_topic, [(key, value)])

    # the same merge as the replay: by occurred_at, inventory first on a tie
    merged = sorted(
        [(i["occurred_at"], 0, n, i) for n, i in enumerate(inventory)]
        + [(o["occurred_at"], 1, n, o) for n, o in enumerate(orders)],
        key=lambda item: item[:3],
    )
    for _, kind, _, event in merged:
        raw = json.dumps(event).encode()
        if kind == 0:
            pump(allocator.feed(SETTINGS.topic("inventory"), [(event["sku"].encode(), raw)]))
        else:
            pump(intake.feed(SETTINGS.topic("orders"), [(event["order_id"].encode(), raw)]))
    assert not intake.dead_letters and not allocator.dead_letters

    figures: Counter[tuple[str, ...]] = Counter()
    lines: dict[tuple[str, str, str, str], set[str | None]] = {}
    for e in emitted:
        channel, kind = e["channel"], e["type"]
        figures[channel, "units", kind] += e["qty"]
        key = (e["cause_event_id"], e["order_id"], e["line_id"], kind)
        if key not in lines:
            lines[key] = {e["location"]}
            figures[channel, "lines", kind] += 1
            if e["reason"] is not None:
                figures[channel, "reason", kind, e["reason"]] += 1
        elif e["location"] not in lines[key]:
            if kind == "allocated" and len(lines[key]) == 1:
                figures[channel, "split"] += 1
            lines[key].add(e["location"])
        if kind == "backordered" and (*key[:3], "allocated") in lines:
            figures[channel, "partial"] += 1
    return {key: n for key, n in figures.items() if n}


def test_partial_allocation_counts_partial_lines_and_orders() -> None:
    """web with allow_partial: web-2's 3-unit line takes WH's last unit and waits for 2; the
    cancel of web-1 frees one more, a second partial fill. The ship-complete order is not
    complete (backordered) and fails nothing, so its other line keeps its unit."""
    policy = tables({"channel_id": "web", "locations": ["WH"], "allow_partial": True})
    comparison = compare(the_history(), BASELINE.tables(), BASELINE.overlay(policy).tables())
    before, after = comparison.figures("baseline", "web"), comparison.figures("what_if", "web")
    assert before[PARTIAL] == 0 and after[PARTIAL] == 2
    assert after["reason", "released", "ship_complete_failed"] == 0
    changed = {c.order_id: c for c in comparison.changed}
    assert (changed["web-2"].baseline, changed["web-2"].what_if) == ("rejected", "backordered")
    assert ("1", "released (ship_complete_failed)", "allocated WH:1") in changed["web-2"].lines
    assert ("2", "rejected (insufficient_stock)", "partially_allocated WH:2 (waitlisted)") in changed[
        "web-2"
    ].lines
    assert comparison.as_json()["channels"]["web"]["what_if"]["partial"] == 2


def test_a_partial_order_without_ship_complete_reads_partially_allocated() -> None:
    steps = history(
        [order_step(order("o1", "web-1", 10, ("1", "A", 5)))],
        [inventory_step(received("i1", 1, "A", "WH", 3))],
    )
    policy = tables({"channel_id": "web", "allow_partial": True})
    result = run(steps, BASELINE.overlay(policy).tables())
    outcome = result.orders["web-1"]
    assert outcome.status == "partially_allocated"
    assert str(outcome.lines["1"]) == "partially_allocated WH:3 (waitlisted)"
    assert result.figures["web"]["orders", "partially_allocated"] == 1


# ---------------------------------------------------------------- protection levels

PROTECTION_BASELINE = tables(
    {"location_id": "WH"},
    {"channel_id": "web", "priority": 10},
    {"channel_id": "store", "priority": 1},
)
PROTECT_WEB = tables({"channel_id": "web", "priority": 10, "protected_units": 2})


def test_protection_shows_service_per_channel_with_and_without_it() -> None:
    # 4 units; store orders first and would take 3, then web wants 2: without protection web
    # finds 1 and is refused; with web's 2 protected, store may take only 2 of its 3 lines.
    steps = history(
        [
            order_step(order("s1", "store-1", 10, ("1", "A", 1), channel="store")),
            order_step(order("s2", "store-2", 20, ("1", "A", 1), channel="store")),
            order_step(order("s3", "store-3", 30, ("1", "A", 1), channel="store")),
            order_step(order("w1", "web-1", 40, ("1", "A", 2))),
        ],
        [inventory_step(received("i1", 1, "A", "WH", 4))],
    )
    comparison = compare(
        steps, PROTECTION_BASELINE.tables(), PROTECTION_BASELINE.overlay(PROTECT_WEB).tables()
    )
    assert policy_changes(PROTECTION_BASELINE, PROTECT_WEB) == ["channel web: protected_units 0 -> 2"]
    assert comparison.service_level("baseline", "store") == 1.0
    assert comparison.service_level("what_if", "store") == 2 / 3
    assert comparison.service_level("baseline", "web") == 0.0
    assert comparison.service_level("what_if", "web") == 1.0
    assert comparison.service_level("baseline") == comparison.service_level("what_if") == 3 / 4
    after = comparison.figures("what_if", "store")
    assert after["reason", "rejected", "protected_for_priority"] == 1
    as_json = comparison.as_json()["channels"]
    assert as_json["store"]["service_level"] == {"baseline": 1.0, "what_if": 2 / 3}
    assert (as_json["web"]["what_if"]["placed"], as_json["web"]["what_if"]["served"]) == (1, 1)
    changed = {c.order_id: c for c in comparison.changed}
    assert set(changed) == {"store-3", "web-1"}
    assert changed["store-3"].lines == (("1", "allocated WH:1", "rejected (protected_for_priority)"),)


# ---------------------------------------------------------------- replenishment

HOUR_MS = 3_600_000


def store_demand_history(hours: int) -> list[InventoryStep | OrderStep]:
    """A store that sells one unit an hour from 2 on hand, while the warehouse holds 100."""
    inventory = [received("r-wh", 0, "A", "WH", 100), received("r-store", 1, "A", "STORE", 2)]
    orders = [
        order(f"o{h}", f"store-{h}", 10 + h * HOUR_MS, ("1", "A", 1), channel="store") for h in range(hours)
    ]
    return history([order_step(o) for o in orders], [inventory_step(i) for i in inventory])


REPLENISH_TABLES = tables(
    {"location_id": "WH", "priority": 10},
    {"location_id": "STORE", "priority": 5},
    {"channel_id": "store", "locations": ["STORE"]},
)


def test_replenishment_in_the_what_if_ships_stock_to_where_it_sells_and_cuts_stockouts() -> None:
    from streamalloc.domain.replenishment import ReplenishmentPolicy

    policy = ReplenishmentPolicy(half_life_s=86_400, lead_time_s=1_800, safety_cover_s=86_400)
    same = REPLENISH_TABLES.tables()
    comparison = compare(store_demand_history(48), same, same, replenish=policy)
    assert comparison.stockout_rate("baseline") == pytest.approx(46 / 48)  # only 2 on hand
    after = comparison.stockout_rate("what_if")
    assert after is not None and after < 0.1
    assert comparison.replenished is not None
    transfers, units = comparison.replenished
    assert transfers > 0 and 0 < units <= 100
    assert comparison.as_json()["replenishment"] == {"transfers": transfers, "units": units}
    assert comparison.as_json()["total"]["stockout_rate"]["what_if"] == after


def test_without_replenishment_the_what_if_ships_nothing() -> None:
    same = REPLENISH_TABLES.tables()
    comparison = compare(store_demand_history(48), same, same)
    assert comparison.replenished is None
    assert comparison.stockout_rate("what_if") == comparison.stockout_rate("baseline")
    assert run(store_demand_history(48), same).transfers == 0
