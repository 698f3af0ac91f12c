"""Settings are built once from the environment and overrides, and refuse bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamalloc.config import Settings
from streamalloc.errors import ConfigError


def test_defaults_and_topic_names() -> None:
    settings = Settings.from_env({})
    assert settings.topic("orders") == "streamalloc.orders"
    assert settings.changelog_topic("allocator") == "streamalloc-allocator-changelog"
    assert settings.bootstrap is None


def test_environment_then_overrides() -> None:
    env = {
        "STREAMALLOC_PARTITIONS": "8",
        "STREAMALLOC_STATE_DIR": "/tmp/x",
        "STREAMALLOC_TOPIC_PREFIX": "a.",
    }
    settings = Settings.from_env(env, topic_prefix="b.", bootstrap=None)
    assert settings.partitions == 8
    assert settings.state_dir == Path("/tmp/x")
    assert settings.topic_prefix == "b."


def test_bad_values_are_refused_with_the_name() -> None:
    with pytest.raises(ConfigError, match="STREAMALLOC_PARTITIONS"):
        Settings.from_env({"STREAMALLOC_PARTITIONS": "many"})
    with pytest.raises(ConfigError, match="partitions"):
        Settings.from_env({}, partitions=0)


def test_embedded_profile_has_short_group_timeouts() -> None:
    embedded = Settings(broker_profile="embedded").group_timeouts()
    kafka = Settings(broker_profile="kafka").group_timeouts()
    assert embedded["session.timeout.ms"] < kafka["session.timeout.ms"]
    assert kafka["session.timeout.ms"] >= 6000  # real Kafka's group.min.session.timeout.ms


def test_a_drained_batch_commits_early_on_kafka_only_unless_set() -> None:
    assert Settings(broker_profile="kafka").drained_commit_gap_ms == 10
    assert Settings(broker_profile="embedded").drained_commit_gap_ms is None  # its commits cost more
    assert Settings(broker_profile="embedded", commit_min_gap_ms=0).drained_commit_gap_ms == 0
    # a gap as long as the interval leaves the interval alone to decide
    assert (
        Settings(broker_profile="kafka", commit_min_gap_ms=30, commit_interval_ms=30).drained_commit_gap_ms
        is None
    )
    env = {"STREAMALLOC_COMMIT_MIN_GAP_MS": "3", "STREAMALLOC_BROKER_PROFILE": "kafka"}
    assert Settings.from_env(env).drained_commit_gap_ms == 3
    with pytest.raises(ConfigError, match="commit_min_gap_ms"):
        Settings.from_env({"STREAMALLOC_COMMIT_MIN_GAP_MS": "-1"})


def test_locations_may_have_their_own_replenishment_lead_time() -> None:
    env = {
        "STREAMALLOC_REPLENISH_LEAD_TIME_S": "86400",
        "STREAMALLOC_REPLENISH_LEAD_TIMES": "STORE-1=259200, WH-2=0",
    }
    policy = Settings.from_env(env).replenishment_policy()
    assert (policy.lead_time("STORE-1"), policy.lead_time("WH-2"), policy.lead_time("WH-1")) == (
        259200,
        0,
        86400,
    )
    assert Settings().replenishment_policy().lead_times == {}


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("STORE-1", "'STORE-1' is not location=seconds"),
        ("STORE-1=3d", "'STORE-1=3d' is not location=seconds"),
        ("STORE-1=-5", "'STORE-1=-5' is not location=seconds"),
        ("=86400", "'=86400' is not location=seconds"),
        ("STORE-1=1,STORE-1=2", "location 'STORE-1' is given twice"),
    ],
)
def test_a_bad_lead_time_entry_is_refused_at_start_with_what_was_wrong(value: str, said: str) -> None:
    with pytest.raises(ConfigError, match=f"replenish_lead_times: {said}"):
        Settings.from_env({"STREAMALLOC_REPLENISH_LEAD_TIMES": value})
