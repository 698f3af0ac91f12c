"""`streamalloc replay` reading the history and the baseline tables from the topics, and
predicting what a running engine decides under the baseline and under the policy."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests.conftest import TestBroker
from tests.integration.engine_helpers import EngineUnderTest
from tests.integration.helpers import produce
from tests.unit.test_replay_cli import (
    CHANNELS,
    INVENTORY,
    KIT_ORDERS,
    KITS,
    LOCATIONS,
    ORDERS,
    POLICY,
    write,
)

from streamalloc.cli import main
from streamalloc.commands.audit import read_kits
from streamalloc.commands.io import produce_file
from streamalloc.commands.topics import ensure_topics
from streamalloc.config import Settings
from streamalloc.replay import CORE_TYPES


def publish(settings: Settings, tmp_path: Path, orders: dict[str, list[dict[str, Any]]]) -> None:
    """The history's inventory and tables, and `orders` (topic -> records), on their topics
    and in files of the same names under `tmp_path`, for the replay from files to compare."""
    for topic, records in {
        **orders,
        "inventory": INVENTORY,
        "locations": LOCATIONS,
        "channels": CHANNELS,
    }.items():
        produce_file(settings, settings.topic(topic), write(tmp_path / f"{topic}.jsonl", records))


def replay(settings: Settings, *args: str) -> dict[str, Any]:
    """`streamalloc replay --json` against the test's cluster: its report."""
    cluster = [
        "--bootstrap", str(settings.bootstrap), "--prefix", settings.topic_prefix,
        "--app-id", settings.app_id, "--broker-profile", settings.broker_profile,
    ]  # fmt: skip
    done = CliRunner().invoke(main, [*cluster, "replay", *args, "--json"])
    assert done.exit_code == 0, done.output
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_topics_replay_as_their_files_do(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings, channels=["web"])
    # web's orders on orders.web, the rest on orders: every orders* topic is read
    web = [o for o in ORDERS if o["channel"] == "web"]
    rest = [o for o in ORDERS if o["channel"] != "web"]
    publish(settings, tmp_path, {"orders.web": web, "orders": rest})
    policy = write(tmp_path / "policy.jsonl", POLICY)
    topics = replay(settings, "--policy", str(policy))
    files = [
        "--orders", str(tmp_path / "orders.web.jsonl"), "--orders", str(tmp_path / "orders.jsonl"),
        "--inventory", str(tmp_path / "inventory.jsonl"),
        "--baseline", str(tmp_path / "locations.jsonl"), "--baseline", str(tmp_path / "channels.jsonl"),
    ]  # fmt: skip
    local = replay(settings, *files, "--policy", str(policy))
    assert topics["inputs"]["sources"]["orders"] == ", ".join(
        [settings.topic("orders"), settings.topic("orders.web")]
    )
    assert topics["channels"] == local["channels"] and topics["examples"] == local["examples"]
    assert topics["channels"]["web"]["difference"]["units"]["allocated"] == 2


