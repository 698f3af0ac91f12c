"""Real Apache Kafka 4.1.1, single-node KRaft, run from its Maven Central jars.

The broker every exactly-once claim is tested against (docs/brokers.md): the embedded
broker leaks a killed producer's open transaction, Kafka does not. The jars are fetched
once per machine into a cache outside the clone (`make kafka`); Java 17 runs them.

Layout of a broker whose data lives in `<parent>/<name>`: the properties it was last
started with in `<parent>/<name>.server.properties` (a restart on the same dir keeps its
ports), its console log in `<parent>/<name>.broker.log`, appended across restarts.
"""

from __future__ import annotations

import base64
import importlib.resources
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from streamalloc.broker.process import free_port, terminate, wait_until_answers
from streamalloc.errors import BrokerError

KAFKA_VERSION = "4.1.1"
JARS_ENV = "STREAMALLOC_KAFKA_JARS"
FETCH_COMMAND = "`make kafka` (or `streamalloc broker --kafka --fetch-only`)"
SERVER_MAIN = "kafka.Kafka"
STORAGE_MAIN = "kafka.tools.StorageTool"
# BROKER_JVM from bin/kafka-server-start.sh and kafka-run-class.sh, less what a test broker needs.
BROKER_JVM = ("-Xms512m", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")
TOOL_JVM = ("-Xmx512m", "-Djava.awt.headless=true")
CONTAINER_LOG_DIR = Path("/tmp/kraft-combined-logs")  # noqa: S108 - in the container, as the image's docs have it


def default_jars_dir(environ: Mapping[str, str]) -> Path:
    """`$STREAMALLOC_KAFKA_JARS`, else `${XDG_CACHE_HOME:-~/.cache}/streamalloc/kafka-4.1.1`."""
    if environ.get(JARS_ENV):
        return Path(environ[JARS_ENV]).expanduser()
    cache = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "streamalloc" / f"kafka-{KAFKA_VERSION}"


def kafka_files() -> Path:
    """The installed copy of deploy/kafka (wheel: streamalloc/_kafka) or the repository's."""
    packaged = importlib.resources.files("streamalloc").joinpath("_kafka")
    if packaged.is_dir():
        return Path(str(packaged))
    repo = Path(__file__).resolve().parents[3] / "deploy" / "kafka"
    if repo.is_dir():
        return repo
    raise BrokerError("cannot find the Kafka POM and log config (not in streamalloc/_kafka nor deploy/kafka)")


def find_java(environ: Mapping[str, str]) -> str:
    """`$JAVA_HOME/bin/java`, else `java` on the PATH."""
    home = environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java", path=environ.get("PATH"))
    if found is None:
        raise BrokerError(
            f"no java on the PATH: Apache Kafka {KAFKA_VERSION} needs Java 17 or later (or set JAVA_HOME)"
        )
    return found


def check_jars(jars: Path) -> Path:
    """`jars` if it holds the broker's jars, else a BrokerError naming the command that fetches them."""
    if not (jars / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        raise BrokerError(f"no Apache Kafka {KAFKA_VERSION} jars in {jars}: run {FETCH_COMMAND} once")
    return jars


def fetch_jars(jars: Path, *, environ: Mapping[str, str], say: Callable[[str], None] = print) -> bool:
    """Fetch the jars from Maven Central into `jars` unless they are there; True if it fetched.

    Maven writes into a temporary sibling that is renamed into place, so `jars` exists only
    when complete, and a second run (or a run racing this one) finds it and does nothing.
    """
    if (jars / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        return False
    mvn = shutil.which("mvn", path=environ.get("PATH"))
    if mvn is None:
        raise BrokerError(
            f"no Apache Kafka {KAFKA_VERSION} jars in {jars} and no mvn on the PATH to fetch them "
            f"from Maven Central: install Maven 3 and run {FETCH_COMMAND}"
        )
    pom = kafka_files() / "pom.xml"
    jars.parent.mkdir(parents=True, exist_ok=True)
    say(f"fetching the Apache Kafka {KAFKA_VERSION} jars from Maven Central into {jars} (once)")
    with tempfile.TemporaryDirectory(dir=jars.parent, prefix=f".{jars.name}-") as work:
        shutil.copy(pom, Path(work) / "pom.xml")  # Maven works next to its POM: not in the clone
        staged = Path(work) / "jars"
        command = [
            mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(Path(work) / "pom.xml"),
            "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={staged}",
        ]  # fmt: skip
        try:
            done = subprocess.run(  # noqa: S603 - mvn found on the PATH, arguments built here
                command, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"mvn did not fetch the Kafka jars within {exc.timeout:.0f}s") from exc
        if done.returncode != 0 or not (staged / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
            raise BrokerError(
                f"mvn could not fetch the Apache Kafka {KAFKA_VERSION} jars from Maven Central "
                f"(exit {done.returncode}); run {FETCH_COMMAND} where it answers: "
                f"{_last_lines(done.stdout + done.stderr)}"
            )
        try:
            staged.rename(jars)
        except OSError:
            if not (jars / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
                raise
    return True


def cluster_id() -> str:
    """A random cluster id as Kafka writes one: URL-safe base64 of 16 bytes, never starting with '-'."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):  # the storage tool would read it as an option
            return value


def server_properties(
    log_dir: Path, port: int, controller_port: int, host: str = "127.0.0.1"
) -> dict[str, str]:
    """A single node that is both broker and controller, sized and timed for tests."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        # A group's first member waits 3 s for others by default; tests start members one by one.
        "group.initial.rebalance.delay.ms": "0",
        # A node restarted after SIGKILL waits until its old registration expires: 9 s by default.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
        "log.cleaner.backoff.ms": "1000",
        "log.cleaner.dedupe.buffer.size": "33554432",  # on the heap: 128 MB by default
        "num.network.threads": "2",
        "num.io.threads": "4",
    }


def render_properties(properties: Mapping[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def ports_of(properties_text: str) -> tuple[int, int] | None:
    """(port, controller port) of the listeners a properties file names, if it names both."""
    listeners = r"^listeners=PLAINTEXT://[^:,]+:(\d+),CONTROLLER://[^:,]+:(\d+)$"
    match = re.search(listeners, properties_text, re.MULTILINE)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def container_environment(advertised: str, container_port: int = 9092) -> dict[str, str]:
    """The same single node as environment variables of the `apache/kafka` image.

    The image turns `KAFKA_A_B` into `a.b`; once one is given it uses no default file, so
    all are given. It listens on every interface of the container and advertises
    `advertised` (the host's mapped port).
    """
    controller_port = container_port + 1
    properties = server_properties(CONTAINER_LOG_DIR, container_port, controller_port)
    properties["listeners"] = f"PLAINTEXT://0.0.0.0:{container_port},CONTROLLER://0.0.0.0:{controller_port}"
    properties["controller.quorum.voters"] = f"1@localhost:{controller_port}"
    properties["advertised.listeners"] = f"PLAINTEXT://{advertised}"
    return {"KAFKA_" + key.upper().replace(".", "_"): value for key, value in properties.items()}


def java_command(
    java: str, jars: Path, main: str, *args: str, jvm: tuple[str, ...] = BROKER_JVM
) -> list[str]:
    """A java command line on the jar directory; the class path wildcard goes to java unexpanded."""
    log4j = kafka_files() / "log4j2.properties"
    return [java, *jvm, f"-Dlog4j2.configurationFile={log4j}", "-cp", str(jars / "*"), main, *args]


def is_formatted(log_dir: Path) -> bool:
    return (log_dir / "meta.properties").is_file()


class KafkaBroker:
    """Context manager: run one KRaft Kafka node, yield its bootstrap address, stop it on exit.

    Without `log_dir` it runs in a fresh temporary directory, removed on exit; with one it
    formats the directory only if it is not formatted yet, so the data outlives a restart.
    Only the process this object started is ever signalled, by its pid; `kill` and
    `restart` are for chaos tests (the address stays the same across a restart).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        log_dir: Path | None = None,
        jars: Path | None = None,
        java: str | None = None,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 90.0,
        stop_timeout_s: float = 30.0,
        fetch: bool = False,
        say: Callable[[str], None] = print,
        extra_properties: Mapping[str, str] | None = None,
        format_options: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.controller_port = controller_port
        self.jars = jars if jars is not None else default_jars_dir(os.environ)
        self.java = java
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.fetch = fetch
        self.say = say
        #: Over the single-node properties: more listeners (SASL, TLS), their settings.
        self.extra_properties = dict(extra_properties or {})
        #: More options of the storage tool's `format` (e.g. `--add-scram` users).
        self.format_options = tuple(format_options)
        self._given_log_dir = log_dir
        self._temporary: Path | None = None
        self._log_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("the Kafka broker has not been started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def log_dir(self) -> Path:
        if self._log_dir is None:
            raise BrokerError("the Kafka broker has not been started")
        return self._log_dir

    @property
    def log_path(self) -> Path:
        return self.log_dir.parent / f"{self.log_dir.name}.broker.log"

    @property
    def properties_path(self) -> Path:
        return self.log_dir.parent / f"{self.log_dir.name}.server.properties"

    def start(self) -> str:
        """Start the node (formatting a fresh log dir first) and wait until it answers metadata."""
        if self._process is not None:
            return self.bootstrap
        java = self.java or find_java(os.environ)
        if self.fetch:
            fetch_jars(self.jars, environ=os.environ, say=self.say)
        jars = check_jars(self.jars)
        log_dir = self._prepare_log_dir()
        properties = self._write_properties(log_dir)
        if not is_formatted(log_dir):
            self._format(java, jars, properties)
        log = self._log = self.log_path.open("ab")
        process = self._process = subprocess.Popen(  # noqa: S603 - java found on the PATH, arguments built here
            java_command(java, jars, SERVER_MAIN, str(properties)),
            stdin=subprocess.DEVNULL,
            stdout=log,  # a file, not a pipe: a pipe nobody reads blocks the broker once it fills
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
        )
        try:
            wait_until_answers(
                self.bootstrap, process, self.startup_timeout_s, f"Kafka (log: {self.log_path})", self._tail
            )
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def _prepare_log_dir(self) -> Path:
        if self._log_dir is None:
            if self._given_log_dir is not None:
                self._log_dir = self._given_log_dir.resolve()
            else:
                self._temporary = Path(tempfile.mkdtemp(prefix="streamalloc-kafka-"))
                self._log_dir = self._temporary / "data"
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return self._log_dir

    def _write_properties(self, log_dir: Path) -> Path:
        path = self.properties_path
        if self.port is None and self.controller_port is None and path.is_file():
            self.port, self.controller_port = ports_of(path.read_text()) or (None, None)
        self.port = self.port or free_port(self.host)
        self.controller_port = self.controller_port or free_port(self.host)
        properties = server_properties(log_dir, self.port, self.controller_port, self.host)
        properties.update(self.extra_properties)
        path.write_text(render_properties(properties))
        return path

    def _format(self, java: str, jars: Path, properties: Path) -> None:
        command = java_command(
            java,
            jars,
            STORAGE_MAIN,
            "format",
            "-t",
            cluster_id(),
            "-c",
            str(properties),
            *self.format_options,
            jvm=TOOL_JVM,
        )
        try:
            done = subprocess.run(  # noqa: S603 - java found on the PATH, arguments built here
                command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting {self.log_dir} did not finish within {exc.timeout:.0f}s") from exc
        if done.returncode != 0:
            raise BrokerError(
                f"formatting {self.log_dir} failed (exit {done.returncode}): "
                f"{_last_lines(done.stdout + done.stderr)}"
            )

    def _tail(self) -> str:
        try:
            return _last_lines(self.log_path.read_text(errors="replace"))
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after `stop_timeout_s`; the data stays."""
        process, self._process = self._process, None
        log, self._log = self._log, None
        try:
            if process is not None:
                terminate(process, self.stop_timeout_s)
        finally:
            if log is not None:
                log.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean shutdown, the log dir needs recovery on restart."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(self.stop_timeout_s)
        self.stop()

    def restart(self) -> str:
        """Stop the node if it runs, then start it again on the same log dir and ports."""
        self.stop()
        return self.start()

    def wait(self) -> int:
        """Block until the broker exits on its own; return its exit code."""
        if self._process is None:
            raise BrokerError("the Kafka broker has not been started")
        return self._process.wait()

    def close(self) -> None:
        """Stop the node and remove its temporary directory, if this object made one."""
        try:
            self.stop()
        finally:
            temporary, self._temporary = self._temporary, None
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
                self._log_dir = None

    def __enter__(self) -> str:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _last_lines(text: str, lines: int = 5) -> str:
    """The end of a tool's output on one line, for an error message."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-800:] or "(no output)"
