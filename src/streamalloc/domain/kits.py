"""Kits (bundles): one SKU sold as a set of other SKUs, and what a kit can sell.

The runtime reads the compacted `kits` topic into `Kit`s. A kit holds no stock of its own:
intake expands a kit line into one line per component (stages/intake.py), and a kit's
available-to-sell per channel is the number of whole kits its components make,
`kit_ats`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Kit:
    """A kit SKU and its components as (sku, units per kit), in the table's order."""

    kit_sku: str
    components: tuple[tuple[str, int], ...]


def kit_ats(kit: Kit, ats: Mapping[str, int]) -> int:
    """Whole kits the components' ATS make: the minimum over components of ATS // units per kit.

    A component `ats` does not name has none; a negative ATS (a channel oversold by a
    backorder) makes no kit, never a negative count.
    """
    return min((max(ats.get(sku, 0), 0) // qty for sku, qty in kit.components), default=0)


def kits_by_component(kits: Mapping[str, Kit]) -> dict[str, tuple[Kit, ...]]:
    """Component SKU -> the kits it is part of: whose ATS a change of its ATS moves."""
    index: dict[str, list[Kit]] = {}
    for kit in kits.values():
        for sku, _ in kit.components:
            index.setdefault(sku, []).append(kit)
    return {sku: tuple(found) for sku, found in index.items()}
