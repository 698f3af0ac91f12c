"""The allocator stage through the harness: availability from `before_commit`, expiry and
sweeps by punctuation in fake time, and one path that emits every kind of event."""

from __future__ import annotations

import marshal
from typing import Any

import pytest
from tests.unit.stages._inputs import (
    ALLOCATIONS,
    AVAILABILITY,
    DEAD_LETTER,
    INVENTORY,
    REQUESTS,
    SETTINGS,
    STOCK_CHANGES,
    T0,
    decoded,
    inventory,
    request,
    tables,
)

from streamalloc.domain import Command, Decision, ExpireLine, SkuBook, SkuState, Tables, Transfer
from streamalloc.domain.events import inventory_rejected, stock_changed
from streamalloc.stages import allocator as allocator_module
from streamalloc.stages.allocator import AllocatorStage
from streamalloc.stages.state_codec import decode_book, encode_book
from streamalloc.stages.tables import channel_of
from streamalloc.testing import ManualClock, Output, StageHarness


class _Tables:
    """The global tables as the worker sees them: they change when a table record arrives."""

    def __init__(self, value: Tables) -> None:
        self.value = value

    def __call__(self) -> Tables:
        return self.value


def _allocator(table: Tables | None = None) -> tuple[StageHarness, _Tables]:
    clock = ManualClock(T0)
    provider = _Tables(table or tables())
    return StageHarness(AllocatorStage(SETTINGS, provider, clock=clock), clock=clock), provider


def _on(topic: str, outputs: list[Output]) -> list[dict[str, Any]]:
    return [decoded(topic, o.value) for o in outputs if o.topic == topic]


def test_availability_goes_out_once_per_changed_sku_per_commit_with_the_last_cause() -> None:
    harness, _ = _allocator()
    harness.clock.advance(5)
    outputs = harness.feed(
        INVENTORY,
        [
            (b"SKU-A", inventory("r1", "SKU-A", "WH-1", 10)),
            (b"SKU-B", inventory("r2", "SKU-B", "WH-2", 4)),
            (b"SKU-A", inventory("r3", "SKU-A", "WH-2", 5)),
        ],
    )
    records = _on(AVAILABILITY, outputs)
    assert [(o.key, o.topic) for o in outputs if o.topic == AVAILABILITY] == [
        (b"SKU-A", AVAILABILITY),
        (b"SKU-B", AVAILABILITY),
    ]
    a, b = records
    assert (a["cause_event_id"], a["event_id"]) == ("r3", "r3:availability:SKU-A")
    assert a["as_of"] == T0 + 5  # the stage's clock, not the wall clock
    assert a["totals"]["on_hand"] == 15 and a["totals"]["available"] == 15
    assert [(row["location"], row["on_hand"]) for row in a["locations"]] == [("WH-1", 10), ("WH-2", 5)]
    assert {c["channel"]: c["ats"] for c in a["channels"]} == {"marketplace": 15, "web": 15}
    assert (b["cause_event_id"], b["totals"]["on_hand"]) == ("r2", 4)

    # The same events again change nothing, so nothing is published.
    again = harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 10))])
    assert _on(AVAILABILITY, again) == []


def test_an_allocation_and_the_availability_it_leaves_commit_together() -> None:
    harness, _ = _allocator()
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 3))])
    outputs = harness.feed(REQUESTS, [(b"SKU-A", request("o1", "1", "SKU-A", 2))])
    [allocated] = _on(ALLOCATIONS, outputs)
    assert (allocated["type"], allocated["qty"], allocated["location"]) == ("allocated", 2, "WH-1")
    [view] = _on(AVAILABILITY, outputs)
    assert (view["cause_event_id"], view["totals"]["allocated"], view["totals"]["available"]) == ("o1", 2, 1)
    assert [o.topic for o in outputs] == [ALLOCATIONS, AVAILABILITY]  # availability last, at commit


def test_a_reservation_expires_by_punctuation_once_due_and_frees_its_units() -> None:
    harness, _ = _allocator()
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 3))])
    harness.feed(
        REQUESTS, [(b"SKU-A", request("o1", "1", "SKU-A", 2, channel="marketplace", reservation_ttl_s=3))]
    )
    due = T0 + 3_000

    assert harness.advance(2_999) == []  # punctuations ran (at T0 and T0+2999): not due yet
    outputs = harness.advance(250)  # the next punctuation, at T0+3249
    [released] = _on(ALLOCATIONS, outputs)
    assert (released["type"], released["reason"], released["qty"]) == ("released", "expired", 2)
    assert (released["occurred_at"], released["decided_at"]) == (due, T0 + 3_249)
    [view] = _on(AVAILABILITY, outputs)
    assert view["cause_event_id"] == f"clock:expiry:o1:1:{due}"
    assert (view["totals"]["allocated"], view["totals"]["available"]) == (0, 3)
    assert list(harness.store("allocator").iter_prefix(b"#t")) == []  # the timer went with it

    assert harness.advance(10_000) == []  # fired once


