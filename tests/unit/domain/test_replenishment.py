"""Replenishment (domain/replenishment.py): demand rates, targets and recommended transfers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamalloc.domain.replenishment import (
    DemandRate,
    ReplenishmentPolicy,
    Supply,
    observe,
    recommend,
    recommendation_id,
    repeats,
    target,
)

DAY = 86_400
HOUR = 3_600
POLICY = ReplenishmentPolicy(half_life_s=DAY, lead_time_s=DAY, safety_cover_s=DAY)


def steady(units_per_hour: int, hours: int, policy: ReplenishmentPolicy = POLICY) -> DemandRate:
    rate: DemandRate | None = None
    for hour in range(hours):
        rate = observe(rate, units_per_hour, hour * HOUR * 1000, policy)
    assert rate is not None
    return rate


# ---------------------------------------------------------------- the demand rate


def test_a_steady_demand_reads_as_its_rate() -> None:
    rate = steady(36, 24 * 20)  # 36 units/hour for 20 half-lives
    assert rate.rate(rate.at, POLICY) == pytest.approx(36 / HOUR, rel=0.05)


def test_the_rate_halves_every_half_life_without_demand() -> None:
    rate = observe(None, 100, 0, POLICY)
    assert rate.rate(DAY * 1000, POLICY) == pytest.approx(rate.rate(0, POLICY) / 2)


def test_a_shorter_half_life_forgets_faster() -> None:
    fast = ReplenishmentPolicy(half_life_s=HOUR, lead_time_s=DAY, safety_cover_s=DAY)
    old = observe(None, 100, 0, fast)
    assert old.rate(DAY * 1000, fast) < old.rate(DAY * 1000, POLICY) * 1e-3


def test_a_late_update_counts_its_units_and_keeps_the_clock() -> None:
    rate = observe(observe(None, 10, 5_000, POLICY), 4, 1_000, POLICY)
    assert rate == DemandRate(14.0, 5_000)


def test_policy_refuses_a_half_life_of_zero() -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        ReplenishmentPolicy(half_life_s=0, lead_time_s=DAY, safety_cover_s=DAY)


# ---------------------------------------------------------------- recommendations


def test_a_short_location_is_refilled_from_the_one_with_stock() -> None:
    rates = {"STORE": steady(10, 24 * 10)}
    now = rates["STORE"].at
    per_second = rates["STORE"].rate(now, POLICY)
    supply = {"STORE": Supply(5), "WH": Supply(500)}
    [rec] = recommend("SKU", supply, rates, POLICY, now, "ev-1")
    want = target(per_second, DAY, POLICY)
    assert (rec.from_location, rec.to_location, rec.qty) == ("WH", "STORE", want - 5)
    assert rec.recommendation_id == recommendation_id("SKU", "WH", "STORE", "ev-1")
    assert rec.projected_stockout_at == now + math.floor(5 / per_second * 1000)
    assert rec.lead_time_s == DAY
    assert rec.safety_stock == math.ceil(per_second * DAY - 1e-9)
    assert rec.demand_rate == per_second
    assert rec.decided_at == now
    assert set(rec.as_record()) == {
        "recommendation_id", "sku", "from_location", "to_location", "qty", "projected_stockout_at",
        "lead_time_s", "safety_stock", "demand_rate", "decided_at",
    }  # fmt: skip


def test_nothing_is_recommended_while_cover_meets_the_target() -> None:
    rates = {"STORE": steady(10, 240)}
    now = rates["STORE"].at
    enough = target(rates["STORE"].rate(now, POLICY), DAY, POLICY)
    assert recommend("SKU", {"STORE": Supply(enough), "WH": Supply(500)}, rates, POLICY, now, "e") == []


def test_units_in_transit_count_towards_the_destination() -> None:
    rates = {"STORE": steady(10, 240)}
    now = rates["STORE"].at
    enough = target(rates["STORE"].rate(now, POLICY), DAY, POLICY)
    supply = {"STORE": Supply(0, in_transit=enough), "WH": Supply(500)}
    assert recommend("SKU", supply, rates, POLICY, now, "e") == []


def test_the_lead_time_of_the_destination_sets_its_target() -> None:
    rates = {"STORE": steady(10, 240)}
    now = rates["STORE"].at
    longer = ReplenishmentPolicy(
        half_life_s=DAY, lead_time_s=DAY, safety_cover_s=DAY, lead_times={"STORE": 5 * DAY}
    )
    supply = {"STORE": Supply(0), "WH": Supply(5000)}
    [short] = recommend("SKU", supply, rates, POLICY, now, "e")
    [long] = recommend("SKU", supply, rates, longer, now, "e")
    assert long.qty > short.qty
    assert long.lead_time_s == 5 * DAY


def test_the_source_with_most_cover_beyond_its_target_gives_first() -> None:
    rates = {"STORE": steady(10, 240), "BUSY": steady(20, 240), "QUIET": steady(1, 240)}
    now = rates["STORE"].at
    supply = {"STORE": Supply(0), "BUSY": Supply(2000), "QUIET": Supply(1500)}
    recs = recommend("SKU", supply, rates, POLICY, now, "e")
    assert recs[0].from_location == "QUIET"


def test_a_source_is_never_left_below_its_target() -> None:
    rates = {"STORE": steady(10, 240), "WH": steady(10, 240)}
    now = rates["STORE"].at
    wh_target = target(rates["WH"].rate(now, POLICY), DAY, POLICY)
    [rec] = recommend("SKU", {"STORE": Supply(0), "WH": Supply(wh_target + 3)}, rates, POLICY, now, "e")
    assert rec.qty == 3


def test_the_most_urgent_location_is_served_first() -> None:
    rates = {"A": steady(10, 240), "B": steady(10, 240)}
    now = rates["A"].at
    recs = recommend("SKU", {"A": Supply(100), "B": Supply(3), "WH": Supply(50)}, rates, POLICY, now, "e")
    assert [r.to_location for r in recs] == ["B"]  # WH's 50 go to the earlier stockout


# ---------------------------------------------------------------- dedup


def test_the_same_quantity_within_the_window_is_a_repeat() -> None:
    assert repeats((5, 1_000), 5, 1_500, window_ms=1_000)
    assert not repeats((5, 1_000), 5, 2_000, window_ms=1_000)  # the window has passed
    assert not repeats((5, 1_000), 6, 1_500, window_ms=1_000)  # the situation changed
    assert not repeats(None, 5, 1_500, window_ms=1_000)


# ---------------------------------------------------------------- properties

LOCATIONS = ("A", "B", "C", "D")


@st.composite
def worlds(draw: st.DrawFn) -> tuple[dict[str, Supply], dict[str, DemandRate], ReplenishmentPolicy, int]:
    names = draw(st.lists(st.sampled_from(LOCATIONS), min_size=1, max_size=4, unique=True))
    supply = {n: Supply(draw(st.integers(0, 2000)), draw(st.integers(0, 50))) for n in names}
    rates: dict[str, DemandRate] = {}
    for name in names:
        if draw(st.booleans()):
            rates[name] = DemandRate(draw(st.floats(0.0, 5000.0)), draw(st.integers(0, 10**9)))
    policy = ReplenishmentPolicy(
        half_life_s=draw(st.floats(1.0, 30 * DAY)),
        lead_time_s=draw(st.integers(0, 10 * DAY)),
        safety_cover_s=draw(st.integers(0, 10 * DAY)),
        lead_times={n: draw(st.integers(0, 10 * DAY)) for n in names if draw(st.booleans())},
    )
    return supply, rates, policy, draw(st.integers(0, 2 * 10**9))


@given(worlds())
def test_recommendations_never_exceed_a_source_excess_nor_go_nowhere(
    world: tuple[dict[str, Supply], dict[str, DemandRate], ReplenishmentPolicy, int],
) -> None:
    supply, rates, policy, now = world
    recs = recommend("SKU", supply, rates, policy, now, "cause")
    given_by: dict[str, int] = {}
    for rec in recs:
        assert rec.qty > 0
        assert rec.from_location != rec.to_location
        given_by[rec.from_location] = given_by.get(rec.from_location, 0) + rec.qty
    for source, qty in given_by.items():
        rate = rates[source].rate(now, policy) if source in rates else 0.0
        excess = supply[source].available - target(rate, policy.lead_time(source), policy)
        assert qty <= excess
    ids = [r.recommendation_id for r in recs]
    assert len(ids) == len(set(ids))
    assert recs == recommend("SKU", supply, rates, policy, now, "cause")  # deterministic
