"""Transfers between locations: shipped from a source's free stock, received at the destination.

A transfer is one SKU's decision: both locations' balances of a SKU live in its state, so
shipping and receiving never cross partitions. Decisions taken here:

- A shipment takes only free units at its source (`on_hand - allocated - picked`): units
  promised to order lines never leave, the shipment is refused (`insufficient_free_stock`)
  rather than taken from them. Safety stock is a selling rule, not a promise, so it may
  travel. A lot on a transfer is refused (`lot_not_transferable`): transfers move units
  outside lots.
- While it travels, the transfer is open in the SKU's book (model.Transfer) with its ETA,
  and its units are the destination's `in_transit`: counted as incoming for backorders
  (waitlist.wait_reason), never sellable.
- A receipt names its transfer and its destination; it ends the transfer whatever it
  brings. Fewer units than were shipped is a short receipt: the shortfall is written off
  as `lost_in_transit` in the ledger. The received units serve the waitlist as a receipt's
  do. A transfer is shipped once and received once: its id is remembered among the
  applied event ids (`transfer:<id>`) once received, so a second receipt is refused
  (`transfer_already_received`), as is a second shipment under the same id, unless the
  transfer is still open and the shipment says the same (source, destination, qty): then
  it moves the transfer's ETA (a ledger entry `transfer_eta_changed` at the destination,
  with no delta), and the promises of the lines counted against it move (promises.py).
- The ledger (`stock-changes`) records both legs of each step with the transfer's id:
  shipped (`transfer_shipped` at the source, on_hand down; `in_transit` at the
  destination, in_transit up), received (`transfer_received`, in_transit to on_hand) and
  lost (`lost_in_transit`, in_transit down): every unit is on hand, in transit or lost.
"""

from __future__ import annotations

from streamalloc.domain import reasons
from streamalloc.domain.commands import ReceiveTransfer, ShipTransfer
from streamalloc.domain.events import (
    DUPLICATE,
    Decision,
    Event,
    InventoryEventType,
    StockChanged,
    inventory_rejected,
    stock_changed,
)
from streamalloc.domain.model import SkuState, Transfer
from streamalloc.domain.tables import Tables
from streamalloc.domain.waitlist import serve

SHIPPED: InventoryEventType = "transfer_shipped"
RECEIVED: InventoryEventType = "transfer_received"


def received_marker(transfer_id: str) -> str:
    """The applied-event id that says the transfer was received (it is closed)."""
    return f"transfer:{transfer_id}"


def ship_transfer(state: SkuState, cmd: ShipTransfer, tables: Tables, now: int) -> Decision:
    if state.has_applied(cmd.event_id):
        return DUPLICATE
    state.record_applied(cmd.event_id)
    if cmd.qty <= 0:
        return _reject(state, cmd, SHIPPED, reasons.INVALID_QUANTITY, now)
    if cmd.lot is not None:
        return _reject(state, cmd, SHIPPED, reasons.LOT_NOT_TRANSFERABLE, now)
    destination = cmd.destination
    if not destination or destination == cmd.location:
        return _reject(state, cmd, SHIPPED, reasons.DESTINATION_REQUIRED, now)
    transfer_id = cmd.transfer
    open_transfer = state.book.transfers.get(transfer_id)
    if open_transfer is not None and open_transfer[:3] == (cmd.location, destination, cmd.qty):
        state.edit_book().transfers[transfer_id] = open_transfer._replace(eta=cmd.eta)
        return Decision((_leg(state, cmd, destination, "transfer_eta_changed", transfer_id, now),))
    if open_transfer is not None or state.has_applied(received_marker(transfer_id)):
        return _reject(state, cmd, SHIPPED, reasons.DUPLICATE_TRANSFER, now)
    balance = state.balances.get(cmd.location)
    free = balance.on_hand - balance.allocated - balance.picked if balance is not None else 0
    if cmd.qty > free:
        return _reject(state, cmd, SHIPPED, reasons.INSUFFICIENT_FREE_STOCK, now)
    source = state.edit_balance(cmd.location)
    source.on_hand -= cmd.qty
    state.edit_book().transfers[transfer_id] = Transfer(
        cmd.location, destination, cmd.qty, cmd.occurred_at, cmd.eta
    )
    state.edit_balance(destination)  # (the destination has a balance, so it shows in availability)
    return Decision(
        (
            _leg(state, cmd, cmd.location, "transfer_shipped", transfer_id, now, on_hand=-cmd.qty),
            _leg(state, cmd, destination, "in_transit", transfer_id, now, in_transit=cmd.qty),
        )
    )