def test_a_reservation_whose_batch_failed_to_commit_never_expires() -> None:
    harness, _ = _allocator()
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 3))])
    line = request("o1", "1", "SKU-A", 2, channel="marketplace", reservation_ttl_s=1)
    harness.feed(REQUESTS, [(b"SKU-A", line)], commit=False)
    assert harness.advance(5_000) == []


def test_a_location_going_offline_moves_its_allocations_by_punctuation() -> None:
    harness, provider = _allocator()
    harness.feed(
        INVENTORY,
        [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 3)), (b"SKU-A", inventory("r2", "SKU-A", "WH-2", 3))],
    )
    harness.feed(REQUESTS, [(b"SKU-A", request("o1", "1", "SKU-A", 2))])
    assert harness.advance(0) == []  # nothing unusable: no sweep

    provider.value = tables("WH-1")
    outputs = harness.advance(250)
    moves = [(e["type"], e["location"], e["reason"]) for e in _on(ALLOCATIONS, outputs)]
    assert moves == [("released", "WH-1", "reallocated"), ("reallocated", "WH-2", "location_offline")]
    [view] = _on(AVAILABILITY, outputs)
    assert view["cause_event_id"] == f"locations:WH-1:offline@{T0 + 250}"
    assert {row["location"]: (row["status"], row["allocated"]) for row in view["locations"]} == {
        "WH-1": ("offline", 0),
        "WH-2": ("online", 2),
    }
    assert harness.advance(250) == []  # swept once for this change


def test_inventory_outcomes_of_an_input_record_go_to_the_ledger_and_the_dead_letter_topic() -> None:
    harness, _ = _allocator()
    received = inventory("r1", "SKU-A", "WH-1", 3)
    refused = inventory("a1", "SKU-A", "WH-1", -9, type="adjusted", reason="damaged")
    harness.feed(INVENTORY, [(b"SKU-A", received), (b"SKU-A", refused)])
    [change] = _on(STOCK_CHANGES, harness.outputs)
    assert (change["cause_event_id"], change["on_hand_delta"], change["on_hand"]) == ("r1", 3, 3)
    [letter] = _on(DEAD_LETTER, harness.outputs)
    assert (letter["source_topic"], letter["offset"], letter["value"]) == (INVENTORY, 1, refused)
    assert letter["error"] == "inventory event refused: negative_on_hand"


def test_stock_changes_and_rejections_of_a_punctuation_decision_are_emitted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No engine command yields these today; here the domain's decision of an expiry carries
    them, so whichever engine command gains one, the stage emits it like any input's."""
    real_apply = allocator_module.apply

    def apply(state: SkuState, command: Command, table: Tables, now: int) -> Decision:
        decision = real_apply(state, command, table, now)
        if not isinstance(command, ExpireLine):
            return decision
        written_off = stock_changed(
            command.event_id, state.sku, "WH-1", "expired", -1, 0, 0, 0, (2, 0, 0, 0), None, None, None,
            command.occurred_at, now,
        )  # fmt: skip
        refused = inventory_rejected(
            command.event_id, "adjusted", state.sku, "WH-1", -1, "negative_on_hand", command.occurred_at, now
        )
        return Decision((*decision, written_off, refused))

    monkeypatch.setattr(allocator_module, "apply", apply)
    harness, _ = _allocator()
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 3))])
    harness.feed(REQUESTS, [(b"SKU-A", request("o1", "1", "SKU-A", 1, reservation_ttl_s=1))])
    outputs = harness.advance(1_000)
    cause = f"clock:expiry:o1:1:{T0 + 1_000}"

    [change] = _on(STOCK_CHANGES, outputs)
    assert (change["event_id"], change["on_hand_delta"], change["reason"]) == (
        f"{cause}:stock:WH-1",
        -1,
        "expired",
    )
    [letter] = _on(DEAD_LETTER, outputs)
    # No input record behind it: the letter names the SKU's partition and no offset or bytes.
    assert (letter["event_id"], letter["source_topic"]) == (f"{cause}:rejected", INVENTORY)
    assert (letter["partition"], letter["offset"], letter["key"], letter["value"]) == (0, -1, b"SKU-A", None)
    assert letter["error"] == f"inventory event refused: negative_on_hand (decided by the engine: {cause})"
    assert [o.key for o in outputs if o.topic == DEAD_LETTER] == [b"SKU-A"]


