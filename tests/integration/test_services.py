"""channel-sync and routing as real processes, on a real engine worker's output.

One module-scoped engine (a worker process) and one process of each service run against
the suite's primary broker. faust's client (aiokafka) runs at-least-once on real Kafka and
on the embedded broker alike (the first four tests passed on both when marked `smoke`);
they run on the primary only, to keep the suite short.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import TestBroker
from tests.integration.engine_helpers import EngineUnderTest, Ids
from tests.integration.helpers import WorkerProcess, processes, produce, read_all, wait_for

from streamalloc.serialization import topic_serde

WINDOW_MS = 500
LOW_STOCK = 2
SECRET = "test-secret"  # noqa: S105 - the test's own signing key
ATTEMPTS = 3
LOCATIONS = [
    {"location_id": "WH-1", "status": "online", "priority": 10, "region": "east", "regions_served": []},
    {"location_id": "WH-2", "status": "online", "priority": 5, "region": "east", "regions_served": []},
    # taken offline by one test; no other test puts stock there
    {"location_id": "WH-3", "status": "online", "priority": 1, "region": "east", "regions_served": []},
]

_TAG = uuid.uuid4().hex[:6]
KIT, KIT_TOP, KIT_LEG = f"KIT-{_TAG}-DESK", f"SKU-{_TAG}-TOP", f"SKU-{_TAG}-LEG"
KITS = [{"kit_sku": KIT, "components": [{"sku": KIT_TOP, "qty": 1}, {"sku": KIT_LEG, "qty": 4}]}]


class Receiver:
    """A local webhook endpoint: records every POST; answers `status` to each."""

    def __init__(self, status: int) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.received_at: list[float] = []  # time.time() of each POST, in the order of `posts`
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received_at.append(time.time())
                receiver.posts.append((dict(self.headers.items()), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ats"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in list(self.posts)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Services:
    """The engine under test plus one channel-sync and one routing process."""

    def __init__(self, engine: EngineUnderTest, tmp: Path) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.tmp = tmp
        self.sync_port = _free_port()
        self.routing_port = _free_port()
        self.web_hook = Receiver(200)
        self.store_hook = Receiver(503)  # always failing: retried, then dead-lettered
        self.started: list[WorkerProcess] = []  # every service process: all killed at the end
        self.channel_sync: WorkerProcess | None = None
        self.routing: WorkerProcess | None = None
        self._feed = topic_serde(self.settings, self.settings.topic("channel-ats"))
        self._requests = topic_serde(self.settings, self.settings.topic("fulfilment-requests"))

    def _args(self, *command: str) -> list[str]:
        return [
            "-m", "streamalloc",
            "--bootstrap", str(self.settings.bootstrap),
            "--prefix", self.settings.topic_prefix,
            "--app-id", self.settings.app_id,
            "--state-dir", str(self.tmp / "services"),
            *command,
        ]  # fmt: skip

    def start(self) -> list[WorkerProcess]:
        self.channel_sync = WorkerProcess(
            self._args(
                *("service", "channel-sync", "--window-ms", str(WINDOW_MS), "--low-stock", str(LOW_STOCK)),
                *("--http-port", str(self.sync_port), "--webhook-attempts", str(ATTEMPTS)),
                *("--webhook", f"web={self.web_hook.url}", "--webhook", f"store={self.store_hook.url}"),
                *("--webhook-secret", SECRET, "--webhook-backoff-ms", "50"),
            ),
            self.tmp / "channel-sync.log",
        )
        self.routing = WorkerProcess(
            self._args("service", "routing", "--http-port", str(self.routing_port), "--auto-pick"),
            self.tmp / "routing.log",
        )
        self.started += [self.channel_sync, self.routing]
        return [self.channel_sync, self.routing]

    def wait_ready(self) -> None:
        try:
            wait_for(lambda: self.ready(self.sync_port), 90, "channel-sync ready")
            wait_for(lambda: self.ready(self.routing_port), 90, "routing ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def get(self, port: int, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:  # noqa: S310
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        except (urllib.error.URLError, ConnectionError):
            return 0, None
        return status, (json.loads(body) if body[:1] in (b"{", b"[") else body.decode())

    def ready(self, port: int) -> bool:
        for process in (self.channel_sync, self.routing):
            if process is not None and not process.alive():
                raise AssertionError(f"a service exited:\n{self.logs()}")
        return self.get(port, "/ready")[0] == 200

    def pushes(self) -> list[dict[str, Any]]:
        topic = self.settings.topic("channel-ats")
        return [self._feed.decode(v) for _, _, _, v in sorted(read_all(self.settings, topic)) if v]

    def requests(self) -> list[dict[str, Any]]:
        topic = self.settings.topic("fulfilment-requests")
        return [self._requests.decode(v) for _, _, _, v in sorted(read_all(self.settings, topic)) if v]

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{p.log()[-3000:]}"
            for name, p in (("channel-sync", self.channel_sync), ("routing", self.routing))
            if p is not None
        )


@pytest.fixture(scope="module")
def services(kafka_broker: TestBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp: Path = tmp_path_factory.mktemp("services")
    engine = EngineUnderTest(kafka_broker.settings(state_dir=tmp / "state"), tmp, locations=LOCATIONS)
    under_test = Services(engine, tmp)
    with processes() as running:
        try:
            engine.prepare()
            engine.publish("kits", *KITS)  # before channel-sync starts: it reads the table first
            running.append(engine.start())
            running.extend(under_test.start())
            under_test.wait_ready()
            yield under_test
            for process in (under_test.routing, under_test.channel_sync):
                assert process is not None
                code = process.terminate()
                assert code == 0, f"service exited with {code} on SIGTERM:\n{process.log()[-3000:]}"
        finally:
            for process in under_test.started:
                process.close()
            engine.close()
            under_test.web_hook.close()
            under_test.store_hook.close()


def _latest_per_key(pushes: list[dict[str, Any]], sku: str) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for push in pushes:
        if push["sku"] == sku:
            latest[push["channel"]] = push
    return latest


def test_channel_ats_ends_at_the_engines_last_availability_with_at_most_one_push_per_window(
    services: Services,
) -> None:
    engine, ids = services.engine, Ids("sync")
    sku = ids.sku()
    engine.send_inventory(engine.inventory(ids.event("r"), "received", sku, 20, location="WH-1"))
    orders = [
        engine.order(
            ids.event(f"o{i}"), "placed", ids.order(f"{i}"), [{"line_id": "1", "sku": sku, "qty": 1}]
        )
        for i in range(8)
    ]
    for order in orders:  # one at a time: each is its own availability change
        engine.send_orders(order)
    engine.wait(lambda: len(engine.settled_statuses(ids.order("7"))) > 0, "the last order's status")
    final = engine.settled_availability(sku)
    expected = {row["channel"]: row["ats"] for row in final["channels"]}
    assert expected == {"web": 12, "store": 12}

    def settled() -> bool:
        latest = _latest_per_key(services.pushes(), sku)
        return {c: p["ats"] for c, p in latest.items()} == expected

    try:
        wait_for(settled, 30, "channel-ats to reach the last availability")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{services.logs()}") from None
    pushes = [p for p in services.pushes() if p["sku"] == sku]
    changes = len(engine.availabilities(sku)) or len(orders) + 1
    for channel in expected:
        mine = [p for p in pushes if p["channel"] == channel]
        times = [p["pushed_at"] for p in mine]
        assert all(b - a >= WINDOW_MS for a, b in zip(times, times[1:], strict=False)), times
        assert mine[-1]["as_of"] == final["as_of"] and mine[-1]["cause_event_id"] == final["cause_event_id"]
        assert sum(p["changes"] for p in mine) <= changes
        assert all(p["feed_key"] == f"{channel}:{sku}" for p in mine)


def test_a_kits_ats_is_pushed_as_the_whole_kits_its_components_make(services: Services) -> None:
    engine, ids = services.engine, Ids("kit-ats")
    for name, sku, qty in (("top", KIT_TOP, 3), ("leg", KIT_LEG, 10)):
        engine.send_inventory(engine.inventory(ids.event(name), "received", sku, qty, location="WH-1"))
        engine.wait_stock(sku, ids.event(name))

    def kit_ats_is(expected: int) -> bool:
        latest = _latest_per_key(services.pushes(), KIT)
        return {c: p["ats"] for c, p in latest.items()} == {"web": expected, "store": expected}

    try:
        wait_for(lambda: kit_ats_is(2), 30, "the kit's ATS: min(3 tops, 10 legs // 4)")
        engine.send_orders(
            engine.order(
                ids.event("o1"), "placed", ids.order("1"), [{"line_id": "1", "sku": KIT_TOP, "qty": 2}]
            )
        )
        wait_for(lambda: kit_ats_is(1), 30, "the kit's ATS after two tops sold alone")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{services.logs()}") from None
    kit_pushes = [p for p in services.pushes() if p["sku"] == KIT]
    assert all(p["feed_key"] == f"{p['channel']}:{KIT}" for p in kit_pushes)
    assert len({p["event_id"] for p in kit_pushes}) == len(kit_pushes)


def test_stock_thresholds_are_pushed_per_channel(services: Services) -> None:
    engine, ids = services.engine, Ids("thr")
    sku = ids.sku()
    engine.send_inventory(engine.inventory(ids.event("r1"), "received", sku, 3, location="WH-1"))
    wait_for(lambda: any(p["sku"] == sku for p in services.pushes()), 30, "a first push")
    engine.send_orders(
        engine.order(ids.event("o1"), "placed", ids.order("1"), [{"line_id": "1", "sku": sku, "qty": 3}])
    )

    def event_of(kind: str) -> bool:
        return any(
            p["sku"] == sku and p["channel"] == "web" and p["stock_event"] == kind for p in services.pushes()
        )

    wait_for(lambda: event_of("out_of_stock"), 30, "out_of_stock pushed")
    engine.send_inventory(engine.inventory(ids.event("r2"), "received", sku, 1, location="WH-2"))
    wait_for(lambda: event_of("back_in_stock"), 30, "back_in_stock pushed")
    last = _latest_per_key(services.pushes(), sku)["web"]
    assert (last["ats"], last["status"], last["previous_ats"]) == (1, "low_stock", 0)


def test_http_answers_a_sku_and_what_changed_since(services: Services) -> None:
    engine, ids = services.engine, Ids("http")
    sku = ids.sku()
    engine.send_inventory(engine.inventory(ids.event("r"), "received", sku, 7, location="WH-2"))
    availability = engine.wait_stock(sku, ids.event("r"))
    port = services.sync_port
    wait_for(lambda: services.get(port, f"/ats/web/{sku}")[0] == 200, 30, "the SKU known over HTTP")
    status, body = services.get(port, f"/ats/web/{sku}")
    assert status == 200
    assert (body["ats"], body["as_of"], body["status"]) == (7, availability["as_of"], "in_stock")
    _, changed = services.get(port, f"/ats/web?changed_since={availability['as_of'] - 1}")
    assert sku in [item["sku"] for item in changed["items"]]
    _, later = services.get(port, f"/ats/web?changed_since={availability['as_of']}")
    assert sku not in [item["sku"] for item in later["items"]]
    assert services.get(port, "/ats/web/no-such-sku")[0] == 404
    assert services.get(port, "/ats/web?changed_since=yesterday")[0] == 400
    assert services.get(port, "/health")[0] == 200
    status, metrics = services.get(port, "/metrics")
    assert status == 200 and 'streamalloc_channel_sync_pushes_total{channel="web"}' in metrics


def test_a_split_order_gets_one_request_per_location_and_a_cancel_cancels_them(services: Services) -> None:
    engine, ids = services.engine, Ids("route")
    near, far = ids.sku("NEAR"), ids.sku("FAR")
    engine.send_inventory(
        engine.inventory(ids.event("r1"), "received", near, 5, location="WH-1"),
        engine.inventory(ids.event("r2"), "received", far, 5, location="WH-2"),
    )
    engine.wait_stock(near, ids.event("r1"))
    engine.wait_stock(far, ids.event("r2"))
    order_id = ids.order("split")
    engine.send_orders(
        engine.order(
            ids.event("o"),
            "placed",
            order_id,
            [{"line_id": "1", "sku": near, "qty": 2}, {"line_id": "2", "sku": far, "qty": 1}],
        )
    )

    def latest() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for request in services.requests():
            if request["order_id"] == order_id:
                out[request["location"]] = request
        return out

    wait_for(lambda: len(latest()) == 2, 30, "a request per location")
    allocated = [e for e in engine.allocations(order_id) if e["type"] == "allocated"]
    requests = latest()
    assert {r["request_id"] for r in requests.values()} == {f"{order_id}:WH-1", f"{order_id}:WH-2"}
    for event in allocated:  # every allocated line in exactly one open request: its location's
        holding = [
            r
            for r in requests.values()
            if r["status"] == "open" and any(x["line_id"] == event["line_id"] for x in r["lines"])
        ]
        assert [r["location"] for r in holding] == [event["location"]]
        assert [x["qty"] for x in holding[0]["lines"] if x["line_id"] == event["line_id"]] == [event["qty"]]

    status, held = services.get(services.routing_port, f"/orders/{order_id}")
    assert status == 200 and {r["location"] for r in held["requests"]} == {"WH-1", "WH-2"}

    engine.send_orders(engine.order(ids.event("c"), "cancelled", order_id, []))
    wait_for(
        lambda: all(r["status"] == "cancelled" for r in latest().values()), 30, "both requests cancelled"
    )
    assert all(r["lines"] == [] and r["units"] == 0 for r in latest().values())
    # a finished order is dropped from routing's table once its cancellations are out
    wait_for(lambda: services.get(services.routing_port, f"/orders/{order_id}")[0] == 404, 30, "dropped")
    _, metrics = services.get(services.routing_port, "/metrics")
    dropped = [x for x in metrics.splitlines() if x.startswith("streamalloc_routing_orders_dropped_total")]
    assert dropped and float(dropped[0].split()[-1]) >= 1


def test_an_order_edit_lowers_then_raises_the_pick_quantity_of_its_line(services: Services) -> None:
    """`amended` down: the allocator releases the units the edit removed (reason `amended`)
    and routing's request for the location drops to the units kept; up: the extra units are
    allocated where the line holds them and the request rises to the new quantity. Each
    change is one new revision of the same request, never a count of old and new together."""
    engine, ids = services.engine, Ids("edit")
    sku = ids.sku()
    engine.send_inventory(engine.inventory(ids.event("r"), "received", sku, 10, location="WH-1"))
    engine.wait_stock(sku, ids.event("r"))
    order_id = ids.order("1")
    engine.send_orders(
        engine.order(ids.event("o"), "placed", order_id, [{"line_id": "1", "sku": sku, "qty": 5}])
    )

    def requests() -> list[dict[str, Any]]:
        return [r for r in services.requests() if r["order_id"] == order_id]

    def line_qty(qty: int, what: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            mine = requests()
            found[:] = mine[-1:] if mine and [x["qty"] for x in mine[-1]["lines"]] == [qty] else []
            return bool(found)

        wait_for(seen, 30, what)
        return found[0]

    placed = line_qty(5, "the request for the 5 units placed")
    assert (placed["location"], placed["status"], placed["units"]) == ("WH-1", "open", 5)

    engine.send_orders(
        engine.order(ids.event("down"), "amended", order_id, [{"line_id": "1", "sku": sku, "qty": 2}])
    )
    lowered = line_qty(2, "the request lowered to 2 units")
    released = [e for e in engine.allocations(order_id) if e["type"] == "released"]
    assert [(e["qty"], e["location"], e["reason"]) for e in released] == [(3, "WH-1", "amended")]
    assert (lowered["status"], lowered["units"], lowered["revision"]) == ("open", 2, placed["revision"] + 1)

    engine.send_orders(
        engine.order(ids.event("up"), "amended", order_id, [{"line_id": "1", "sku": sku, "qty": 6}])
    )
    raised = line_qty(6, "the request raised to 6 units")
    extra = [
        e
        for e in engine.allocations(order_id)
        if e["type"] == "allocated" and e["cause_event_id"] == ids.event("up")
    ]
    assert [(e["qty"], e["location"]) for e in extra] == [(4, "WH-1")]
    assert (raised["status"], raised["units"], raised["revision"]) == ("open", 6, lowered["revision"] + 1)

    # one request (order, WH-1), and every revision it went through showed the line's quantity
    # of the moment: 5, then 2, then 6 (a repeat re-sends a revision as it was)
    history = {r["revision"]: [(x["line_id"], x["qty"]) for x in r["lines"]] for r in requests()}
    assert {r["request_id"] for r in requests()} == {f"{order_id}:WH-1"}
    assert history == {1: [("1", 5)], 2: [("1", 2)], 3: [("1", 6)]}
    assert engine.settled_availability(sku)["totals"]["allocated"] == 6


def test_webhooks_get_the_coalesced_pushes_signed_and_a_failing_one_is_dead_lettered(
    services: Services,
) -> None:
    engine, ids = services.engine, Ids("hook")
    sku = ids.sku()
    engine.send_inventory(engine.inventory(ids.event("r"), "received", sku, 9, location="WH-1"))
    for i in range(5):
        engine.send_orders(
            engine.order(
                ids.event(f"o{i}"), "placed", ids.order(f"{i}"), [{"line_id": "1", "sku": sku, "qty": 1}]
            )
        )
    engine.wait(lambda: len(engine.settled_statuses(ids.order("4"))) > 0, "the last order's status")
    final = {row["channel"]: row["ats"] for row in engine.settled_availability(sku)["channels"]}

    def web_bodies() -> list[dict[str, Any]]:
        return [b for b in services.web_hook.bodies() if b["sku"] == sku]

    try:
        wait_for(
            lambda: bool(web_bodies()) and web_bodies()[-1]["ats"] == final["web"], 30, "the web hook settled"
        )
    except AssertionError as exc:
        got = [(b["sku"], b["ats"]) for b in services.web_hook.bodies()]
        metrics = [
            x
            for x in str(services.get(services.sync_port, "/metrics")[1]).splitlines()
            if "webhook" in x or "pushes" in x
        ]
        raise AssertionError(f"{exc}: got {got}, want {final}\n{metrics}\n{services.logs()}") from None
    pushed = [p for p in services.pushes() if p["sku"] == sku and p["channel"] == "web"]
    assert [b["event_id"] for b in web_bodies()] == [p["event_id"] for p in pushed]  # one POST per push
    times = [b["pushed_at"] for b in web_bodies()]
    assert all(b - a >= WINDOW_MS for a, b in zip(times, times[1:], strict=False)), times
    for headers, body in services.web_hook.posts:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Streamalloc-Signature"] == expected
        assert headers["Idempotency-Key"] == json.loads(body)["event_id"]

    feed_topic = services.settings.topic("channel-ats")

    def dead() -> list[dict[str, Any]]:
        return [
            d
            for d in engine.dead_letters()
            if d["source_topic"] == feed_topic and d["key"] == f"store:{sku}".encode()
        ]

    wait_for(lambda: bool(dead()), 60, "the failing store hook's pushes dead-lettered")
    letter = dead()[0]
    assert f"failed {ATTEMPTS} times, last: HTTP 503" in letter["error"]
    assert json.loads(letter["value"])["channel"] == "store"
    attempts = [
        b for b in services.store_hook.bodies() if b["event_id"] == json.loads(letter["value"])["event_id"]
    ]
    assert len(attempts) == ATTEMPTS


def test_services_killed_mid_stream_lose_nothing_once_restarted(services: Services) -> None:
    engine, ids = services.engine, Ids("crash")
    sku = ids.sku()
    engine.send_inventory(engine.inventory(ids.event("r"), "received", sku, 30, location="WH-1"))
    orders = [ids.order(f"{i}") for i in range(12)]

    def place(order_ids: list[str]) -> None:
        for order_id in order_ids:
            line = {"line_id": "1", "sku": sku, "qty": 1}
            engine.send_orders(engine.order(ids.event(order_id), "placed", order_id, [line]))

    place(orders[:6])
    assert services.channel_sync is not None and services.routing is not None
    services.channel_sync.kill9()  # while the first orders may still be in flight
    services.routing.kill9()
    place(orders[6:])
    services.start()
    services.wait_ready()
    engine.wait(lambda: len(engine.settled_statuses(orders[-1])) > 0, "the last order's status")
    final = {row["channel"]: row["ats"] for row in engine.settled_availability(sku)["channels"]}
    assert final == {"web": 18, "store": 18}

    def feed_settled() -> bool:
        return {c: p["ats"] for c, p in _latest_per_key(services.pushes(), sku).items()} == final

    wait_for(feed_settled, 60, "channel-ats at the last availability after the restart")
    status, body = services.get(services.sync_port, f"/ats/web/{sku}")
    assert status == 200 and body["ats"] == 18

    def open_requests() -> dict[str, dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for request in services.requests():
            if request["order_id"] in orders:
                latest[request["request_id"]] = request
        return latest

    wait_for(lambda: len(open_requests()) == len(orders), 60, "a request for every order after the restart")
    for order_id in orders:
        request = open_requests()[f"{order_id}:WH-1"]
        assert request["status"] == "open"
        assert [(x["sku"], x["qty"]) for x in request["lines"]] == [(sku, 1)]


def test_auto_pick_turns_an_acknowledged_request_into_picked_units(services: Services) -> None:
    engine, ids = services.engine, Ids("pick")
    sku = ids.sku()
    engine.send_inventory(engine.inventory(ids.event("r"), "received", sku, 5, location="WH-1"))
    engine.wait_stock(sku, ids.event("r"))
    order_id = ids.order("1")
    engine.send_orders(
        engine.order(ids.event("o"), "placed", order_id, [{"line_id": "1", "sku": sku, "qty": 2}])
    )

    def request() -> dict[str, Any] | None:
        mine = [r for r in services.requests() if r["request_id"] == f"{order_id}:WH-1"]
        return mine[-1] if mine else None

    wait_for(lambda: request() is not None, 30, "the request")
    opened = request()
    assert opened is not None and [(x["qty"], x["picked"]) for x in opened["lines"]] == [(2, 0)]
    acks = topic_serde(services.settings, services.settings.topic("fulfilment-acks"))
    ack = {"event_id": ids.event("ack"), "order_id": order_id, "location": "WH-1",
           "revision": opened["revision"], "acked_at": 1}  # fmt: skip
    produce(services.settings, acks.topic, [(order_id.encode(), acks.encode(acks.validate(ack)))])

    def picked() -> bool:
        latest = request()
        return latest is not None and [(x["qty"], x["picked"]) for x in latest["lines"]] == [(2, 2)]

    wait_for(picked, 30, "the request to show the units picked")
    assert [e["qty"] for e in engine.allocations(order_id) if e["type"] == "picked"] == [2]
    assert engine.settled_availability(sku)["totals"]["picked"] == 2


def test_a_location_going_offline_takes_the_channel_ats_to_what_the_other_locations_hold(
    services: Services, record_property: Any
) -> None:
    engine, ids = services.engine, Ids("offline")
    sku = ids.sku()
    engine.send_inventory(
        engine.inventory(ids.event("r1"), "received", sku, 4, location="WH-1"),
        engine.inventory(ids.event("r3"), "received", sku, 6, location="WH-3"),
    )
    engine.wait_stock(sku, ids.event("r3"))

    def web_ats() -> list[tuple[int, float]]:
        hook = services.web_hook
        posts = list(zip(hook.bodies(), hook.received_at, strict=False))
        return [(body["ats"], at) for body, at in posts if body["sku"] == sku]

    wait_for(lambda: bool(web_ats()) and web_ats()[-1][0] == 10, 30, "the web hook at 10 units")
    offline_at = time.time()
    engine.publish("locations", {**LOCATIONS[2], "status": "offline"})
    try:
        wait_for(lambda: web_ats()[-1][0] == 4, 60, "the web hook at what WH-1 holds")
        received = next(at for ats, at in web_ats() if ats == 4 and at >= offline_at)
        pushes = _latest_per_key(services.pushes(), sku)
        assert {c: p["ats"] for c, p in pushes.items()} == {"web": 4, "store": 4}
        status, body = services.get(services.sync_port, f"/ats/store/{sku}")
        assert (status, body["ats"]) == (200, 4)
        final = engine.settled_availability(sku)
        assert [r["available"] for r in final["locations"] if r["location"] == "WH-3"] in ([0], [])
    finally:
        engine.publish("locations", LOCATIONS[2])
    # Measured, not bounded (the machine is shared): the target is 2 s; see docs/performance.md.
    elapsed = received - offline_at
    record_property("offline_to_webhook_s", round(elapsed, 3))
    print(f"location offline -> web hook at the other locations' ATS: {elapsed:.2f}s")


def test_any_channel_sync_instance_answers_any_sku_by_asking_its_owner_and_kits_stay_exact(
    services: Services,
) -> None:
    """A second instance joins the group; each SKU is then held by one, and both answer for all.
    A kit whose components are read by different instances is pushed as the whole kits they
    make together: each reader tells the kit's owner (services/kit_components.py).

    Last in the module: while the second instance runs, the SKUs it holds are pushed by it,
    without the first instance's webhooks.
    """
    engine, ids = services.engine, Ids("owner")
    port = _free_port()
    second = WorkerProcess(
        [
            "-m", "streamalloc",
            "--bootstrap", str(services.settings.bootstrap),
            "--prefix", services.settings.topic_prefix,
            "--app-id", services.settings.app_id,
            "--state-dir", str(services.tmp / "services-2"),
            "service", "channel-sync", "--window-ms", str(WINDOW_MS), "--http-port", str(port),
        ],
        services.tmp / "channel-sync-2.log",
    )  # fmt: skip
    services.started.append(second)
    urls = {f"http://127.0.0.1:{services.sync_port}", f"http://127.0.0.1:{port}"}
    skus = {ids.sku(str(n)): n + 1 for n in range(8)}  # 8 SKUs over 4 partitions: both instances hold some
    engine.send_inventory(
        *(
            engine.inventory(ids.event(sku), "received", sku, qty, location="WH-2")
            for sku, qty in skus.items()
        )
    )
    for sku in skus:
        engine.wait_stock(sku, ids.event(sku))

    def answers() -> dict[tuple[int, str], tuple[int, Any]]:
        if not second.alive():
            raise AssertionError(f"the second instance exited:\n{second.log()[-3000:]}")
        return {
            (p, sku): services.get(p, f"/ats/web/{sku}") for p in (services.sync_port, port) for sku in skus
        }

    def settled() -> bool:
        got = answers()
        return (
            all(status == 200 and body["ats"] == skus[sku] for (_, sku), (status, body) in got.items())
            and {body["served_by"] for _, body in got.values()} == urls
        )

    try:
        wait_for(settled, 90, "both instances answering every SKU, each SKU served by its owner")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{answers()}\n{second.log()[-3000:]}\n{services.logs()}") from None
    served = {sku: body["served_by"] for (_, sku), (_, body) in answers().items()}
    for sku in skus:  # one owner per SKU, whichever instance was asked
        assert {answers()[(p, sku)][1]["served_by"] for p in (services.sync_port, port)} == {served[sku]}
    # a query already forwarded is not forwarded again: 421 names the owner
    sku = next(s for s, url in served.items() if url.endswith(f":{port}"))
    request = urllib.request.Request(  # noqa: S310
        f"http://127.0.0.1:{services.sync_port}/ats/web/{sku}", headers={"X-Streamalloc-Forwarded": "test"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310
    assert refused.value.code == 421 and json.loads(refused.value.read())["owner"] == served[sku]
    assert services.get(port, "/ats/web/no-such-sku")[0] == 404  # its owner has not seen it

    # A kit defined now, of a SKU read by each instance: told by both readers to its owner.
    top = next(s for s, url in served.items() if url.endswith(f":{services.sync_port}"))
    leg = next(s for s, url in served.items() if url.endswith(f":{port}"))
    kit = ids.sku("kit")
    engine.publish("kits", {"kit_sku": kit, "components": [{"sku": top, "qty": 1}, {"sku": leg, "qty": 2}]})

    def web_kits() -> int | None:
        latest = _latest_per_key(services.pushes(), kit).get("web")
        return None if latest is None else int(latest["ats"])

    expected = min(skus[top], skus[leg] // 2)
    try:
        wait_for(lambda: web_kits() == expected, 60, f"the kit's ATS {expected} once the kits table names it")
        engine.send_inventory(engine.inventory(ids.event("more-top"), "received", top, 20, location="WH-2"))
        engine.send_inventory(engine.inventory(ids.event("more-leg"), "received", leg, 20, location="WH-2"))
        expected = min(skus[top] + 20, (skus[leg] + 20) // 2)
        wait_for(lambda: web_kits() == expected, 60, f"the kit's ATS {expected} after both components moved")
    except AssertionError as exc:
        pushes = [(p["channel"], p["ats"]) for p in services.pushes() if p["sku"] == kit]
        logs = f"{second.log()[-3000:]}\n{services.logs()}"
        raise AssertionError(f"{exc}; kit pushes {pushes}\n{logs}") from None
    code = second.terminate()
    assert code == 0, f"the second instance exited with {code}:\n{second.log()[-3000:]}"
