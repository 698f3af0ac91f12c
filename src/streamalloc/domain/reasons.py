"""Machine-readable reasons carried by every rejection (the contract's `reason` field).

Each is a plain string constant so an event, a metric label and a test all use the same
spelling. `SHIP_COMPLETE_FAILED` and `CANCELLED` are the order's rules' (domain.orders),
not a SKU's; they are listed so the vocabulary lives in one place.
"""

from __future__ import annotations

from typing import Final

# Allocation of an order line.
INVALID_QUANTITY: Final = "invalid_quantity"  # qty <= 0 (or a negative count, a zero adjust)
UNKNOWN_CHANNEL: Final = "unknown_channel"  # the channels table has no record of the order's channel
UNKNOWN_SKU: Final = "unknown_sku"  # no inventory event ever reached this SKU
INSUFFICIENT_STOCK: Final = "insufficient_stock"  # not enough available / channel ATS
CHANNEL_NOT_ALLOWED: Final = "channel_not_allowed"  # the allow-list excludes every stocked location
# The units are there but protected for higher-priority channels (allocate.py, protection levels).
PROTECTED_FOR_PRIORITY: Final = "protected_for_priority"
LOCATION_UNAVAILABLE: Final = "location_unavailable"  # the line names an unknown or offline location
SHIP_COMPLETE_FAILED: Final = "ship_complete_failed"  # domain.orders: another line of the order failed

#: The reasons a line is short of units: it may take part of them or wait (waitlist.py).
SHORT: Final = (INSUFFICIENT_STOCK, PROTECTED_FOR_PRIORITY)

LOT_UNAVAILABLE: Final = "lot_unavailable"  # a pick names a lot without enough unexpired free units

# Why an order line is released by its order (the order stage's rules, domain.orders).
CANCELLED: Final = "cancelled"  # the order, or the line, was cancelled
AMENDED: Final = "amended"  # an order edit: fewer units, or the line left the order (amend.py)

# Why a line waits (a `backordered` event's reason) or was moved or released by the engine.
INCOMING: Final = "incoming"  # backordered against expected incoming stock
WAITLISTED: Final = "waitlisted"  # the channel lets lines wait for stock instead of failing
REALLOCATED: Final = "reallocated"  # released here because it moves (a reallocated/picked follows)
EXPIRED: Final = "expired"  # the reservation's time to live passed before a pick
LOCATION_OFFLINE: Final = "location_offline"
LOCATION_STALE: Final = "location_stale"
COUNT_SHORTAGE: Final = "count_shortage"  # a count or adjustment left fewer units than were held
HOLD_EXPIRED: Final = "hold_expired"  # a checkout hold's time to live passed before it was confirmed

# Later commands on an order line (release, pick, fulfil, return).
UNKNOWN_LINE: Final = "unknown_line"  # this SKU never saw the line
NOT_ALLOCATED: Final = "not_allocated"  # the line holds no units the command could move
LOCATION_MISMATCH: Final = "location_mismatch"  # the line holds nothing at the named location
EXCEEDS_ALLOCATION: Final = "exceeds_allocation"  # more than the line holds there
ALREADY_FULFILLED: Final = "already_fulfilled"  # release of a line that has shipped
NOT_FULFILLED: Final = "not_fulfilled"  # return of a known line that shipped nothing
EXCEEDS_FULFILLED: Final = "exceeds_fulfilled"  # return of more than shipped and not yet returned
LOCATION_REQUIRED: Final = "location_required"  # a return that names no location and has none known
ON_HOLD: Final = "on_hold"  # a pick or shipment of a line held for a cart, not yet confirmed
NOT_HELD: Final = "not_held"  # a confirm or extend of a line that is not (or no longer) on hold
AMEND_BELOW_PICKED: Final = "amend_below_picked"  # an edit below the units picked or shipped
LINE_CLOSED: Final = "line_closed"  # an edit of a line shipped, returned, released or rejected
INVALID_TTL: Final = "invalid_ttl"  # a hold or extension with a time to live of zero or less

# Inventory events.
REASON_REQUIRED: Final = "reason_required"  # an adjustment without a reason
NEGATIVE_ON_HAND: Final = "negative_on_hand"  # an adjustment below zero units on hand
EXCEEDS_QUALITY_CONTROL: Final = "exceeds_quality_control"  # inspecting more than awaits inspection
INVALID_RESULT: Final = "invalid_result"  # an inspection result other than pass or fail

# Transfers between locations (domain/transfers.py).
INSUFFICIENT_FREE_STOCK: Final = "insufficient_free_stock"  # a shipment of more than is free at the source
DESTINATION_REQUIRED: Final = "destination_required"  # a shipment naming no destination, or its source
DUPLICATE_TRANSFER: Final = "duplicate_transfer"  # a shipment of a transfer id already shipped
UNKNOWN_TRANSFER: Final = "unknown_transfer"  # a receipt of a transfer never shipped (or naming none)
TRANSFER_ALREADY_RECEIVED: Final = "transfer_already_received"  # a second receipt of one transfer
EXCEEDS_IN_TRANSIT: Final = "exceeds_in_transit"  # a receipt of more units than the transfer shipped
LOT_NOT_TRANSFERABLE: Final = "lot_not_transferable"  # a transfer naming a lot: they move units outside lots