def test_kit_orders_replay_with_the_kits_topic_as_with_kit_records_in_a_baseline_file(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    publish(settings, tmp_path, {"orders": KIT_ORDERS, "kits": KITS})
    policy = write(tmp_path / "policy.jsonl", POLICY)
    topics = replay(settings, "--policy", str(policy))
    files = [
        "--orders", str(tmp_path / "orders.jsonl"), "--inventory", str(tmp_path / "inventory.jsonl"),
        "--baseline", str(tmp_path / "locations.jsonl"), "--baseline", str(tmp_path / "channels.jsonl"),
        "--baseline", str(tmp_path / "kits.jsonl"),
    ]  # fmt: skip
    local = replay(settings, *files, "--policy", str(policy))
    assert topics["inputs"]["kits"] == 1 and settings.topic("kits") in topics["inputs"]["sources"]["baseline"]
    assert topics["channels"] == local["channels"] and topics["examples"] == local["examples"]
    # the kit lines were decided as their components' lines, all or nothing
    web = topics["channels"]["web"]
    assert web["baseline"]["orders"] == {"allocated": 1, "rejected": 1}
    assert web["baseline"]["reasons"]["released"] == {"ship_complete_failed": 1}
    assert {x["line_id"] for x in topics["examples"][0]["lines"]} == {"1/A", "1/B"}


def test_a_kit_and_a_channel_deleted_by_a_tombstone_are_not_used_by_the_replay_from_the_topics(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    publish(settings, tmp_path, {"orders": KIT_ORDERS, "kits": KITS})
    # operations delete the kit and the store channel, as the contract says: a null value
    produce(settings, settings.topic("kits"), [(b"DUO", None)])
    produce(settings, settings.topic("channels"), [(b"store", None)])
    assert read_kits(settings) == {}  # the audit's reader honours it too
    policy = write(tmp_path / "policy.jsonl", POLICY)
    topics = replay(settings, "--policy", str(policy))
    # the same history replayed from files whose tables never had the kit or the store channel
    remaining = write(tmp_path / "web-only.jsonl", [c for c in CHANNELS if c["channel_id"] != "store"])
    files = [
        "--orders", str(tmp_path / "orders.jsonl"), "--inventory", str(tmp_path / "inventory.jsonl"),
        "--baseline", str(tmp_path / "locations.jsonl"), "--baseline", str(remaining),
    ]  # fmt: skip
    local = replay(settings, *files, "--policy", str(policy))
    assert (topics["inputs"]["kits"], topics["inputs"]["channels"], topics["inputs"]["locations"]) == (
        0,
        1,
        2,
    )
    assert topics["channels"] == local["channels"] and topics["examples"] == local["examples"]
    # DUO is no kit any more: its lines are plain SKU lines, of a SKU no stock ever reached
    web = topics["channels"]["web"]["baseline"]
    assert web["orders"] == {"rejected": 2} and web["reasons"]["rejected"] == {"unknown_sku": 2}


def engine_figures(engine: EngineUnderTest, order_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per channel, what the running engine decided, counted as the replay counts: a line once
    per decision (cause) of each type, units summed, orders by their last status."""
    figures: dict[str, dict[str, Any]] = {}
    for order_id in order_ids:
        seen: set[tuple[str, str, str]] = set()
        for event in engine.allocations(order_id):
            if event["type"] not in CORE_TYPES:
                continue
            channel = figures.setdefault(
                event["channel"], {"lines": Counter(), "units": Counter(), "orders": Counter()}
            )
            channel["units"][event["type"]] += event["qty"]
            decision = (event["cause_event_id"], event["line_id"], event["type"])
            if decision not in seen:
                seen.add(decision)
                channel["lines"][event["type"]] += 1
        statuses = engine.settled_statuses(order_id)
        channel_id = next(o["channel"] for o in ORDERS if o["order_id"] == order_id)
        figures[channel_id]["orders"][statuses[-1]["status"]] += 1
    return figures


def run_history(engine: EngineUnderTest) -> None:
    """Publish the history as it happened: each event once the engine has settled the last."""
    engine.send_inventory(*(engine.inventory(**_inventory_fields(e)) for e in INVENTORY))
    for sku in {e["sku"] for e in INVENTORY}:
        last = [e for e in INVENTORY if e["sku"] == sku][-1]
        engine.wait_stock(sku, last["event_id"])
    for order in ORDERS:
        published = len(engine.statuses(order["order_id"]))
        fields = {
            k: v for k, v in order.items() if k not in ("event_id", "type", "order_id", "lines", "channel")
        }
        lines = [{"location": None, "lot": None, **line} for line in order.get("lines", [])]
        engine.send_orders(
            engine.order(
                order["event_id"], order["type"], order["order_id"], lines, order["channel"], **fields
            )
        )

        # an order's status goes out once every line is decided and the order stage's releases are done
        def settled(order_id: str = order["order_id"], before: int = published) -> bool:
            return len(engine.statuses(order_id)) > before

        engine.wait(settled, f"the status after {order['event_id']}")


def _inventory_fields(event: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in event.items() if k not in ("event_id", "type", "sku", "qty")}
    return {
        "event_id": event["event_id"],
        "type_": event["type"],
        "sku": event["sku"],
        "qty": event["qty"],
        **rest,
    }


@pytest.fixture
def engines(kafka_broker: TestBroker, tmp_path: Path) -> Iterator[dict[str, EngineUnderTest]]:
    """Two engines on the same history: one under the baseline tables, one under the policy."""
    # the baseline's channels with the policy's records over them, as the replay overlays them
    policy = {p["channel_id"]: p for p in POLICY}
    policy_channels = [{**c, **policy.get(c["channel_id"], {})} for c in CHANNELS]
    built: dict[str, EngineUnderTest] = {}
    try:
        for name, channels in (("baseline", CHANNELS), ("what_if", policy_channels)):
            built[name] = EngineUnderTest(
                kafka_broker.settings(state_dir=tmp_path / name / "state"),
                tmp_path / name,
                LOCATIONS,
                channels,
            )
            (tmp_path / name).mkdir()
            built[name].prepare()
            built[name].start()
        yield built
    finally:
        for engine in built.values():
            engine.close()


def test_the_replay_predicts_what_the_running_engine_decides_under_either_tables(
    engines: dict[str, EngineUnderTest], tmp_path: Path
) -> None:
    for engine in engines.values():
        run_history(engine)
    order_ids = list(dict.fromkeys(o["order_id"] for o in ORDERS))
    actual = {name: engine_figures(engine, order_ids) for name, engine in engines.items()}

    policy = write(tmp_path / "policy.jsonl", POLICY)
    predicted = replay(engines["baseline"].settings, "--policy", str(policy))["channels"]

    for run in ("baseline", "what_if"):
        for channel, figures in actual[run].items():
            replayed = predicted[channel][run]
            assert {t: replayed["lines"].get(t, 0) for t in CORE_TYPES} == {
                t: figures["lines"][t] for t in CORE_TYPES
            }, run
            assert {t: replayed["units"].get(t, 0) for t in CORE_TYPES} == {
                t: figures["units"][t] for t in CORE_TYPES
            }, run
            assert {k: v for k, v in replayed["orders"].items() if v} == dict(figures["orders"]), run
    assert actual["baseline"] != actual["what_if"], (
        "the policy changes the outcome: the test compares something"
    )
