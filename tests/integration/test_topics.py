"""`topics create` against a real broker: every contract topic, idempotent, co-partitioning enforced."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import NewTopic

from streamalloc.commands.topics import describe, ensure_topics
from streamalloc.config import Settings
from streamalloc.errors import TopicError
from streamalloc.kafka import admin_client
from streamalloc.kafka.admin import wait_for_topics
from streamalloc.topics import CONTRACT_TOPICS


def test_create_makes_every_contract_topic_with_compaction(settings: Settings) -> None:
    created, specs = ensure_topics(settings, channels=["web"])
    assert sorted(created) == sorted(spec.name for spec in specs)
    infos, missing = describe(settings, channels=["web"])
    assert missing == []
    by_name = {info.name: info for info in infos}
    for name, compacted in CONTRACT_TOPICS:
        assert settings.topic(name) in by_name
        if compacted:
            assert by_name[settings.topic(name)].cleanup_policy == "compact"
    assert by_name[settings.changelog_topic("allocator")].cleanup_policy == "compact"
    assert settings.topic("orders.web") in by_name
    assert by_name[settings.topic("inventory")].partitions == settings.partitions


def test_create_is_idempotent(settings: Settings) -> None:
    ensure_topics(settings)
    created, specs = ensure_topics(settings)
    assert created == []
    assert specs


def test_create_refuses_when_not_copartitioned(settings: Settings) -> None:
    admin = admin_client(settings)
    inventory = settings.topic("inventory")
    admin.create_topics([NewTopic(inventory, settings.partitions + 1, 1)])[inventory].result()
    wait_for_topics(admin, [inventory])  # real Kafka's metadata lags a creation by a moment
    with pytest.raises(TopicError, match="co-partitioned"):
        ensure_topics(settings)
    _, missing = describe(settings)
    # refused before creating anything
    assert settings.topic("allocation-requests") in missing
