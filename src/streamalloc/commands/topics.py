"""`streamalloc topics create|describe`."""

from __future__ import annotations

from collections.abc import Iterable

from streamalloc.config import Settings
from streamalloc.kafka import admin_client
from streamalloc.kafka.admin import (
    TopicInfo,
    TopicSpec,
    check_copartitioned,
    create_topics,
    describe_topics,
    existing_partitions,
    wait_for_topics,
)
from streamalloc.topics import contract_specs, copartitioned_groups


def ensure_topics(settings: Settings, *, channels: Iterable[str] = ()) -> tuple[list[str], list[TopicSpec]]:
    """Create every contract topic that is missing; refuse before creating anything if the
    result would break co-partitioning. Returns (created names, all specs).

    The check runs again on the topics as the cluster has them afterwards: a topic another
    process created a moment ago may be missing from the metadata the first check read.
    """
    admin = admin_client(settings)
    specs = contract_specs(settings, channels=channels)
    groups = copartitioned_groups(settings)
    planned = {spec.name: spec.partitions for spec in specs}
    planned.update(existing_partitions(admin))  # what exists wins: we never resize
    check_copartitioned(planned, groups)
    created = create_topics(admin, specs)
    check_copartitioned(wait_for_topics(admin, planned), groups)
    return created, specs


def describe(settings: Settings, *, channels: Iterable[str] = ()) -> tuple[list[TopicInfo], list[str]]:
    """Describe the contract topics; also return the names that are missing."""
    admin = admin_client(settings)
    names = [spec.name for spec in contract_specs(settings, channels=channels)]
    # orders.<channel> topics that exist are part of the contract too
    extra = sorted(
        name
        for name in existing_partitions(admin)
        if name.startswith(settings.topic("orders.")) and name not in names
    )
    infos = describe_topics(admin, names + extra)
    present = {info.name for info in infos}
    return infos, [name for name in names if name not in present]
