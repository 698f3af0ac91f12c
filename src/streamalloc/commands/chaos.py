"""`streamalloc chaos`: workers killed under load, one broker crash, then the verifier and the audit.

Modelled on Kafka Streams' exactly-once system test: N worker processes run under a steady
order load (the demo's channels, cancellations, warehouse picks, shipments and returns,
plus receipts); every `kill_every_s` a random worker is killed with SIGKILL and started
again on its state directory; with `broker_fault` the Kafka broker itself is killed with
SIGKILL once, mid-run, and restarted on its log dir. Then the load stops, the group
settles (no committed input record is left after the group's committed offsets), the
workers stop, and two independent checks read the committed topics:
`chaos_verify.verify` (replay of the committed inputs through the domain against the
engine's decisions and last availability records) and the audit (`commands/audit.py`).

Reservations get no deadline and no table changes during the run: the verifier replays
inputs, and the clock's decisions are not inputs (chaos_verify.py).
"""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamalloc.audit import AuditReport
from streamalloc.broker.process import terminate_all
from streamalloc.chaos_verify import Positioned, Verification, verify
from streamalloc.commands.audit import run_audit
from streamalloc.commands.io import order_topics, produce_file, read_to_end
from streamalloc.commands.replay import read_table_topics
from streamalloc.commands.simulation import (
    CHANNELS,
    SKUS,
    Progress,
    Publisher,
    examples_dir,
    now_ms,
    place_orders,
    start_worker,
    stock,
    wait_until_engine_has,
    warehouse,
)
from streamalloc.commands.topics import ensure_topics
from streamalloc.config import Settings
from streamalloc.errors import BrokerError, StreamallocError
from streamalloc.kafka import consumer_config, kafka_errors
from streamalloc.kafka.types import consumed
from streamalloc.serialization import topic_serde
from streamalloc.topics import ALLOCATION_REQUESTS

LOCATIONS = ("WH-EAST", "STORE-NYC", "3PL-WEST")
#: The engine's outputs: every record carries a deterministic event id, so none may repeat.
OUTPUTS = ("allocations", "availability", "order-status", "stock-changes")
#: How long the broker stays down in a broker fault.
BROKER_DOWN_S = 3.0
#: No line decided for this long while lines wait: the workers are stuck, not slow (a
#: killed member's partitions move after session.timeout.ms, 10 s, and restore in seconds).
STALL_S = 45.0
#: How long the workers have, together, to exit after the final SIGTERM: a commit, leaving
#: the group and closing the stores take a second or two; a transactional call that never
#: returns must not hold the process (runtime/checkpoint.py `TxnCalls`).
STOP_GRACE_S = 30.0


class Broker(Protocol):
    """What a broker fault needs of the broker (broker.kafka.KafkaBroker)."""

    def kill(self) -> None: ...

    def restart(self) -> str: ...


@dataclass
class ChaosStats:
    """What happened while the load ran; shown live and in the final table."""

    progress: Progress = field(default_factory=Progress)
    started: float = field(default_factory=time.monotonic)
    load_s: float = 0.0
    kills: int = 0
    broker_faults: int = 0
    receipts: int = 0
    phase: str = "starting"
    own_exits: list[str] = field(default_factory=list)  # workers that exited without being killed
    stalls: list[str] = field(default_factory=list)  # times no worker decided anything for STALL_S
    #: workers still running STOP_GRACE_S after the final SIGTERM (then SIGKILLed)
    hung_on_stop: list[str] = field(default_factory=list)
    stall_s: float = STALL_S
    last_decided: int = 0
    last_decision: float = field(default_factory=time.monotonic)

    def note_decisions(self) -> None:
        if self.progress.lines_decided != self.last_decided:
            self.last_decided, self.last_decision = self.progress.lines_decided, time.monotonic()


@dataclass
class ChaosResult:
    stats: ChaosStats
    verification: Verification
    report: AuditReport
    doubled_outputs: dict[str, int]
    workdir: Path

    @property
    def ok(self) -> bool:
        """Nothing lost, doubled or mismatched: the verifier, the audit, no event id twice."""
        return self.verification.ok and self.report.ok and not any(self.doubled_outputs.values())

    @property
    def recovered(self) -> bool:
        """The workers recovered from every fault on their own: none exited unbidden, and no
        stall needed the harness to restart them."""
        return not self.stats.stalls and not self.stats.own_exits

    @property
    def stopped(self) -> bool:
        """Every worker exited on the final SIGTERM, within STOP_GRACE_S: none had to be killed."""
        return not self.stats.hung_on_stop


