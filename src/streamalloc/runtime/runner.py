"""Run a worker in the foreground: SIGTERM and SIGINT finish the batch, commit and leave."""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

from streamalloc.errors import StreamallocError

_log = logging.getLogger("streamalloc.runtime")


#: The cyclic garbage collector's thresholds for a worker process (CPython's are 700, 10, 10).
#: A worker allocates and frees millions of containers (decoded records, events, states), all
#: freed by reference counting; what the collector finds is the records buffered between polls
#: and the process's long-lived objects, scanned again and again. Measured in the worker of
#: `bench engine --lines 100000` (gc.callbacks, 2026-12-02): 1.3 CPU s of 13-15 in collections
#: at CPython's thresholds (2,700 young, 250 middle, 22 full ones), 0.2 s at these (12, 1, 0).
#: Cycles (exceptions with their tracebacks, mostly) wait for 50,000 net allocations at most.
GC_THRESHOLDS = (50_000, 20, 100)


def steady_gc() -> None:
    """Set a long-running process's collector for throughput (`GC_THRESHOLDS`), and move what
    exists once it is built (modules, schemas, compiled codecs) out of every later scan."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@contextmanager
def steady_gc_while() -> Iterator[None]:
    """`steady_gc` for a block of a process that is no worker (a benchmark of the stages),
    with CPython's thresholds back afterwards."""
    before = gc.get_threshold()
    steady_gc()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


class Runnable(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...


def run_until_signalled(worker: Runnable) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or a fatal error (exit 1, for a supervisor to restart)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    steady_gc()
    try:
        worker.run()
        return 0
    except StreamallocError as exc:
        _log.error("worker stopped on a fatal error", extra={"error": str(exc)})
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
