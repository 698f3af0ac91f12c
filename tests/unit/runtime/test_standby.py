"""Standby placement: every member computes the same ring from the same group description."""

from __future__ import annotations

from streamalloc.runtime.members import GroupView, Member


def view(*assignments: list[int]) -> GroupView:
    return GroupView(
        "STABLE",
        tuple(
            Member(f"m{i}", f"http://w{i}", frozenset(("in", p) for p in parts))
            for i, parts in enumerate(assignments)
        ),
    )


def stores(topic: str) -> list[str]:
    return ["alloc"] if topic == "in" else []


def test_each_partition_is_kept_by_the_next_members_in_the_ring_never_its_owner() -> None:
    from streamalloc.runtime.standby import standby_partitions

    group = view([0, 1], [2, 3], [4, 5])
    one = {m.member_id: standby_partitions(group, m.member_id, 1, stores) for m in group.members}
    assert one == {
        "m0": {("alloc", 4), ("alloc", 5)},
        "m1": {("alloc", 0), ("alloc", 1)},
        "m2": {("alloc", 2), ("alloc", 3)},
    }
    two = {m.member_id: standby_partitions(group, m.member_id, 2, stores) for m in group.members}
    for member in group.members:
        owned = {("alloc", p) for _, p in member.assignment}
        assert not two[member.member_id] & owned
        assert len(two[member.member_id]) == 4
    # More replicas than other members: each keeps every partition it does not own, once.
    assert standby_partitions(group, "m0", 5, stores) == {("alloc", p) for p in (2, 3, 4, 5)}


def test_no_copies_without_replicas_alone_or_for_a_stage_without_stores() -> None:
    from streamalloc.runtime.standby import standby_partitions

    assert standby_partitions(view([0], [1]), "m0", 0, stores) == set()
    assert standby_partitions(view([0, 1]), "m0", 1, stores) == set()
    assert standby_partitions(view([0], [1]), "stranger", 1, stores) == set()
    assert standby_partitions(view([0], [1]), "m0", 1, lambda topic: []) == set()
