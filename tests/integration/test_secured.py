"""Secured clusters against real Apache Kafka: SASL/SCRAM-SHA-512 and TLS.

With the right credentials (from a Java client properties file, or from STREAMALLOC_KAFKA_*
variables) a worker decides an order; with a wrong password every command stops within
seconds in one line naming the cause, shows the password nowhere, and writes nothing; a
client that trusts the cluster's CA connects over TLS, one that does not is told why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import real_kafka_missing, under_ci
from tests.integration.helpers import produce, wait_for

from streamalloc.broker.kafka import KafkaBroker
from streamalloc.broker.process import free_port
from streamalloc.commands.io import read_to_end
from streamalloc.config import Settings
from streamalloc.kafka import admin_client
from streamalloc.serialization import topic_serde

pytestmark = pytest.mark.slow

USER = "alice"
PASSWORD = "alice-secret"  # noqa: S105 - the test cluster's SCRAM user
WRONG = "wr0ng-Pa55word"  # noqa: S105
KEYSTORE_PASSWORD = "broker-keystore-pass"  # noqa: S105


# ---------------------------------------------------------------- a secured Kafka for this module
# The session's KafkaBroker with two more listeners: a SASL_PLAINTEXT one (SCRAM-SHA-512, the user
# made when the log dir is formatted) and an SSL one; broker-to-broker and controller traffic
# stays on PLAINTEXT, which the launcher also uses to see that the node answers.


def secured_properties(
    *, plain: int, sasl: int, tls: int, controller: int, keystore: Path, keystore_password: str
) -> dict[str, str]:
    """What a single test node adds to KafkaBroker's properties for the SASL and SSL listeners."""
    host = "127.0.0.1"
    served = f"PLAINTEXT://{host}:{plain},SASL_PLAINTEXT://{host}:{sasl},SSL://{host}:{tls}"
    return {
        "listeners": f"{served},CONTROLLER://{host}:{controller}",
        "advertised.listeners": served,
        "listener.security.protocol.map": (
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL"
        ),
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(keystore),
        "ssl.keystore.password": keystore_password,
        "ssl.key.password": keystore_password,
    }


def make_tls_files(directory: Path, openssl: str) -> tuple[Path, Path]:
    """A throwaway CA (PEM) and a broker keystore (PKCS12) for 127.0.0.1 that the CA signed."""

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)  # noqa: S603

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=streamalloc-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.pem", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    run("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
        "-out", "broker.p12", "-name", "broker", "-passout", f"pass:{KEYSTORE_PASSWORD}")  # fmt: skip
    return directory / "ca.pem", directory / "broker.p12"


@dataclass(frozen=True)
class SecuredKafka:
    plain: str  # for checks made without credentials
    sasl: str
    tls: str
    ca: Path

    def sasl_properties(self, password: str = PASSWORD) -> dict[str, str]:
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": USER,
            "sasl.password": password,
        }


@pytest.fixture(scope="module")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    """Real Kafka with SASL and TLS listeners; missing java, jars or openssl skips (fails under CI)."""
    missing = real_kafka_missing() or (None if shutil.which("openssl") else "no openssl on PATH")
    if missing is not None:
        if under_ci():
            pytest.fail(f"CI=true, but a secured Kafka cannot start: {missing}", pytrace=False)
        pytest.skip(f"a secured Kafka cannot start here: {missing}")
    home = tmp_path_factory.mktemp("secured-kafka")
    ca, keystore = make_tls_files(home, str(shutil.which("openssl")))
    ports: list[int] = []
    while len(ports) < 4:  # four different free ports
        port = free_port()
        ports += [port] if port not in ports else []
    plain, sasl, tls, controller = ports
    properties = secured_properties(
        plain=plain,
        sasl=sasl,
        tls=tls,
        controller=controller,
        keystore=keystore,
        keystore_password=KEYSTORE_PASSWORD,
    )
    broker = KafkaBroker(
        port=plain,
        controller_port=controller,
        log_dir=home / "data",
        extra_properties=properties,
        format_options=("--add-scram", f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]"),
    )
    with broker:
        yield SecuredKafka(f"127.0.0.1:{plain}", f"127.0.0.1:{sasl}", f"127.0.0.1:{tls}", ca)


# ---------------------------------------------------------------- running the CLI against it


@dataclass
class Client:
    """How a test reaches the cluster: a bootstrap, a namespace, and credentials (file or env)."""

    bootstrap: str
    tmp: Path
    properties: dict[str, str]
    via: str  # "file" (Java format, JAAS line) or "env" (STREAMALLOC_KAFKA_*)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.prefix, self.app_id = f"s{tag}.", f"app-{tag}"

    def settings(self, properties: dict[str, str] | None = None) -> Settings:
        """In-process settings for the test's own checks (the right credentials by default)."""
        return Settings(
            bootstrap=self.bootstrap,
            broker_profile="kafka",
            topic_prefix=self.prefix,
            app_id=self.app_id,
            kafka_properties=self.properties if properties is None else properties,
        )

    def command(self, *args: str) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMALLOC_")}
        options = ["--bootstrap", self.bootstrap, "--prefix", self.prefix, "--app-id", self.app_id]
        if self.via == "file":
            path = self.tmp / f"client-{uuid.uuid4().hex[:6]}.properties"
            path.write_text(_java_properties(self.properties))
            options += ["--kafka-config", str(path)]
        else:
            for key, value in self.properties.items():
                env["STREAMALLOC_KAFKA_" + key.upper().replace(".", "_")] = value
        return [sys.executable, "-m", "streamalloc", *options, *args], env

    def run(self, *args: str, timeout: float = 90) -> tuple[subprocess.CompletedProcess[str], float]:
        command, env = self.command(*args)
        started = time.monotonic()
        done = subprocess.run(  # noqa: S603
            command, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        return done, time.monotonic() - started

    def jsonl(self, name: str, *records: dict[str, Any]) -> Path:
        path = self.tmp / f"{name}-{uuid.uuid4().hex[:6]}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path


def _java_properties(properties: dict[str, str]) -> str:
    """A client file as Kafka's tools take it: credentials in a SCRAM JAAS line."""
    lines = [f"{k}={v}" for k, v in properties.items() if k not in ("sasl.username", "sasl.password")]
    if "sasl.username" in properties:
        lines.append(
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
            f'    username="{properties["sasl.username"]}" \\\n'
            f'    password="{properties["sasl.password"]}";'
        )
    return "# written by tests/integration/test_secured.py\n" + "\n".join(lines) + "\n"


class Worker:
    """`streamalloc worker` in its own process, killed by pid if still alive at the end."""

    def __init__(self, client: Client) -> None:
        command, env = client.command("--state-dir", str(client.tmp / f"state-{client.app_id}"), "worker")
        self.log_path = client.tmp / f"worker-{client.app_id}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            raise AssertionError(f"the worker ignored SIGTERM:\n{self.log()[-3000:]}") from None


LOCATION = {"location_id": "WH-1", "status": "online", "priority": 10, "region": "east", "regions_served": []}
CHANNEL = {"channel_id": "web", "priority": 10, "safety_stock": 0, "backorder_limit": 0}


def now_ms() -> int:
    return int(time.time() * 1000)


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def decide_an_order(client: Client) -> None:
    """Tables, a worker, a receipt and an order through the CLI; the order must be allocated."""
    ok(client.run("topics", "create")[0])
    ok(client.run("produce", f"{client.prefix}locations", str(client.jsonl("locations", LOCATION)))[0])
    ok(client.run("produce", f"{client.prefix}channels", str(client.jsonl("channels", CHANNEL)))[0])
    settings = client.settings()
    worker = Worker(client)
    try:
        sku, order_id = f"SKU-{client.app_id}", f"ord-{client.app_id}"
        receipt = {"event_id": f"inv-{order_id}", "type": "received", "sku": sku, "location": "WH-1",
                   "qty": 5, "occurred_at": now_ms()}  # fmt: skip
        ok(client.run("produce", f"{client.prefix}inventory", str(client.jsonl("inventory", receipt)))[0])

        def received() -> bool:
            return any(a["sku"] == sku for a in read_to_end(settings, settings.topic("availability"), 10))

        wait_for(received, 90, "the receipt on the availability topic")
        order = {"event_id": f"ev-{order_id}", "type": "placed", "order_id": order_id, "channel": "web",
                 "occurred_at": now_ms(), "lines": [{"line_id": "1", "sku": sku, "qty": 2}]}  # fmt: skip
        ok(client.run("produce", f"{client.prefix}orders", str(client.jsonl("orders", order)))[0])

        def allocated() -> list[dict[str, Any]]:
            events = read_to_end(settings, settings.topic("allocations"), 10)
            return [e for e in events if e["order_id"] == order_id and e["type"] == "allocated"]

        wait_for(lambda: bool(allocated()), 90, "the order's allocation")
        [decision] = allocated()
        assert (decision["sku"], decision["qty"], decision["location"]) == (sku, 2, "WH-1")
        # and the CLI's reader sees it with the same credentials
        printed, _ = client.run(
            "consume", f"{client.prefix}allocations", "--from-beginning", "--idle-timeout", "3"
        )
        shown = [json.loads(line) for line in ok(printed).stdout.splitlines()]
        assert any(e["type"] == "allocated" and e["order_id"] == order_id for e in shown), shown
    finally:
        code = worker.stop()
    assert code == 0, f"the worker exited with {code}:\n{worker.log()[-3000:]}"


def written_by(client: Client) -> tuple[list[str], list[str]]:
    """Topics of the client's namespace and consumer groups of its app id, seen with good credentials."""
    admin = admin_client(client.settings())
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith((client.prefix, client.app_id))]
    groups = [g.group_id for g in admin.list_consumer_groups(request_timeout=10).result(timeout=15).valid]
    return sorted(topics), sorted(g for g in groups if g.startswith(client.app_id))


# ---------------------------------------------------------------- SASL/SCRAM


@pytest.mark.parametrize("via", ["file", "env"])
def test_a_worker_with_the_right_credentials_decides_orders(
    secured_kafka: SecuredKafka, tmp_path: Path, via: str
) -> None:
    decide_an_order(Client(secured_kafka.sasl, tmp_path, secured_kafka.sasl_properties(), via))


def _refused_commands(client: Client) -> dict[str, list[str]]:
    order = {"event_id": "e-1", "type": "placed", "order_id": "o-1", "channel": "web",
             "occurred_at": now_ms(), "lines": [{"line_id": "1", "sku": "S-1", "qty": 1}]}  # fmt: skip
    return {
        "topics-create": ["topics", "create"],
        "produce": ["produce", f"{client.prefix}orders", str(client.jsonl("orders", order))],
        "consume": ["consume", f"{client.prefix}allocations", "--from-beginning"],
        "worker": ["--state-dir", str(client.tmp / "state"), "worker"],
    }


@pytest.mark.parametrize(
    ("command", "via"),
    [("topics-create", "file"), ("produce", "env"), ("consume", "file"), ("worker", "env")],
)
def test_a_wrong_password_fails_fast_in_one_line_and_writes_nothing(
    secured_kafka: SecuredKafka, tmp_path: Path, command: str, via: str
) -> None:
    client = Client(secured_kafka.sasl, tmp_path, secured_kafka.sasl_properties(WRONG), via)
    done, seconds = client.run(*_refused_commands(client)[command], timeout=60)

    assert done.returncode != 0
    assert seconds < 15, f"took {seconds:.1f}s"
    output = done.stdout + done.stderr
    assert WRONG not in output
    assert done.stdout == ""
    # one message (the console may wrap it), no log lines, no traceback
    assert [line.split(":")[0] for line in done.stderr.splitlines()].count("error") == 1, done.stderr
    assert "Traceback" not in output and "{" not in output, done.stderr
    message = " ".join(done.stderr.split())
    assert message.startswith(
        f"error: authentication failed for sasl.username={USER} with SCRAM-SHA-512 at {secured_kafka.sasl}: "
        "SASL authentication error"
    ), message
    client.properties = secured_kafka.sasl_properties()  # look with the right password
    assert written_by(client) == ([], [])


# ---------------------------------------------------------------- TLS


def test_a_client_that_trusts_the_cluster_ca_connects_over_tls(
    secured_kafka: SecuredKafka, tmp_path: Path
) -> None:
    properties = {"security.protocol": "SSL", "ssl.ca.location": str(secured_kafka.ca)}
    client = Client(secured_kafka.tls, tmp_path, properties, "env")
    done = ok(client.run("topics", "create")[0])
    assert f"+ {client.prefix}orders" in done.stdout
    assert f"{client.prefix}orders" in written_by(client)[0]


def test_a_client_without_the_cluster_ca_is_told_why_tls_failed(
    secured_kafka: SecuredKafka, tmp_path: Path
) -> None:
    client = Client(secured_kafka.tls, tmp_path, {"security.protocol": "SSL"}, "file")
    done, seconds = client.run("topics", "create", timeout=60)
    assert done.returncode != 0
    assert seconds < 15, f"took {seconds:.1f}s"
    message = " ".join(done.stderr.split())
    assert message.startswith(
        f"error: TLS handshake with {secured_kafka.tls} failed (ssl.ca.location=unset): SSL handshake failed"
    ), message
    assert "certificate verify failed" in message
    client.properties = {"security.protocol": "SSL", "ssl.ca.location": str(secured_kafka.ca)}
    assert written_by(client) == ([], [])


# ---------------------------------------------------------------- the services (faust on aiokafka)


def _availability(sku: str, ats: int) -> dict[str, Any]:
    zero = dict.fromkeys(("on_hand", "allocated", "picked", "quality_control", "damaged", "safety_stock"), 0)
    return {"event_id": f"av-{sku}", "cause_event_id": f"inv-{sku}", "sku": sku, "as_of": now_ms(),
            "totals": {**zero, "on_hand": ats, "available": ats}, "locations": [],
            "channels": [{"channel": "web", "ats": ats}]}  # fmt: skip


def test_channel_sync_with_the_right_credentials_consumes_and_publishes(
    secured_kafka: SecuredKafka, tmp_path: Path
) -> None:
    """The credentials come from a Java client file (SCRAM JAAS line), as the engine takes them."""
    client = Client(secured_kafka.sasl, tmp_path, secured_kafka.sasl_properties(), "file")
    ok(client.run("topics", "create")[0])
    settings = client.settings()
    port = free_port()
    command, env = client.command(
        "--state-dir", str(tmp_path / "services"), "service", "channel-sync", "--window-ms", "0",
        "--http-port", str(port),
    )  # fmt: skip
    log_path = tmp_path / "channel-sync.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        sku = f"SKU-{client.app_id}"
        serde = topic_serde(settings, settings.topic("availability"))
        record = serde.encode(serde.validate(_availability(sku, 7)))
        produce(settings, serde.topic, [(sku.encode(), record)])

        def pushed() -> list[dict[str, Any]]:
            if process.poll() is not None:
                raise AssertionError(f"channel-sync exited:\n{log_path.read_text(errors='replace')[-3000:]}")
            feed = read_to_end(settings, settings.topic("channel-ats"), 10)
            return [p for p in feed if p["sku"] == sku]

        try:
            wait_for(lambda: bool(pushed()), 120, "channel-sync's push on channel-ats")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_path.read_text(errors='replace')[-3000:]}") from None
        [push] = pushed()
        assert (push["channel"], push["ats"], push["feed_key"]) == ("web", 7, f"web:{sku}")
        groups = written_by(client)[1]
        assert f"{client.app_id}-channel-sync" in groups  # it joined its group over SASL
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            code = -9
    assert code == 0, f"channel-sync exited with {code}:\n{log_path.read_text(errors='replace')[-3000:]}"
    assert PASSWORD not in log_path.read_text(errors="replace")


@pytest.mark.parametrize(("service", "via"), [("channel-sync", "file"), ("routing", "env")])
def test_a_service_with_a_wrong_password_fails_fast_in_one_line(
    secured_kafka: SecuredKafka, tmp_path: Path, service: str, via: str
) -> None:
    client = Client(secured_kafka.sasl, tmp_path, secured_kafka.sasl_properties(WRONG), via)
    done, seconds = client.run("--state-dir", str(tmp_path / "state"), "service", service, timeout=60)
    assert done.returncode != 0
    print(f"{service} refused in {seconds:.1f}s")  # measured, not bounded: the machine is shared
    output = done.stdout + done.stderr
    assert WRONG not in output and "Traceback" not in output, output
    assert [line.split(":")[0] for line in done.stderr.splitlines()].count("error") == 1, done.stderr
    message = " ".join(done.stderr.split())
    assert message.startswith(
        f"error: authentication failed for sasl.username={USER} with SCRAM-SHA-512 at {secured_kafka.sasl}: "
    ), message
    client.properties = secured_kafka.sasl_properties()
    assert written_by(client) == ([], [])


def test_a_service_refuses_client_properties_it_cannot_map_in_one_line(
    secured_kafka: SecuredKafka, tmp_path: Path
) -> None:
    properties = {**secured_kafka.sasl_properties(), "sasl.mechanism": "OAUTHBEARER"}
    client = Client(secured_kafka.sasl, tmp_path, properties, "env")
    done, _ = client.run("service", "routing", timeout=60)
    assert done.returncode != 0
    message = " ".join(done.stderr.split())
    assert message.startswith("error: sasl.mechanism=OAUTHBEARER: the services take PLAIN"), message
    assert PASSWORD not in done.stdout + done.stderr
