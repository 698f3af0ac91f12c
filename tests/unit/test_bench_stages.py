"""`streamalloc bench stages`: the three stages in process, on RocksDB, no broker."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamalloc.bench import stages
from streamalloc.cli import main
from streamalloc.config import Settings
from streamalloc.domain.events import OrderAccepted
from streamalloc.errors import StreamallocError


@pytest.mark.parametrize("profile", ["embedded", "kafka"])
def test_every_line_is_decided_and_each_stage_has_its_cpu(profile: str) -> None:
    result = stages.run(Settings(broker_profile=profile), lines=600, skus=50, batch_orders=100)
    assert result.lines == 600
    assert result.orders > 300  # the bench engine's mix: mostly one- and two-line orders
    assert set(result.cpu_seconds) == set(stages.STAGES)
    assert all(seconds > 0 for seconds in result.cpu_seconds.values())
    assert result.total_us_per_line == pytest.approx(
        (sum(result.cpu_seconds.values()) + result.flush_seconds) / 600 * 1e6
    )


def test_a_run_whose_stages_left_work_undone_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # The figures are per line decided: a stage that decided nothing must not look fast.
    monkeypatch.setattr(stages.AllocatorStage, "process", lambda self, ctx, records: None)
    with pytest.raises(StreamallocError, match=r"0 of 200 lines decided"):
        stages.run(Settings(), lines=200, skus=20, batch_orders=50)


def test_the_command_prints_each_run_and_the_median(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    args = ["--broker-profile", "kafka", "bench", "stages", "--lines", "300", "--skus", "30", "--runs", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    runs = re.findall(r"run \d: [\d.]+ µs CPU per line \(intake [\d.]+, allocator [\d.]+", result.output)
    assert len(runs) == 2
    assert "median of 2 runs" in result.output
    assert list(tmp_path.iterdir()) == []  # its RocksDB directories are gone


def test_a_stage_that_fails_to_build_leaves_no_store_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def refuse(self: object, settings: Settings) -> None:
        raise StreamallocError("cannot build the order stage")

    monkeypatch.setattr(stages.OrderStage, "__init__", refuse)
    with pytest.raises(StreamallocError, match="cannot build"):
        stages.run(Settings(), lines=10, skus=5)
    assert list(tmp_path.iterdir()) == []  # the intake's and allocator's RocksDB went too


def test_the_order_stage_reads_an_orders_decisions_a_round_after_its_acceptance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In a worker, the allocator decides in the round in which the order stage reads the
    # `accepted` events intake wrote with the requests: the decisions come a commit later,
    # so each order's record is read and written twice. Fed together, the order stage
    # looked about a quarter cheaper than it is.
    calls: list[list[object]] = []
    process = stages.OrderStage.process

    def recording(self: stages.OrderStage, ctx: object, records: list[stages.Record]) -> None:
        calls.append([record.value for record in records])
        process(self, ctx, records)  # type: ignore[arg-type]

    monkeypatch.setattr(stages.OrderStage, "process", recording)
    stages.run(Settings(broker_profile="kafka"), lines=300, skus=20, batch_orders=50)
    accepted_in: dict[str, int] = {}
    decided_in: dict[str, int] = {}
    for n, events in enumerate(calls):
        for event in events:
            seen = accepted_in if isinstance(event, OrderAccepted) else decided_in
            seen.setdefault(event.order_id, n)  # type: ignore[attr-defined]
    assert accepted_in.keys() == decided_in.keys()
    assert all(accepted_in[order] < decided_in[order] for order in accepted_in)
