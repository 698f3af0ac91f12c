"""Client configuration profiles and the mapping of librdkafka errors to streamalloc's."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from streamalloc.config import Settings
from streamalloc.errors import BrokerError, ConfigError, RecordTooLarge, TransactionMustAbort
from streamalloc.kafka.types import DeliveryCallback, Headers
from streamalloc.logs import redact

_log = logging.getLogger("streamalloc.kafka")
# The connection probe reports what went wrong itself, in one line; librdkafka's own
# retry-by-retry log lines would only repeat it.
_quiet = logging.getLogger("streamalloc.kafka.probe")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False

# Java clients hash keys with murmur2; so must we, or a channel's Java producer and the
# engine would put the same SKU on different partitions.
PARTITIONER = "murmur2_random"
#: The largest record a producer sends (librdkafka's default, set here so errors can name
#: it): below Kafka's default broker limit (1,048,588), so a record the producer takes
#: also fits the broker unless a topic sets a smaller `max.message.bytes`.
MESSAGE_MAX_BYTES = 1_000_000


def _bootstrap(settings: Settings) -> str:
    if not settings.bootstrap:
        raise BrokerError("no bootstrap servers configured (use --bootstrap or STREAMALLOC_BOOTSTRAP)")
    return settings.bootstrap


def _common(settings: Settings) -> dict[str, Any]:
    """What every client gets: the cluster, the logger, and the user's properties (security...)."""
    return {"bootstrap.servers": _bootstrap(settings), "logger": _log, **settings.kafka_properties}


