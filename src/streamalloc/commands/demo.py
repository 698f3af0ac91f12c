"""`streamalloc demo`: three channels against scarce stock, two workers, then the audit.

What happens: the demo publishes three locations, three channels and scarce stock, starts
two engine workers as separate processes, and lets three channel generators (web, store,
marketplace) place orders concurrently, cancelling some. A warehouse simulator follows the
allocations: it picks and ships some lines, takes some back as returns, and inspects
them (pass or fail). When every line has been decided and the warehouse has caught up, the
workers stop and the audit checks the engine's promises from the topics alone.

The policies at work: some SKUs are lot-tracked at WH-EAST (one lot already expired, the
others allocated first-expiry-first), purchase orders are expected for some SKUs so web
may backorder against them, and their receipt mid-run fills the waitlist; a fifth of web's
orders are carts first (checkout holds: most confirmed, some extended, the rest expire);
marketplace holds its reservations for a few seconds only, so the lines the warehouse does
not pick in time expire; STORE-NYC goes offline for a while mid-run (its soft allocations move or
wait) and comes back (the waitlist is served first). A transfer carries a SKU of its own from
3PL-WEST to WH-EAST; a web order waits on it in transit and is filled when it arrives
(`transfer_in_transit`); a tenth of the web orders placed by
mid-run are edited (`amended`: a line's quantity up or down, or a line left out).
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from streamalloc.audit import AuditReport
from streamalloc.broker.process import terminate_all
from streamalloc.commands.audit import CommittedOutputs, read_committed, read_kits, run_audit
from streamalloc.commands.io import produce_file, read_to_end
from streamalloc.commands.replay import load_inputs
from streamalloc.commands.simulation import (
    CARTS,
    CHANNELS,
    HOLD_TTL_S,
    OFFLINE_LOCATION,
    RESERVATION_TTL_S,
    WEB_PROTECTED_UNITS,
    Progress,
    Publisher,
    examples_dir,
    now_ms,
    place_orders,
    receive_purchase_orders,
    set_location,
    start_worker,
    stock,
    wait_until_engine_has,
    warehouse,
)
from streamalloc.commands.topics import ensure_topics
from streamalloc.config import Settings
from streamalloc.domain.kits import kit_ats
from streamalloc.domain.replenishment import ReplenishmentPolicy
from streamalloc.errors import StreamallocError
from streamalloc.kafka import consume_available, consumer_config
from streamalloc.kafka.types import consumed
from streamalloc.replay.compare import compare
from streamalloc.serialization import topic_serde

#: The demo's progress (kept under its old name for callers of run_demo).
DemoProgress = Progress


def run_demo(
    settings: Settings,
    *,
    orders_per_channel: int = 250,
    rate: float = 50.0,
    seed: int = 7,
    timeout_s: float = 100.0,
    crash_at: float | None = None,
    on_progress: Callable[[Progress], None] = lambda p: None,
    say: Callable[[str], None] = print,
) -> AuditReport:
    """Run the whole scenario; return the audit of what the engine decided.

    With `crash_at` (a share of the lines, 0 < crash_at < 1), the first worker is killed
    with SIGKILL once that share of the lines is decided, in the middle of its
    transactions, and started again on the same state directory: the audit must pass
    all the same.
    """
    ensure_topics(settings, channels=CHANNELS)
    publisher = Publisher(settings)
    produce_file(settings, settings.topic("locations"), examples_dir() / "locations.jsonl")
    produce_file(settings, settings.topic("channels"), examples_dir() / "channels.jsonl")
    produce_file(settings, settings.topic("kits"), examples_dir() / "kits.jsonl")
    stocked = stock(publisher, random.Random(seed))
    workdir = Path(tempfile.mkdtemp(prefix="streamalloc-demo-"))
    workers = [start_worker(settings, f"worker-{i}", workdir) for i in (1, 2)]
    say(f"two workers started (pids {', '.join(str(w.pid) for w in workers)}); logs in {workdir}")
    progress = Progress()
    stop = threading.Event()
    follower = threading.Thread(
        target=warehouse, args=(settings, publisher, progress, stop, seed), daemon=True
    )
    follower.start()
    try:
        wait_until_engine_has(settings, stocked, timeout_s=60)
        say(f"the engine has the stock of {len(stocked)} SKU(s); three channels start ordering")
        channels = [
            threading.Thread(
                target=place_orders,
                args=(publisher, c, orders_per_channel, rate, seed + i, progress),
                kwargs={"carts": CARTS.get(c, 0.0)},
                daemon=True,
            )
            for i, c in enumerate(CHANNELS)
        ]
        for thread in channels:
            thread.start()
        channels.append(transfer_in_transit(publisher, progress, say))  # the run waits for it too
        channels.append(kit_orders(publisher, progress, say))
        deadline = time.monotonic() + timeout_s
        expected_lines = orders_per_channel * len(CHANNELS) * 1.75  # 1, 1, 2 or 3 lines an order
        crash_after = None if crash_at is None else int(expected_lines * crash_at)
        # Operations during the run, at shares of the expected lines: (share, what, done?)
        operations: list[tuple[float, str, Callable[[], None]]] = [
            # early, while the other locations still have stock for the lines it holds
            (0.15, f"{OFFLINE_LOCATION} goes offline", lambda: set_location(publisher, "offline")),
            (0.45, f"{OFFLINE_LOCATION} is back online", lambda: set_location(publisher, "online")),
            (0.55, "the purchase orders arrive", lambda: receive_purchase_orders(publisher)),
            (0.6, "web orders are edited", lambda: say(f"{edit_orders(publisher, seed)} order edit(s) sent")),
        ]
        while time.monotonic() < deadline:
            on_progress(progress)
            while operations and progress.lines_decided >= expected_lines * operations[0][0]:
                _, what, act = operations.pop(0)
                act()
                say(f"{what} (after {progress.lines_decided} decided line(s))")
            if crash_after is not None and progress.lines_decided >= crash_after:
                crash_after = None
                victim = workers[0]
                victim.kill()  # SIGKILL: no commit, no leaving the group, transactions left open
                victim.wait(10)
                say(
                    f"killed worker-1 (pid {victim.pid}) with SIGKILL after {progress.lines_decided} "
                    f"of {progress.lines_placed} placed line(s) were decided; starting it again"
                )
                workers[0] = start_worker(settings, "worker-1", workdir)
            generators_done = not any(t.is_alive() for t in channels)
            # Quiet for longer than a reservation lives: the last expiries have fired.
            longest = max(*RESERVATION_TTL_S.values(), HOLD_TTL_S)
            quiet = time.monotonic() - progress.last_event > longest + 2.0
            if (
                generators_done
                and not operations
                and progress.lines_decided >= progress.lines_placed
                and quiet
            ):
                break
            for worker in workers:
                if worker.poll() is not None:
                    raise StreamallocError(
                        f"worker {worker.pid} exited with {worker.returncode}; see {workdir}"
                    )
            time.sleep(0.2)
        else:
            raise StreamallocError(f"the engine did not decide every line within {timeout_s}s; see {workdir}")
    finally:
        stop.set()
        follower.join(10)
        terminate_all(workers, 30)  # SIGTERM: commit, leave the group, exit 0
    say(
        f"workers stopped; {progress.shipped} unit(s) shipped, {progress.returned} returned; "
        "auditing the topics"
    )
    report = run_audit(settings)
    say(f"{report.events['allocation.amended']} order line edit(s) applied")
    say(replenishment_summary(settings))
    # Outcomes as the engine stands by them: on the embedded broker the topics can show
    # batches that never committed (a redo then decided otherwise), which the reader leaves out.
    outputs = read_committed(settings)
    for outcome in kit_outcomes(outputs):
        say(outcome)
    say(kit_availability(settings, outputs))
    summary = {
        "ok": report.ok,
        "breaches": report.breaches,
        "kpis": report.kpis.as_record(),
        "waitlist_fills": report.waitlist_fills,
        "reallocations": report.reallocations,
    }
    (workdir / "audit.json").write_text(json.dumps(summary, indent=2))
    return report


#: Replenishment scaled to the demo's half minute of history: demand rates that halve in 10 s,
#: transfers that take 2 s, and 3 s of cover kept beyond that.
DEMO_REPLENISHMENT = ReplenishmentPolicy(half_life_s=10.0, lead_time_s=2, safety_cover_s=3)


def replenishment_summary(settings: Settings) -> str:
    """What forecast-driven replenishment would have done in this run: its history replayed
    (`streamalloc replay --replenish`) with DEMO_REPLENISHMENT, the recommended transfers
    shipped and received after the lead time, and the stockout rate without and with them."""
    inputs = load_inputs(settings, orders=(), inventory=(), baseline=(), policy=(), say=lambda _: None)
    tables = inputs.baseline.tables()
    comparison = compare(inputs.steps, tables, tables, replenish=DEMO_REPLENISHMENT)
    transfers, units = comparison.replenished or (0, 0)
    without, with_ = comparison.stockout_rate("baseline"), comparison.stockout_rate("what_if")
    return (
        f"replenishment, this run replayed: {transfers} transfer(s) recommended ({units} unit(s)); "
        f"stockout rate {_percent(without)} without them, {_percent(with_)} with them"
    )


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def edit_orders(publisher: Publisher, seed: int, share: float = 0.1) -> int:
    """Edit a `share` of the web orders placed so far (`amended`, listing the order's lines as
    they are now): a line's quantity one up or down, or, for an order of several lines, its
    last line left out. Returns how many edits were sent."""
    rng = random.Random(seed)
    placed = [
        event
        for event in read_to_end(publisher.settings, publisher.settings.topic("orders.web"), timeout_s=30)
        if event["type"] == "placed"
    ]
    edits = 0
    for order in placed:
        if rng.random() >= share:
            continue
        lines = [dict(line) for line in order["lines"]]
        if len(lines) > 1 and rng.random() < 0.3:
            lines.pop()
        else:
            line = rng.choice(lines)
            line["qty"] = line["qty"] + 1 if line["qty"] == 1 or rng.random() < 0.5 else line["qty"] - 1
        edit = {**order, "event_id": f"{order['event_id']}:edit", "type": "amended"}
        publisher.order({**edit, "occurred_at": now_ms(), "lines": lines})
        edits += 1
    publisher.producer.flush(30)
    return edits


def policy_rows(report: AuditReport) -> list[tuple[str, str]]:
    """What each policy of the scenario did in this run, as (policy, what happened) rows."""
    lots = Counter[str]()
    for lot, units in report.units_by_lot.items():
        if lot:
            lots[lot.rsplit("-", 1)[-1]] += units
    swept = {kind: n for (cause, kind), n in report.engine_decisions.items() if cause == "locations"}
    backordered = sum(stats["backordered"] for stats in report.per_channel.values())
    fills = sum(stats["waitlist fills"] for stats in report.per_channel.values())
    returned = sum(stats["returned"] for stats in report.per_channel.values())
    protected = report.protected
    return [
        (
            "lots, first expiry first",
            f"at WH-EAST {lots['SOON']} unit(s) allocated from the lots expiring in 2 days, "
            f"{lots['LATE']} from those expiring in 60 days, {lots['EXPIRED']} from the expired "
            f"ones; {report.expired_units} expired unit(s) reported in availability",
        ),
        (
            f"{OFFLINE_LOCATION} offline",
            f"{swept.get('reallocated', 0)} soft allocation(s) moved to other locations, "
            f"{swept.get('backordered', 0)} left waiting, {report.released_by_reason['location_offline']} "
            f"released; {swept.get('allocated', 0)} waiting line(s) filled when it came back",
        ),
        (
            "backorders and the waitlist",
            f"{backordered} line(s) backordered or waitlisted, {fills} filled later "
            "(from the purchase orders' receipt, releases, expiries, passed inspections)",
        ),
        (
            "checkout holds",
            f"{report.holds['held']} web cart line(s) held for up to {HOLD_TTL_S} s, "
            f"{report.holds['confirmed']} confirmed (their units kept), {report.holds['extended']} extended "
            f"first while payment ran, {report.holds['expired']} abandoned and released when the hold "
            "expired (reason hold_expired)",
        ),
        (
            "protection levels",
            f"web keeps {WEB_PROTECTED_UNITS} unit(s) of each SKU from the lower channels: "
            + (", ".join(f"{n} {ch}" for ch, n in sorted(protected.items())) or "no")
            + " line(s) refused protected_for_priority near stockout",
        ),
        (
            "reservation expiry",
            f"{report.released_by_reason['expired']} marketplace line(s) not picked within "
            f"{RESERVATION_TTL_S['marketplace']} s released (reason expired)",
        ),
        (
            "returns and inspection",
            f"{returned} line(s) returned into quality control; {report.inspected['pass']} unit(s) passed "
            f"inspection (back on hand), {report.inspected['fail']} failed (damaged)",
        ),
        transfer_row(report),
    ]


#: The transfer's SKU: its own, so the channels' random orders never take its units.
TRANSFER_SKU = "SKU-TRANSFER"
TRANSFER_ID = "demo-transfer-1"
TRANSFER_ORDER = "web-transfer"


def transfer_in_transit(
    publisher: Publisher, progress: Progress, say: Callable[[str], None]
) -> threading.Thread:
    """A transfer in transit fills a backorder, in a thread of its own (started here).

    6 units of TRANSFER_SKU are received at 3PL-WEST and shipped to WH-EAST (ETA in a minute),
    leaving none on hand anywhere; a web order of 2 then waits on them (backordered, reason
    incoming: in-transit units count as incoming, promised for the transfer's ETA), and the
    transfer's arrival fills it. Each
    step waits until the engine's availability shows the one before it decided, so the
    run's other operations and its crash are never held up.
    """
    settings = publisher.settings

    def run() -> None:
        base = {"sku": TRANSFER_SKU, "qty": 6, "occurred_at": now_ms()}
        publisher.stock(
            {**base, "event_id": f"{TRANSFER_ID}-stock", "type": "received", "location": "3PL-WEST"}
        )
        publisher.stock(
            {**base, "event_id": f"{TRANSFER_ID}-shipped", "type": "transfer_shipped", "location": "3PL-WEST",
             "destination": "WH-EAST", "transfer_id": TRANSFER_ID, "eta": now_ms() + 60_000}
        )  # fmt: skip
        publisher.producer.flush(30)
        _stock(settings, lambda totals: totals["in_transit"] == 6)
        say(f"transfer {TRANSFER_ID}: 6 unit(s) of {TRANSFER_SKU} in transit from 3PL-WEST to WH-EAST")
        publisher.order(
            {"event_id": f"{TRANSFER_ID}-order", "type": "placed", "order_id": TRANSFER_ORDER,
             "channel": "web", "occurred_at": now_ms(), "region": "east",
             "lines": [{"line_id": "1", "sku": TRANSFER_SKU, "qty": 2}]}
        )  # fmt: skip
        publisher.producer.flush(30)
        progress.lines_placed += 1
        waits = _wait_for(
            settings,
            "allocations",
            lambda r: r["order_id"] == TRANSFER_ORDER and r["type"] == "backordered",
        )
        promised = waits["promised_at"]
        when = "no date" if promised is None else time.strftime("%H:%M:%S", time.localtime(promised / 1000))
        say(
            f"a web order of 2 unit(s) of {TRANSFER_SKU} is backordered against the transfer in transit, "
            f"promised for {when} (the transfer's ETA)"
        )
        publisher.stock(
            {"event_id": f"{TRANSFER_ID}-received", "type": "transfer_received", "sku": TRANSFER_SKU,
             "location": "WH-EAST", "qty": 6, "transfer_id": TRANSFER_ID, "occurred_at": now_ms()}
        )  # fmt: skip
        publisher.producer.flush(30)
        _stock(settings, lambda totals: totals["in_transit"] == 0)
        say(f"transfer {TRANSFER_ID} arrived at WH-EAST: its units fill the waiting web order first")

    thread = threading.Thread(target=run, name="transfer", daemon=True)
    thread.start()
    return thread


KIT_SKU = "KIT-DUO"  # examples/kits.jsonl: one SKU-KIT-A and two SKU-KIT-B
KIT_ORDERS = ("web-kit-1", "web-kit-2")
KIT_QUANTITIES = (2, 1)  # kits ordered, per KIT_ORDERS


def kit_orders(publisher: Publisher, progress: Progress, say: Callable[[str], None]) -> threading.Thread:
    """Kits, all or nothing, in a thread of its own (started here).

    5 SKU-KIT-A and 5 SKU-KIT-B are received at WH-EAST (its safety stock keeps one of each);
    a web order of 2 KIT-DUO (2 A, 4 B) takes every B there is to sell, so the next order of 1
    KIT-DUO finds its B short: that component is
    refused and the order's other line (its A) is released with it (ship_complete_failed),
    the units back for others.
    """
    settings = publisher.settings

    def run() -> None:
        for sku, qty in (("SKU-KIT-A", 5), ("SKU-KIT-B", 5)):
            publisher.stock(
                {"event_id": f"demo-kit-stock-{sku}", "type": "received", "sku": sku, "location": "WH-EAST",
                 "qty": qty, "occurred_at": now_ms()}
            )  # fmt: skip
        publisher.producer.flush(30)
        for sku in ("SKU-KIT-A", "SKU-KIT-B"):  # the stock is there before the orders come

            def stocked(record: dict[str, Any], sku: str = sku) -> bool:
                return bool(record["sku"] == sku and record["totals"]["on_hand"] >= 5)

            _wait_for(settings, "availability", stocked)
        for order_id, kits in zip(KIT_ORDERS, KIT_QUANTITIES, strict=True):
            line = {"line_id": "1", "sku": KIT_SKU, "qty": kits}
            publisher.order(
                {"event_id": f"{order_id}-placed", "type": "placed", "order_id": order_id, "channel": "web",
                 "occurred_at": now_ms(), "region": "east", "lines": [line]}
            )  # fmt: skip
            publisher.producer.flush(30)
            progress.lines_placed += 2  # a line per component

            def settled(record: dict[str, Any], order_id: str = order_id) -> bool:
                return bool(record["order_id"] == order_id and _settled(record))

            # Wait until it is decided before the next order: this reader is live, so what it
            # sees may be a batch that never commits; the outcome is told after the run
            # (`kit_outcomes`), from the committed outputs.
            _wait_for(settings, "order-status", settled)
            say(f"a web order of {kits} {KIT_SKU} ({order_id}) placed and decided")

    thread = threading.Thread(target=run, name="kits", daemon=True)
    thread.start()
    return thread


def kit_outcomes(outputs: CommittedOutputs) -> list[str]:
    """How each kit order was decided, all or nothing: its first order-status with every line
    decided (`_settled`), among the committed ones."""
    told = []
    for order_id, kits in zip(KIT_ORDERS, KIT_QUANTITIES, strict=True):
        status = next((s for s in outputs.order_statuses if s["order_id"] == order_id and _settled(s)), None)
        lines = (
            "not decided"
            if status is None
            else ", ".join(f"{line['sku']} {line['status']}" for line in status["lines"])
        )
        told.append(f"a web order of {kits} {KIT_SKU} (a line per component, all or nothing): {lines}")
    return told


def kit_availability(settings: Settings, outputs: CommittedOutputs) -> str:
    """KIT_SKU's ATS per channel at the end of the run, as channel-sync publishes it: the whole
    kits its components' last committed availability (per channel ATS) makes (`kit_ats`)."""
    kit = read_kits(settings).get(KIT_SKU)
    if kit is None:
        return f"{KIT_SKU} is not in the kits table"
    last: dict[str, dict[str, int]] = {}
    components = {sku for sku, _ in kit.components}
    for record in outputs.availability:
        if record["sku"] in components:
            last[record["sku"]] = {c["channel"]: c["ats"] for c in record["channels"]}
    channels = sorted({channel for ats in last.values() for channel in ats})
    kits = ", ".join(
        f"{channel} {kit_ats(kit, {sku: ats.get(channel, 0) for sku, ats in last.items()})}"
        for channel in channels
    )
    parts = " + ".join(f"{qty} {sku}" for sku, qty in kit.components)
    return f"{KIT_SKU} ({parts}) available to sell at the end, whole kits per channel: {kits or 'none'}"


def _settled(status: dict[str, Any]) -> bool:
    """Every line of an all-or-nothing order decided, and not some held while others failed."""
    states = {line["status"] for line in status["lines"]}
    return "pending" not in states and not ({"allocated", "rejected"} <= states)


def _wait_for(
    settings: Settings, topic: str, done: Callable[[dict[str, Any]], bool], timeout_s: float = 60.0
) -> dict[str, Any]:
    """Block until a committed record of `topic` satisfies `done`; return it."""
    consumer = Consumer(consumer_config(settings, group_id=f"demo-transfer-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([settings.topic(topic)])
    serde = topic_serde(settings, settings.topic(topic))
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in consumed(consume_available(consumer, 1000, 0.2)):
                value = msg.value()
                if msg.error() is None and value is not None:
                    record = serde.decode(value)
                    if done(record):
                        return record
    finally:
        consumer.close()
    raise StreamallocError(f"no record on {topic} showed the transfer's next step within {timeout_s}s")


def _stock(settings: Settings, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first availability of TRANSFER_SKU whose totals satisfy `done`."""
    return _wait_for(settings, "availability", lambda r: r["sku"] == TRANSFER_SKU and done(r["totals"]))


def transfer_row(report: AuditReport) -> tuple[str, str]:
    """What the transfer did, as a policy row."""
    moved = report.transfers
    return (
        "transfers",
        f"{moved['shipped']} transfer(s) shipped and {moved['received']} received; {moved['fills']} waiting "
        f"line(s) filled on arrival from units counted as incoming while in transit; {moved['lost']} "
        f"unit(s) lost, {report.in_transit_units} still in transit; {report.promises['promised']} "
        f"backorder(s) promised a date by the ETA of what they wait on, {report.promises['kept']} "
        f"filled by that date, {report.promises['missed']} later",
    )