def test_a_transfer_is_shipped_and_received_across_batches_with_both_legs_in_the_ledger() -> None:
    harness, _ = _allocator()
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 5))])
    harness.clock.advance(60_000)
    shipped = harness.feed(
        INVENTORY,
        [
            (
                b"SKU-A",
                inventory(
                    "s1",
                    "SKU-A",
                    "WH-1",
                    3,
                    type="transfer_shipped",
                    destination="WH-2",
                    transfer_id="t1",
                    eta=T0 + 3_600_000,
                ),
            ),  # fmt: skip
            (b"SKU-A", inventory("s2", "SKU-A", "WH-1", 9, type="transfer_shipped", destination="WH-2")),
        ],
    )
    legs = [
        (c["location"], c["reason"], c["on_hand_delta"], c["in_transit_delta"], c["in_transit"])
        for c in _on(STOCK_CHANGES, shipped)
    ]
    assert legs == [("WH-1", "transfer_shipped", -3, 0, 0), ("WH-2", "in_transit", 0, 3, 3)]
    assert {c["transfer_id"] for c in _on(STOCK_CHANGES, shipped)} == {"t1"}
    [letter] = _on(DEAD_LETTER, shipped)
    assert letter["error"] == "inventory event refused: insufficient_free_stock"
    [view] = _on(AVAILABILITY, shipped)
    rows = {row["location"]: row for row in view["locations"]}
    assert (rows["WH-1"]["on_hand"], rows["WH-2"]["in_transit"], view["totals"]["in_transit"]) == (2, 3, 3)
    assert rows["WH-2"]["oldest_transfer_age_s"] == 60.0  # shipped at T0, seen at T0 + 60 s

    # A later batch: the open transfer was read back from the store.
    received = harness.feed(
        INVENTORY,
        [
            (b"SKU-A", inventory("g1", "SKU-A", "WH-2", 2, type="transfer_received", transfer_id="t1")),
            (b"SKU-A", inventory("g2", "SKU-A", "WH-2", 2, type="transfer_received", transfer_id="t1")),
        ],
    )
    legs = [
        (c["reason"], c["on_hand_delta"], c["in_transit_delta"], c["in_transit"])
        for c in _on(STOCK_CHANGES, received)
    ]
    assert legs == [("transfer_received", 2, -2, 1), ("lost_in_transit", 0, -1, 0)]
    [letter] = _on(DEAD_LETTER, received)
    assert letter["error"] == "inventory event refused: transfer_already_received"
    [view] = _on(AVAILABILITY, received)
    rows = {row["location"]: row for row in view["locations"]}
    assert (rows["WH-2"]["on_hand"], rows["WH-2"]["in_transit"], rows["WH-2"]["oldest_transfer_age_s"]) == (
        2,
        0,
        0.0,
    )


def test_a_book_without_transfers_keeps_its_stored_layout_and_one_with_them_reads_back() -> None:
    plain = SkuBook({"web": 2}, [], 3)
    # as every store written before transfers holds it (our own test data: S302 does not apply)
    assert marshal.loads(encode_book(plain)) == (1, {"web": 2}, [], 3)  # noqa: S302
    assert decode_book(encode_book(plain)) == plain
    with_transfer = SkuBook({}, [], 0, {"t1": Transfer("WH-1", "WH-2", 3, T0, T0 + 5)})
    assert decode_book(encode_book(with_transfer)) == with_transfer


def test_a_backorder_is_published_with_its_promised_date_and_told_again_when_the_eta_moves() -> None:
    base = tables()
    web = channel_of({"channel_id": "web", "backorder_limit": 5})
    harness, _ = _allocator(Tables(locations=base.locations, channels={**base.channels, "web": web}))
    day = 86_400_000
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 0, type="counted"))])
    expected = harness.feed(
        INVENTORY,
        [(b"SKU-A", inventory("e1", "SKU-A", "WH-1", 3, type="expected", eta=T0 + day, po_id="po-1"))],
    )
    [view] = _on(AVAILABILITY, expected)
    assert {c["channel"]: c["atp"] for c in view["channels"]}["web"] == [{"until": T0 + day, "units": 3}]

    [backordered] = _on(ALLOCATIONS, harness.feed(REQUESTS, [(b"SKU-A", request("o1", "1", "SKU-A", 2))]))
    assert (backordered["type"], backordered["reason"], backordered["promised_at"]) == (
        "backordered",
        "incoming",
        T0 + day,
    )

    moved = harness.feed(
        INVENTORY,
        [(b"SKU-A", inventory("e2", "SKU-A", "WH-1", 3, type="expected", eta=T0 + 3 * day, po_id="po-1"))],
    )
    [restated] = _on(ALLOCATIONS, moved)
    assert (restated["cause_event_id"], restated["type"], restated["qty"], restated["promised_at"]) == (
        "e2",
        "backordered",
        2,
        T0 + 3 * day,
    )
    [view] = _on(AVAILABILITY, moved)
    assert {c["channel"]: c["atp"] for c in view["channels"]}["web"] == [{"until": T0 + 3 * day, "units": 1}]
