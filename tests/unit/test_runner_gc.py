"""A worker process runs with the collector set for throughput (runtime/runner.py `steady_gc`)."""

from __future__ import annotations

import gc
import subprocess
import sys

from streamalloc.runtime.runner import GC_THRESHOLDS, steady_gc_while

SCRIPT = """
import gc
from streamalloc.runtime.runner import GC_THRESHOLDS, run_until_signalled

class Once:
    def run(self):
        print(gc.get_threshold() == GC_THRESHOLDS, gc.get_freeze_count() > 0)

    def stop(self):
        pass

print(gc.get_threshold() == GC_THRESHOLDS)
raise SystemExit(run_until_signalled(Once()))
"""


def test_a_worker_runs_with_the_steady_collector_thresholds_and_its_start_up_objects_frozen() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True"]  # CPython's thresholds until the worker runs


def test_a_block_under_the_steady_collector_gets_the_worker_thresholds_then_its_own_back() -> None:
    before = gc.get_threshold()
    with steady_gc_while():
        inside = gc.get_threshold(), gc.get_freeze_count() > 0
    assert inside == (GC_THRESHOLDS, True)
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, 0)
