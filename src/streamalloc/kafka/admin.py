"""Topic administration: idempotent creation, description, co-partitioning checks."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streamalloc.errors import BrokerError, TopicError


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as the contract wants it."""

    name: str
    partitions: int
    replication_factor: int = 1
    compacted: bool = False
    config: Mapping[str, str] = field(default_factory=dict)

    def topic_config(self) -> dict[str, str]:
        config = dict(self.config)
        if self.compacted:
            config["cleanup.policy"] = "compact"
        return config


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as the broker has it."""

    name: str
    partitions: int
    cleanup_policy: str | None


def existing_partitions(admin: AdminClient, timeout_s: float = 10.0) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerError(f"listing topics: {exc.args[0]}") from exc
    return {name: len(topic.partitions) for name, topic in metadata.topics.items() if not topic.error}


def wait_for_topics(admin: AdminClient, names: Iterable[str], timeout_s: float = 30.0) -> dict[str, int]:
    """Partition counts of `names` once the cluster's metadata shows every one of them.

    Right after a creation, or another process's, a broker's metadata may not list a topic yet.
    """
    wanted = set(names)
    deadline = time.monotonic() + timeout_s
    while True:
        have = existing_partitions(admin, timeout_s)
        missing = wanted - have.keys()
        if not missing:
            return {name: have[name] for name in wanted}
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"topics {', '.join(sorted(missing))} not in the cluster's metadata after {timeout_s}s"
            )
        time.sleep(0.1)


def create_topics(admin: AdminClient, specs: Sequence[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Idempotent."""
    have = existing_partitions(admin)
    missing = [spec for spec in specs if spec.name not in have]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=spec.replication_factor,
                config=spec.topic_config(),
            )
            for spec in missing
        ],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another process won the race: fine, creation is idempotent
            raise BrokerError(f"creating topic {name}: {error}") from exc
    return sorted(created)


def describe_topics(admin: AdminClient, names: Iterable[str], timeout_s: float = 10.0) -> list[TopicInfo]:
    """Partitions and cleanup policy of the named topics that exist."""
    have = existing_partitions(admin, timeout_s)
    present = [name for name in names if name in have]
    policies: dict[str, str | None] = dict.fromkeys(present)
    if present:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in present]
        for resource, future in admin.describe_configs(resources, request_timeout=timeout_s).items():
            try:
                entries = future.result()
            except KafkaException:
                continue  # a broker that cannot describe configs still has the topic
            entry = entries.get("cleanup.policy")
            policies[resource.name] = entry.value if entry is not None else None
    return [TopicInfo(name, have[name], policies[name]) for name in present]


def check_copartitioned(partitions: Mapping[str, int], groups: Iterable[Sequence[str]]) -> None:
    """Raise TopicError when topics that must be co-partitioned have different partition counts."""
    for group in groups:
        counts = {name: partitions[name] for name in group if name in partitions}
        if len(set(counts.values())) > 1:
            shown = ", ".join(f"{name} has {count}" for name, count in sorted(counts.items()))
            raise TopicError(
                f"topics {', '.join(group)} must be co-partitioned (same partition count), but {shown}. "
                "Recreate them with the same --partitions, or use another --prefix and --app-id."
            )
