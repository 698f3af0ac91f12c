"""`streamalloc bench services`: channel-sync and routing throughput, and order-to-webhook latency.

Three phases, each on topics and a group of its own, every process started here and stopped
by its pid at the end, on failure too:

1. channel-sync throughput: a backlog of availability records (SKUs x channels) is produced
   first, then one channel-sync process drains it; records in and pushes out per second are
   counted from its /metrics, from the first record it read to the last (join excluded).
2. routing throughput: the same with a backlog of `allocated` events (orders of one or two
   lines over three locations); allocation events in and fulfilment requests out per second.
3. latency: an engine worker and a channel-sync with a webhook for channel `web` pointing at a
   receiver in this process; orders go in at a steady rate (lines per second) once both are
   up, each stamped with its produce time (`occurred_at`); every webhook POST's latency is
   its receipt time less the `occurred_at` of the order its ATS came from (the push's
   `cause_event_id` is the order event's id). The window (coalescing) is part of what a
   channel sees, so it is part of the figure: the bench prints the window it used.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from streamalloc.bench.engine import LOCATIONS, order_plan, order_record, stock_events, table_rows
from streamalloc.broker.process import free_port
from streamalloc.commands.topics import ensure_topics
from streamalloc.config import Settings
from streamalloc.errors import StreamallocError
from streamalloc.kafka import produce, producer_config
from streamalloc.serialization import topic_serde

Progress = Callable[[int], None]
_LINGER_20: dict[str, Any] = {"linger.ms": 20}
_LINGER_5: dict[str, Any] = {"linger.ms": 5}


@dataclass(frozen=True)
class Throughput:
    records: int  # read by the service
    outputs: int  # published by it (pushes, or requests) for them
    seconds: float  # from its first record read to its last
    output_seconds: float  # from its first record read to its last output for them

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def outputs_per_second(self) -> float:
        return self.outputs / self.output_seconds if self.output_seconds > 0 else 0.0


@dataclass(frozen=True)
class Latency:
    rate: int
    lines: int
    window_ms: int
    latencies_ms: list[float]
    #: of each, the engine's part: the availability's `as_of` (its decision time) less the order's time
    engine_ms: list[float]
    #: and the webhook's: receipt less the push's `pushed_at` (its wait in the channel's queue, the POST)
    webhook_ms: list[float]

    def percentile(self, q: float, part: str = "all") -> float:
        values = {"all": self.latencies_ms, "engine": self.engine_ms, "webhook": self.webhook_ms}[part]
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class ServicesResult:
    channel_sync: Throughput
    routing: Throughput
    latency: Latency


# ------------------------------------------------------------ processes


class _Process:
    """A streamalloc command in its own process, its output in a log file; stopped by pid."""

    def __init__(self, settings: Settings, workdir: Path, name: str, *args: str) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        command = [
            sys.executable, "-m", "streamalloc", "--bootstrap", str(settings.bootstrap),
            "--prefix", settings.topic_prefix, "--app-id", settings.app_id,
            "--state-dir", str(workdir / f"state-{name}"), "--broker-profile", settings.broker_profile,
            *args,
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def check(self) -> None:
        if self.process.poll() is not None:
            raise StreamallocError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextmanager
def _processes() -> Iterator[list[_Process]]:
    started: list[_Process] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            process.stop()


def _metrics(port: int) -> dict[str, float]:
    """The service's counters by name, summed over their labels (empty if it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$", line)
        if match:
            totals[match.group(1)] = totals.get(match.group(1), 0.0) + float(match.group(2))
    return totals


def _drain(
    service: _Process,
    port: int,
    records: int,
    read: str,
    published: str,
    on_progress: Progress,
    timeout_s: float,
) -> Throughput:
    """Poll the service's metrics until it has read `records`; its rates from the first record on.

    A service that reads every record between two polls is timed from the last poll at which
    it had read none (its rates are then a lower bound), not given zero seconds and zero rates.
    """
    first_at: float | None = None
    first_records = first_outputs = 0.0
    deadline = time.monotonic() + timeout_s
    idle_at = time.monotonic()  # the last poll at which it had read nothing
    while True:
        service.check()
        counters = _metrics(port)
        now = time.monotonic()
        seen = counters.get(read, 0.0)
        if seen == 0:
            idle_at = now
        elif first_at is None:
            first_at, first_records, first_outputs = now, seen, counters.get(published, 0.0)
            if seen >= records:
                first_at, first_records, first_outputs = idle_at, 0.0, 0.0
        on_progress(int(seen))
        if seen >= records and first_at is not None:
            # Outputs can trail the reads (channel-sync pushes at the end of its window):
            # they are counted until they stop for a second.
            outputs, last_output_at = counters.get(published, 0.0), now
            while time.monotonic() - last_output_at < 1.0 and time.monotonic() < deadline:
                time.sleep(0.1)
                latest = _metrics(port).get(published, 0.0)
                if latest != outputs:
                    outputs, last_output_at = latest, time.monotonic()
            return Throughput(
                records=int(seen - first_records),
                outputs=int(outputs - first_outputs),
                seconds=now - first_at,
                output_seconds=last_output_at - first_at,
            )
        if now > deadline:
            raise StreamallocError(f"{service.name} read {seen:.0f} of {records} records in {timeout_s:.0f}s")
        time.sleep(0.1)


