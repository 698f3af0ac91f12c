"""Standby replicas: after the owner is killed, the survivor restores only the changelog's tail.

Two workers with `num_standby_replicas=1` each keep a warm copy of the other's store
partitions. After a SIGKILL of one, the other takes its partitions over; its restore log
says how many records it read, which must be a small part of those partitions'
changelogs, and the state it then answers queries from must be exact.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from tests.integration.engine_helpers import EngineUnderTest, Ids
from tests.integration.helpers import WorkerProcess, processes, wait_for
from tests.integration.test_queries import get

from streamalloc.broker.process import free_port
from streamalloc.kafka import admin_client, consumer_config
from streamalloc.kafka.partitioning import partition_for
from streamalloc.runtime.members import describe_group

pytestmark = pytest.mark.slow


def log_events(worker: WorkerProcess, msg: str) -> list[dict[str, Any]]:
    found = []
    for line in worker.log().splitlines():
        if line.startswith("{") and f'"msg": "{msg}"' in line:
            found.append(json.loads(line))
    return found


def changelog_sizes(engine: EngineUnderTest, partitions: set[int]) -> dict[int, int]:
    topic = engine.settings.changelog_topic("allocator")
    reader = Consumer(consumer_config(engine.settings))
    try:
        return {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        reader.close()


def skus_on_every_partition(ids: Ids, count: int, partitions: int) -> list[str]:
    """`count` SKU names of `ids`, taken round-robin over the partitions their keys go to."""
    by_partition: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while any(len(names) < -(-count // partitions) for names in by_partition.values()):
        sku = ids.sku(f"S{n}")
        by_partition[partition_for(sku.encode(), partitions)].append(sku)
        n += 1
    picked = [name for row in zip(*by_partition.values(), strict=False) for name in row]
    return picked[:count]


def test_after_the_owner_is_killed_the_standby_restores_only_the_tail_and_the_state_is_exact(
    prepared_engine: EngineUnderTest,
) -> None:
    engine = prepared_engine
    settings = engine.settings
    ids = Ids("standby")
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    with processes() as running:
        workers = [
            engine.start(f"w{i}", f"w{i}", http_port=port, env={"STREAMALLOC_NUM_STANDBY_REPLICAS": "1"})
            for i, port in enumerate(ports)
        ]
        running.extend(workers)
        admin = admin_client(settings)
        topic = settings.topic("allocation-requests")

        def both_own_some() -> bool:
            view = describe_group(admin, settings.app_id)
            return view.stable and {m.url for m in view.members if m.assignment} == set(urls)

        wait_for(both_own_some, 90, "both workers own partitions")
        # Many small batches, so that the last batch of a partition is a small part of it.
        # SKUs on every partition alike: random names left one with none about once in a
        # hundred runs, and an empty changelog has no tail to restore less of.
        skus = skus_on_every_partition(ids, 20, settings.partitions)
        expected: dict[str, int] = {}
        for wave in range(12):
            events = []
            for i, sku in enumerate(skus):
                expected[sku] = expected.get(sku, 0) + wave + 1
                events.append(engine.inventory(ids.event(f"w{wave}-{i}"), "received", sku, wave + 1))
            engine.send_inventory(*events)
            for i, sku in enumerate(skus):
                engine.wait_stock(sku, ids.event(f"w{wave}-{i}"))
        for worker in workers:
            wait_for(lambda w=worker: log_events(w, "standby opened"), 60, "standby copies opened")

        view = describe_group(admin, settings.app_id)
        victim, survivor = workers[0], workers[1]
        victim_member = next(m for m in view.members if m.url == urls[0])
        taken = {p for t, p in victim_member.assignment if t == topic}
        assert taken, "the victim owned no allocator partition"
        sizes = changelog_sizes(engine, taken)
        before = len(log_events(survivor, "restored"))
        victim.kill9()

        def restored_all() -> bool:
            done = log_events(survivor, "restored")[before:]
            return {e["partition"] for e in done if e["store"] == "allocator"} >= taken

        wait_for(restored_all, 90, "the survivor restored the victim's partitions")
        restores = [e for e in log_events(survivor, "restored")[before:] if e["store"] == "allocator"]
        restored = {e["partition"]: e["records"] for e in restores if e["partition"] in taken}
        total = sum(sizes.values())
        assert sum(restored.values()) <= total // 5, (restored, sizes)
        for p in taken:
            assert restored[p] < sizes[p], (p, restored, sizes)

        # The state it answers from is exact: every SKU's on-hand, from the survivor.
        wait_for(lambda: get(f"{urls[1]}/ready")[0] == 200, 60, "the survivor ready")
        for sku, on_hand in expected.items():
            status, body = get(f"{urls[1]}/availability/{sku}")
            assert status == 200, body
            assert body["served_by"] == urls[1]
            assert body["totals"]["on_hand"] == on_hand, (sku, body["totals"])
        assert survivor.alive(), survivor.log()[-4000:]
