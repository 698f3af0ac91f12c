"""Which of several simultaneous requests wins (domain.contention)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamalloc.domain import (
    AllocateLine,
    Channel,
    Command,
    Location,
    Receive,
    ReleaseLine,
    SkuState,
    Tables,
    apply,
    contend,
)

SKU = "sku-1"
NOW = 1_700_000_000_000
LOCATIONS = [Location(location_id="WH")]
YIELDING = Channel(channel_id="marketplace", priority=1, priority_window_ms=50)
VIP = Channel(channel_id="web", priority=10)
TABLES = Tables.of(LOCATIONS, [YIELDING, VIP])


def allocate(order: str, channel: str, at: int = NOW, priority: int = 0) -> AllocateLine:
    return AllocateLine(
        event_id=f"ev-{order}", occurred_at=at, order_id=order, line_id="1", sku=SKU, qty=1,
        channel=channel, priority=priority,
    )  # fmt: skip


def same(command: Command) -> Command:
    return command


def test_without_a_window_requests_keep_their_arrival_order() -> None:
    tables = Tables.of(LOCATIONS, [Channel(channel_id="marketplace", priority=1), VIP])
    requests = [allocate("a", "marketplace"), allocate("b", "web")]
    assert contend(requests, same, tables) == requests


def test_a_line_yields_to_a_higher_ranked_rival_within_its_window() -> None:
    slow, fast = allocate("a", "marketplace", NOW), allocate("b", "web", NOW + 50)
    assert contend([slow, fast], same, TABLES) == [fast, slow]


def test_a_rival_after_the_window_or_not_outranking_does_not_overtake() -> None:
    slow = allocate("a", "marketplace", NOW)
    late = allocate("b", "web", NOW + 51)
    peer = allocate("c", "marketplace", NOW + 10)
    assert contend([slow, late], same, TABLES) == [slow, late]
    assert contend([slow, peer], same, TABLES) == [slow, peer]


def test_order_priority_ranks_before_channel_priority() -> None:
    vip_web = allocate("a", "web", NOW, priority=0)
    urgent = allocate("b", "marketplace", NOW + 5, priority=5)
    tables = Tables.of(LOCATIONS, [YIELDING, Channel(channel_id="web", priority=10, priority_window_ms=50)])
    assert contend([vip_web, urgent], same, tables) == [urgent, vip_web]


def test_nothing_overtakes_a_receipt_or_a_release() -> None:
    slow = allocate("a", "marketplace", NOW)
    receipt = Receive(event_id="r", occurred_at=NOW, sku=SKU, location="WH", qty=1)
    release = ReleaseLine(event_id="x", occurred_at=NOW, order_id="z", line_id="1", sku=SKU)
    fast = allocate("b", "web", NOW + 1)
    assert contend([slow, receipt, fast], same, TABLES) == [slow, receipt, fast]
    assert contend([slow, release, fast], same, TABLES) == [slow, release, fast]


def test_the_higher_ranked_request_gets_the_last_unit() -> None:
    state = SkuState(SKU)
    apply(state, Receive(event_id="r", occurred_at=NOW, sku=SKU, location="WH", qty=1), TABLES, NOW)
    decided = [apply(state, c, TABLES, NOW + 60)[0] for c in contend(
        [allocate("a", "marketplace", NOW), allocate("b", "web", NOW + 20)], same, TABLES
    )]  # fmt: skip
    assert [(e.order_id, e.type) for e in decided] == [("b", "allocated"), ("a", "rejected")]


requests = st.lists(
    st.one_of(
        st.builds(
            allocate,
            order=st.text("abcdef", min_size=1, max_size=3),
            channel=st.sampled_from(("marketplace", "web", "unknown")),
            at=st.integers(min_value=NOW, max_value=NOW + 200),
            priority=st.integers(min_value=0, max_value=3),
        ),
        st.builds(
            Receive,
            event_id=st.just("r"),
            occurred_at=st.just(NOW),
            sku=st.just(SKU),
            location=st.just("WH"),
            qty=st.just(1),
        ),
    ),
    max_size=12,
)


@given(requests)
def test_contention_only_reorders_allocations_between_the_same_barriers(commands: list[Command]) -> None:
    ordered = contend(commands, same, TABLES)
    assert sorted(map(id, ordered)) == sorted(map(id, commands))  # a permutation

    def segments(seq: list[Command]) -> list[list[int]]:
        out: list[list[int]] = [[]]
        for c in seq:
            if isinstance(c, AllocateLine):
                out[-1].append(id(c))
            else:
                out.append([id(c)])
                out.append([])
        return out

    before, after = segments(commands), segments(ordered)
    assert [sorted(s) for s in before] == [sorted(s) for s in after]
    # A request moves ahead only of lines that yield to it: within a segment, any pair now
    # out of arrival order is one where the earlier arrival is outranked within its window.
    position = {id(c): i for i, c in enumerate(commands)}
    for i, first in enumerate(ordered):
        for second in ordered[i + 1 :]:
            if isinstance(first, AllocateLine) and isinstance(second, AllocateLine):
                if position[id(first)] > position[id(second)]:
                    window = TABLES.channel(second.channel).priority_window_ms
                    assert window > 0 and first.occurred_at <= second.occurred_at + window
                    assert rank(first) < rank(second)


def rank(request: AllocateLine) -> tuple[int, int]:
    return (-request.priority, -TABLES.channel(request.channel).priority)
