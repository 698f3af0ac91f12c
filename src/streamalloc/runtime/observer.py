"""Metrics as an observer the runtime calls; Prometheus is one implementation (metrics/)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from streamalloc.runtime.stage import Stage


class Reservations(NamedTuple):
    """A channel's open reservations (order lines holding soft units, status `allocated`):
    how many, when the oldest one was decided (the start of that second: its age is at most a
    second over) and the sum of their `decided_at` (epoch ms), so that their ages at any later
    time are known: oldest `now - oldest_ms`, summed `lines * now - decided_ms_sum` (exact)."""

    lines: int = 0
    oldest_ms: int | None = None
    decided_ms_sum: int = 0


@dataclass(frozen=True, slots=True)
class StockSnapshot:
    """One allocator partition's stock, summed over its SKUs (stages/stock_totals.py).

    `units`: (location, bucket) -> units, buckets named as the availability view names them;
    `out_of_stock`: location -> SKUs with a balance there and nothing available;
    `waiting_lines`: waitlist reason (incoming: backordered, waitlisted) -> lines;
    `skus`: SKUs with a balance at some location; `ats`: channel -> units it may sell, summed
    over those SKUs (each SKU's ATS for the channel, as the availability view gives it);
    `out_of_stock_by_channel`: channel -> of those SKUs, how many it can sell none of;
    `reservations`: channel -> its open reservations.
    """

    units: Mapping[tuple[str, str], int] = field(default_factory=dict)
    out_of_stock: Mapping[str, int] = field(default_factory=dict)
    backordered_units: int = 0
    waiting_lines: Mapping[str, int] = field(default_factory=dict)
    skus: int = 0
    ats: Mapping[str, int] = field(default_factory=dict)
    out_of_stock_by_channel: Mapping[str, int] = field(default_factory=dict)
    reservations: Mapping[str, Reservations] = field(default_factory=dict)


class Observer:
    """No-op base: override what you measure. Calls happen on the worker's thread."""

    def on_stages(self, stages: Sequence[Stage]) -> None:
        """The worker runs these stages (once, before any other call): the label values known
        from the start, so that a labelled counter can show zero before its first event."""

    def on_batch(self, stage: str, records: int, seconds: float) -> None:
        """A stage processed `records` records of one partition in `seconds`."""

    def on_commit(self, records: int, changelog_records: int, seconds: float) -> None:
        """A transaction committed `records` input records."""

    def on_abort(self, reason: str) -> None:
        """A transaction was aborted; its batch will be processed again."""

    def on_dead_letter(self, topic: str, reason: str) -> None:
        """A record read from `topic` went to the dead-letter topic; `reason` is a bounded
        category (dead_letter.py: decode, validation, too_large, refused), never the letter's
        free-text error."""

    def on_restore(self, store: str, partition: int, records: int, seconds: float) -> None:
        """A store partition finished restoring from its changelog."""

    def on_assignment(self, partitions: int) -> None:
        """The worker now owns this many input partitions."""

    def on_decision(self, kind: str, reason: str | None, channel: str) -> None:
        """The allocator emitted a decision (allocated, rejected with a reason, released, ...)
        about a line of `channel` (as the order named it: maybe not one the table knows)."""

    def on_decision_latency(self, seconds: float) -> None:
        """An order line was decided (allocated, rejected or backordered) `seconds` after its
        order event's time (`occurred_at`); a repeated request is not counted again."""

    def on_line_placed(self, channel: str, filled_first: bool) -> None:
        """An order line got its first decision (as `on_decision_latency` counts it): filled
        in full by it (`filled_first`: allocated its whole qty) or not (rejected, backordered,
        partly allocated). The cycle service level is filled-first lines / placed lines."""

    def on_shipped(self, location: str, units: int) -> None:
        """`units` left `location` on a shipment (a `fulfilled` event): with the units on hand,
        the inventory turnover."""

    def on_channels(self, channels: Collection[str]) -> None:
        """The channels table now holds these channels (each time it changes)."""

    def on_location_status(self, location: str, status: str) -> None:
        """A partition's allocator saw a location become online, offline or stale (and swept it)."""

    def on_consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Records not yet consumed per owned input partition (topic, partition), every
        statistics interval, from the consumer's own statistics (kafka/stats.py)."""

    def on_restoring(self, restoring: bool) -> None:
        """Store partitions started (True) or finished (False) restoring from their changelogs."""

    def on_location_staleness(
        self, partition: int, locations: Collection[str], stale: Collection[str]
    ) -> None:
        """At each punctuation, the locations a partition's allocator knows and which of them
        are stale (their inventory feed went silent): the current state, not a change."""

    def on_stock(self, stage: str, partition: int, stock: StockSnapshot) -> None:
        """A partition's stock totals changed (or were first counted after its assignment)."""

    def on_task_closed(self, stage: str, partition: int) -> None:
        """The worker closed its task of `stage` on `partition` (revoked, lost or shutting down):
        what was reported about it (its stock) no longer holds here."""
