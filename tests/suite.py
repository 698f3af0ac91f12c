"""`make pytest`: the whole suite as two pytest sessions side by side.

The unit tests need nothing but a core; the integration tests spend much of their time
waiting on brokers, workers and timeouts. Run one after the other they took 21 minutes on
a 2-core machine; side by side the unit tests use what the integration tests leave. Each
session is a pytest run of its own (the integration one starts the brokers, tests/conftest.py),
and the suite fails when either fails, collects nothing (pytest's exit code 5 included) or
is interrupted. The unit session's report is printed after the integration one's, whole.

    python -m tests.suite [pytest options ...]   # the options go to both sessions
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
UNIT = TESTS / "unit"


def _pytest(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the unit session and anything it started (it runs in a process group of its own)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main(args: list[str]) -> int:
    started = time.monotonic()
    with tempfile.TemporaryFile() as report:
        unit = subprocess.Popen(
            _pytest(str(UNIT), *args),
            stdout=report,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            integration = subprocess.run(_pytest(str(TESTS), f"--ignore={UNIT}", *args), check=False)
            unit.wait()
        finally:
            _stop(unit)
        report.seek(0)
        sys.stdout.flush()
        print(f"\n{'=' * 30} unit tests (run beside the integration tests) {'=' * 30}", flush=True)
        sys.stdout.buffer.write(report.read())
    print(
        f"\nsuite: integration tests exited {integration.returncode}, unit tests {unit.returncode}; "
        f"{time.monotonic() - started:.0f} s in all",
        flush=True,
    )
    return integration.returncode or unit.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
