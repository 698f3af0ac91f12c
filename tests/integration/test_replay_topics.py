"""`streamalloc replay` reading the history and the baseline tables from the topics."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from tests.unit.test_replay_cli import CHANNELS, INVENTORY, LOCATIONS, ORDERS, POLICY, write

from streamalloc.cli import main
from streamalloc.commands.io import produce_file
from streamalloc.commands.topics import ensure_topics
from streamalloc.config import Settings


def test_topics_replay_as_their_files_do(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings, channels=["web"])
    # web's orders on orders.web, the rest on orders: every orders* topic is read
    web = [o for o in ORDERS if o["channel"] == "web"]
    rest = [o for o in ORDERS if o["channel"] != "web"]
    for topic, records in (
        ("orders.web", web),
        ("orders", rest),
        ("inventory", INVENTORY),
        ("locations", LOCATIONS),
        ("channels", CHANNELS),
    ):
        produce_file(settings, settings.topic(topic), write(tmp_path / f"{topic}.jsonl", records))
    policy = write(tmp_path / "policy.jsonl", POLICY)

    cluster = [
        "--bootstrap", str(settings.bootstrap), "--prefix", settings.topic_prefix,
        "--app-id", settings.app_id, "--broker-profile", settings.broker_profile,
    ]  # fmt: skip
    runner = CliRunner()
    from_topics = runner.invoke(main, [*cluster, "replay", "--policy", str(policy), "--json"])
    assert from_topics.exit_code == 0, from_topics.output
    files = [
        "--orders", str(tmp_path / "orders.web.jsonl"), "--orders", str(tmp_path / "orders.jsonl"),
        "--inventory", str(tmp_path / "inventory.jsonl"),
        "--baseline", str(tmp_path / "locations.jsonl"), "--baseline", str(tmp_path / "channels.jsonl"),
    ]  # fmt: skip
    from_files = runner.invoke(main, [*cluster, "replay", *files, "--policy", str(policy), "--json"])
    assert from_files.exit_code == 0, from_files.output

    topics, local = json.loads(from_topics.stdout), json.loads(from_files.stdout)
    assert topics["inputs"]["sources"]["orders"] == ", ".join(
        [settings.topic("orders"), settings.topic("orders.web")]
    )
    assert topics["channels"] == local["channels"] and topics["examples"] == local["examples"]
    assert topics["channels"]["web"]["difference"]["units"]["allocated"] == 2
