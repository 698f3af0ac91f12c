"""The chaos run's final stop: a worker that does not exit on SIGTERM is killed and named."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from streamalloc.commands import chaos

_IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)
_EXITS_ON_SIGTERM = "import time; print('ready', flush=True); time.sleep(60)"


def test_a_worker_still_running_after_the_grace_is_killed_and_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chaos, "STOP_GRACE_S", 1.0)
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)  # noqa: S603
        for code in (_EXITS_ON_SIGTERM, _IGNORES_SIGTERM)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"  # handler set
        pool = object.__new__(chaos._Workers)  # the processes, without starting engine workers
        pool.procs = procs
        started = time.monotonic()
        hung = pool.stop()
        assert time.monotonic() - started < 10  # one grace for all, not one each
        assert [proc.poll() is not None for proc in procs] == [True, True]
        assert procs[0].returncode == -15 and procs[1].returncode == -9
        assert hung == [f"worker-2 (pid {procs[1].pid}) still ran 1s after SIGTERM"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
