"""`streamalloc availability --url`: prints the owner's answer, follows one 421, fails clearly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from streamalloc.api import HttpApi
from streamalloc.api.queries import AvailabilityRequest
from streamalloc.cli import main

BODY: dict[str, Any] = {
    "sku": "SKU-1",
    "as_of": 1,
    "partition": 2,
    "served_by": "owner",
    "totals": {"on_hand": 7, "allocated": 2, "picked": 0, "available": 5, "incoming": 0},
    "locations": [
        {
            "location": "WH-1",
            "status": "online",
            "on_hand": 7,
            "allocated": 2,
            "picked": 0,
            "available": 5,
            "incoming": 0,
        },
    ],  # fmt: skip
    "channels": [{"channel": "web", "ats": 5}, {"channel": "store", "ats": 3}],
}


@pytest.fixture
def servers() -> Iterator[tuple[str, str]]:
    """An owner that answers, and a non-owner that answers 421 naming it."""

    def owner(request: AvailabilityRequest) -> tuple[int, dict[str, Any]]:
        if request.sku != "SKU-1":
            return 404, {"error": f"unknown SKU {request.sku!r}: no stock or orders seen"}
        return 200, BODY

    owner_api = HttpApi("127.0.0.1", 0, registry=CollectorRegistry(), ready=lambda: True, availability=owner)
    owner_url = f"http://127.0.0.1:{owner_api.port}"

    def other(request: AvailabilityRequest) -> tuple[int, dict[str, Any]]:
        return 421, {"error": "another worker owns this SKU", "owner": owner_url}

    other_api = HttpApi("127.0.0.1", 0, registry=CollectorRegistry(), ready=lambda: True, availability=other)
    owner_api.start()
    other_api.start()
    try:
        yield owner_url, f"http://127.0.0.1:{other_api.port}"
    finally:
        owner_api.stop()
        other_api.stop()


def test_prints_the_owners_table_after_following_a_421(servers: tuple[str, str]) -> None:
    _, other = servers
    result = CliRunner().invoke(main, ["--bootstrap", "unused:9092", "availability", "SKU-1", "--url", other])
    assert result.exit_code == 0, result.output
    assert "SKU-1" in result.stdout and "WH-1" in result.stdout
    assert "web" in result.stdout and "store" in result.stdout


def test_json_is_the_answer_as_given(servers: tuple[str, str]) -> None:
    owner, _ = servers
    result = CliRunner().invoke(
        main, ["--bootstrap", "unused:9092", "availability", "SKU-1", "--url", owner, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == BODY


def test_an_unknown_sku_fails_with_the_workers_reason(servers: tuple[str, str]) -> None:
    owner, _ = servers
    result = CliRunner().invoke(main, ["--bootstrap", "unused:9092", "availability", "NOPE", "--url", owner])
    assert result.exit_code == 1
    assert "404" in result.output and "unknown SKU 'NOPE'" in result.output
