"""Which of several simultaneous requests for a SKU wins: arrival order, or priority where asked.

By default the allocator decides a SKU's requests in arrival order: the first to arrive
gets the last unit. A channel with `priority_window_ms` > 0 lets its lines yield to
higher-ranked lines (order priority, then channel priority, both higher first) that
arrive no later than that many milliseconds after them (by `occurred_at`): among
requests decided together, such a line is decided after them.

"Decided together" is the engine's batch: the requests for one SKU that the allocator
takes in at once (everything that arrived while it decided the previous batch). No request
is ever held back to wait for a rival, so a window costs no latency; under load, which is
when requests contend, batches are large. Anything that is not an allocation (a receipt,
a release, a pick) keeps its place and is never overtaken: the stock a request sees is
the stock that was there when it arrived, less what higher-ranked rivals took.

The reordering is a stable insertion: deterministic in the requests' order, their times
and the tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from streamalloc.domain.commands import AllocateLine
from streamalloc.domain.tables import Tables

T = TypeVar("T")


def contend(items: Sequence[T], request_of: Callable[[T], object], tables: Tables) -> list[T]:
    """`items` in the order to decide them; `request_of(item)` is its command (or anything).

    Only `AllocateLine` requests move, each ahead of earlier requests that yield to it.
    Returns `items` as a list, unchanged, when no channel has a window.
    """
    if not tables.contending:
        return list(items)
    out: list[T] = []
    for item in items:
        request = request_of(item)
        place = len(out)
        if type(request) is AllocateLine:
            rank = _rank(request, tables)
            while place > 0:
                earlier = request_of(out[place - 1])
                if type(earlier) is not AllocateLine or not _yields(earlier, request, rank, tables):
                    break
                place -= 1
        out.insert(place, item)
    return out


def _rank(request: AllocateLine, tables: Tables) -> tuple[int, int]:
    return (-request.priority, -tables.channel(request.channel).priority)


def _yields(earlier: AllocateLine, later: AllocateLine, later_rank: tuple[int, int], tables: Tables) -> bool:
    """Whether `earlier` is decided after `later`: it is outranked within its window."""
    window = tables.channel(earlier.channel).priority_window_ms
    return (
        window > 0
        and later.occurred_at <= earlier.occurred_at + window
        and later_rank < _rank(earlier, tables)
    )