def receive_transfer(state: SkuState, cmd: ReceiveTransfer, tables: Tables, now: int) -> Decision:
    if state.has_applied(cmd.event_id):
        return DUPLICATE
    state.record_applied(cmd.event_id)
    if cmd.qty < 0:  # (0 is a receipt of nothing: the whole transfer was lost)
        return _reject(state, cmd, RECEIVED, reasons.INVALID_QUANTITY, now)
    if cmd.lot is not None:
        return _reject(state, cmd, RECEIVED, reasons.LOT_NOT_TRANSFERABLE, now)
    transfer_id = cmd.transfer_id
    if transfer_id is None:
        return _reject(state, cmd, RECEIVED, reasons.UNKNOWN_TRANSFER, now)
    if state.has_applied(received_marker(transfer_id)):
        return _reject(state, cmd, RECEIVED, reasons.TRANSFER_ALREADY_RECEIVED, now)
    transfer = state.book.transfers.get(transfer_id)
    if transfer is None:
        return _reject(state, cmd, RECEIVED, reasons.UNKNOWN_TRANSFER, now)
    if cmd.location != transfer.destination:
        return _reject(state, cmd, RECEIVED, reasons.LOCATION_MISMATCH, now)
    if cmd.qty > transfer.qty:
        return _reject(state, cmd, RECEIVED, reasons.EXCEEDS_IN_TRANSIT, now)
    del state.edit_book().transfers[transfer_id]
    state.record_applied(received_marker(transfer_id))
    state.edit_balance(cmd.location).on_hand += cmd.qty
    lost = transfer.qty - cmd.qty
    events: list[Event] = []
    if cmd.qty:
        events.append(
            _leg(
                state, cmd, cmd.location, "transfer_received", transfer_id, now,
                on_hand=cmd.qty, in_transit=-cmd.qty, in_transit_after=state.in_transit(cmd.location) + lost,
            )
        )  # fmt: skip
    if lost:
        events.append(
            _leg(state, cmd, cmd.location, "lost_in_transit", transfer_id, now, in_transit=-lost, leg="lost")
        )
    if state.waiting:  # units came free: the waitlist is served before anyone else sees them
        events += serve(state, tables, cmd.event_id, cmd.occurred_at, now)
    return Decision(events)


def _leg(
    state: SkuState,
    cmd: ShipTransfer | ReceiveTransfer,
    location: str,
    reason: str,
    transfer_id: str,
    now: int,
    *,
    on_hand: int = 0,
    in_transit: int = 0,
    in_transit_after: int | None = None,
    leg: str = "stock",
) -> StockChanged:
    """One leg at `location`, its buckets after the change (in_transit: as now, unless given)."""
    balance = state.balances[location]
    after = (balance.on_hand, balance.quality_control, balance.damaged, balance.incoming)
    return stock_changed(
        cmd.event_id, state.sku, location, reason, on_hand, 0, 0, 0, after, None, None, None,
        cmd.occurred_at, now, in_transit_delta=in_transit,
        in_transit=state.in_transit(location) if in_transit_after is None else in_transit_after,
        transfer_id=transfer_id, leg=leg,
    )  # fmt: skip


def _reject(
    state: SkuState, cmd: ShipTransfer | ReceiveTransfer, type_: InventoryEventType, reason: str, now: int
) -> Decision:
    rejected = inventory_rejected(
        cmd.event_id, type_, state.sku, cmd.location, cmd.qty, reason, cmd.occurred_at, now
    )
    return Decision((rejected,))
