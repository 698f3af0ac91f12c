"""`streamalloc bench runtime --rate`: the runtime's own latency through two chained hops."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamalloc.bench import runtime
from streamalloc.cli import main
from streamalloc.config import Settings


def test_every_record_is_timed_once_through_both_hops_and_the_parts_add_up(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the worker's directory goes
    result = runtime.run_latency(settings, rate=400, records=600, keys=50)
    assert len(result.latencies_ms) == 600
    assert all(len(result.hops_ms[hop]) == 600 for hop in runtime.HOPS)
    # Record i answers output count i // keys + 1 of key i % keys: a wrong match would time
    # a record from before it was sent (negative) or long after (beyond the run).
    assert min(result.latencies_ms) > 0
    assert max(result.latencies_ms) < result.seconds * 1000 + 1
    for total, first, second in zip(result.latencies_ms, *result.hops_ms.values(), strict=True):
        assert first >= 0 and second >= 0
        assert first + second == pytest.approx(total)
    assert result.worker_cpu_seconds > 0 and result.peak_rss_mb > 0
    assert not list(tmp_path.glob("streamalloc-bench-*"))  # the worker stopped, its directory gone


def test_the_command_prints_latency_per_hop(settings: Settings) -> None:
    result = CliRunner().invoke(
        main,
        ["--bootstrap", str(settings.bootstrap), "bench", "runtime", "--rate", "300", "--records", "300"],
    )
    assert result.exit_code == 0, result.output
    assert "300 records offered at 300/s through two counting stages" in result.output
    total = re.search(r"│ input -> output\s+│\s+(\d+)\s+│\s+(\d+)\s+│\s+(\d+)\s+│", result.output)
    assert total is not None and 0 < int(total.group(1)) <= int(total.group(3)), result.output
    for hop in runtime.HOPS:
        assert re.search(rf"│ {hop}\s+│\s+\d+\s+│\s+│\s+\d+\s+│", result.output), result.output
