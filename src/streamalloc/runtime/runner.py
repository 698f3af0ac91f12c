"""Run a worker in the foreground: SIGTERM and SIGINT finish the batch, commit and leave."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Protocol

from streamalloc.errors import StreamallocError

_log = logging.getLogger("streamalloc.runtime")


class Runnable(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...


def run_until_signalled(worker: Runnable) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or a fatal error (exit 1, for a supervisor to restart)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.run()
        return 0
    except StreamallocError as exc:
        _log.error("worker stopped on a fatal error", extra={"error": str(exc)})
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
