"""The chaos test, short: three workers under load, one killed with SIGKILL every 12 s and
restarted, the Kafka broker itself killed once mid-run (at 22 s) and restarted on its log dir; then
the verifier (the committed inputs replayed through the domain against the engine's
decisions and last availability records) and the audit must find nothing lost or doubled.
If the workers stall after the broker crash (no line decided for 45 s), the harness
restarts them all as a liveness probe would (and restarts any that exits); exactly-once
is asserted all the same, and the stall makes the test an expected failure naming it
(see the end of the test).

Real Apache Kafka only, in a broker of the test's own (it is killed): on the embedded
broker a killed worker's open transaction becomes visible (docs/brokers.md), so there
is no exactly-once to verify under kills; an external cluster cannot be killed from here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import KAFKA, TestBroker

from streamalloc.broker.kafka import KafkaBroker
from streamalloc.commands.chaos import fresh_settings, run_chaos
from streamalloc.commands.simulation import SKUS
from streamalloc.config import Settings

#: Longer than the suite's 300 s: on a busy 2-core machine the broker takes up to 40 s to
#: come back from SIGKILL, and a stall is only called after 45 s without a decision.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_workers_killed_every_12s_and_a_broker_crash_lose_and_double_nothing(
    kafka_broker: TestBroker, tmp_path: Path
) -> None:
    if kafka_broker.kind != KAFKA:
        pytest.skip(
            f"chaos needs Apache Kafka it can kill, not the {kafka_broker.kind} broker: the embedded "
            "one shows a killed worker's open transaction, an external one is not ours to kill"
        )
    said: list[str] = []
    broker = KafkaBroker(say=said.append)
    try:
        settings = fresh_settings(Settings(), broker.start(), started=True)
        result = run_chaos(
            settings, workers=3, minutes=0.75, kill_every_s=12, broker=broker, rate=6,
            workdir=tmp_path / "chaos", say=said.append,
        )  # fmt: skip
    finally:
        broker.close()

    stats, verification, report = result.stats, result.verification, result.report
    assert stats.kills >= 1, said  # the broker takes its time to restart: the load ends soon after
    assert stats.broker_faults == 1, said
    assert verification.ok, verification.as_record()
    assert verification.skus_checked == len(SKUS) and verification.skus_not_replayable == 0
    assert verification.decisions_checked > 0 and verification.requests_checked > 0
    assert not any(result.doubled_outputs.values()), result.doubled_outputs
    assert report.ok, "\n".join(report.breaches)
    assert report.oversold_units == 0
    assert 0 < report.lines_decided == report.lines_placed
    assert result.ok
    if not result.recovered:
        # Exactly-once held (asserted above); liveness did not: after a broker crash the
        # workers stall or exit until restarted (docs/exactly-once.md, "The chaos test":
        # librdkafka's transactional calls around a coordinator that went away and came back).
        pytest.xfail(f"the workers did not recover alone: {[*stats.stalls, *stats.own_exits]}")
