"""Who is in the group, what each member owns, and where its HTTP API answers.

Kafka Streams advertises `application.server` in the group's subscription user data;
librdkafka gives no way to add user data to the consumer protocol. The next best
carrier the group coordinator already keeps per member is the client.id: a worker's
group consumer sets it to `streamalloc-worker;<url>` (`advertised_client_id`), and
DescribeGroups returns every member's client.id together with its assignment. So the
owner of a partition and its address come from one request to the coordinator, with no
topic or table of our own to keep in step with the group: a member that leaves or is
expelled disappears from the answer at the same moment as it loses its partitions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streamalloc.errors import BrokerError

CLIENT_ID_PREFIX = "streamalloc-worker;"

TopicPartitionKey = tuple[str, int]
_ATTEMPTS = 5
#: The coordinator is moving, loading or not reachable yet: asking again soon succeeds.
_RETRY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)


def advertised_client_id(url: str) -> str:
    """The client.id that carries a worker's advertised URL."""
    return CLIENT_ID_PREFIX + url


def url_of(client_id: str) -> str | None:
    """The advertised URL in a member's client.id, or None (a member with no HTTP API)."""
    if client_id.startswith(CLIENT_ID_PREFIX):
        return client_id.removeprefix(CLIENT_ID_PREFIX) or None
    return None


@dataclass(frozen=True)
class Member:
    member_id: str
    url: str | None
    assignment: frozenset[TopicPartitionKey]


@dataclass(frozen=True)
class GroupView:
    """One answer of the group coordinator: its state and its members."""

    state: str
    members: tuple[Member, ...]

    @property
    def stable(self) -> bool:
        return self.state == "STABLE" and all(m.assignment for m in self.members)

    def owner(self, topic: str, partition: int) -> Member | None:
        for member in self.members:
            if (topic, partition) in member.assignment:
                return member
        return None

    def partition_numbers(self, topics: Iterable[str]) -> dict[int, Member]:
        """Partition number -> its owner, over `topics` (co-partitioned: one owner a number)."""
        wanted = set(topics)
        owners: dict[int, Member] = {}
        for member in self.members:
            for topic, partition in member.assignment:
                if topic in wanted:
                    owners.setdefault(partition, member)
        return owners


def describe_group(
    admin: AdminClient, group: str, timeout_s: float = 10.0, *, attempts: int = _ATTEMPTS
) -> GroupView:
    """The group as its coordinator sees it now (a coordinator moving or loading is retried,
    up to `attempts` times: a caller in the worker's loop asks once and comes back later)."""
    for attempt in range(attempts):
        try:
            described = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group].result()
            break
        except KafkaException as exc:
            error = exc.args[0]
            if attempt + 1 >= attempts or getattr(error, "code", lambda: None)() not in _RETRY:
                raise BrokerError(f"cannot describe consumer group {group}: {error}") from exc
            time.sleep(0.2 * (attempt + 1))
    members = tuple(
        sorted(
            (
                Member(
                    member_id=m.member_id,
                    url=url_of(m.client_id or ""),
                    assignment=frozenset(
                        (tp.topic, tp.partition)
                        for tp in (m.assignment.topic_partitions if m.assignment is not None else [])
                    ),
                )
                for m in described.members
            ),
            key=lambda m: m.member_id,
        )
    )
    state = getattr(described.state, "name", str(described.state))
    return GroupView(state, members)


def partition_count(admin: AdminClient, topic: str, timeout_s: float = 10.0) -> int:
    """How many partitions `topic` has."""
    try:
        metadata = admin.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerError(f"cannot read the metadata of {topic}: {exc.args[0]}") from exc
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise BrokerError(f"topic {topic} does not exist (run `streamalloc topics create`)")
    return len(found.partitions)


class Members:
    """A cached view of the group, refreshed at most every `ttl_s` unless asked (thread-safe)."""

    def __init__(self, admin: AdminClient, group: str, *, ttl_s: float = 2.0) -> None:
        self._admin = admin
        self._group = group
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._view: GroupView | None = None
        self._at = 0.0
        self._partitions: dict[str, int] = {}

    def view(self, *, refresh: bool = False) -> GroupView:
        with self._lock:
            now = time.monotonic()
            if refresh or self._view is None or now - self._at > self._ttl_s:
                self._view = describe_group(self._admin, self._group)
                self._at = now
            return self._view

    def partitions(self, topic: str) -> int:
        with self._lock:
            if topic not in self._partitions:
                self._partitions[topic] = partition_count(self._admin, topic)
            return self._partitions[topic]
