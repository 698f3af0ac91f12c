"""`streamalloc demo`: three channels against scarce stock, two workers, then the audit.

What happens: the demo publishes three locations, three channels and scarce stock, starts
two engine workers as separate processes, and lets three channel generators (web, store,
marketplace) place orders concurrently, cancelling some. A warehouse simulator follows the
allocations: it picks and ships some lines, takes some back as returns, and inspects
them (pass or fail). When every line has been decided and the warehouse has caught up, the
workers stop and the audit checks the engine's promises from the topics alone.

The policies at work: some SKUs are lot-tracked at WH-EAST (one lot already expired, the
others allocated first-expiry-first), purchase orders are expected for some SKUs so web
may backorder against them, and their receipt mid-run fills the waitlist; marketplace
holds its reservations for a few seconds only, so the lines the warehouse does not pick
in time expire; STORE-NYC goes offline for a while mid-run (its soft allocations move or
wait) and comes back (the waitlist is served first).
"""

from __future__ import annotations

import importlib.resources
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from streamalloc.audit import AuditReport
from streamalloc.commands.audit import run_audit
from streamalloc.commands.io import produce_file
from streamalloc.commands.topics import ensure_topics
from streamalloc.config import Settings
from streamalloc.errors import StreamallocError
from streamalloc.kafka import consume_available, consumer_config, produce, producer_config
from streamalloc.kafka.types import consumed
from streamalloc.serialization import topic_serde

CHANNELS = ("web", "store", "marketplace")
REGIONS = {"web": ("east", "west", "south"), "store": ("east",), "marketplace": ("west", "north")}
SKUS = tuple(f"SKU-{i:03d}" for i in range(12))
LOT_SKUS = SKUS[:4]  # lot-tracked at WH-EAST
EXPECTED_SKUS = SKUS[4:8]  # purchase orders due at WH-EAST
RESERVATION_TTL_S = {"marketplace": 3}  # the others hold their reservations until picked
OFFLINE_LOCATION = "STORE-NYC"


def examples_dir() -> Path:
    """The demo's data: the installed copy (wheel: streamalloc/_examples) or the repository's examples/."""
    packaged = importlib.resources.files("streamalloc").joinpath("_examples")
    if packaged.is_dir():
        return Path(str(packaged))
    repo = Path(__file__).resolve().parents[3] / "examples"
    if repo.is_dir():
        return repo
    raise StreamallocError("cannot find the example data (neither streamalloc/_examples nor ./examples)")


@dataclass
class DemoProgress:
    lines_placed: int = 0
    lines_decided: int = 0
    shipped: int = 0
    returned: int = 0
    last_event: float = field(default_factory=time.monotonic)


