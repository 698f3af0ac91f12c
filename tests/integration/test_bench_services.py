"""`streamalloc bench services`, run tiny on the suite's broker: it names its figures, all positive."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import TestBroker

pytestmark = pytest.mark.slow


def test_bench_services_prints_throughput_and_latency_figures(
    kafka_broker: TestBroker, tmp_path: Path
) -> None:
    settings = kafka_broker.settings()
    command = [
        sys.executable, "-m", "streamalloc", "--bootstrap", kafka_broker.bootstrap,
        "--broker-profile", kafka_broker.profile, "--prefix", settings.topic_prefix,
        "bench", "services", "--availability", "200", "--allocations", "200", "--lines", "300",
        "--rate", "300", "--skus", "50", "--window-ms", "200",
    ]  # fmt: skip
    # its own process group: if the bench hangs, it and everything it started are killed
    process = subprocess.Popen(  # noqa: S603
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where its working directory goes
    )
    try:
        stdout, stderr = process.communicate(timeout=280)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"the bench did not finish:\n{stdout}\n{stderr[-3000:]}") from None
    assert process.returncode == 0, f"exit {process.returncode}:\n{stdout}\n{stderr[-3000:]}"
    # A run that succeeded leaves no working directory (state, logs) behind.
    assert not list(tmp_path.glob("streamalloc-bench-services-*"))
    figures = {}
    for line in stdout.splitlines():
        match = re.match(r"^\s*(\S.*?\S)\s{2,}([0-9,.]+)\s*$", line)
        if match:
            figures[match.group(1)] = float(match.group(2).replace(",", ""))
    assert set(figures) == {
        "channel-sync availability records in/s",
        "channel-sync pushes out/s",
        "routing allocations in/s",
        "routing requests out/s",
        "order -> webhook p50 ms at 300 lines/s",
        "order -> webhook p95 ms at 300 lines/s",
        "order -> webhook p99 ms at 300 lines/s",
        "of which order -> availability p50 ms",
        "of which order -> availability p99 ms",
        "of which push -> webhook receipt p50 ms",
        "of which push -> webhook receipt p99 ms",
    }, stdout
    # the named figures are positive; the parts of the latency (of which ...) can round to 0 ms
    assert all(value > 0 for name, value in figures.items() if not name.startswith("of which")), figures
    assert all(value >= 0 for value in figures.values()), figures
    print(stdout)
