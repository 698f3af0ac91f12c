"""channel-sync's coalescing and thresholds, on plain values (no Kafka, no clock)."""

from __future__ import annotations

from streamalloc.services.coalesce import AtsValue, Coalescer, ats_values, stock_event, stock_status


def value(ats: int, n: int = 1, channel: str = "web", sku: str = "TEE") -> AtsValue:
    return AtsValue(channel, sku, ats, as_of=n, cause_event_id=f"e{n}", availability_event_id=f"a{n}")


def test_first_value_is_pushed_at_once() -> None:
    c = Coalescer(window_ms=1000)
    push = c.offer(value(5), now=0)
    assert push is not None
    assert (push.value.ats, push.previous_ats, push.changes, push.event_id) == (5, None, 1, "a1:web:ats")


def test_changes_inside_the_window_wait_and_only_the_newest_goes_out_when_it_closes() -> None:
    c = Coalescer(window_ms=1000)
    c.offer(value(5, 1), now=0)
    assert c.offer(value(4, 2), now=100) is None
    assert c.offer(value(3, 3), now=200) is None
    assert c.due(now=999) == []
    [push] = c.due(now=1000)
    assert (push.value.ats, push.previous_ats, push.changes, push.value.as_of) == (3, 5, 2, 3)
    assert c.due(now=5000) == []


def test_at_most_one_push_per_window_over_a_burst() -> None:
    c = Coalescer(window_ms=1000)
    times = []
    for i in range(100):  # one change every 25 ms for 2.5 s, ticking every 10 ms
        now = i * 25
        if c.offer(value(100 - i, i), now) is not None:
            times.append(now)
        times += [p.pushed_at for p in c.due(now)]
    times += [p.pushed_at for p in c.due(10_000)]
    assert all(b - a >= 1000 for a, b in zip(times, times[1:], strict=False))
    assert c.pushed("web:TEE") == 1  # the newest value went out last


def test_a_change_back_to_the_pushed_value_cancels_the_wait() -> None:
    c = Coalescer(window_ms=1000)
    c.offer(value(5, 1), now=0)
    c.offer(value(4, 2), now=100)
    assert c.offer(value(5, 3), now=200) is None
    assert c.due(now=2000) == []
    assert c.offer(value(5, 4), now=3000) is None  # unchanged: nothing to push


def test_keys_are_independent() -> None:
    c = Coalescer(window_ms=1000)
    assert c.offer(value(5, channel="web"), now=0) is not None
    assert c.offer(value(5, channel="shop"), now=1) is not None
    assert c.offer(value(5, sku="CAP"), now=2) is not None


def test_after_a_restart_the_first_value_is_pushed_even_if_equal_to_the_durable_one() -> None:
    c = Coalescer(window_ms=1000)
    c.known("web:TEE", 5)
    push = c.offer(value(5), now=0)
    assert push is not None and push.previous_ats == 5 and push.stock_event is None


def test_stock_status_and_events_follow_the_channel_threshold() -> None:
    assert stock_status(0, 3) == "out_of_stock"
    assert stock_status(3, 3) == "low_stock"
    assert stock_status(4, 3) == "in_stock"
    assert stock_event(5, 0, 3) == "out_of_stock"
    assert stock_event(0, 2, 3) == "back_in_stock"
    assert stock_event(0, 9, 3) == "back_in_stock"
    assert stock_event(9, 2, 3) == "low_stock"
    assert stock_event(2, 1, 3) is None
    assert stock_event(2, 9, 3) is None
    assert stock_event(None, 0, 3) == "out_of_stock"
    assert stock_event(None, 9, 3) is None


def test_pushes_carry_the_threshold_of_their_channel() -> None:
    c = Coalescer(window_ms=0, low_stock={"web": 5}, default_low_stock=1)
    c.offer(value(10, channel="web"), 0)
    c.offer(value(10, channel="shop"), 0)
    web = c.offer(value(4, channel="web"), 1)
    shop = c.offer(value(4, channel="shop"), 1)
    assert web is not None and (web.status, web.stock_event) == ("low_stock", "low_stock")
    assert shop is not None and (shop.status, shop.stock_event) == ("in_stock", None)


def test_ats_values_reads_every_channel_of_an_availability_record() -> None:
    record = {"event_id": "a9", "cause_event_id": "e9", "sku": "TEE", "as_of": 7,
              "channels": [{"channel": "web", "ats": 3}, {"channel": "shop", "ats": 0}]}  # fmt: skip
    got = ats_values(record)
    assert [(v.key, v.ats, v.as_of, v.cause_event_id) for v in got] == [
        ("web:TEE", 3, 7, "e9"),
        ("shop:TEE", 0, 7, "e9"),
    ]


def test_a_kits_push_has_an_id_of_its_own_beside_its_components() -> None:
    component = Coalescer(window_ms=1_000).offer(value(5), 0)
    kit = Coalescer(window_ms=1_000).offer(AtsValue("web", "KIT", 1, 1, "e1", "a1", kit=True), 0)
    assert component is not None and kit is not None
    assert (component.event_id, kit.event_id) == ("a1:web:ats", "a1:web:KIT:kit-ats")
