"""Session-wide fixtures: one Kafka broker for the whole run, found or started here.

Order of preference: an existing cluster named by STREAMALLOC_TEST_BOOTSTRAP; a
testcontainers Kafka (apache/kafka) when STREAMALLOC_TEST_DOCKER=1 and a Docker engine
answers; otherwise the embedded Tansu broker. Whatever this file starts, it stops.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from streamalloc.config import BrokerProfile, Settings


@dataclass(frozen=True)
class TestBroker:
    __test__ = False  # not a test class, despite the name

    bootstrap: str
    profile: BrokerProfile
    kind: str  # "external", "docker" or "embedded"

    def settings(self, **overrides: object) -> Settings:
        """Settings isolated per test by a unique topic prefix and app id."""
        tag = uuid.uuid4().hex[:8]
        values: dict[str, object] = {
            "bootstrap": self.bootstrap,
            "broker_profile": self.profile,
            "topic_prefix": f"t{tag}.",
            "app_id": f"app-{tag}",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means no engine
        return False


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TestBroker]:
    external = os.environ.get("STREAMALLOC_TEST_BOOTSTRAP")
    if external:
        profile = os.environ.get("STREAMALLOC_TEST_BROKER_PROFILE", "kafka")
        yield TestBroker(external, "embedded" if profile == "embedded" else "kafka", "external")
        return
    if os.environ.get("STREAMALLOC_TEST_DOCKER") == "1":
        if not _docker_answers():
            pytest.skip("STREAMALLOC_TEST_DOCKER=1 but no Docker engine answers on this machine")
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:3.8.0").with_kraft() as container:
            yield TestBroker(container.get_bootstrap_server(), "kafka", "docker")
        return
    from streamalloc.broker import EmbeddedBroker

    with EmbeddedBroker() as bootstrap:
        yield TestBroker(bootstrap, "embedded", "embedded")


@pytest.fixture
def settings(kafka_broker: TestBroker, tmp_path: object) -> Settings:
    """Per-test settings against the session broker, with their own topics and state dir."""
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    return kafka_broker.settings(state_dir=tmp_path / "state")
