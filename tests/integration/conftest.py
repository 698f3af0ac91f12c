"""Every test in this folder talks to a real broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import TestBroker
from tests.integration.engine_helpers import EngineUnderTest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def prepared_engine(kafka_broker: TestBroker, tmp_path: Path) -> Iterator[EngineUnderTest]:
    """The contract topics and tables of a fresh engine on the real broker, no worker yet;
    every worker the test starts through it is killed at the end."""
    under_test = EngineUnderTest(kafka_broker.settings(state_dir=tmp_path / "state"), tmp_path)
    try:
        under_test.prepare()
        yield under_test
    finally:
        under_test.close()
