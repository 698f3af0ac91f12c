"""What-if replay: a recorded order and inventory history through the domain core, offline.

The same history runs twice, once under the baseline tables and once under the baseline
overlaid with a policy file, and the two outcomes are compared per channel. Nothing here
reads Kafka: `commands/replay.py` reads the inputs (files or topics) and hands over plain
records.

How the offline run stands in for the engine, and why:

- **Order of events**: orders and inventory merged by `occurred_at`; on a tie inventory
  first, then input order. The engine applies a SKU's inputs in timestamp order too, and
  a receipt stamped with the same millisecond as an order is taken to have been there.
- **Decision time**: each event's `occurred_at` is `now`, so time-based policies decide as
  they would have at that moment, not at replay time.
- **Orders become commands exactly as intake makes them** (`stages.intake.line_requests`,
  then the allocator's `request_command`), and every command, whatever its type, goes
  through `domain.apply`: a command or an event type the domain adds later is replayed and
  counted without a change here.
- **Kits**: a kit line is expanded into its components' lines, the order made ship-complete
  (`stages.intake.expand_kits`), with the baseline's kits (the `kits` topic as it ends, or
  the baseline files' kit records), for both runs; a kit changed during the history is not
  followed (as in the audit), and a policy cannot change kits.
- **The order's rules are the order stage's own** (`domain.orders.apply`, fed the same
  `accepted`, `cancel_requested` and allocation events): when the allocation of a line of
  a ship-complete order is rejected, its other lines that hold or wait for units are
  released with reason `ship_complete_failed`, as is any line that does so later; a
  whole-order cancellation (a `cancelled` event listing no lines) releases every line that
  holds or waits, and any line that does so later. A refused pick, fulfilment or return
  does not fail a ship-complete order: its line still holds its units. Releases are
  applied after the event's own commands (the engine sends them through the order stage,
  so an order's lines are all decided first) and before the next event.
- **Counting** is by decision: for each event type, a line counts once per decision that
  emitted that type for it (a line split over two locations is one allocated line and one
  `split`; a line allocated in part, the rest left waiting, is one allocated, one
  backordered and one `partial`), and its units are the sum of the events' qty.
  Rejections and releases are also counted by reason. Orders are counted by their final
  status, as the order stage defines it (`domain.orders.status`; `open` while an order
  has none).
- **Reservations expire** as the allocator's timers make them: a line holding soft units
  with an expiry gets a timer, and every timer due by an event's time fires before that
  event (`ExpireLine`, decided when due). Timers still pending when the history ends do
  not fire: the outcome is the one at the last event.
- **Line status and units come from the events** as the order stage follows them
  (`domain.orders`), which keeps them equal to the SKU's books: a line moved to another
  location, partly expired or filled from the waitlist reads as the engine's books have it.
- **Simultaneous requests**: where a channel sets `priority_window_ms`, a placed order is
  replayed ahead of earlier ones of such channels that it outranks within their window
  (`domain.contention`), as if the engine had decided them in one batch; the engine can
  only do so for requests that reach it together, so the replay shows the policy at its
  fullest.
- **Not replayed**: a location going stale (the runtime judges it from the wall clock of
  its inventory feed) and table changes during the history (kits included): each run has
  one set of tables, so no sweep is ever needed.
"""

from streamalloc.replay.compare import ChangedOrder, Comparison, changed_orders, compare
from streamalloc.replay.history import (
    InventoryStep,
    OrderStep,
    Step,
    TableKind,
    TableRecords,
    history,
    inventory_step,
    order_step,
    policy_changes,
    table_kind,
)
from streamalloc.replay.run import (
    CORE_TYPES,
    PARTIAL,
    PLACED,
    SERVED,
    SPLIT,
    Key,
    LineOutcome,
    OrderOutcome,
    RunResult,
    run,
)

__all__ = [
    "CORE_TYPES",
    "PLACED",
    "SERVED",
    "SPLIT",
    "ChangedOrder",
    "Comparison",
    "InventoryStep",
    "Key",
    "LineOutcome",
    "OrderOutcome",
    "OrderStep",
    "PARTIAL",
    "RunResult",
    "Step",
    "TableKind",
    "TableRecords",
    "changed_orders",
    "compare",
    "history",
    "inventory_step",
    "order_step",
    "policy_changes",
    "run",
    "table_kind",
]