class _Workers:
    """The worker processes, by slot; each slot keeps its state dir across restarts."""

    def __init__(self, settings: Settings, count: int, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(count):
            self.procs.append(start_worker(settings, f"worker-{i + 1}", workdir))

    def kill_and_restart(self, slot: int) -> int:
        """SIGKILL the worker in `slot` (by its pid) and start it again; the killed pid."""
        victim = self.procs[slot]
        victim.send_signal(signal.SIGKILL)  # no commit, no leaving the group, transactions left open
        victim.wait(10)
        self.procs[slot] = start_worker(self.settings, f"worker-{slot + 1}", self.workdir)
        return victim.pid

    def exited(self) -> list[tuple[int, int]]:
        """(slot, exit code) of the workers that exited on their own."""
        return [(i, p.returncode) for i, p in enumerate(self.procs) if p.poll() is not None]

    def restart(self, slot: int) -> None:
        self.procs[slot] = start_worker(self.settings, f"worker-{slot + 1}", self.workdir)

    def stop(self) -> list[str]:
        """SIGTERM to all (commit, leave the group); SIGKILL those still running STOP_GRACE_S
        later, and say which they were: a worker must exit when told."""
        killed = terminate_all(self.procs, STOP_GRACE_S)
        return [
            f"worker-{slot + 1} (pid {proc.pid}) still ran {STOP_GRACE_S:.0f}s after SIGTERM"
            for slot, proc in enumerate(self.procs)
            if proc in killed
        ]


def _receipts(publisher: Publisher, stop: threading.Event, seed: int, stats: ChaosStats) -> None:
    """Stock keeps arriving: a few units of a random SKU at a random location, five times a second."""
    rng = random.Random(seed)
    while not stop.wait(0.2):
        stats.receipts += 1
        publisher.stock(
            {"event_id": f"chaos-recv-{seed}-{stats.receipts}", "type": "received", "sku": rng.choice(SKUS),
             "location": rng.choice(LOCATIONS), "qty": rng.choice((5, 10, 15)), "occurred_at": now_ms()}
        )  # fmt: skip
        publisher.producer.poll(0)
    publisher.producer.flush(30)


def run_chaos(
    settings: Settings,
    *,
    workers: int = 3,
    minutes: float = 10.0,
    kill_every_s: float = 10.0,
    broker: Broker | None = None,
    rate: float = 10.0,
    seed: int = 7,
    settle_timeout_s: float = 240.0,
    workdir: Path | None = None,
    stall_s: float = STALL_S,
    on_progress: Callable[[ChaosStats], None] = lambda s: None,
    say: Callable[[str], None] = print,
) -> ChaosResult:
    """Run the chaos test against `settings.bootstrap`; with `broker`, kill it once mid-run.

    `settings` should name fresh topics (their own prefix and app id): the checks read
    the topics whole. Every process this starts is stopped before it returns or raises.
    Worker logs and state go to `workdir` (a new temporary dir if None) and stay there.
    """
    # This process's own clients (the load, the readers) lose the broker on purpose: their
    # librdkafka complaints would bury the progress. The workers log to their own files.
    client_log = logging.getLogger("streamalloc.kafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        return _run(
            settings, workers, minutes, kill_every_s, broker, rate, seed, settle_timeout_s, workdir,
            stall_s, on_progress, say,
        )  # fmt: skip
    finally:
        client_log.setLevel(level)


def _run(
    settings: Settings,
    workers: int,
    minutes: float,
    kill_every_s: float,
    broker: Broker | None,
    rate: float,
    seed: int,
    settle_timeout_s: float,
    workdir: Path | None,
    stall_s: float,
    on_progress: Callable[[ChaosStats], None],
    say: Callable[[str], None],
) -> ChaosResult:
    ensure_topics(settings, channels=CHANNELS)
    produce_file(settings, settings.topic("locations"), examples_dir() / "locations.jsonl")
    produce_file(settings, settings.topic("channels"), examples_dir() / "channels.jsonl")
    publisher = Publisher(settings)
    stocked = stock(publisher, random.Random(seed))
    workdir = workdir or Path(tempfile.mkdtemp(prefix="streamalloc-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stats = ChaosStats(stall_s=stall_s)
    rng = random.Random(seed)
    stop_load, stop_warehouse = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    pool = _Workers(settings, workers, workdir)
    say(f"{workers} workers started (pids {', '.join(str(p.pid) for p in pool.procs)}); logs in {workdir}")
    try:
        stats.phase = "waiting for the engine"
        wait_until_engine_has(settings, stocked, timeout_s=120)
        threads.append(_thread(warehouse, settings, publisher, stats.progress, stop_warehouse, seed))
        for i, channel in enumerate(CHANNELS):
            threads.append(
                _thread(
                    place_orders,
                    publisher,
                    channel,
                    10**9,
                    rate,
                    seed + i,
                    stats.progress,
                    stop=stop_load,
                    ttl_s={},
                )  # fmt: skip
            )
        threads.append(_thread(_receipts, publisher, stop_load, seed, stats))
        _drive(pool, stats, rng, minutes * 60, kill_every_s, broker, on_progress, say)
        stop_load.set()
        stats.phase = "settling"
        _settle(settings, pool, stats, settle_timeout_s, on_progress, say)
        stop_warehouse.set()
        _wait_until_consumed(settings, pool, stats, settle_timeout_s, on_progress)
    finally:
        stop_load.set()
        stop_warehouse.set()
        for thread in threads:
            thread.join(30)
        stats.hung_on_stop = pool.stop()
    stats.phase = "verifying"
    on_progress(stats)
    say("workers stopped; verifying the committed topics")
    verification = run_verifier(settings)
    report = run_audit(settings)
    doubled = doubled_outputs(settings)
    return ChaosResult(stats, verification, report, doubled, workdir)


def _thread(target: Callable[..., None], *args: Any, **kwargs: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def _drive(
    pool: _Workers,
    stats: ChaosStats,
    rng: random.Random,
    duration_s: float,
    kill_every_s: float,
    broker: Broker | None,
    on_progress: Callable[[ChaosStats], None],
    say: Callable[[str], None],
) -> None:
    """The load runs for `duration_s`: a worker killed every `kill_every_s`, the broker once."""
    stats.phase = "under load"
    start = time.monotonic()
    next_kill = start + kill_every_s
    fault_at = start + duration_s / 2 if broker is not None else None
    while (now := time.monotonic()) - start < duration_s:
        stats.load_s = now - start
        on_progress(stats)
        _restart_own_exits(pool, stats, say)
        _restart_if_stalled(pool, stats, say)
        if now >= next_kill:
            slot = rng.randrange(len(pool.procs))
            pid = pool.kill_and_restart(slot)
            stats.kills += 1
            say(f"killed worker-{slot + 1} (pid {pid}) with SIGKILL at {now - start:.0f}s; restarted it")
            next_kill = now + kill_every_s
        if broker is not None and fault_at is not None and now >= fault_at:
            fault_at = None
            say(f"killing the Kafka broker with SIGKILL at {now - start:.0f}s")
            broker.kill()
            time.sleep(BROKER_DOWN_S)
            broker.restart()
            stats.broker_faults += 1
            stats.last_decision = time.monotonic()  # the stall clock starts when the broker is back
            say(f"the broker is back after {time.monotonic() - now:.0f}s")
        time.sleep(0.25)
    stats.load_s = time.monotonic() - start


def _restart_if_stalled(pool: _Workers, stats: ChaosStats, say: Callable[[str], None]) -> None:
    """Lines wait and no worker decided one for `stall_s`: restart them all, as a liveness
    probe would, and note it (the run then reports the workers did not recover alone)."""
    stats.note_decisions()
    waiting = stats.progress.lines_placed - stats.progress.lines_decided
    if waiting <= 0 or time.monotonic() - stats.last_decision < stats.stall_s:
        return
    at = time.monotonic() - stats.started
    what = f"no line decided for {stats.stall_s:.0f}s with {waiting} waiting, {at:.0f}s into the run"
    stats.stalls.append(what)
    say(f"{what}: the workers are stuck; killing and restarting all of them, as a liveness probe would")
    for slot in range(len(pool.procs)):
        pool.kill_and_restart(slot)
    stats.last_decision = time.monotonic()


def _restart_own_exits(pool: _Workers, stats: ChaosStats, say: Callable[[str], None]) -> None:
    """A worker that exits without being killed is a finding: noted, then started again."""
    for slot, code in pool.exited():
        what = f"worker-{slot + 1} (pid {pool.procs[slot].pid}) exited on its own with {code}"
        stats.own_exits.append(what)
        say(f"{what}; see {pool.workdir}; starting it again")
        pool.restart(slot)


def _settle(
    settings: Settings,
    pool: _Workers,
    stats: ChaosStats,
    timeout_s: float,
    on_progress: Callable[[ChaosStats], None],
    say: Callable[[str], None],
) -> None:
    """Wait until the warehouse has nothing left to react to and the engine has consumed every input."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        on_progress(stats)
        _restart_own_exits(pool, stats, say)
        _restart_if_stalled(pool, stats, say)
        quiet = time.monotonic() - stats.progress.last_event > 3.0
        if quiet and pending_inputs(settings) == 0:
            return
        time.sleep(1.0)
    raise StreamallocError(f"the engine did not settle within {timeout_s:.0f}s; see {pool.workdir}")


def _wait_until_consumed(
    settings: Settings,
    pool: _Workers,
    stats: ChaosStats,
    timeout_s: float,
    on_progress: Callable[[ChaosStats], None],
) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := pending_inputs(settings)) != 0:
        on_progress(stats)
        if time.monotonic() > deadline:
            raise StreamallocError(f"{left} input record(s) still unconsumed after {timeout_s:.0f}s")
        time.sleep(1.0)


def engine_inputs(settings: Settings) -> list[str]:
    """Every topic the worker group consumes: orders, inventory, allocation-requests, allocations."""
    return [
        *order_topics(settings),
        settings.topic("inventory"),
        settings.topic(ALLOCATION_REQUESTS),
        settings.topic("allocations"),
    ]


def pending_inputs(settings: Settings, timeout_s: float = 60.0) -> int:
    """Committed records of the group's inputs after its committed offsets (0: settled).

    Not committed offset == high watermark: on a transactional topic the last record is
    followed by a commit marker a read_committed consumer never sees, so the engine's
    committed offset may stop short of the watermark with nothing left to read. A killed
    worker's open transaction makes the broker answer UNSTABLE_OFFSET_COMMIT until it is
    aborted (transaction.timeout.ms) or fenced; librdkafka then times out: ask again.
    """
    consumer = Consumer(consumer_config(settings, group_id=settings.app_id, **{"enable.partition.eof": True}))
    try:
        with kafka_errors("reading the group's committed offsets"):
            partitions = [
                TopicPartition(topic, p)
                for topic in engine_inputs(settings)
                for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
            ]
            committed = _committed(consumer, partitions, timeout_s)
            starts = [TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)) for tp in committed]
            return _count_to_end(consumer, starts, timeout_s)
    finally:
        consumer.close()


def _committed(
    consumer: Consumer, partitions: list[TopicPartition], timeout_s: float
) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return list(consumer.committed(partitions, timeout=10))
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._TIMED_OUT or time.monotonic() > deadline:
                raise


def _count_to_end(consumer: Consumer, starts: list[TopicPartition], timeout_s: float) -> int:
    """Records (read_committed) from `starts` to the end of each partition; never commits."""
    consumer.assign(starts)
    pending = {(tp.topic, tp.partition) for tp in starts}
    count = 0
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise BrokerError(
                f"did not reach the end of {len(pending)} input partition(s) in {timeout_s:.0f}s"
            )
        for msg in consumed(consumer.consume(10_000, 0.5)):
            error = msg.error()
            if error is None:
                count += 1
            elif error.code() == KafkaError._PARTITION_EOF:
                pending.discard((msg.topic(), msg.partition()))
            else:
                raise BrokerError(str(error))
    return count


def read_positioned(settings: Settings, topic: str, timeout_s: float = 120.0) -> list[Positioned]:
    """Every committed record of `topic`, decoded, with its partition, offset and timestamp."""
    serde = topic_serde(settings, topic)
    config = consumer_config(
        settings,
        group_id=f"{settings.app_id}-verify-{uuid.uuid4().hex[:8]}",
        **{"enable.partition.eof": True},
    )
    consumer = Consumer(config)
    out: list[Positioned] = []
    try:
        with kafka_errors(f"reading {topic}"):
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            pending = set(partitions)
            deadline = time.monotonic() + timeout_s
            while pending:
                if time.monotonic() > deadline:
                    raise BrokerError(f"did not reach the end of {topic} within {timeout_s:.0f}s")
                for msg in consumed(consumer.consume(10_000, 0.5)):
                    error, value = msg.error(), msg.value()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise BrokerError(str(error))
                        pending.discard(msg.partition())
                    elif value is not None:
                        out.append(
                            Positioned(msg.partition(), msg.offset(), msg.timestamp()[1], serde.decode(value))
                        )
    finally:
        consumer.close()
    return out


def _refused_ids(settings: Settings) -> set[str]:
    """Event ids the engine dead-lettered (never applied), of the topics it could decode."""
    refused: set[str] = set()
    for letter in read_to_end(settings, settings.topic("dead-letter")):
        if not letter["value"]:
            continue
        try:
            refused.add(topic_serde(settings, letter["source_topic"]).decode(letter["value"])["event_id"])
        except (StreamallocError, KeyError):
            continue  # never decoded, so never applied either
    return refused


def run_verifier(settings: Settings) -> Verification:
    """Read the committed topics and run `chaos_verify.verify` on them, with the `locations`,
    `channels` and `kits` tables as their topics end, read as the workers read them."""
    tables, _ = read_table_topics(settings, say=lambda _: None)
    return verify(
        orders=[event for topic in order_topics(settings) for event in read_to_end(settings, topic)],
        requests=read_positioned(settings, settings.topic(ALLOCATION_REQUESTS)),
        inventory=read_positioned(settings, settings.topic("inventory")),
        allocations=read_to_end(settings, settings.topic("allocations")),
        stock_changes=read_to_end(settings, settings.topic("stock-changes")),
        availability_records=read_to_end(settings, settings.topic("availability")),
        tables=tables.tables(),
        refused_ids=_refused_ids(settings),
        kits=tables.kits(),
    )


def doubled_outputs(settings: Settings, names: Sequence[str] = OUTPUTS) -> dict[str, int]:
    """Per output topic, how many event ids a read_committed reader sees more than once."""
    doubled: dict[str, int] = {}
    for name in names:
        ids = Counter(event["event_id"] for event in read_to_end(settings, settings.topic(name)))
        doubled[name] = sum(1 for n in ids.values() if n > 1)
    return doubled


# ---------------------------------------------------------------- the command


def fresh_settings(settings: Settings, bootstrap: str, *, started: bool) -> Settings:
    """Settings for one chaos run: its own topics and group (the checks read them whole)."""
    from streamalloc.kafka.clients import resolve_profile

    tag = uuid.uuid4().hex[:6]
    chosen = settings.replace(bootstrap=bootstrap, topic_prefix=f"chaos-{tag}.", app_id=f"chaos-{tag}")
    return chosen.replace(broker_profile="kafka") if started else resolve_profile(chosen)


def progress_line(stats: ChaosStats, minutes: float) -> str:
    p = stats.progress
    return (
        f"{stats.phase}: {stats.load_s:4.0f}/{minutes * 60:.0f}s  lines placed {p.lines_placed}  "
        f"decided {p.lines_decided}  kills {stats.kills}  broker faults {stats.broker_faults}"
    )


def summary_rows(result: ChaosResult) -> list[tuple[str, str]]:
    """The final table: load held, faults survived, what the verifier and the audit found."""
    stats, v, report = result.stats, result.verification, result.report
    load_s = max(stats.load_s, 1e-9)
    doubled = sum(result.doubled_outputs.values())
    return [
        ("load", f"{stats.load_s:.0f} s, {stats.receipts} receipts"),
        ("lines placed (committed)", f"{report.lines_placed} ({report.lines_placed / load_s:.1f}/s offered)"),
        ("lines decided", f"{report.lines_decided} ({report.lines_decided / load_s:.1f}/s)"),
        ("worker kills survived", str(stats.kills)),
        ("broker faults survived", str(stats.broker_faults)),
        ("workers that exited on their own", str(len(stats.own_exits))),
        ("stalls (all workers stuck, restarted)", str(len(stats.stalls))),
        ("workers killed after SIGTERM (did not stop)", str(len(stats.hung_on_stop))),
        (
            "verifier",
            f"{v.skus_checked} SKU(s), {v.locations_checked} location balance(s), "
            f"{v.decisions_checked} decision(s), {v.requests_checked} request(s) checked; "
            f"{v.skus_not_replayable} not replayable",
        ),
        (
            "verifier mismatches",
            f"{v.mismatches} (balances {v.balance_mismatches}, lost decisions {v.lost_decisions}, "
            f"extra {v.extra_decisions}, doubled outputs {v.doubled_outputs}, "
            f"lost requests {v.lost_requests}, doubled requests {v.doubled_requests})",
        ),
        (
            "event ids seen twice (read_committed)",
            f"{doubled} {result.doubled_outputs if doubled else ''}".strip(),
        ),
        (
            "audit",
            f"{'pass' if report.ok else 'FAIL'}: {len(report.breaches)} breach(es), "
            f"{report.oversold_units} unit(s) oversold, "
            f"{report.lines_decided}/{report.lines_placed} lines decided",
        ),
        (
            "result",
            ("PASS" if result.ok else "FAIL: lost, doubled or mismatched")
            + ("" if result.recovered else "; the workers did not recover on their own"),
        ),
    ]
