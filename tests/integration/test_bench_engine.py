"""`streamalloc bench engine --rate`: latency with its split per hop, on a real broker."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamalloc.bench.engine import HOPS
from streamalloc.cli import main
from streamalloc.config import Settings


def test_latency_mode_prints_every_hop_of_a_decision_with_figures(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the bench's working directory goes
    result = CliRunner().invoke(
        main, ["--bootstrap", str(settings.bootstrap), "bench", "engine", "--lines", "300", "--rate", "300"]
    )
    assert result.exit_code == 0, result.output
    for hop in HOPS:
        row = re.search(rf"│ {re.escape(hop)}\s+│\s+(-?\d+)\s+│\s+(-?\d+)\s+│", result.output)
        assert row is not None, f"no row for {hop!r} in:\n{result.output}"
        assert all(math.isfinite(float(v)) for v in row.groups())
    p50 = re.search(r"latency p50 (\d+) ms", result.output)
    assert p50 is not None and int(p50.group(1)) > 0, result.output
    # It waits for every order's status too (the order stage's tail), and says at what rate.
    settled = re.search(r"([\d,]+) lines/s until every\s+order\s+had\s+its\s+status", result.output)
    assert settled is not None and int(settled.group(1).replace(",", "")) > 0, result.output
    # A run that succeeded leaves no working directory (state, worker log) behind.
    assert not list(tmp_path.glob("streamalloc-bench-*"))


def test_workers_runs_that_many_worker_processes_beside_one_and_prints_the_scaling(
    settings: Settings,
) -> None:
    result = CliRunner().invoke(
        main,
        ["--bootstrap", str(settings.bootstrap), "--partitions", "4", "bench", "engine", "--lines", "400",
         "--workers", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    # Each run measured one worker, then two: all the lines decided and every order settled.
    for who in ("1 worker(s)", "2 worker(s)"):
        settled = r"[\d,]+ lines/s excluding join .* lines/s until every order had its status"
        assert re.search(rf"{re.escape(who)}: {settled}", text), result.output
    scaling = re.search(
        r"scaling, 2 workers against one .*?: ([\d.]+)x decided, ([\d.]+)x with order status", text
    )
    assert scaling is not None, result.output
    assert all(float(v) > 0 for v in scaling.groups())
    for workers in ("1", "2"):
        assert re.search(rf"│ {workers}\s+│\s+[\d,]+\s+│\s+[\d,]+\s+│", result.output), result.output


def test_more_workers_than_partitions_is_refused_before_anything_runs(settings: Settings) -> None:
    result = CliRunner().invoke(
        main,
        ["--bootstrap", str(settings.bootstrap), "--partitions", "2", "bench", "engine", "--lines", "10",
         "--workers", "3"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "--workers 3 is more than the 2 partitions" in " ".join(result.output.split())
