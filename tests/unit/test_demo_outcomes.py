"""What the demo tells of its kit orders, from the committed outputs (commands/demo.py)."""

from __future__ import annotations

from typing import Any

from streamalloc.commands.audit import CommittedOutputs
from streamalloc.commands.demo import KIT_ORDERS, kit_outcomes


def _status(order_id: str, **lines: str) -> dict[str, Any]:
    return {"order_id": order_id, "lines": [{"sku": sku, "status": status} for sku, status in lines.items()]}


def test_each_kit_order_is_told_by_its_first_committed_status_with_every_line_decided() -> None:
    first, second = KIT_ORDERS
    statuses = (
        _status(first, A="allocated", B="pending"),  # not decided yet
        _status(first, A="allocated", B="allocated"),
        _status(first, A="fulfilled", B="fulfilled"),  # later: the warehouse shipped it
        _status(second, A="allocated", B="rejected"),  # not settled: A is released next
        _status(second, A="released", B="rejected"),
    )
    outputs = CommittedOutputs((), (), (), statuses)

    told = kit_outcomes(outputs)

    assert told[0].endswith("(a line per component, all or nothing): A allocated, B allocated"), told
    assert told[1].endswith(": A released, B rejected"), told
    assert kit_outcomes(CommittedOutputs((), (), (), ()))[0].endswith(": not decided")
