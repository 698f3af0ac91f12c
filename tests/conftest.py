"""Session-wide fixtures: the brokers of the run, found or started here, stopped at its end.

Every integration test runs on one primary broker, by order of preference: an existing
cluster named by STREAMALLOC_TEST_BOOTSTRAP; the `apache/kafka` image when
STREAMALLOC_TEST_DOCKER=1 (skipped with the reason where no Docker engine answers); real
Apache Kafka from the cached jars (`make kafka`); and, where that cannot start (no java,
no jars), the embedded broker, with the reason printed once at the end of the run. Under
CI=true a missing Kafka fails the tests instead. Tests marked `smoke` run on the embedded
broker as well, so that both keep working. The test id names the broker: `test_x[kafka]`.
"""

from __future__ import annotations

import functools
import gc
import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamalloc.broker.kafka import KAFKA_VERSION, check_jars, default_jars_dir, find_java
from streamalloc.config import BrokerProfile, Settings
from streamalloc.errors import BrokerError

pytest_plugins = ["pytester"]  # tests/integration/test_broker.py runs this file in a child pytest

EMBEDDED, KAFKA, DOCKER, EXTERNAL = "embedded", "kafka", "docker", "external"
_USED = pytest.StashKey[bool]()  # some collected test needs a broker


@dataclass(frozen=True)
class TestBroker:
    __test__ = False  # not a test class, despite the name

    bootstrap: str
    profile: BrokerProfile
    kind: str  # "external", "docker", "kafka" or "embedded"

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


@dataclass(frozen=True)
class BrokerPlan:
    """Which brokers the integration tests run on, decided once before any starts."""

    primary: str
    primary_profile: BrokerProfile
    fallback_reason: str | None = None  # why the primary is the embedded broker, not real Kafka
    failure: str | None = None  # under CI=true: why real Kafka cannot start (its tests fail)

    def kinds(self, smoke: bool) -> list[str]:
        if smoke and self.primary_profile != EMBEDDED:
            return [self.primary, EMBEDDED]
        return [self.primary]


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@functools.cache
def real_kafka_missing() -> str | None:
    """Why real Kafka cannot start here (no java, no jars), or None if it can."""
    try:
        find_java(os.environ)
        check_jars(default_jars_dir(os.environ))
    except BrokerError as exc:
        return str(exc)
    return None


@functools.cache
def broker_plan() -> BrokerPlan:
    env = os.environ
    if env.get("STREAMALLOC_TEST_BOOTSTRAP"):
        profile = env.get("STREAMALLOC_TEST_BROKER_PROFILE", KAFKA)
        return BrokerPlan(EXTERNAL, EMBEDDED if profile == EMBEDDED else KAFKA)
    if env.get("STREAMALLOC_TEST_DOCKER") == "1":
        return BrokerPlan(DOCKER, KAFKA)
    missing = real_kafka_missing()
    if missing is not None and under_ci():
        return BrokerPlan(KAFKA, KAFKA, failure=f"CI=true, but real Kafka cannot start: {missing}")
    if missing is not None:
        return BrokerPlan(EMBEDDED, EMBEDDED, fallback_reason=missing)
    return BrokerPlan(KAFKA, KAFKA)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that needs a broker runs once per broker kind it is planned for, named by it."""
    if "kafka_broker" not in metafunc.fixturenames:
        return
    smoke = metafunc.definition.get_closest_marker("smoke") is not None
    metafunc.config.stash[_USED] = True
    kinds = broker_plan().kinds(smoke)
    metafunc.parametrize("kafka_broker", kinds, indirect=True, scope="session", ids=kinds)


def pytest_report_header(config: pytest.Config) -> str:
    plan = broker_plan()
    smoke = "; tests marked smoke also on embedded" if plan.kinds(smoke=True) != [plan.primary] else ""
    return f"integration broker: {plan.primary}{smoke}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    reason = broker_plan().fallback_reason
    if reason is not None and config.stash.get(_USED, False):
        terminalreporter.write_line(f"integration tests ran on the embedded broker, not real Kafka: {reason}")


class Brokers:
    """The session's brokers by kind, each started on first use; `close` stops them all."""

    def __init__(self, plan: BrokerPlan) -> None:
        self.plan = plan
        self._started: dict[str, TestBroker] = {}
        self._stack = ExitStack()

    def get(self, kind: str) -> TestBroker:
        if kind not in self._started:
            self._started[kind] = self._start(kind)
        return self._started[kind]

    def _start(self, kind: str) -> TestBroker:
        if kind == EXTERNAL:
            return TestBroker(os.environ["STREAMALLOC_TEST_BOOTSTRAP"], self.plan.primary_profile, EXTERNAL)
        if kind == DOCKER:
            return TestBroker(_docker_kafka(self._stack), KAFKA, DOCKER)
        if kind == KAFKA:
            if self.plan.failure is not None:
                pytest.fail(self.plan.failure, pytrace=False)
            from streamalloc.broker import KafkaBroker

            return TestBroker(self._stack.enter_context(KafkaBroker()), KAFKA, KAFKA)
        from streamalloc.broker import EmbeddedBroker

        return TestBroker(self._stack.enter_context(EmbeddedBroker()), EMBEDDED, EMBEDDED)

    def close(self) -> None:
        self._stack.close()


def _docker_answers() -> bool:
    """True if a Docker engine answers a ping (DOCKER_HOST, else the default socket)."""
    with warnings.catch_warnings():
        # docker-py leaves the socket of a failed connection open: collect it here, quietly,
        # not in some later test that warnings-as-errors would then fail.
        warnings.simplefilter("ignore", ResourceWarning)
        answers = _docker_ping()
        gc.collect()
    return answers


def _docker_ping() -> bool:
    import docker

    try:
        client = docker.from_env()
    except Exception:  # noqa: BLE001 - any failure means no engine
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


def _docker_kafka(stack: ExitStack) -> str:
    """The `apache/kafka` image as a generic container: single-node KRaft, a host port advertised.

    testcontainers' KafkaContainer expects the Confluent images and their start script.
    """
    if not _docker_answers():
        pytest.skip("STREAMALLOC_TEST_DOCKER=1 but no Docker engine answers on this machine")
    from confluent_kafka.admin import AdminClient
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    from streamalloc.broker.kafka import container_environment
    from streamalloc.broker.process import free_port

    port = free_port()
    container = DockerContainer(f"apache/kafka:{KAFKA_VERSION}")
    host = container.get_docker_client().host()
    container = (
        container.with_bind_ports(9092, port)
        .with_envs(**container_environment(f"{host}:{port}"))
        .waiting_for(LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(180))
    )
    stack.enter_context(container)
    bootstrap = f"{host}:{port}"
    AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
    return bootstrap


@pytest.fixture(scope="session")
def _brokers() -> Iterator[Brokers]:
    brokers = Brokers(broker_plan())
    try:
        yield brokers
    finally:
        brokers.close()


@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest, _brokers: Brokers) -> TestBroker:
    """The broker this test runs on (its id says which), started once for the session."""
    return _brokers.get(str(request.param))


@pytest.fixture
def settings(kafka_broker: TestBroker, tmp_path: Path) -> Settings:
    """Per-test settings against the session broker, with their own topics and state dir."""
    return kafka_broker.settings(state_dir=tmp_path / "state")