def _fresh(settings: Settings, phase: str) -> Settings:
    tag = f"bsvc{time.time_ns() % 10**9}{phase}"
    fresh = settings.replace(topic_prefix=f"{tag}.", app_id=tag)
    ensure_topics(fresh)
    return fresh


def _now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------ phase 1: channel-sync


def channel_sync_throughput(
    settings: Settings, workdir: Path, *, records: int, skus: int, window_ms: int, on_progress: Progress,
    timeout_s: float,
) -> Throughput:  # fmt: skip
    settings = _fresh(settings, "a")
    serde = topic_serde(settings, settings.topic("availability"))
    producer = Producer(producer_config(settings, **_LINGER_20))
    zero = dict.fromkeys(("on_hand", "allocated", "picked", "quality_control", "damaged", "safety_stock"), 0)
    for i in range(records):
        sku, ats = f"SKU-{i % skus:05d}", 1_000 - i // skus
        record = {"event_id": f"a-{i}", "cause_event_id": f"c-{i}", "sku": sku, "as_of": _now_ms(),
                  "totals": {**zero, "on_hand": ats, "available": ats}, "locations": [],
                  "channels": [{"channel": "web", "ats": ats}, {"channel": "store", "ats": ats}]}  # fmt: skip
        produce(producer, serde.topic, serde.encode(serde.validate(record)), sku.encode())
    producer.flush(120)
    port = free_port()
    with _processes() as running:
        service = _Process(settings, workdir, "channel-sync", "service", "channel-sync",
                           "--window-ms", str(window_ms), "--http-port", str(port))  # fmt: skip
        running.append(service)
        return _drain(
            service, port, records, "streamalloc_channel_sync_availability_records_total",
            "streamalloc_channel_sync_pushes_total", on_progress, timeout_s,
        )  # fmt: skip


# ------------------------------------------------------------ phase 2: routing


def routing_throughput(
    settings: Settings, workdir: Path, *, events: int, on_progress: Progress, timeout_s: float
) -> Throughput:
    settings = _fresh(settings, "b")
    serde = topic_serde(settings, settings.topic("allocations"))
    producer = Producer(producer_config(settings, **_LINGER_20))
    rng = random.Random(5)
    sent = order = 0
    while sent < events:
        order_id = f"order-{order}"
        for line in range(1, min(rng.choice((1, 1, 2)), events - sent) + 1):
            event = {"event_id": f"e-{order}-{line}", "cause_event_id": f"o-{order}", "type": "allocated",
                     "order_id": order_id, "line_id": str(line), "sku": f"SKU-{rng.randrange(1000):05d}",
                     "channel": "web", "qty": 1, "location": rng.choice(LOCATIONS),
                     "occurred_at": _now_ms(), "decided_at": _now_ms()}  # fmt: skip
            produce(producer, serde.topic, serde.encode(serde.validate(event)), order_id.encode())
            sent += 1
        order += 1
    producer.flush(120)
    port = free_port()
    with _processes() as running:
        service = _Process(settings, workdir, "routing", "service", "routing", "--http-port", str(port))
        running.append(service)
        return _drain(
            service, port, events, "streamalloc_routing_allocation_events_total",
            "streamalloc_routing_fulfilment_requests_total", on_progress, timeout_s,
        )  # fmt: skip


# ------------------------------------------------------------ phase 3: latency


