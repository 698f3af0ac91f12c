"""faust-streaming behind a small typed surface, so the services read as plain typed code.

faust ships type hints, but its decorators (`app.agent`, `app.timer`) are not typed for
strict mypy; here they are called as functions, and every faust object the services use
goes through this module. Records travel as raw bytes: the project's own serdes
(Confluent-framed Avro, docs/contract.md) encode and decode them, not faust's codecs.
"""

from __future__ import annotations

import logging
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import faust

from streamalloc.config import Settings
from streamalloc.logs import JsonFormatter
from streamalloc.services.credentials import broker_credentials

Guarantee = Literal["at_least_once", "exactly_once"]


@dataclass(frozen=True, slots=True)
class Message:
    """One input record as an agent sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    highwater: int  # the partition's end offset when the record was handed over (for lag)
    #: records of the same key and partition this one superseded in its batch (`latest_agent`)
    superseded: int = 0


def dead_letter_record(message: Message, error: str) -> dict[str, Any]:
    """The contract's dead-letter event for an input record a service could not decode."""
    return {
        "event_id": f"dlq:{message.topic}:{message.partition}:{message.offset}",
        "source_topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": message.key,
        "value": message.value,
        "error": error,
        "failed_at": int(time.time() * 1000),
    }


def make_app(
    settings: Settings,
    service: str,
    *,
    guarantee: Guarantee = "at_least_once",
    canonical_url: str | None = None,
) -> faust.App:
    """A faust app for one service: its own consumer group, RocksDB tables under the state dir.

    The app id `<app_id>-<service>` is the consumer group and prefixes the tables'
    changelog topics (`<app id>-<table>-changelog`, Kafka Streams' naming). Group timeouts
    follow the broker profile, as the engine's do (docs/brokers.md, Client settings).
    Credentials and TLS come from the engine's client properties (services/credentials.py).
    """
    if not settings.bootstrap:
        raise ValueError("a service needs bootstrap servers")
    credentials = broker_credentials(settings.kafka_properties)
    timeouts = settings.group_timeouts()
    (settings.state_dir / service).mkdir(parents=True, exist_ok=True)
    # the address this instance's HTTP answers at: faust's assignor shares it with the group,
    # so every instance knows which one owns a table partition (table_owners)
    extra: dict[str, Any] = {"canonical_url": canonical_url} if canonical_url else {}
    return faust.App(
        f"{settings.app_id}-{service}",
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap.split(",")],
        broker_credentials=credentials,
        processing_guarantee=guarantee,
        store="rocksdb://",
        datadir=str(settings.state_dir / service),
        web_enabled=False,  # the services serve their own HTTP (services/http.py)
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=timeouts["session.timeout.ms"] / 1000,
        broker_heartbeat_interval=timeouts["heartbeat.interval.ms"] / 1000,
        broker_max_poll_interval=timeouts["max.poll.interval.ms"] / 1000,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",  # what tables store: bytes the services encode themselves
        value_serializer="raw",
        table_standby_replicas=0,
        broker_commit_interval=0.5,
        producer_linger=0.005,
        **extra,
    )


def raw_topic(app: faust.App, *names: str, internal: bool = False) -> Any:
    """A topic of raw bytes keys and values (the serdes live in streamalloc.serialization);
    several names make one channel an agent reads them all from (co-partitioned topics).
    `internal`: the service's own topic, created by it as its tables' changelogs are, with
    the app's partition count (a repartition topic, Kafka Streams' `-repartition`)."""
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        internal=internal,
    )


def table(app: faust.App, name: str) -> Any:
    """A RocksDB-backed table of bytes -> bytes, partitioned like the agent's input topic."""
    return app.Table(name, key_type=bytes, value_type=bytes, options={"driver": "rocksdict"})


def _message(app: faust.App, message: Any, superseded: int = 0) -> Message:
    """A consumed faust message as the services' `Message`, with its partition's high watermark."""
    highwater = app.consumer.highwater(message.tp) if app.consumer is not None else 0
    return Message(
        message.topic, message.partition, message.offset, message.key, message.value, highwater, superseded
    )


