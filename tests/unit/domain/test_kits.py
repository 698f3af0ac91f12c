"""A kit's ATS: the whole kits its components make."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamalloc.domain.kits import Kit, kit_ats, kits_by_component

DESK = Kit("DESK", (("TOP", 1), ("LEG", 4)))


def test_a_kit_sells_the_fewest_whole_kits_any_component_makes() -> None:
    assert kit_ats(DESK, {"TOP": 5, "LEG": 9}) == 2
    assert kit_ats(DESK, {"TOP": 1, "LEG": 40}) == 1


def test_a_missing_or_oversold_component_makes_no_kit() -> None:
    assert kit_ats(DESK, {"TOP": 5}) == 0
    assert kit_ats(DESK, {"TOP": -3, "LEG": 8}) == 0


@given(st.integers(-5, 50), st.integers(-5, 50), st.integers(1, 5), st.integers(1, 5))
def test_the_kits_sold_never_take_more_than_a_component_has(
    top: int, leg: int, per_top: int, per_leg: int
) -> None:
    kit = Kit("K", (("TOP", per_top), ("LEG", per_leg)))
    n = kit_ats(kit, {"TOP": top, "LEG": leg})
    assert n >= 0
    assert n * per_top <= max(top, 0) and n * per_leg <= max(leg, 0)
    assert (n + 1) * per_top > top or (n + 1) * per_leg > leg


def test_a_component_names_every_kit_it_is_part_of() -> None:
    lamp = Kit("LAMP-SET", (("TOP", 2), ("BULB", 1)))
    index = kits_by_component({"DESK": DESK, "LAMP-SET": lamp})
    assert index == {"TOP": (DESK, lamp), "LEG": (DESK,), "BULB": (lamp,)}