def producer_config(
    settings: Settings, *, transactional_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Producer settings: idempotent, murmur2, small linger; transactional when an id is given.

    The user's properties may retune the defaults (linger, batching), never what exactly-once
    rests on (idempotence, the transactional id, the partitioner: the settings refuse those).
    """
    config: dict[str, Any] = {
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.max.bytes": MESSAGE_MAX_BYTES,
        # Kafka Streams' value under exactly-once: a killed worker's open transaction (and the
        # offsets it holds for the group) is aborted by the broker after 10 s rather than 60,
        # so its partitions' next owner is not held back; a batch stays open for milliseconds.
        **({"transaction.timeout.ms": 10_000} if transactional_id is not None else {}),
        **_common(settings),
        "partitioner": PARTITIONER,
        "enable.idempotence": True,
    }
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
    config.update(extra)
    return config


def consumer_config(settings: Settings, *, group_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """Consumer settings: read_committed, manual commits, the profile's group timeouts.

    The range assignor gives a member the same partition numbers of every topic it
    subscribes to, which is what co-partitioned inputs (allocation-requests + inventory)
    need; the sticky assignors do not promise that. The user's properties may retune the
    timeouts and fetching, not the group, isolation, commits or assignment.
    """
    config: dict[str, Any] = {
        "fetch.wait.max.ms": settings.fetch_wait_max_ms,
        **settings.group_timeouts(),
        **_common(settings),
        "group.id": group_id or f"{settings.app_id}-reader",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
    }
    config.update(extra)
    return config


def admin_client(settings: Settings) -> AdminClient:
    return _admin(_common(settings))


def _admin(config: dict[str, Any]) -> AdminClient:
    try:
        return AdminClient(config)
    except KafkaException as exc:  # a property librdkafka does not know, or a bad value
        raise ConfigError(redact(f"Kafka client properties: {_reason(exc)}")) from exc


@contextmanager
def kafka_errors(doing: str) -> Iterator[None]:
    """Turn librdkafka's exceptions into BrokerError naming what we were doing (secrets redacted)."""
    try:
        yield
    except KafkaException as exc:
        raise BrokerError(redact(f"{doing}: {_reason(exc)}")) from exc


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else exc
    return error.str() if isinstance(error, KafkaError) else str(error)


def resolve_profile(settings: Settings, timeout_s: float = 10.0) -> Settings:
    """Reach the cluster (failing fast when it refuses us), and settle an "auto" broker
    profile by asking it who it is."""
    cluster_id = probe(settings, timeout_s)
    if settings.broker_profile != "auto":
        return settings
    return settings.replace(broker_profile="embedded" if cluster_id.startswith("tansu") else "kafka")


# librdkafka retries a refused login or TLS handshake forever and tells only error_cb; these
# do not heal by waiting, so the probe stops at the first one.
_REFUSALS = (KafkaError._AUTHENTICATION, KafkaError._SSL)


def probe(settings: Settings, timeout_s: float = 10.0) -> str:
    """Fetch the cluster's metadata once, before any client writes; return its cluster id.

    A wrong password or an untrusted certificate raises one BrokerError naming the cause
    within a second or so; a cluster that does not answer, after `timeout_s` with the last
    connection error. Metadata for all topics creates none.
    """
    errors: list[KafkaError] = []
    admin = _admin({**_common(settings), "logger": _quiet, "error_cb": errors.append})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return str(admin.list_topics(timeout=0.5).cluster_id or "")
        except KafkaException as exc:
            failure = _reason(exc)
        admin.poll(0)  # serves error_cb
        refused = next((e for e in errors if e.code() in _REFUSALS), None)
        if refused is not None:
            raise BrokerError(redact(describe_refusal(settings, refused)))
        if time.monotonic() >= deadline:
            last = _connection_error(errors[-1].str()) if errors else failure
            raise BrokerError(redact(f"connecting to {settings.bootstrap}: {last}"))


def describe_refusal(settings: Settings, error: KafkaError) -> str:
    """One line saying who was refused by which broker, and librdkafka's reason, no secret."""
    text = error.str()
    found = re.match(r"(?:\w+://)?([^\s/]+)/\S*: ", text)
    broker = found.group(1) if found else settings.bootstrap
    reason = _connection_error(text)
    props = settings.kafka_properties
    if error.code() == KafkaError._SSL:
        ca = props.get("ssl.ca.location", "unset")
        return f"TLS handshake with {broker} failed (ssl.ca.location={ca}): {reason}"
    mechanism = props.get("sasl.mechanism") or props.get("sasl.mechanisms") or "GSSAPI"
    user = props.get("sasl.username")
    who = f" for sasl.username={user}" if user else ""
    return f"authentication failed{who} with {mechanism} at {broker}: {reason}"


def _connection_error(text: str) -> str:
    """librdkafka's error text without its broker prefix and its "(after 5ms in state X)"."""
    text = re.sub(r"^(?:\w+://)?[^\s/]+/\S*: ", "", text)
    return re.sub(r"\s*\(after \d+ms in state \w+\)$", "", text)


def produce(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | str | None = None,
    partition: int | None = None,
    headers: Headers | None = None,
    on_delivery: DeliveryCallback | None = None,
) -> None:
    """Produce one record: the one way streamalloc produces (the worker's emit included).

    While librdkafka's local queue is full (BufferError) it serves delivery reports and
    tries again. A record larger than the producer takes raises RecordTooLarge: no retry
    can send it. Inside a transaction that an earlier record's failure doomed, librdkafka
    refuses every produce: TransactionMustAbort. The common calls take the plain
    positional form (the worker's hot path).
    """
    while True:
        try:
            if headers is not None or on_delivery is not None:
                producer.produce(
                    topic,
                    value,
                    key,
                    -1 if partition is None else partition,
                    on_delivery=on_delivery,
                    headers=headers,
                )
            elif partition is None:
                producer.produce(topic, value, key)
            else:
                producer.produce(topic, value, key, partition)
            return
        except BufferError:
            poll(producer, 0.05)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code == KafkaError.MSG_SIZE_TOO_LARGE:
                raise RecordTooLarge(topic, _size(key) + _size(value), MESSAGE_MAX_BYTES) from exc
            if code == KafkaError._STATE:
                raise TransactionMustAbort(f"cannot produce to {topic}: {error}") from exc
            raise


def flush(producer: Producer, timeout_s: float = -1) -> int:
    """`producer.flush`, with a fatal error (a fence) raised as the KafkaException it is.

    When librdkafka reports a fatal error while flush serves its events, confluent-kafka
    sets a KafkaException and then still calls the next delivery callback; Python turns that
    call into a SystemError whose cause is the KafkaException (`unwrap_callback_error`).
    """
    return _unwrapped(producer.flush, timeout_s)


def poll(producer: Producer, timeout_s: float = 0) -> int:
    """`producer.poll`, with the same mapping as `flush`."""
    return _unwrapped(producer.poll, timeout_s)


def _unwrapped(call: Callable[[float], int], timeout_s: float) -> int:
    try:
        return call(timeout_s)
    except SystemError as exc:
        found = unwrap_callback_error(exc)
        if found is exc:
            raise
        raise found from None  # the SystemError is an artefact of the binding, caused by it


def unwrap_callback_error(exc: SystemError) -> BaseException:
    """The KafkaException behind a SystemError raised out of a callback, else `exc` itself.

    confluent-kafka raises a fatal error (e.g. `_FENCED`) from inside poll or flush by
    setting it as the pending exception; a Python callback called after that (a delivery
    report) returns with the exception still set, which Python reports as "SystemError:
    <function> returned a result with an exception set", caused by the KafkaException.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KafkaException):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return exc


def _size(data: bytes | str | None) -> int:
    return 0 if data is None else len(data)


def consume_available(consumer: Consumer, max_messages: int, timeout_s: float) -> list[Message]:
    """Up to `max_messages` without holding back what has arrived.

    consume(n, t) waits until it has n messages or t has passed, so a blocking call for a
    whole batch delays every record by the full timeout when traffic is light. This takes
    what is buffered; when nothing is, it waits up to `timeout_s` for one message only,
    then takes whatever else is there.
    """
    messages: list[Message] = consumer.consume(max_messages, 0.0)
    if not messages and timeout_s > 0:
        messages = consumer.consume(1, timeout_s)
        if messages and max_messages > 1:
            messages.extend(consumer.consume(max_messages - 1, 0.0))
    return messages