def agent(
    app: faust.App, topic: Any, handle: Callable[[Message], Awaitable[None]], name: str = "agent"
) -> None:
    """Run `handle` on every record of `topic`, one at a time, in partition order."""

    async def run(stream: Any) -> None:
        async for event in stream.events():
            await handle(_message(app, event.message))

    run.__name__ = f"{app.conf.id}-{name}"
    app.agent(topic, name=run.__name__)(run)


def latest_agent(
    app: faust.App,
    topic: Any,
    handle: Callable[[Message], Awaitable[None]],
    *,
    max_records: int,
    within_s: float,
    name: str = "agent",
) -> None:
    """Like `agent`, for a topic whose records are absolute per key (a compacted snapshot):
    of the records that arrive together (up to `max_records`, waiting at most `within_s`),
    only the newest of each key and partition is handled, in offset order; the others are
    acknowledged with it and counted in its `superseded`.

    Each is handled as faust's current event, so a table write goes to the changelog
    partition of that record (faust takes it from the current event, which a batch would
    otherwise leave at its last record, maybe of another partition).
    """
    from faust.streams import _current_event

    async def run(stream: Any) -> None:
        async for events in stream.take_events(max_records, within=within_s):
            newest: dict[tuple[int, Any], Any] = {}
            superseded: dict[tuple[int, Any], int] = {}
            for event in events:
                message = event.message
                key = (message.partition, message.key if message.key is not None else message.offset)
                superseded[key] = superseded.get(key, -1) + 1
                newest[key] = event
            for key, event in sorted(newest.items(), key=lambda item: item[1].message.offset):
                token = _current_event.set(weakref.ref(event))
                try:
                    await handle(_message(app, event.message, superseded[key]))
                finally:
                    _current_event.reset(token)

    run.__name__ = f"{app.conf.id}-{name}"
    app.agent(topic, name=run.__name__)(run)


def timer(app: faust.App, interval_s: float, tick: Callable[[], Awaitable[None]]) -> None:
    """Call `tick` every `interval_s` seconds on the leader and followers alike."""

    async def run() -> None:
        await tick()

    app.timer(interval_s)(run)


def on_started(app: faust.App, start: Callable[[], Awaitable[None]]) -> None:
    """Run `start` once the app has started (used for the HTTP server)."""

    async def run() -> None:
        await start()

    app.task(run)


def table_owners(app: faust.App, table_name: str) -> dict[int, str]:
    """Partition -> canonical URL of the instance that holds it, for a table, from the assignment.

    A table's changelog partition is its input's partition (faust writes a table entry to the
    partition of the event being processed), so this is also who reads each input partition.
    Empty before the first assignment.
    """
    table = app.tables[table_name]
    changelog = table.changelog_topic.get_topic_name()
    owners: dict[int, str] = {}
    for url, topics in app.router.table_metadata(table_name).items():
        for partition in topics.get(changelog, ()):
            owners[int(partition)] = str(url)
    return owners


def ready(app: faust.App) -> bool:
    """Joined the group, not rebalancing, and every table recovered: answers are current."""
    if app.rebalancing or app.consumer is None:
        return False
    if not app.consumer.assignment():
        return False
    return bool(app.tables.recovery.completed.is_set())  # type: ignore[attr-defined]


def _json_logging(level: int) -> None:
    """faust's, mode's and aiokafka's log lines as the project's: JSON on stderr, quiet by default."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # faust reports every full send buffer as a warning: back-pressure at work, not a fault
    logging.getLogger("faust.transport.producer").setLevel(max(level, logging.ERROR))


def run(app: faust.App, log_level: str) -> int:
    """Run the app as a worker until SIGTERM or Ctrl-C; the process's exit code."""
    level = logging.getLevelName(log_level.upper())
    _json_logging(level if isinstance(level, int) else logging.WARNING)
    worker = faust.Worker(app, quiet=True, override_logging=False, redirect_stdouts=False)
    worker.spinner = None  # a terminal spinner: escape codes in every log file otherwise
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
