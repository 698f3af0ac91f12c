"""Every panel of both Grafana boards returns data from a real Prometheus scraping a real worker.

Debian's Prometheus (`/usr/bin/prometheus`, `make promtool` installs it) scrapes the worker's
/metrics every second while a short load runs through it: receipts and an expected delivery,
orders allocated, rejected (no stock, unknown channel), backordered against incoming stock and
waitlisted, a cancellation, a location going offline, a malformed order and a refused
adjustment (dead letters). Then each panel query runs through Prometheus' HTTP API with
Grafana's variables replaced as tests/unit/test_alert_rules.py replaces them, and must return
a non-empty result without NaN. The panels that are empty or NaN by design while nothing of
their kind happens say so in their description (EMPTY_WITHOUT_EVENTS); the load makes each
kind happen, so they must return data too. Without Prometheus the test skips; under CI=true
it fails.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import under_ci
from tests.integration.engine_helpers import CHANNELS, LOCATIONS, EngineUnderTest, Ids
from tests.integration.helpers import wait_for
from tests.unit.test_alert_rules import GRAFANA_VALUES
from tests.unit.test_dashboards import DASHBOARDS, load_dashboard

from streamalloc.broker.process import free_port

pytestmark = pytest.mark.slow

PROMETHEUS = "/usr/bin/prometheus"
OTHER_LOCATION = "WH-2"
_NAN, _EMPTY = "NaN while", "Empty until"
#: Panels whose query is empty or NaN by design while nothing of their kind happened (in the
#: window): each says so in its description. The load makes each kind happen, so they are
#: checked for data like the others.
EMPTY_WITHOUT_EVENTS: dict[tuple[str, str], str] = {
    ("streamalloc.json", "Rejected share"): _NAN,
    ("streamalloc.json", "Commit p99"): _NAN,
    ("streamalloc.json", "Batch processing time by stage (p50 / p99)"): _NAN,
    ("streamalloc.json", "Commit duration (p50 / p95 / p99 / mean)"): _NAN,
    ("streamalloc.json", "Committed records and changelog writes / s"): _NAN,
    ("streamalloc.json", "Store partition restore time by store (p95 / mean)"): _NAN,
    ("streamalloc.json", "Releases / s by reason (cancelled, expired, location_offline, ...)"): _EMPTY,
    ("streamalloc.json", "Location status changes seen (per partition swept)"): _EMPTY,
    ("streamalloc-operations.json", "Consumer lag"): _EMPTY,
    ("streamalloc-operations.json", "Consumer lag by topic"): _EMPTY,
    ("streamalloc-operations.json", "Consumer lag by partition"): _EMPTY,
    ("streamalloc-operations.json", "No-stock share (15 min)"): _NAN,
    ("streamalloc-operations.json", "No-stock share (15 min window)"): _NAN,
    ("streamalloc-operations.json", "Decision latency, order time to decision (p50 / p99)"): _NAN,
    ("streamalloc-operations.json", "Stock units by location and bucket"): _EMPTY,
    ("streamalloc-operations.json", "Available units by location"): _EMPTY,
    ("streamalloc-operations.json", "SKUs out of stock by location"): _EMPTY,
    ("streamalloc-operations.json", "Cycle service level by channel (15 min window)"): _EMPTY,
    ("streamalloc-operations.json", "Stockout rate by channel (15 min average)"): _EMPTY,
    ("streamalloc-operations.json", "Open reservation age by channel (oldest / mean)"): _EMPTY,
}


def _prometheus() -> str:
    if not os.access(PROMETHEUS, os.X_OK):
        reason = f"{PROMETHEUS} is not installed (`make promtool` installs Debian's prometheus package)"
        if under_ci():
            pytest.fail(f"CI=true, but {reason}", pytrace=False)
        pytest.skip(reason)
    return PROMETHEUS


class Prometheus:
    """A Prometheus server in a temporary directory, scraping one target every second."""

    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        config.write_text(  # JSON is YAML
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "streamalloc",
                            "scrape_interval": "1s",
                            "scrape_timeout": "1s",
                            "static_configs": [{"targets": [target]}],
                        }
                    ],
                }
            )
        )
        self.log_path = tmp / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - a fixed binary, our arguments
            [
                _prometheus(),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a local server
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            assert self.process.poll() is None, self.log()
            return False

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


@pytest.fixture
def prometheus_and_worker(
    prepared_engine: EngineUnderTest, tmp_path: Path
) -> Iterator[tuple[Prometheus, EngineUnderTest]]:
    _prometheus()  # skip before starting anything
    http_port = free_port()
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{http_port}")
    try:
        # Scraping from before the worker's start: the counters' first samples are at zero.
        wait_for(prometheus.ready, 30, "Prometheus ready", every_s=0.2)
        # Prometheus applies new targets every 5 s: scraping (the target down) before the worker
        # starts, so that its first scrapes of the worker see the counters at zero.
        wait_for(lambda: prometheus.query("up") != [], 30, "Prometheus scraping", every_s=0.2)
        # A second location, and channels that let lines wait: web for incoming stock (a
        # backorder), store for any stock (the waitlist). Read by the worker as it starts.
        prepared_engine.publish("locations", {**LOCATIONS[0], "location_id": OTHER_LOCATION})
        prepared_engine.publish(
            "channels", {**CHANNELS[0], "backorder_limit": 100}, {**CHANNELS[1], "waitlist": True}
        )
        prepared_engine.start(http_port=http_port)
        yield prometheus, prepared_engine
    finally:
        prometheus.close()  # the worker: prepared_engine kills it


def _load(engine: EngineUnderTest) -> str:
    """A short load that touches every kind of series the boards show; the location it shipped from."""
    ids = Ids("panels")
    a, b, c, d = (ids.sku(name) for name in "ABCD")
    engine.send_inventory(
        engine.inventory(ids.event("a"), "received", a, 20),
        engine.inventory(ids.event("b"), "received", b, 5, location=OTHER_LOCATION),
        engine.inventory(ids.event("c"), "expected", c, 10, eta=int(time.time() * 1000) + 86_400_000),
        engine.inventory(ids.event("d"), "received", d, 1),
        engine.inventory(ids.event("refused"), "adjusted", d, -50, reason="shrinkage"),  # a dead letter
    )
    engine.wait_stock(a, ids.event("a"))

    def order(name: str, sku: str, qty: int, channel: str = "web") -> dict[str, Any]:
        line = {"line_id": "1", "sku": sku, "qty": qty}
        return engine.order(ids.event(name), "placed", ids.order(name), [line], channel=channel)

    placed = [
        order("allocated", a, 2),
        order("shipped", a, 1),  # picked and fulfilled below
        order("store", a, 3, channel="store"),
        order("no-stock", a, 100),  # rejected: no incoming stock to wait for
        order("backordered", c, 3),  # waits for the expected delivery
        order("waitlisted", d, 5, channel="store"),  # the store channel lets lines wait
        order("unknown-channel", a, 1, channel="nowhere"),
        order("cancelled", b, 1),
    ]
    engine.send_orders(*placed)
    engine.send_raw(engine.orders_topic, [(b"broken", b"{not json")], partition=0)  # a dead letter
    for event in placed:
        engine.wait_events(event["order_id"], bool, "a decision")
    # A shipment: picked, then fulfilled; its units leave on hand (the turnover panel).
    [allocated] = [e for e in engine.allocations(ids.order("shipped")) if e["type"] == "allocated"]
    shipped = {"line_id": "1", "sku": a, "qty": 1, "location": allocated["location"]}
    for step, kind in (("pick", "picked"), ("ship", "fulfilled")):
        engine.send_orders(engine.order(ids.event(step), kind, ids.order("shipped"), [shipped]))
        engine.wait_events(
            ids.order("shipped"), lambda evs, kind=kind: any(e["type"] == kind for e in evs), kind
        )
    engine.send_orders(engine.order(ids.event("cancel"), "cancelled", ids.order("cancelled"), []))
    engine.wait_events(
        ids.order("cancelled"), lambda evs: any(e["type"] == "released" for e in evs), "release"
    )
    # A location goes offline: its status change is counted and its SKUs go out of stock there.
    engine.publish("locations", {**LOCATIONS[0], "location_id": OTHER_LOCATION, "status": "offline"})
    engine.wait(lambda: len(engine.dead_letters()) >= 2, "two dead letters")
    return str(allocated["location"])


def _panel_queries() -> list[tuple[str, str, str]]:
    """(board file, panel title, PromQL with Grafana's variables replaced) of every panel target."""
    found = []
    for path in DASHBOARDS:
        for panel in load_dashboard(path)["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for variable, value in GRAFANA_VALUES.items():
                    expr = expr.replace(variable, value)
                found.append((path.name, panel["title"], expr))
    return found


def _problem(result: list[dict[str, Any]]) -> str | None:
    if not result:
        return "empty"
    values = [float(sample["value"][1]) for sample in result]
    if any(math.isnan(v) for v in values):
        return f"NaN in {result}"
    return None


def test_every_panel_of_both_boards_returns_data_from_a_scraped_worker(
    prometheus_and_worker: tuple[Prometheus, EngineUnderTest], tmp_path: Path
) -> None:
    prometheus, engine = prometheus_and_worker

    def scraped() -> bool:
        # The channels' decision series are there once the allocator has read the table, the
        # locations' status-change series once a punctuation has seen the locations (the two
        # tables can arrive at different punctuations): an event before the zero's first
        # scrape would not show in increase(), as on any fresh worker.
        return bool(prometheus.query('streamalloc_decisions_total{channel="web"}')) and bool(
            prometheus.query(f'streamalloc_location_status_changes_total{{location="{OTHER_LOCATION}"}}')
        )

    engine.wait(scraped, "Prometheus scraping the worker's series of the channels and locations")
    allocated_at = _load(engine)

    panels = _panel_queries()
    assert len(panels) > 50
    for (board, title), words in EMPTY_WITHOUT_EVENTS.items():
        described = [p["description"] for p in load_dashboard(_board(board))["panels"] if p["title"] == title]
        assert described and words in described[0], f"{board} {title!r} must say when it is empty: {words!r}"
    problems: dict[str, str] = {}
    returned: list[dict[str, Any]] = []

    def every_panel_has_data() -> bool:
        problems.clear()
        returned.clear()
        for board, title, expr in panels:
            result = prometheus.query(expr)
            returned.append({"board": board, "panel": title, "query": expr, "result": result})
            problem = _problem(result)
            if problem is not None:
                problems[f"{board} {title!r}: {expr}"] = problem
        return not problems

    try:
        # The scrapes after the load: stock folds at the worker's punctuation, lag every 5 s.
        wait_for(every_panel_has_data, 30, "every panel's query to return data", every_s=1.0)
    except AssertionError:
        detail = "\n".join(f"- {where}\n    {problem}" for where, problem in problems.items())
        raise AssertionError(f"{len(problems)} panel queries without data:\n{detail}") from None
    # What each query returned, for the record (the closing note lists it).
    (tmp_path / "panels.json").write_text(json.dumps(returned, indent=1))
    # The load's events, as Prometheus counted them: the last ones (the shipment, the release,
    # the location going offline) may reach a scrape after every panel already had data.

    def counted_as_loaded() -> None:
        increase = "sum by ({}) (increase({}[1h]))"
        letters = prometheus.query(increase.format("reason", "streamalloc_dead_letters_total"))
        assert {s["metric"]["reason"] for s in letters if float(s["value"][1]) > 0} == {"decode", "refused"}
        decisions = prometheus.query(increase.format("channel, type", "streamalloc_decisions_total"))
        counted = {
            (s["metric"].get("channel", ""), s["metric"]["type"])
            for s in decisions
            if float(s["value"][1]) > 0
        }
        assert counted == {
            ("web", "allocated"),
            ("store", "allocated"),
            ("web", "rejected"),
            ("web", "backordered"),
            ("store", "backordered"),
            ("", "rejected"),
            ("web", "released"),
            ("web", "picked"),
            ("web", "fulfilled"),
        }, counted
        shipments = prometheus.query(increase.format("location", "streamalloc_units_shipped_total"))
        assert {s["metric"]["location"] for s in shipments if float(s["value"][1]) > 0} == {allocated_at}
        changes = prometheus.query(
            increase.format("location, status", "streamalloc_location_status_changes_total")
        )
        moved = {
            (s["metric"]["location"], s["metric"]["status"]) for s in changes if float(s["value"][1]) > 0
        }
        assert moved == {(OTHER_LOCATION, "offline")}, moved
        # Grafana's variables: label_values(streamalloc_assigned_partitions, job) and (…, instance)
        partitions = {"match[]": "streamalloc_assigned_partitions"}
        assert prometheus.get("/api/v1/label/job/values", **partitions)
        assert prometheus.get("/api/v1/label/instance/values", **partitions)
        # What the load put in the stock series, as Prometheus has it.
        offline = prometheus.query(f'streamalloc_skus_out_of_stock{{location="{OTHER_LOCATION}"}}')
        assert [float(s["value"][1]) for s in offline] == [1.0], offline
        waiting = {
            s["metric"]["reason"]: float(s["value"][1]) for s in prometheus.query("streamalloc_waiting_lines")
        }
        assert waiting == {"incoming": 1.0, "waitlisted": 1.0}, waiting
        # Lines placed and filled at their first decision: the cycle service level's counters.
        # (the counters' values: increase() extrapolates over a window wider than the samples)
        placed = prometheus.query("sum by (channel) (streamalloc_lines_placed_total)")
        filled = prometheus.query("sum by (channel) (streamalloc_lines_filled_first_total)")
        by_channel = {s["metric"].get("channel", ""): round(float(s["value"][1])) for s in placed}
        assert {c: n for c, n in by_channel.items() if n} == {"web": 5, "store": 2, "": 1}, by_channel
        by_channel = {s["metric"].get("channel", ""): round(float(s["value"][1])) for s in filled}
        assert {c: n for c, n in by_channel.items() if n} == {"web": 3, "store": 1}, by_channel
        # Open reservations: web's and store's allocated lines (the cancelled one was released).
        reservations = {
            s["metric"]["channel"]: float(s["value"][1])
            for s in prometheus.query("streamalloc_open_reservations")
            if float(s["value"][1])
        }
        assert reservations == {"web": 1.0, "store": 1.0}, reservations
        oldest = prometheus.query('streamalloc_open_reservation_oldest_age_seconds{channel="web"}')
        assert [s for s in oldest if float(s["value"][1]) > 0], oldest
        ats = prometheus.query('streamalloc_channel_ats_units{channel="web"}')
        assert [float(s["value"][1]) for s in ats] != [0.0], ats

    deadline = time.monotonic() + 30
    while True:
        try:
            counted_as_loaded()
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _board(name: str) -> Path:
    return next(path for path in DASHBOARDS if path.name == name)