class _Receiver:
    """A local webhook endpoint: (receipt time, cause event id, as_of, pushed_at) of every POST."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str, int, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                at = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                push = json.loads(body)
                receiver.received.append(
                    (at, push["cause_event_id"], int(push["as_of"]), int(push["pushed_at"]))
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ats"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:  # noqa: S310
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def order_to_webhook_latency(
    settings: Settings, workdir: Path, *, lines: int, rate: int, skus: int, window_ms: int,
    on_progress: Progress, timeout_s: float,
) -> Latency:  # fmt: skip
    settings = _fresh(settings, "c")
    producer = Producer(producer_config(settings, **_LINGER_5))
    orders_serde = topic_serde(settings, settings.topic("orders"))
    for name, rows in table_rows().items():
        serde = topic_serde(settings, settings.topic(name))
        for row in rows:
            produce(producer, serde.topic, serde.encode(serde.validate(row)), serde.key_of(row))
    inventory = topic_serde(settings, settings.topic("inventory"))
    for sku, event in stock_events(skus, _now_ms()):
        produce(producer, inventory.topic, inventory.encode(inventory.validate(event)), sku.encode())
    producer.flush(60)
    plan = order_plan(lines, skus, seed=13)
    sent_at: dict[str, int] = {}

    def send(i: int, order_lines: list[tuple[str, int]]) -> None:
        at = _now_ms()
        order = order_record(i, order_lines, at)
        sent_at[f"o-{i}"] = at
        produce(
            producer,
            orders_serde.topic,
            orders_serde.encode(orders_serde.validate(order)),
            f"order-{i}".encode(),
        )

    receiver = _Receiver()
    sync_port = free_port()
    try:
        with _processes() as running:
            running.append(_Process(settings, workdir, "worker", "worker", "--no-create-topics"))
            running.append(
                _Process(
                    settings,
                    workdir,
                    "channel-sync-latency",
                    "service",
                    "channel-sync",
                    "--window-ms",
                    str(window_ms),
                    "--http-port",
                    str(sync_port),
                    "--webhook",
                    f"web={receiver.url}",
                    "--webhook-backoff-ms",
                    "50",
                )  # fmt: skip
            )
            # warm-up: one order decided and its push received, so neither join is measured
            deadline = time.monotonic() + timeout_s
            send(0, plan[0])
            producer.flush(10)
            while not (receiver.received and _ready(sync_port)):
                for process in running:
                    process.check()
                if time.monotonic() > deadline:
                    raise StreamallocError(
                        "no webhook POST after the warm-up order; see the logs in " + str(workdir)
                    )
                time.sleep(0.1)
            warm = len(receiver.received)
            fed = len(plan[0])
            begin = time.monotonic()
            for i, order_lines in enumerate(plan[1:], start=1):
                send(i, order_lines)
                fed += len(order_lines)
                ahead = fed / rate - (time.monotonic() - begin)
                if ahead > 0:
                    producer.poll(0)
                    time.sleep(ahead)
                    on_progress(fed)
            producer.flush(60)
            # the feed is over: wait until the pushes stop (every trailing window closed)
            quiet_s = max(3.0, 3 * window_ms / 1000)
            last_count, last_change = len(receiver.received), time.monotonic()
            while time.monotonic() - last_change < quiet_s:
                for process in running:
                    process.check()
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
                if len(receiver.received) != last_count:
                    last_count, last_change = len(receiver.received), time.monotonic()
            on_progress(lines)
    finally:
        receiver.close()
    measured = [m for m in receiver.received[warm:] if m[1] in sent_at and m[1] != "o-0"]
    latencies = [at * 1000 - sent_at[cause] for at, cause, _, _ in measured]
    engine = [float(as_of - sent_at[cause]) for _, cause, as_of, _ in measured]
    webhook = [at * 1000 - pushed_at for at, _, _, pushed_at in measured]
    return Latency(
        rate=rate,
        lines=lines,
        window_ms=window_ms,
        latencies_ms=latencies,
        engine_ms=engine,
        webhook_ms=webhook,
    )


def run(
    settings: Settings,
    *,
    availability: int,
    allocations: int,
    lines: int,
    rate: int,
    skus: int,
    window_ms: int,
    on_progress: Progress = lambda n: None,
    timeout_s: float = 900.0,
) -> ServicesResult:
    """The three phases one after the other; progress counts records, events, then lines."""
    workdir = Path(tempfile.mkdtemp(prefix="streamalloc-bench-services-"))
    sync = channel_sync_throughput(
        settings, workdir, records=availability, skus=skus, window_ms=window_ms,
        on_progress=on_progress, timeout_s=timeout_s,
    )  # fmt: skip
    routing = routing_throughput(
        settings, workdir, events=allocations, on_progress=lambda n: on_progress(availability + n),
        timeout_s=timeout_s,
    )  # fmt: skip
    latency = order_to_webhook_latency(
        settings, workdir, lines=lines, rate=rate, skus=skus, window_ms=window_ms,
        on_progress=lambda n: on_progress(availability + allocations + n), timeout_s=timeout_s,
    )  # fmt: skip
    shutil.rmtree(workdir, ignore_errors=True)  # a phase that failed raised first and kept it, with its logs
    return ServicesResult(sync, routing, latency)
