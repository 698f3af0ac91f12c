"""What the embedded broker and real Kafka share: a free port, waiting until a broker
answers, and stopping the processes we started (brokers, and the benchmarks' workers),
by their pids."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from streamalloc.errors import BrokerError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until_answers(
    bootstrap: str,
    process: subprocess.Popen[bytes],
    timeout_s: float,
    what: str,
    log_tail: Callable[[], str],
) -> None:
    """Poll metadata until the broker names itself; raise BrokerError if it exits or stays silent."""
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("streamalloc.broker.probe")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": quiet}
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout_s
    last_error: Exception | str | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(f"{what} exited with code {process.returncode}: {log_tail()}")
        try:
            if admin.list_topics(timeout=1.0).brokers:
                return
            last_error = "no broker in the metadata yet"
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_error = exc
        time.sleep(0.05)
    raise BrokerError(f"{what} did not answer metadata within {timeout_s}s: {last_error}; {log_tail()}")


def terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the process (by its pid), then SIGKILL it if it has not exited within `timeout_s`."""
    terminate_all([process], timeout_s)


def terminate_all(
    processes: Sequence[subprocess.Popen[bytes]], timeout_s: float
) -> list[subprocess.Popen[bytes]]:
    """SIGTERM every process still running, all at once (so they stop side by side), then
    SIGKILL each that has not exited `timeout_s` after that; those it had to kill."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    killed = []
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)
            killed.append(process)
    return killed
