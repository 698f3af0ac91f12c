"""The whole pipeline under load with a worker killed (SIGKILL) and restarted mid-run.

`run_demo` is what `streamalloc demo` runs: two worker processes, three channel
generators, a warehouse simulator picking, shipping and returning. With `crash_at` it
kills the first worker in the middle of its transactions and starts it again on the same
state directory. The audit then checks, from the topics alone, that no unit was promised
twice, every line has exactly one first decision, every cancelled line was released and
the final balances match the last availability record.
"""

from __future__ import annotations

import re

import pytest
from tests.conftest import TestBroker

from streamalloc.commands.demo import run_demo
from streamalloc.config import Settings

pytestmark = pytest.mark.slow


#: The one breach the embedded broker can cause (BROKER.md): records of the killed worker's
#: open transaction become visible to read_committed readers once the new producer starts.
#: When the replay decides a line at another location, the audit sees both allocations
#: (their ids name the location), so the events hold more soft units than the engine does.
LEAK = re.compile(r"last availability has allocated=(\d+), the events give (\d+)$")


def leak_signature(breaches: list[str]) -> bool:
    """Every breach is 'more soft-allocated units in the events than in the engine'."""
    matches = [LEAK.search(breach) for breach in breaches]
    return bool(matches) and all(m is not None and int(m.group(2)) > int(m.group(1)) for m in matches)


def test_a_worker_killed_and_restarted_mid_run_leaves_an_audit_without_breaches(
    settings: Settings, kafka_broker: TestBroker
) -> None:
    said: list[str] = []
    report = run_demo(settings, orders_per_channel=120, seed=11, crash_at=0.4, timeout_s=240, say=said.append)

    killed = [m for m in said if m.startswith("killed worker-1")]
    assert killed, f"the worker was never killed: {said}"
    match = re.search(r"after (\d+) of (\d+) placed", killed[0])
    assert match is not None
    decided_at_kill = int(match.group(1))
    placed = report.lines_placed
    assert 0 < decided_at_kill < placed, "the kill did not fall in the middle of the run"

    if not report.ok and kafka_broker.kind == "embedded" and leak_signature(report.breaches):
        pytest.xfail(
            "Tansu exposed the killed worker's aborted transaction (BROKER.md): " + report.breaches[0]
        )
    assert report.ok, "\n".join(report.breaches)
    assert sum(stats["allocated"] for stats in report.per_channel.values()) > 0
