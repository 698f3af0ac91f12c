"""A worker that starts on a backlog applies its inputs in time order across partitions.

The allocator reads `allocation-requests` and `inventory` together. When a worker starts
on a backlog, the fetcher may hand it thousands of requests before the receipts that
happened before them; the task must hold the requests back until the receipts are in
(Kafka Streams' max.task.idle.ms), or it decides them against stock it has not seen yet.
The sizes are those of the measurement that found it: with fewer requests the receipts
tend to arrive in one piece, and a task that waits for an input but then processes past
its last buffered record still passes.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from tests.integration.engine_helpers import EngineUnderTest, Ids, Tail, now_ms, of_type
from tests.integration.helpers import processes, produce

from streamalloc.serialization import topic_serde
from streamalloc.stages.intake import line_requests

pytestmark = pytest.mark.slow

SKUS = 200
RECEIPTS = 1_000  # five per SKU
REQUESTS = 20_000


def test_a_worker_started_on_a_backlog_applies_receipts_before_the_requests_that_follow_them(
    prepared_engine: EngineUnderTest,
) -> None:
    engine = prepared_engine
    ids = Ids("backlog")
    skus = [ids.sku(f"{i:02d}") for i in range(SKUS)]
    stock: Counter[str] = Counter()
    receipts = []
    for i in range(RECEIPTS):
        sku, qty = skus[i % SKUS], 1 + i % 7
        receipts.append(engine.inventory(ids.event(f"receipt-{i}"), "received", sku, qty))
        stock[sku] += qty
    engine.send_inventory(*receipts)
    time.sleep(0.01)  # every request's record timestamp after every receipt's

    demand: Counter[str] = Counter()
    serde = topic_serde(engine.settings, engine.settings.topic("allocation-requests"))
    records = []
    for i in range(REQUESTS):
        sku = skus[(i * 7) % SKUS]
        order = engine.order(
            ids.event(f"order-{i}"),
            "placed",
            ids.order(f"{i}"),
            [{"line_id": "1", "sku": sku, "qty": 1}],
            occurred_at=now_ms(),
        )
        for request in line_requests(order):
            records.append((sku.encode(), serde.encode(serde.validate(request.as_record()))))
        demand[sku] += 1
    produce(engine.settings, serde.topic, records)
    assert all(demand[sku] > stock[sku] for sku in skus)  # every SKU runs out

    allocations = topic_serde(engine.settings, engine.settings.topic("allocations"))
    tail = Tail(engine.settings, allocations.topic, allocations.decode)
    decisions: list[dict[str, Any]] = []
    try:
        with processes() as running:
            worker = engine.start()
            running.append(worker)

            def all_decided() -> bool:
                decisions[:] = of_type((e for _, e in tail.poll()), "allocated", "rejected")
                return len(decisions) >= REQUESTS

            engine.wait(all_decided, f"{REQUESTS} decisions", timeout_s=180)
            assert worker.terminate() == 0, worker.log()[-4000:]
    finally:
        tail.close()
    assert len(decisions) == REQUESTS
    reasons = Counter(e["reason"] for e in decisions if e["type"] == "rejected")
    assert reasons["unknown_sku"] == 0, reasons
    allocated = Counter(e["sku"] for e in decisions if e["type"] == "allocated")
    assert dict(allocated) == {sku: min(stock[sku], demand[sku]) for sku in skus}
    assert set(reasons) <= {"insufficient_stock"}, reasons
