"""A record whose outputs cannot be produced goes to dead-letter, with the reason; nothing stalls.

Against a real broker with real worker processes. The sizing worker's stage makes outputs
or state as large as its input says (sizing_worker.py), which nothing in decode can see:
the runtime's backstop must catch it for any stage. The engine test sends an order whose
900 KB line id makes intake's outputs too large.

On the embedded broker (Tansu 0.6.0, measured) the records of an aborted transaction that
had reached the broker stay visible to read_committed readers, so there outputs are
compared as sets; on real Kafka every good input has exactly one output.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic
from tests.conftest import TestBroker
from tests.integration.engine_helpers import EngineUnderTest, Ids, of_type
from tests.integration.helpers import WorkerProcess, committed_offsets, processes, produce, read_all, wait_for

from streamalloc.config import Settings
from streamalloc.kafka import admin_client
from streamalloc.serialization import dead_letter_serde

pytestmark = pytest.mark.slow
PARTITIONS = 4
SIZING_WORKER = Path(__file__).with_name("sizing_worker.py")
HUGE = 2_000_000  # over the producer's message.max.bytes (1,000,000)


class Sizing:
    """Topics and a worker process of the sizing stage."""

    def __init__(self, settings: Settings, tmp: Path, output_config: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.tmp = tmp
        self.input = settings.topic("sized")
        self.output = settings.topic("padded")
        self.changelog = settings.changelog_topic("sizes")
        topics = [
            NewTopic(self.input, PARTITIONS, 1),
            NewTopic(self.output, PARTITIONS, 1, config=output_config or {}),
            NewTopic(settings.topic("dead-letter"), 1, 1),
            NewTopic(self.changelog, PARTITIONS, 1, config={"cleanup.policy": "compact"}),
        ]
        admin = admin_client(settings)
        for future in admin.create_topics(topics).values():
            future.result()
        self.sent = 0

    def send(self, records: list[tuple[bytes, bytes]]) -> None:
        produce(self.settings, self.input, records)
        self.sent += len(records)

    def worker(self) -> WorkerProcess:
        args = [
            str(SIZING_WORKER),
            "--bootstrap", str(self.settings.bootstrap),
            "--prefix", self.settings.topic_prefix,
            "--app-id", self.settings.app_id,
            "--state-dir", str(self.tmp / "state"),
            "--input", self.input,
            "--output", self.output,
        ]  # fmt: skip
        return WorkerProcess(args, self.tmp / "worker.log")

    def wait_all_committed(self, timeout_s: float = 120.0) -> None:
        def committed() -> int:
            return sum(committed_offsets(self.settings, self.settings.app_id, self.input).values())

        wait_for(lambda: committed() >= self.sent, timeout_s, f"{self.sent} committed input records")

    def positions(self, predicate: Any) -> set[tuple[int, int]]:
        """(partition, offset) of the input records whose value satisfies `predicate`."""
        return {(p, o) for p, o, _, value in read_all(self.settings, self.input) if predicate(value)}

    def outputs(self) -> Counter[tuple[int, int]]:
        """How many committed outputs each input record (partition, offset) has."""
        found: Counter[tuple[int, int]] = Counter()
        for _, _, _, value in read_all(self.settings, self.output):
            assert value is not None
            partition, offset, _ = value.split(b":", 2)
            found[(int(partition), int(offset))] += 1
        return found

    def dead_letters(self) -> list[dict[str, Any]]:
        serde = dead_letter_serde(self.settings)
        topic = self.settings.topic("dead-letter")
        return [serde.decode(value) for _, _, _, value in read_all(self.settings, topic) if value]


def check_decided(sizing: Sizing, bad: set[tuple[int, int]], broker: TestBroker) -> None:
    good = sizing.positions(lambda v: True) - bad
    outputs = sizing.outputs()
    if broker.profile == "kafka":
        assert outputs == Counter(dict.fromkeys(good, 1)), "every good record decided exactly once"
    else:
        assert set(outputs) - bad == good


def test_records_whose_output_or_state_is_too_large_go_to_dead_letter_and_the_rest_are_decided(
    settings: Settings, tmp_path: Path, kafka_broker: TestBroker
) -> None:
    sizing = Sizing(settings, tmp_path)
    records = [(b"k%d" % (i % 200), b"%d" % i) for i in range(2_000)]
    records[700] = (b"big-output", b"o%d" % HUGE)
    records[1_300] = (b"big-state", b"s%d" % HUGE)
    sizing.send(records)
    with processes() as running:
        worker = sizing.worker()
        running.append(worker)
        sizing.wait_all_committed()
        # Nothing stalls: later records go through as usual.
        sizing.send([(b"k%d" % i, b"after") for i in range(500)])
        sizing.wait_all_committed()
        assert worker.alive(), worker.log()[-4000:]
        assert worker.terminate() == 0, worker.log()[-4000:]

    letters = sizing.dead_letters()
    assert sorted(letter["key"] for letter in letters) == [b"big-output", b"big-state"]
    reasons = {letter["key"]: letter["error"] for letter in letters}
    assert "too large" in reasons[b"big-output"] and sizing.output in reasons[b"big-output"]
    assert "too large" in reasons[b"big-state"] and sizing.changelog in reasons[b"big-state"]
    bad = sizing.positions(lambda v: v[:1] in (b"o", b"s"))
    assert {(letter["partition"], letter["offset"]) for letter in letters} == bad
    assert all(letter["value"] in (b"o%d" % HUGE, b"s%d" % HUGE) for letter in letters)
    check_decided(sizing, bad, kafka_broker)


def test_a_record_the_broker_refuses_as_too_large_goes_to_dead_letter(
    settings: Settings, tmp_path: Path, kafka_broker: TestBroker
) -> None:
    if kafka_broker.profile == "embedded":
        pytest.skip("the embedded broker does not enforce a topic's max.message.bytes")
    # Below the producer's limit, above the topic's: the broker refuses it at the commit.
    sizing = Sizing(settings, tmp_path, output_config={"max.message.bytes": "100000"})
    records = [(b"k%d" % (i % 50), b"%d" % i) for i in range(500)]
    records[250] = (b"refused", b"o300000")
    sizing.send(records)
    with processes() as running:
        worker = sizing.worker()
        running.append(worker)
        sizing.wait_all_committed()
        assert worker.terminate() == 0, worker.log()[-4000:]
    letters = sizing.dead_letters()
    assert [letter["key"] for letter in letters] == [b"refused"]
    assert "too large" in letters[0]["error"]
    check_decided(sizing, sizing.positions(lambda v: v == b"o300000"), kafka_broker)


# ---------------------------------------------------------------------- the engine


@pytest.fixture
def engine(kafka_broker: TestBroker, tmp_path: Path) -> Iterator[EngineUnderTest]:
    under_test = EngineUnderTest(kafka_broker.settings(state_dir=tmp_path / "state"), tmp_path)
    with processes() as running:
        try:
            under_test.prepare()
            running.append(under_test.start())
            yield under_test
        finally:
            under_test.close()


def test_an_order_with_a_900_kb_line_id_goes_to_dead_letter_and_the_orders_around_it_are_decided(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("too-large")
    sku = ids.sku()
    receipt = engine.inventory(ids.event("receipt"), "received", sku, 100)
    engine.send_inventory(receipt)
    engine.wait_stock(sku, receipt["event_id"])

    def order(name: str, line_id: str) -> dict[str, Any]:
        line = {"line_id": line_id, "sku": sku, "qty": 1}
        return engine.order(ids.event(name), "placed", ids.order(name), [line])

    before = [order(f"before-{i}", "1") for i in range(5)]
    bad = order("bad", "L" * 900_000)
    after = [order(f"after-{i}", "1") for i in range(5)]
    engine.send_orders(*before, bad, *after)

    for good in before + after:
        engine.wait_events(good["order_id"], lambda evs: bool(of_type(evs, "allocated")), "allocated")

    def dead_lettered() -> bool:
        return any(letter["source_topic"] == engine.orders_topic for letter in engine.dead_letters())

    engine.wait(dead_lettered, "the order with the 900 KB line id in dead-letter")
    letters = [letter for letter in engine.dead_letters() if letter["source_topic"] == engine.orders_topic]
    assert len(letters) == 1, [letter["error"] for letter in letters]
    assert letters[0]["key"] == bad["order_id"].encode()
    # The runtime's backstop says which output was too large; once intake checks field
    # lengths at decode, its reason names the field instead. Either way it says what.
    error = letters[0]["error"]
    assert "too large" in error or "line_id" in error, error

    # Nothing stalls: an order sent afterwards is decided too.
    later = order("later", "1")
    engine.send_orders(later)
    engine.wait_events(later["order_id"], lambda evs: bool(of_type(evs, "allocated")), "allocated")
    assert engine.worker is not None and engine.worker.alive()
