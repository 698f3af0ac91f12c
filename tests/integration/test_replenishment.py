"""replenishment as a real process on a real engine worker's output: demand at one location,
stock at another, and a transfer recommended between them (and not repeated)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import TestBroker
from tests.integration.engine_helpers import EngineUnderTest, Ids
from tests.integration.helpers import WorkerProcess, processes, read_all, wait_for

from streamalloc.serialization import topic_serde

LOCATIONS = [
    {"location_id": "WH-1", "status": "online", "priority": 10, "region": "east", "regions_served": []},
    {"location_id": "WH-2", "status": "online", "priority": 5, "region": "east", "regions_served": []},
]
# An hour's half-life and lead time, no safety cover: after n units sold in a few seconds a
# location's target is ceil(n * ln 2) units, so 3 sold from 3 on hand leaves it short by 3.
REPLENISH_ENV = {
    "STREAMALLOC_REPLENISH_HALF_LIFE_S": "3600",
    "STREAMALLOC_REPLENISH_LEAD_TIME_S": "3600",
    "STREAMALLOC_REPLENISH_SAFETY_COVER_S": "0",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


class Running:
    def __init__(self, engine: EngineUnderTest, service: WorkerProcess) -> None:
        self.engine, self.service = engine, service
        self.settings = engine.settings
        self._serde = topic_serde(self.settings, self.settings.topic("transfer-recommendations"))

    def recommendations(self, sku: str) -> list[dict[str, Any]]:
        topic = self.settings.topic("transfer-recommendations")
        records = [self._serde.decode(v) for _, _, _, v in sorted(read_all(self.settings, topic)) if v]
        return [r for r in records if r["sku"] == sku]


@pytest.fixture(scope="module")
def running(kafka_broker: TestBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp: Path = tmp_path_factory.mktemp("replenishment")
    engine = EngineUnderTest(kafka_broker.settings(state_dir=tmp / "state"), tmp, locations=LOCATIONS)
    port = _free_port()
    with processes() as started:
        try:
            engine.prepare()
            started.append(engine.start())
            settings = engine.settings
            args = [
                "-m", "streamalloc",
                "--bootstrap", str(settings.bootstrap),
                "--prefix", settings.topic_prefix,
                "--app-id", settings.app_id,
                "--state-dir", str(tmp / "services"),
                "service", "replenishment", "--http-port", str(port),
            ]  # fmt: skip
            service = WorkerProcess(args, tmp / "replenishment.log", REPLENISH_ENV)
            started.append(service)

            def ready() -> bool:
                if not service.alive():
                    raise AssertionError(f"replenishment exited:\n{service.log()[-3000:]}")
                return _ready(port)

            wait_for(ready, 90, "replenishment ready")
            yield Running(engine, service)
            code = service.terminate()
            assert code == 0, f"replenishment exited with {code} on SIGTERM:\n{service.log()[-3000:]}"
        finally:
            engine.close()


def test_demand_at_one_location_recommends_a_transfer_from_the_one_with_stock(running: Running) -> None:
    engine, ids = running.engine, Ids("repl")
    sku = ids.sku()
    engine.send_inventory(
        engine.inventory(ids.event("r1"), "received", sku, 3, location="WH-1"),
        engine.inventory(ids.event("r2"), "received", sku, 50, location="WH-2"),
    )
    for i in range(3):  # WH-1 ranks first: it sells all three
        engine.send_orders(
            engine.order(
                ids.event(f"o{i}"), "placed", ids.order(f"{i}"), [{"line_id": "1", "sku": sku, "qty": 1}]
            )
        )
    try:
        wait_for(lambda: bool(running.recommendations(sku)), 60, "a transfer recommendation")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{running.service.log()[-3000:]}") from None
    recs = running.recommendations(sku)
    first = recs[0]
    assert (first["from_location"], first["to_location"]) == ("WH-2", "WH-1")
    assert 0 < first["qty"] <= 50
    assert first["lead_time_s"] == 3600 and first["demand_rate"] > 0
    assert first["projected_stockout_at"] <= first["decided_at"] + 3600 * 1000
    assert first["recommendation_id"].startswith("rec:") and first["recommendation_id"].endswith(":WH-2:WH-1")
    # the same advice is not repeated within the dedup window (an hour by default)
    said = [(r["from_location"], r["to_location"], r["qty"]) for r in recs]
    assert len(said) == len(set(said)), said
