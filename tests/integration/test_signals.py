"""SIGTERM to a CLI command stops what the command started, as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streamalloc.config import Settings


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_to_a_bench_stops_the_worker_it_started(settings: Settings, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "streamalloc", "--bootstrap", str(settings.bootstrap),
        "--prefix", settings.topic_prefix, "--app-id", settings.app_id,
        "bench", "engine", "--lines", "1000000", "--skus", "100",
    ]  # fmt: skip
    errors = (tmp_path / "stderr").open("wb")
    # An interrupted run keeps its directory (its workers' logs) in the temp dir: this test's.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    bench = subprocess.Popen(  # noqa: S603
        command, stdout=subprocess.DEVNULL, stderr=errors, stdin=subprocess.DEVNULL, env=env
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not workers and bench.poll() is None and time.monotonic() < deadline:
            workers = _children(bench.pid)
            time.sleep(0.2)
        assert workers, f"the bench started no worker: {(tmp_path / 'stderr').read_text()}"
        bench.send_signal(signal.SIGTERM)
        bench.wait(90)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in workers if _alive(pid)], "the worker outlived the bench"
    finally:
        for pid in [bench.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        bench.wait(10)
        errors.close()
