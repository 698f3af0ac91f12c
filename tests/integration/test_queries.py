"""Availability queries answered by the SKU's owner, through two real worker processes.

Each worker owns half of the partitions; a query to either one returns the owner's
answer (the other forwards it), a worker with forwarding off answers 421 naming the
owner, and `streamalloc availability` finds the owner from the group by itself.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from tests.integration.engine_helpers import EngineUnderTest, Ids
from tests.integration.helpers import wait_for

from streamalloc.broker.process import free_port
from streamalloc.cli import main
from streamalloc.kafka import admin_client
from streamalloc.kafka.partitioning import partition_for
from streamalloc.runtime.members import describe_group

pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - a local worker
            return int(response.status), json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def skus_covering(partitions: int, ids: Ids) -> list[str]:
    """One SKU on every partition of the inputs, so both workers own some."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        sku = ids.sku(f"Q{n}")
        found.setdefault(partition_for(sku.encode(), partitions), sku)
        n += 1
    return [found[p] for p in range(partitions)]


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """The answer without what moves with the clock of the moment it was computed."""
    kept = {k: v for k, v in body.items() if k not in ("as_of", "totals", "locations")}
    kept["totals"] = {k: v for k, v in body["totals"].items() if k != "allocation_age_s"}
    kept["locations"] = [
        {k: v for k, v in row.items() if k != "allocation_age_s"} for row in body["locations"]
    ]
    return kept


@pytest.fixture
def two_workers(prepared_engine: EngineUnderTest) -> Iterator[tuple[EngineUnderTest, list[str]]]:
    engine = prepared_engine
    ports = [free_port(), free_port()]
    running = [
        engine.start(name, name, http_port=port, env={"STREAMALLOC_QUERY_FORWARDING": forwarding})
        for name, port, forwarding in (("w1", ports[0], "true"), ("w2", ports[1], "false"))
    ]
    yield engine, [f"http://127.0.0.1:{port}" for port in ports]
    for worker in running:
        assert worker.alive(), f"a worker died:\n{worker.log()[-4000:]}"


def test_either_worker_gives_the_owners_answer_and_an_unknown_sku_is_a_clear_404(
    two_workers: tuple[EngineUnderTest, list[str]],
) -> None:
    engine, (forwarding, not_forwarding) = two_workers
    settings = engine.settings
    ids = Ids("query")
    partitions = settings.partitions
    skus = skus_covering(partitions, ids)
    engine.send_inventory(
        *(engine.inventory(ids.event(f"recv-{i}"), "received", sku, 10 + i) for i, sku in enumerate(skus))
    )
    for i, sku in enumerate(skus):
        engine.wait_stock(sku, ids.event(f"recv-{i}"))
    admin = admin_client(settings)
    topic = settings.topic("allocation-requests")

    def both_own_some() -> bool:
        view = describe_group(admin, settings.app_id)
        owners = {m.url for m in view.members if any(t == topic for t, _ in m.assignment)}
        return view.stable and owners == {forwarding, not_forwarding}

    wait_for(both_own_some, 60, "both workers own partitions", every_s=0.5)
    wait_for(lambda: all(get(f"{url}/ready")[0] == 200 for url in (forwarding, not_forwarding)), 60, "ready")
    view = describe_group(admin, settings.app_id)

    redirected = 0
    for i, sku in enumerate(skus):
        owner = view.owner(topic, partition_for(sku.encode(), partitions))
        assert owner is not None and owner.url is not None
        status, direct = get(f"{owner.url}/availability/{sku}")
        assert status == 200, direct
        assert direct["served_by"] == owner.url
        assert direct["totals"]["on_hand"] == 10 + i
        assert {c["channel"]: c["ats"] for c in direct["channels"]} == {"web": 10 + i, "store": 10 + i}
        # The forwarding worker relays the owner's answer, whoever the owner is.
        status, relayed = get(f"{forwarding}/availability/{sku}")
        assert status == 200, relayed
        assert comparable(relayed) == comparable(direct)
        # The other one answers itself if it owns the SKU, else names the owner.
        status, answer = get(f"{not_forwarding}/availability/{sku}")
        if owner.url == not_forwarding:
            assert status == 200 and comparable(answer) == comparable(direct)
        else:
            redirected += 1
            assert status == 421, answer
            assert answer["owner"] == owner.url
        # The CLI finds the owner from the group; one channel only with --channel.
        result = CliRunner().invoke(
            main,
            ["--bootstrap", str(settings.bootstrap), "--prefix", settings.topic_prefix, "--app-id",
             settings.app_id, "availability", sku, "--channel", "web", "--json"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        printed = json.loads(result.stdout)
        assert printed["served_by"] == owner.url
        # nothing incoming, so no dates to promise by
        assert printed["channels"] == [{"channel": "web", "ats": 10 + i, "atp": []}]
    assert redirected > 0, "every SKU was owned by the non-forwarding worker: nothing was redirected"

    unknown = ids.sku("never-seen")
    for url in (forwarding, not_forwarding):
        status, body = get(f"{url}/availability/{unknown}")
        if status == 421:  # the non-forwarding worker names the owner; ask there
            status, body = get(f"{body['owner']}/availability/{unknown}")
        assert status == 404, body
        assert body["error"] == f"unknown SKU {unknown!r}: no stock or orders seen"
        assert body["sku"] == unknown
    status, body = get(f"{forwarding}/availability/{skus[0]}?channel=nope")
    assert status == 404 and body["error"] == "unknown channel 'nope'"
    result = CliRunner().invoke(
        main,
        ["--bootstrap", str(settings.bootstrap), "--prefix", settings.topic_prefix, "--app-id",
         settings.app_id, "availability", unknown, "--url", not_forwarding],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "404" in result.output and "unknown SKU" in result.output