class _Publisher:
    """One producer, serdes per topic, thread-safe enough for the demo (librdkafka is)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = Producer(producer_config(settings))
        self.orders = {c: topic_serde(settings, settings.topic(f"orders.{c}")) for c in CHANNELS}
        self.inventory = topic_serde(settings, settings.topic("inventory"))
        self.locations = topic_serde(settings, settings.topic("locations"))

    def location(self, record: dict[str, Any]) -> None:
        record = self.locations.validate(record)
        self._send(self.locations.topic, self.locations.key_of(record), self.locations.encode(record))
        self.producer.flush(30)

    def order(self, event: dict[str, Any]) -> None:
        serde = self.orders[event["channel"]]
        record = serde.validate(event)
        self._send(serde.topic, serde.key_of(record), serde.encode(record))

    def stock(self, event: dict[str, Any]) -> None:
        record = self.inventory.validate(event)
        self._send(self.inventory.topic, self.inventory.key_of(record), self.inventory.encode(record))

    def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        produce(self.producer, topic, value, key)


def _now() -> int:
    return int(time.time() * 1000)


def _stock(publisher: _Publisher, rng: random.Random) -> set[str]:
    """Receive scarce stock of every SKU at the three locations; the SKUs that got some."""
    n = 0
    stocked: set[str] = set()
    for sku in SKUS:
        for location in ("WH-EAST", "STORE-NYC", "3PL-WEST"):
            qty = rng.choice((0, 10, 20, 30, 40, 50))
            if qty:
                n += 1
                stocked.add(sku)
                publisher.stock(
                    {"event_id": f"demo-recv-{n}", "type": "received", "sku": sku,
                     "location": location, "qty": qty, "occurred_at": _now()}
                )  # fmt: skip
    day = 86_400_000
    for sku in LOT_SKUS:  # lots at WH-EAST: one expired, one expiring soon, one late
        stocked.add(sku)
        for lot, qty, expires_in in (("EXPIRED", 8, -day), ("SOON", 6, 2 * day), ("LATE", 6, 60 * day)):
            publisher.stock(
                {"event_id": f"demo-lot-{sku}-{lot}", "type": "received", "sku": sku, "location": "WH-EAST",
                 "qty": qty, "occurred_at": _now(),
                 "lot": {"lot_id": f"{sku}-{lot}", "expires_at": _now() + expires_in}}
            )  # fmt: skip
    for sku in EXPECTED_SKUS:  # purchase orders web may backorder against
        stocked.add(sku)
        publisher.stock(
            {"event_id": f"demo-po-{sku}", "type": "expected", "sku": sku, "location": "WH-EAST",
             "qty": 15, "occurred_at": _now(), "eta": _now() + 60_000}
        )  # fmt: skip
    publisher.producer.flush(30)
    return stocked


def _receive_purchase_orders(publisher: _Publisher) -> None:
    """The expected stock arrives: the waitlist is served from it before anyone else."""
    for sku in EXPECTED_SKUS:
        publisher.stock(
            {"event_id": f"demo-po-{sku}-received", "type": "received", "sku": sku, "location": "WH-EAST",
             "qty": 15, "occurred_at": _now()}
        )  # fmt: skip
    publisher.producer.flush(30)


def _set_location(publisher: _Publisher, status: str) -> None:
    for line in (examples_dir() / "locations.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["location_id"] == OFFLINE_LOCATION:
            publisher.location({**record, "status": status})


def _wait_until_engine_has(settings: Settings, skus: set[str], timeout_s: float) -> None:
    """Block until the engine has published availability for every one of `skus`.

    That is when both workers run the allocator on every partition: orders placed from
    now on meet a running engine, so they are decided as they arrive.
    """
    consumer = Consumer(consumer_config(settings, group_id=f"demo-ready-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([settings.topic("availability")])
    serde = topic_serde(settings, settings.topic("availability"))
    missing = set(skus)
    deadline = time.monotonic() + timeout_s
    try:
        while missing:
            if time.monotonic() > deadline:
                raise StreamallocError(
                    f"the engine published no availability for {len(missing)} SKU(s) within {timeout_s:.0f}s"
                )
            for msg in consumed(consume_available(consumer, 1000, 0.2)):
                value = msg.value()
                if msg.error() is None and value is not None:
                    missing.discard(serde.decode(value)["sku"])
    finally:
        consumer.close()


def _channel(
    publisher: _Publisher, channel: str, orders: int, rate: float, seed: int, progress: DemoProgress
) -> None:
    """Place `orders` orders at `rate` per second on average (Poisson arrivals), cancelling some."""
    rng = random.Random(seed)
    placed: list[dict[str, Any]] = []
    for i in range(orders):
        lines = [
            {"line_id": str(j + 1), "sku": sku, "qty": rng.choice((1, 1, 2))}
            for j, sku in enumerate(rng.sample(SKUS, rng.choice((1, 1, 2, 3))))
        ]
        order = {
            "event_id": f"demo-{channel}-{i}", "type": "placed", "order_id": f"{channel}-{i}",
            "channel": channel, "occurred_at": _now(), "priority": rng.choice((0, 0, 1)),
            "region": rng.choice(REGIONS[channel]),
            "ship_complete": rng.random() < 0.1, "lines": lines,
            "reservation_ttl_s": RESERVATION_TTL_S.get(channel),
        }  # fmt: skip
        publisher.order(order)
        placed.append(order)
        progress.lines_placed += len(lines)
        if placed and rng.random() < 0.08:  # a customer cancels an earlier order
            victim = rng.choice(placed)
            listed = [] if rng.random() < 0.5 else victim["lines"][:1]
            publisher.order(
                {"event_id": f"demo-cancel-{channel}-{i}", "type": "cancelled",
                 "order_id": victim["order_id"], "channel": channel, "occurred_at": _now(), "lines": listed}
            )  # fmt: skip
        time.sleep(rng.expovariate(rate))
    publisher.producer.flush(30)


def _warehouse(
    settings: Settings, publisher: _Publisher, progress: DemoProgress, stop: threading.Event, seed: int
) -> None:
    """Follow allocations: pick and ship some lines, take some back, inspect the returns."""
    rng = random.Random(seed)
    serde = topic_serde(settings, settings.topic("allocations"))
    consumer = Consumer(consumer_config(settings, group_id=f"demo-warehouse-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([settings.topic("allocations")])
    decided: set[tuple[str, str]] = set()
    try:
        while not stop.is_set():
            for msg in consumed(consume_available(consumer, 1000, 0.2)):
                value = msg.value()
                if msg.error() is not None or value is None:
                    continue
                event = serde.decode(value)
                progress.last_event = time.monotonic()
                kind, line_id = event["type"], event["line_id"]
                if line_id is None:
                    continue
                key = (event["order_id"], line_id)
                if kind in ("allocated", "rejected", "backordered") and key not in decided:
                    decided.add(key)
                    progress.lines_decided = len(decided)
                base = {"order_id": event["order_id"], "channel": event["channel"], "occurred_at": _now()}
                line = {
                    "line_id": line_id,
                    "sku": event["sku"],
                    "qty": event["qty"],
                    "location": event["location"],
                }
                if kind == "allocated" and rng.random() < 0.5:
                    publisher.order(
                        {**base, "event_id": f"{event['event_id']}:pick", "type": "picked", "lines": [line]}
                    )
                elif kind == "picked":
                    publisher.order(
                        {
                            **base,
                            "event_id": f"{event['event_id']}:ship",
                            "type": "fulfilled",
                            "lines": [line],
                        }
                    )
                elif kind == "fulfilled":
                    progress.shipped += event["qty"]
                    if rng.random() < 0.25:
                        publisher.order(
                            {
                                **base,
                                "event_id": f"{event['event_id']}:rma",
                                "type": "returned",
                                "lines": [line],
                            }
                        )
                elif kind == "returned":
                    progress.returned += event["qty"]
                    publisher.stock(
                        {"event_id": f"{event['event_id']}:qc", "type": "inspected", "sku": event["sku"],
                         "location": event["location"], "qty": event["qty"], "occurred_at": _now(),
                         "result": "pass" if rng.random() < 0.7 else "fail"}
                    )  # fmt: skip
            publisher.producer.poll(0)
    finally:
        publisher.producer.flush(30)
        consumer.close()


def _start_worker(settings: Settings, name: str, workdir: Path) -> subprocess.Popen[bytes]:
    log_path = workdir / f"{name}.log"
    command = [
        sys.executable, "-m", "streamalloc",
        "--bootstrap", str(settings.bootstrap), "--prefix", settings.topic_prefix,
        "--app-id", settings.app_id,
        "--state-dir", str(workdir / name), "--broker-profile", settings.broker_profile,
        "--log-level", "INFO",  # into its own file: assignments, restores and aborts, for diagnosis
        "worker", "--no-create-topics",
    ]  # fmt: skip
    with log_path.open("ab") as log:  # the child keeps its own descriptor; ours closes here
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # noqa: S603


def run_demo(
    settings: Settings,
    *,
    orders_per_channel: int = 250,
    rate: float = 50.0,
    seed: int = 7,
    timeout_s: float = 100.0,
    crash_at: float | None = None,
    on_progress: Callable[[DemoProgress], None] = lambda p: None,
    say: Callable[[str], None] = print,
) -> AuditReport:
    """Run the whole scenario; return the audit of what the engine decided.

    With `crash_at` (a share of the lines, 0 < crash_at < 1), the first worker is killed
    with SIGKILL once that share of the lines is decided, in the middle of its
    transactions, and started again on the same state directory: the audit must pass
    all the same.
    """
    ensure_topics(settings, channels=CHANNELS)
    publisher = _Publisher(settings)
    produce_file(settings, settings.topic("locations"), examples_dir() / "locations.jsonl")
    produce_file(settings, settings.topic("channels"), examples_dir() / "channels.jsonl")
    stocked = _stock(publisher, random.Random(seed))
    workdir = Path(tempfile.mkdtemp(prefix="streamalloc-demo-"))
    workers = [_start_worker(settings, f"worker-{i}", workdir) for i in (1, 2)]
    say(f"two workers started (pids {', '.join(str(w.pid) for w in workers)}); logs in {workdir}")
    progress = DemoProgress()
    stop = threading.Event()
    warehouse = threading.Thread(
        target=_warehouse, args=(settings, publisher, progress, stop, seed), daemon=True
    )
    warehouse.start()
    try:
        _wait_until_engine_has(settings, stocked, timeout_s=60)
        say(f"the engine has the stock of {len(stocked)} SKU(s); three channels start ordering")
        channels = [
            threading.Thread(
                target=_channel,
                args=(publisher, c, orders_per_channel, rate, seed + i, progress),
                daemon=True,
            )
            for i, c in enumerate(CHANNELS)
        ]
        for thread in channels:
            thread.start()
        deadline = time.monotonic() + timeout_s
        expected_lines = orders_per_channel * len(CHANNELS) * 1.75  # 1, 1, 2 or 3 lines an order
        crash_after = None if crash_at is None else int(expected_lines * crash_at)
        # Operations during the run, at shares of the expected lines: (share, what, done?)
        operations: list[tuple[float, str, Callable[[], None]]] = [
            # early, while the other locations still have stock for the lines it holds
            (0.15, f"{OFFLINE_LOCATION} goes offline", lambda: _set_location(publisher, "offline")),
            (0.45, f"{OFFLINE_LOCATION} is back online", lambda: _set_location(publisher, "online")),
            (0.55, "the purchase orders arrive", lambda: _receive_purchase_orders(publisher)),
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
                workers[0] = _start_worker(settings, "worker-1", workdir)
            generators_done = not any(t.is_alive() for t in channels)
            # Quiet for longer than a reservation lives: the last expiries have fired.
            quiet = time.monotonic() - progress.last_event > max(RESERVATION_TTL_S.values()) + 2.0
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
        warehouse.join(10)
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()  # SIGTERM: commit, leave the group, exit 0
        for worker in workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(5)
    say(
        f"workers stopped; {progress.shipped} unit(s) shipped, {progress.returned} returned; "
        "auditing the topics"
    )
    report = run_audit(settings)
    summary = {
        "ok": report.ok,
        "breaches": report.breaches,
        "kpis": report.kpis.as_record(),
        "waitlist_fills": report.waitlist_fills,
        "reallocations": report.reallocations,
    }
    (workdir / "audit.json").write_text(json.dumps(summary, indent=2))
    return report


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
            "reservation expiry",
            f"{report.released_by_reason['expired']} marketplace line(s) not picked within "
            f"{RESERVATION_TTL_S['marketplace']} s released (reason expired)",
        ),
        (
            "returns and inspection",
            f"{returned} line(s) returned into quality control; {report.inspected['pass']} unit(s) passed "
            f"inspection (back on hand), {report.inspected['fail']} failed (damaged)",
        ),
    ]
