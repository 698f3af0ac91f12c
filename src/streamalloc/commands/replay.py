"""`streamalloc replay`: read the history and the tables for a what-if replay, from files or topics.

Files are JSONL, one event or table record a line, in the JSON shape the topics accept;
a file with one bad line is refused whole, naming the file and line. Topics are read to
their end (committed events only); there an event the engine would have sent to the
dead-letter topic is skipped and counted, as the engine skipped it.

Kit lines are expanded as intake expands them, with the baseline's kits (its files' kit
records, or the `kits` topic as it ends): the tables are read before the orders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.box import SIMPLE_HEAD
from rich.console import RenderableType
from rich.table import Column, Table
from rich.text import Text

from streamalloc.commands.io import jsonl_records
from streamalloc.config import Settings
from streamalloc.domain.kits import Kit
from streamalloc.errors import StreamallocError, ValidationError
from streamalloc.replay import (
    PARTIAL,
    PLACED,
    SERVED,
    SPLIT,
    Comparison,
    InventoryStep,
    Key,
    OrderStep,
    Step,
    TableRecords,
    history,
    inventory_step,
    order_step,
    policy_changes,
    table_kind,
)
from streamalloc.serialization import topic_serde


@dataclass(frozen=True, slots=True)
class ReplayInputs:
    """The merged history and both sets of tables, with where each came from."""

    steps: list[Step]
    orders: int
    inventory: int
    skipped: int  # topic events the engine refused (dead-lettered), left out here too
    baseline: TableRecords
    policy: TableRecords
    sources: dict[str, str]  # input -> files or topics it was read from


def needs_topics(orders: Sequence[Path], inventory: Sequence[Path], baseline: Sequence[Path]) -> bool:
    """Whether an input is to be read from the cluster (no file given for it)."""
    return not orders or not inventory or not baseline


def load_inputs(
    settings: Settings,
    *,
    orders: Sequence[Path],
    inventory: Sequence[Path],
    baseline: Sequence[Path],
    policy: Sequence[Path],
    say: Callable[[str], None] = print,
) -> ReplayInputs:
    """Read every input: the files given, the topics for the rest (`settings` must reach a cluster).

    The baseline comes first: its kits expand the orders' kit lines (both runs alike).
    """
    skipped = 0
    sources: dict[str, str] = {}
    policy_records = read_table_files(settings, policy, kits=False)
    sources["policy"] = _names(policy)

    if baseline:
        baseline_records = read_table_files(settings, baseline)
        sources["baseline"] = _names(baseline)
    else:
        baseline_records, skipped_records = read_table_topics(settings, say)
        skipped += skipped_records
        sources["baseline"] = ", ".join(settings.topic(name) for name in TABLE_TOPICS)
    kits = baseline_records.kits()

    order_steps: list[OrderStep] = []
    if orders:
        order_steps = read_order_files(settings, orders, kits)
        sources["orders"] = _names(orders)
    else:
        from streamalloc.commands.io import order_topics, read_to_end

        topics = order_topics(settings)
        say(f"reading {', '.join(topics)} to the end")
        for topic in topics:
            for event in read_to_end(settings, topic):
                try:
                    order_steps.append(order_step(event, kits))
                except StreamallocError:
                    skipped += 1
        sources["orders"] = ", ".join(topics)

    inventory_steps: list[InventoryStep] = []
    if inventory:
        inventory_steps = read_inventory_files(settings, inventory)
        sources["inventory"] = _names(inventory)
    else:
        from streamalloc.commands.io import read_to_end

        topic = settings.topic("inventory")
        say(f"reading {topic} to the end")
        for event in read_to_end(settings, topic):
            try:
                inventory_steps.append(inventory_step(event))
            except StreamallocError:
                skipped += 1
        sources["inventory"] = topic

    return ReplayInputs(
        steps=history(order_steps, inventory_steps),
        orders=len(order_steps),
        inventory=len(inventory_steps),
        skipped=skipped,
        baseline=baseline_records,
        policy=policy_records,
        sources=sources,
    )


def read_order_files(
    settings: Settings, paths: Sequence[Path], kits: Mapping[str, Kit] | None = None
) -> list[OrderStep]:
    """Order events from JSONL files, checked as intake checks them, kit lines expanded with
    `kits`; refused on the first bad line."""
    serde = topic_serde(settings, settings.topic("orders"))
    steps: list[OrderStep] = []
    for where, record in jsonl_records(paths):
        with _at(where):
            steps.append(order_step(serde.validate(record), kits))
    return steps


def read_inventory_files(settings: Settings, paths: Sequence[Path]) -> list[InventoryStep]:
    """Inventory events from JSONL files, checked as the allocator checks them."""
    serde = topic_serde(settings, settings.topic("inventory"))
    steps: list[InventoryStep] = []
    for where, record in jsonl_records(paths):
        with _at(where):
            steps.append(inventory_step(serde.validate(record)))
    return steps


#: The global tables' topics, as `TableKind`s name their records.
TABLE_TOPICS = ("locations", "channels", "kits")


def read_table_files(settings: Settings, paths: Sequence[Path], *, kits: bool = True) -> TableRecords:
    """Location, channel and kit records from JSONL files (a line with location_id is a
    location, with channel_id a channel, with kit_sku a kit); a later record replaces an
    earlier one with the same id. Without `kits` (a policy file) a kit record is refused."""
    serdes = {
        kind: topic_serde(settings, settings.topic(topic))
        for kind, topic in (("location", "locations"), ("channel", "channels"), ("kit", "kits"))
    }
    records = TableRecords()
    for where, record in jsonl_records(paths):
        with _at(where):
            kind = table_kind(record)
            if kind == "kit" and not kits:
                raise ValidationError(
                    "a kit record belongs in the baseline: both runs expand kit lines with the "
                    "baseline's kits, so a policy cannot change them"
                )
            records.add(serdes[kind].validate(record))
    return records


def read_table_topics(settings: Settings, say: Callable[[str], None]) -> tuple[TableRecords, int]:
    """The `locations`, `channels` and `kits` tables as their topics end, read as the workers
    read them (`commands.io.read_table`: rows by Kafka key, the last record per key, a tombstone
    deleting the row), and how many rows the domain could not read (skipped, as the workers
    skip them)."""
    from streamalloc.commands.io import read_table

    records, skipped = TableRecords(), 0
    for name in TABLE_TOPICS:
        topic = settings.topic(name)
        say(f"reading {topic} to the end")
        for key, record in read_table(settings, topic).items():
            try:
                records.add(record, key)
            except StreamallocError:
                skipped += 1
    return records, skipped


@contextmanager
def _at(where: str) -> Iterator[None]:
    """Report any refusal inside the block at `where` (file:line)."""
    try:
        yield
    except StreamallocError as exc:
        raise ValidationError(getattr(exc, "reason", str(exc)), where=where) from exc


def _names(paths: Sequence[Path]) -> str:
    return ", ".join(str(p) for p in paths)


# ---------------------------------------------------------------- output

#: The main table's columns: (header, figure).
_COLUMNS: tuple[tuple[str, Key], ...] = (
    ("allocated", ("lines", "allocated")),
    ("rejected", ("lines", "rejected")),
    ("backord.", ("lines", "backordered")),
    ("released", ("lines", "released")),
    ("split", SPLIT),
    ("partial", PARTIAL),
    ("units", ("units", "allocated")),
)
_MAIN = frozenset({*(key for _, key in _COLUMNS), PLACED, SERVED})
_ALL = "all"


def replay_json(inputs: ReplayInputs, comparison: Comparison, examples: int) -> dict[str, Any]:
    """The comparison for scripts, with what was replayed and what the policy changed."""
    return {
        "inputs": {
            "order_events": inputs.orders,
            "inventory_events": inputs.inventory,
            "skipped_events": inputs.skipped,
            "locations": len(inputs.baseline.locations),
            "channels": len(inputs.baseline.channels),
            "kits": len(inputs.baseline.kits()),
            "sources": inputs.sources,
        },
        "policy_changes": policy_changes(inputs.baseline, inputs.policy),
        **comparison.as_json(examples),
    }


def replay_report(inputs: ReplayInputs, comparison: Comparison, examples: int) -> list[RenderableType]:
    """The comparison for people: what ran, per-channel figures, other figures, example orders."""
    parts: list[RenderableType] = []
    skipped = f"; {inputs.skipped} refused by the engine left out" if inputs.skipped else ""
    kits = len(inputs.baseline.kits())
    parts.append(
        Text(
            f"replayed {inputs.orders:,} order and {inputs.inventory:,} inventory events twice{skipped}\n"
            f"  orders     {inputs.sources['orders']}\n"
            f"  inventory  {inputs.sources['inventory']}\n"
            f"  baseline   {_count(len(inputs.baseline.locations), 'location')}, "
            f"{_count(len(inputs.baseline.channels), 'channel')}"
            f"{', ' + _count(kits, 'kit') if kits else ''}: {inputs.sources['baseline']}\n"
            f"  what-if    baseline + {inputs.sources['policy'] or 'no policy file'}"
            f"{' + replenishment' if comparison.replenished is not None else ''}:"
        )
    )
    changes = policy_changes(inputs.baseline, inputs.policy) or ["no records: the what-if is the baseline"]
    parts.append(Text("\n".join(f"    {c}" for c in changes)))

    channels: list[str | None] = [*comparison.channels, None]
    table = Table(
        Column("channel", no_wrap=True),
        Column("", no_wrap=True),
        *(Column(header, justify="right", no_wrap=True) for header, _ in _COLUMNS),
        box=SIMPLE_HEAD,
        show_edge=False,
        title="order lines per channel (units: units allocated)",
        padding=(0, 1, 0, 0),
        title_justify="left",
    )
    for channel in channels:
        before, after = comparison.figures("baseline", channel), comparison.figures("what_if", channel)
        change = comparison.difference(channel)
        name = _ALL if channel is None else channel
        table.add_row(Text(name), "baseline", *(f"{before[key]:,}" for _, key in _COLUMNS))
        table.add_row("", "what-if", *(f"{after[key]:,}" for _, key in _COLUMNS))
        table.add_row("", "change", *(_signed(change.get(key, 0)) for _, key in _COLUMNS), end_section=True)
    parts.append(table)

    service = Table(
        Column("channel", no_wrap=True),
        *(Column(h, justify="right", no_wrap=True) for h in ("placed", "baseline", "what-if", "change")),
        box=SIMPLE_HEAD,
        show_edge=False,
        title="service level: lines allocated in full at their first decision, of the lines placed",
        title_justify="left",
    )
    for channel in channels:
        was, now = comparison.service_level("baseline", channel), comparison.service_level("what_if", channel)
        placed = comparison.figures("baseline", channel)[PLACED]
        service.add_row(
            Text(_ALL if channel is None else channel),
            f"{placed:,}",
            _rate(was),
            _rate(now),
            _points(was, now),
        )
    parts.append(service)

    if comparison.replenished is not None:
        transfers, units = comparison.replenished
        stockouts = Table(
            Column("channel", no_wrap=True),
            *(Column(h, justify="right", no_wrap=True) for h in ("placed", "without", "with", "change")),
            box=SIMPLE_HEAD,
            show_edge=False,
            title=(
                "stockout rate without and with replenishment (lines not allocated in full at their "
                f"first decision, of the lines placed); {_count(transfers, 'transfer')} shipped, "
                f"{_count(units, 'unit')}"
            ),
            title_justify="left",
        )
        for channel in channels:
            was = comparison.stockout_rate("baseline", channel)
            now = comparison.stockout_rate("what_if", channel)
            placed = comparison.figures("baseline", channel)[PLACED]
            stockouts.add_row(
                Text(_ALL if channel is None else channel),
                f"{placed:,}",
                _rate(was),
                _rate(now),
                _points(was, now),
            )
        parts.append(stockouts)

    details = Table(
        Column("channel", no_wrap=True),
        Column("figure"),
        *(Column(h, justify="right", no_wrap=True) for h in ("baseline", "what-if", "change")),
        box=SIMPLE_HEAD,
        show_edge=False,
        title="by reason, other decisions, orders by status",
        title_justify="left",
    )
    for channel in channels:
        before, after = comparison.figures("baseline", channel), comparison.figures("what_if", channel)
        rows = [
            (Text(_label(key)), f"{before[key]:,}", f"{after[key]:,}", _signed(delta))
            for key, delta in sorted(comparison.difference(channel).items(), key=_detail_order)
            if key not in _MAIN and key[0] != "units" and (before[key] or after[key])
        ]
        for number, row in enumerate(rows, start=1):
            name = (_ALL if channel is None else channel) if number == 1 else ""
            details.add_row(Text(name), *row, end_section=number == len(rows))
    if details.row_count:
        parts.append(details)

    changed = comparison.changed
    if not changed:
        parts.append(Text("no order's outcome changed"))
        return parts
    shown = changed[:examples]
    title = f"{len(changed):,} order(s) changed outcome"
    if not shown:
        parts.append(Text(title))
        return parts
    orders = Table(
        Column("order", no_wrap=True),
        Column("channel", no_wrap=True),
        "baseline -> what-if",
        box=SIMPLE_HEAD,
        show_edge=False,
        title=title + (f"; the first {len(shown)}" if len(shown) < len(changed) else ""),
        title_justify="left",
    )
    for c in shown:
        outcome = [f"{c.baseline} -> {c.what_if}"]
        outcome += [f"line {line}: {was} -> {now}" for line, was, now in c.lines]
        orders.add_row(Text(c.order_id), Text(c.channel), Text("\n".join(outcome)), end_section=True)
    parts.append(orders)
    return parts


def _rate(rate: float | None) -> str:
    """A share as a percentage ("-": nothing to divide)."""
    return "-" if rate is None else f"{rate:.1%}"


def _points(was: float | None, now: float | None) -> str:
    """The change of a rate in percentage points."""
    if was is None or now is None:
        return "-"
    return f"{(now - was) * 100:+.1f}pp"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _signed(value: int) -> str:
    return f"[bold]{value:+,}[/bold]" if value else "0"


def _detail_order(item: tuple[Key, int]) -> tuple[int, Key]:
    """Reasons first, then the other line decisions, then orders by status."""
    key = item[0]
    return ({"reason": 0, "lines": 1}.get(key[0], 2), key)


def _label(key: Key) -> str:
    if key[0] == "reason":
        return f"{key[1]}: {key[2]}"
    if key[0] == "orders":
        return f"orders {key[1]}"
    return f"{key[1]} lines" if key[0] == "lines" else " ".join(key)
