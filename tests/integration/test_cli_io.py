"""The CLI end to end against a real broker: topics create, produce a JSONL file, consume it back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.integration.helpers import read_all

from streamalloc.config import Settings
from streamalloc.serialization import topic_serde

pytestmark = pytest.mark.smoke  # on the embedded broker too: the CLI a user tries first runs there

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def cli(settings: Settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "streamalloc",
        "--bootstrap", str(settings.bootstrap),
        "--prefix", settings.topic_prefix,
        "--app-id", settings.app_id,
        *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_produce_then_consume_prints_the_orders_back(settings: Settings) -> None:
    assert cli(settings, "topics", "create").returncode == 0
    orders = settings.topic("orders")
    sent = cli(settings, "produce", orders, str(EXAMPLES / "orders.jsonl"))
    assert sent.returncode == 0, sent.stderr
    lines = [json.loads(line) for line in (EXAMPLES / "orders.jsonl").read_text().splitlines()]
    assert f"sent {len(lines)} event(s)" in sent.stdout
    got = cli(settings, "consume", orders, "--format", "json", "--max", "5", "--from-beginning")
    assert got.returncode == 0, got.stderr
    printed = [json.loads(line) for line in got.stdout.splitlines()]
    assert len(printed) == 5
    serde = topic_serde(settings, orders)
    expected = {line["event_id"]: serde.validate(line) for line in lines}
    for event in printed:
        assert event == expected[event["event_id"]]
    # keyed by order_id as the contract says
    keys = {key for _, _, key, _ in read_all(settings, orders)}
    assert keys == {line["order_id"].encode() for line in lines}


def test_a_file_with_one_malformed_line_is_refused_and_nothing_is_sent(
    settings: Settings, tmp_path: Path
) -> None:
    assert cli(settings, "topics", "create").returncode == 0
    good = (EXAMPLES / "orders.jsonl").read_text().splitlines()
    bad = json.loads(good[3])
    bad["lines"][0]["qty"] = "three"
    path = tmp_path / "orders.jsonl"
    path.write_text("\n".join([*good[:3], json.dumps(bad), *good[4:]]) + "\n")
    refused = cli(settings, "produce", settings.topic("orders"), str(path))
    assert refused.returncode != 0
    assert f"{path}:4" in refused.stderr.replace("\n", "")
    assert "lines[0].qty" in refused.stderr.replace("\n", "")
    assert read_all(settings, settings.topic("orders")) == []


def test_inventory_is_keyed_by_sku_and_partitioned_with_murmur2(settings: Settings) -> None:
    assert cli(settings, "topics", "create").returncode == 0
    topic = settings.topic("inventory")
    assert cli(settings, "produce", topic, str(EXAMPLES / "inventory.jsonl")).returncode == 0

    records = read_all(settings, topic)
    assert records
    for partition, _, key, _ in records:
        assert key is not None
        assert partition == murmur2_partition(key, settings.partitions)


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Java's default partitioner: murmur2(key) & 0x7fffffff % partitions."""
    length = len(key)
    seed, m, r = 0x9747B28C, 0x5BD1E995, 24
    h = (seed ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = key[length - rest :]
    if rest == 3:
        h ^= tail[2] << 16
    if rest >= 2:
        h ^= tail[1] << 8
    if rest >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions
