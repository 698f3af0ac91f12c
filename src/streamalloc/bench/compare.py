"""`streamalloc bench compare`: the peer workload on a bare loop, Quix Streams and streamalloc.

The peer workload (../shared/peers, see its README) is N allocate/release messages over
1,000 SKUs, keyed by SKU, each SKU starting with 500 units. Its two reference processors
run from the peers directory as it is: `ck_baseline.py`, a bare transactional
confluent-kafka loop with a dict, and `quix_alloc.py`, Quix Streams with RocksDB state,
a changelog and exactly-once. They run in a virtual environment of their own (quixstreams
pins its own confluent-kafka), created once in the cache. streamalloc gets the same
messages, in the same order, as allocation-requests (allocate or release of line 1 of the
order), with one location holding 500 units of every SKU, and one worker decides them.

Every system is measured the same way, after its inputs are all written and before it
starts (measure.py's method): a read_committed counter assigned to the output topic counts
committed outputs; the rate is from the first committed output to the last (the outputs
of the first poll left out of the count, so a rate needs more than COUNTER_BATCH
messages: fewer can all arrive in one poll); CPU seconds and peak RSS are the processor's
process tree's, read before it is stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from streamalloc.bench.engine import cpu_seconds, event_type
from streamalloc.broker.process import terminate
from streamalloc.commands.topics import ensure_topics
from streamalloc.config import Settings
from streamalloc.errors import StreamallocError
from streamalloc.kafka import consume_available, consumer_config, produce, producer_config
from streamalloc.kafka.types import consumed
from streamalloc.serialization import topic_serde

COUNTER_BATCH = 10_000
"""The most outputs the counter takes in one poll (measure.py's figure)."""

SYSTEMS = ("bare", "quix", "streamalloc")
LABELS = {
    "bare": "bare confluent-kafka loop",
    "quix": "Quix Streams",
    "streamalloc": "streamalloc (one worker)",
}
QUIX_VERSION = "3.28.1"  # the version the peers' README measured
PEER_PARTITIONS = 4  # gen_orders.py's default, and streamalloc's
INITIAL_UNITS = 500  # each SKU's stock in the peer workload
LOCATION = "WH-1"
CHANNEL = "web"
# streamalloc's events for the peers' outputs: a decision on an allocate, or a release
DECISIONS = frozenset({"allocated", "rejected", "backordered", "released"})

Broker = Callable[[], AbstractContextManager[Settings]]


@dataclass(frozen=True)
class Measured:
    """One system's run: its committed outputs over time, CPU and memory."""

    system: str
    run: int
    messages: int
    outputs: int  # committed outputs counted when the last expected one came
    outputs_per_second: float
    cpu_seconds: float
    peak_rss_mb: float
    load: float  # the 1-minute load average when the run ended


def find_peers(start: Path) -> Path | None:
    """`shared/peers` in `start` or one of its parents (a clone sits beside ../shared)."""
    for directory in (start, *start.parents):
        candidate = directory / "shared" / "peers"
        if (candidate / "gen_orders.py").is_file():
            return candidate
    return None


def default_peers_venv(environ: dict[str, str] | os._Environ[str]) -> Path:
    cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "streamalloc" / "quix-venv"


def peers_python(venv: Path, say: Callable[[str], None], version: str = QUIX_VERSION) -> Path:
    """The Python of the peers' virtual environment (quixstreams `version`, orjson), made
    on first use with pip; StreamallocError when it cannot be made (no PyPI)."""
    python = venv / "bin" / "python"
    check = f"import orjson, quixstreams, sys; sys.exit(quixstreams.__version__ != {version!r})"
    if python.is_file() and subprocess.run([python, "-c", check], capture_output=True).returncode == 0:  # noqa: S603
        return python
    say(f"Creating the peers' virtual environment in {venv} (quixstreams=={version}, orjson)...")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"quixstreams=={version}", "orjson"],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)  # noqa: S603
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise StreamallocError(f"could not make the peers' venv in {venv}: {' / '.join(tail)}")
    return python


def order(systems: Sequence[str], run: int) -> list[str]:
    """The systems of one run, rotated by the run's number: runs interleave, no system is
    always first (or always last) on a machine that warms up or gets busier."""
    shift = run % len(systems)
    return [*systems[shift:], *systems[:shift]]


def run(
    broker: Broker,
    *,
    peers: Path,
    python: Path,
    systems: Sequence[str],
    runs: int,
    messages: int,
    skus: int,
    on_result: Callable[[Measured], None] = lambda m: None,
    say: Callable[[str], None] = print,
    timeout_s: float = 600.0,
) -> list[Measured]:
    """Each run measures every system in turn, each on a broker of its own from `broker`."""
    results: list[Measured] = []
    for number in range(1, runs + 1):
        for system in order(systems, number - 1):
            with broker() as settings:
                say(f"run {number}: {LABELS[system]} on {settings.bootstrap}")
                result = measure_one(
                    settings, system, number, peers=peers, python=python, messages=messages, skus=skus,
                    timeout_s=timeout_s,
                )  # fmt: skip
            results.append(result)
            on_result(result)
    return results


def measure_one(
    settings: Settings,
    system: str,
    number: int,
    *,
    peers: Path,
    python: Path,
    messages: int,
    skus: int,
    timeout_s: float,
) -> Measured:
    tag = f"compare{time.time_ns() % 10**9}"
    workdir = Path(tempfile.mkdtemp(prefix=f"streamalloc-compare-{system}-"))
    bootstrap = str(settings.bootstrap)
    if system == "streamalloc":
        settings = settings.replace(topic_prefix=f"{tag}.", app_id=tag, partitions=PEER_PARTITIONS)
        ensure_topics(settings)
        source, output = f"{tag}.peer-orders", settings.topic("allocations")
    else:
        source, output = f"{tag}.orders", f"{tag}.allocations"
    generate = [
        str(python), str(peers / "gen_orders.py"), "--bootstrap", bootstrap, "--n", str(messages),
        "--skus", str(skus), "--partitions", str(PEER_PARTITIONS), "--input", source, "--output", output,
    ]  # fmt: skip
    done = subprocess.run(generate, capture_output=True, text=True)  # noqa: S603
    if done.returncode != 0:
        raise StreamallocError(f"gen_orders.py failed: {done.stderr.strip()[-500:]}")
    if system == "streamalloc":
        _as_requests(settings, source, messages, skus)
        command = [
            sys.executable, "-m", "streamalloc", "--bootstrap", bootstrap, "--prefix", settings.topic_prefix,
            "--app-id", settings.app_id, "--state-dir", str(workdir / "state"),
            "--broker-profile", settings.broker_profile, "--log-level", "WARNING",
            "worker", "--no-create-topics",
        ]  # fmt: skip
        counts = _is_decision
    else:
        common = [
            "--bootstrap",
            bootstrap,
            "--input",
            source,
            "--output",
            output,
            "--group",
            f"{tag}-{system}",
        ]
        if system == "bare":
            command = [str(python), str(peers / "ck_baseline.py"), *common]
        else:
            command = [
                str(python), str(peers / "quix_alloc.py"), *common,
                "--state-dir", str(workdir / "quix-state"), "--commit-every", "5000", "--loglevel", "WARNING",
            ]  # fmt: skip
        counts = _any_output  # one per input
    return _measure(settings, system, number, output, messages, command, counts, workdir, timeout_s)


def _is_decision(value: bytes) -> bool:
    return event_type(value) in DECISIONS


def _any_output(value: bytes) -> bool:
    return True


def _as_requests(settings: Settings, source: str, messages: int, skus: int) -> None:
    """Write streamalloc's inputs: the stock (before), then the peer messages, read back from
    `source` partition by partition (each SKU's in order), as allocation-requests."""
    producer = Producer({**producer_config(settings), "linger.ms": 20})
    for name, key, record in (
        ("locations", LOCATION, {"location_id": LOCATION, "status": "online", "priority": 1}),
        ("channels", CHANNEL, {"channel_id": CHANNEL}),  # backorder_limit 0: no stock is a rejection
    ):
        serde = topic_serde(settings, settings.topic(name))
        produce(producer, serde.topic, serde.encode(serde.validate(record)), key.encode())
    inventory = topic_serde(settings, settings.topic("inventory"))
    at = int(time.time() * 1000) - 1000  # received before any order
    for i in range(skus):
        sku = f"sku-{i}"
        event = {"event_id": f"stock-{sku}", "type": "received", "sku": sku, "location": LOCATION,
                 "qty": INITIAL_UNITS, "occurred_at": at}  # fmt: skip
        produce(producer, inventory.topic, inventory.encode(inventory.validate(event)), sku.encode())
    producer.flush(60)
    requests = topic_serde(settings, settings.topic("allocation-requests"))
    reader = Consumer(consumer_config(settings, group_id=f"{settings.app_id}-feeder"))
    reader.assign([TopicPartition(source, p, 0) for p in range(PEER_PARTITIONS)])
    occurred_at = int(time.time() * 1000)
    try:
        copied = 0
        deadline = time.monotonic() + 120
        while copied < messages:
            if time.monotonic() > deadline:
                raise StreamallocError(f"read back only {copied} of {messages} peer messages from {source}")
            for msg in consumed(consume_available(reader, 10_000, 0.5)):
                value = msg.value()
                if msg.error() is not None or value is None:
                    continue
                peer = json.loads(value)
                kind = peer["op"]
                request = {
                    "event_id": f"{kind}-{peer['order_id']}", "cause_event_id": f"{kind}-{peer['order_id']}",
                    "command": kind, "order_id": peer["order_id"], "line_id": str(peer["line"]),
                    "sku": peer["sku"], "qty": peer["qty"], "channel": CHANNEL, "occurred_at": occurred_at,
                }  # fmt: skip
                produce(producer, requests.topic, requests.encode(requests.validate(request)), msg.key())
                copied += 1
        producer.flush(120)
    finally:
        reader.close()


def _measure(
    settings: Settings,
    system: str,
    number: int,
    topic: str,
    messages: int,
    command: list[str],
    counts: Callable[[bytes], bool],
    workdir: Path,
    timeout_s: float,
) -> Measured:
    counter = Consumer(
        consumer_config(settings, group_id=f"counter-{time.time_ns()}", **{"fetch.wait.max.ms": 50})
    )
    counter.assign([TopicPartition(topic, p, 0) for p in range(PEER_PARTITIONS)])
    counter.consume(1, 1.0)  # connected, with metadata, before the clock starts
    where = workdir / "processor.log"
    log = where.open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # noqa: S603
    count = first_poll = 0
    first_at = last_at = 0.0
    peak_kb: dict[int, int] = {}
    cpu = 0.0
    try:
        next_sample = 0.0
        deadline = time.monotonic() + timeout_s
        while count < messages:
            now = time.monotonic()
            if now >= next_sample:
                for pid in _tree(process.pid):
                    peak_kb[pid] = max(peak_kb.get(pid, 0), _status_kb(pid, "VmHWM"))
                next_sample = now + 0.2
            if now > deadline:
                raise StreamallocError(
                    f"{system}: {count} of {messages} outputs in {timeout_s:.0f}s; see {log.name}"
                )
            if process.poll() is not None:
                raise StreamallocError(
                    f"{system} exited with {process.returncode} after {count} outputs; see {log.name}"
                )
            got = 0
            for msg in consumed(consume_available(counter, COUNTER_BATCH, 0.1)):
                value = msg.value()
                if msg.error() is None and value is not None and counts(value):
                    got += 1
            if got:
                at = time.time()
                if not first_at:
                    first_at, first_poll = at, got
                count += got
                last_at = at
        tree = _tree(process.pid)
        for pid in tree:
            peak_kb[pid] = max(peak_kb.get(pid, 0), _status_kb(pid, "VmHWM"))
        cpu = sum(cpu_seconds(pid) for pid in tree)
    finally:
        terminate(process, 30)
        counter.close()
        log.close()
    # A run that failed keeps its directory (the errors above point to its log); a finished
    # one leaves nothing behind: each run's state (RocksDB, Quix's) is tens of MB.
    shutil.rmtree(workdir, ignore_errors=True)
    span = last_at - first_at
    return Measured(
        system=system,
        run=number,
        messages=messages,
        outputs=count,
        outputs_per_second=(count - first_poll) / span if span > 0 else float("nan"),
        cpu_seconds=cpu,
        peak_rss_mb=sum(peak_kb.values()) / 1024,
        load=os.getloadavg()[0],
    )


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    pids, i = [pid], 0
    while i < len(pids):
        task_dir = Path(f"/proc/{pids[i]}/task")
        i += 1
        try:
            for task in task_dir.iterdir():
                pids.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def summary(results: Sequence[Measured]) -> dict[str, dict[str, Any]]:
    """Per system: the median rate, the runs' rates, median CPU s, the highest peak RSS; and
    for streamalloc its ratio to Quix and to the bare loop, run by run (then the median)."""
    table: dict[str, dict[str, Any]] = {}
    for system in SYSTEMS:
        mine = [r for r in results if r.system == system]
        if mine:
            table[system] = {
                "rates": [r.outputs_per_second for r in mine],
                "rate": statistics.median(r.outputs_per_second for r in mine),
                "cpu_seconds": statistics.median(r.cpu_seconds for r in mine),
                "peak_rss_mb": max(r.peak_rss_mb for r in mine),
            }
    for peer in ("quix", "bare"):
        ratios = list(_ratios(results, peer, _rate))
        if ratios and "streamalloc" in table:
            table["streamalloc"][f"vs_{peer}"] = statistics.median(ratios)
            table["streamalloc"][f"vs_{peer}_runs"] = ratios
            # CPU per message does not depend on how busy the machine was
            table["streamalloc"][f"cpu_vs_{peer}"] = statistics.median(_ratios(results, peer, _per_cpu))
    return table


def _rate(measured: Measured) -> float:
    return measured.outputs_per_second


def _per_cpu(measured: Measured) -> float:
    return measured.messages / measured.cpu_seconds if measured.cpu_seconds > 0 else float("nan")


def _ratios(results: Sequence[Measured], peer: str, figure: Callable[[Measured], float]) -> Iterator[float]:
    figures = {(r.system, r.run): figure(r) for r in results}
    for (system, number), value in figures.items():
        if system == "streamalloc" and (peer, number) in figures:
            yield value / figures[(peer, number)]
