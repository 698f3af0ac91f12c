"""The chaos test, short: three workers under the demo's load, a random one killed with
SIGKILL every 12 s and restarted on its state dir; then the verifier (the committed inputs
replayed through the domain against the engine's decisions and last availability records)
and the audit must find nothing lost, doubled or mismatched, and the workers must have
recovered on their own (no stall, no worker exiting by itself).

On real Kafka only: on the embedded broker a killed worker's open transaction becomes
visible (docs/brokers.md), so there is no exactly-once to verify under kills. The broker
fault (`streamalloc chaos --broker-fault`) is not run here: after a broker SIGKILL the
workers do not yet recover on their own (docs/exactly-once.md, "The chaos test"), and the
run takes 5-7 minutes on this machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import EMBEDDED, TestBroker

from streamalloc.commands.chaos import fresh_settings, run_chaos
from streamalloc.commands.simulation import SKUS

pytestmark = [pytest.mark.slow]


def test_workers_killed_every_12s_lose_double_and_mismatch_nothing_and_recover_alone(
    kafka_broker: TestBroker, tmp_path: Path
) -> None:
    if kafka_broker.kind == EMBEDDED:
        pytest.skip(
            "chaos needs real Kafka: the embedded broker shows a killed worker's open transaction "
            "to read_committed readers, so exactly-once under kills cannot be asserted there"
        )
    said: list[str] = []
    settings = fresh_settings(kafka_broker.settings(), kafka_broker.bootstrap, started=False)
    result = run_chaos(
        settings, workers=3, minutes=1.0, kill_every_s=12, rate=6,
        workdir=tmp_path / "chaos", say=said.append,
    )  # fmt: skip

    stats, verification, report = result.stats, result.verification, result.report
    assert stats.kills >= 3, said
    assert verification.ok, verification.as_record()
    assert verification.skus_checked == len(SKUS) and verification.skus_not_replayable == 0
    assert verification.decisions_checked > 0 and verification.requests_checked > 0
    assert not any(result.doubled_outputs.values()), result.doubled_outputs
    assert report.ok, "\n".join(report.breaches)
    assert report.oversold_units == 0
    assert 0 < report.lines_decided == report.lines_placed
    assert result.ok
    assert result.recovered, [*stats.stalls, *stats.own_exits]
