"""Extending a sweep: the same spec with more items at the end is not a new sweep.

A ``random``, ``sobol`` or ``halton`` source generates item ``i``'s values from the seed
and ``i`` alone, so raising ``n`` keeps the first items as they were: only the new ones
run, in new partitions after the existing ones. A grid whose *first* axis (the slowest
in the item numbering) only gained values at its end extends the same way. What cannot
be extended says why: a Latin hypercube's stratification belongs to all ``n`` points,
and a grid that gained values on another axis interleaves new points with the old ones.

:func:`find_extension` decides, from the spec and the output's manifest alone (the
manifest's spec hash is the old spec's: the new spec with the old ``n`` must hash to
it); :func:`extended_layout` appends the new partitions to the layout.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from .exceptions import OutputConflictError
from .plan import Layout, fill
from .policy import PartitionSizing
from .spec import SweepSpec

#: sources whose item ``i`` depends on the seed and ``i`` only
EXTENDABLE = ("random", "sobol", "halton")


@dataclass(frozen=True)
class Extension:
    """The output holds items ``0..old_items`` of this sweep; it now has ``new_items``."""

    kind: str
    old_items: int
    new_items: int

    def record(self) -> dict[str, Any]:
        """The manifest's history entry."""
        return {
            "extended": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source": self.kind,
            "items_from": self.old_items,
            "items_to": self.new_items,
        }


def find_extension(spec: SweepSpec, manifest: dict[str, Any]) -> Extension | None:
    """Whether ``spec`` is the output's sweep with more items at the end.

    Returns ``None`` when it is not (the caller then reports a different sweep).

    Raises
    ------
    OutputConflictError
        It is the same sweep with more items, but it cannot be extended (``lhs``; a grid
        that gained values on an axis other than the first), saying what to do instead.
    """
    old_n, old_hash = manifest.get("items"), manifest.get("spec_hash")
    if not isinstance(old_n, int) or not old_hash:
        return None
    kind = spec.params.kind
    source = getattr(spec.params, kind)
    if kind in (*EXTENDABLE, "lhs"):
        if (
            source.n <= old_n
            or _with(spec, kind, source.model_copy(update={"n": old_n})) != old_hash
        ):
            return None
        if kind == "lhs":
            raise OutputConflictError(
                f"params.lhs: n grew from {old_n:,} to {source.n:,}, but a Latin hypercube cannot"
                " be extended without breaking its stratification (every point's stratum depends"
                " on n): use another output (or --overwrite), or a sobol, halton or random"
                " source, which can be extended"
            )
        return Extension(kind, old_n, source.n)
    if kind == "grid":
        return _grid_extension(spec, manifest, old_n, old_hash)
    return None


def _with(spec: SweepSpec, kind: str, source: Any) -> str:
    """The spec hash of ``spec`` with ``params.<kind>`` replaced by ``source``."""
    params = spec.params.model_copy(update={kind: source})
    return spec.model_copy(update={"params": params}).spec_hash()


def _grid_extension(
    spec: SweepSpec, manifest: dict[str, Any], old_n: int, old_hash: str
) -> Extension | None:
    grid = dict(spec.params.grid or {})
    names = list(grid)
    first = grid[names[0]]
    rest = math.prod(_size(grid[k]) for k in names[1:])
    if isinstance(first, list) and rest and old_n % rest == 0 and old_n // rest < len(first):
        kept = {**grid, names[0]: first[: old_n // rest]}
        if _with(spec, "grid", kept) == old_hash:
            return Extension("grid", old_n, len(first) * rest)
    old = (((manifest.get("spec") or {}).get("params") or {}).get("grid")) or {}
    if list(old) == names and all(
        isinstance(grid[k], list) and isinstance(old[k], list) and grid[k][: len(old[k])] == old[k]
        for k in names
    ):
        gained = [k for k in names if len(grid[k]) > len(old[k])]
        if gained:
            raise OutputConflictError(
                f"params.grid: axis {', '.join(gained)} gained values, which interleaves new"
                " points with the old ones in the item numbering (only values added at the end"
                f" of the first axis, {names[0]!r}, extend a grid): this is a new sweep; use"
                " another output (or --overwrite)"
            )
    return None


def _size(axis: Any) -> int:
    return len(axis) if isinstance(axis, list) else int(axis.num)


def extended_layout(
    layout: Layout,
    new_items: int,
    explicit: int | None,
    per_item: float,
    slots: int,
    sizing: PartitionSizing,
) -> Layout:
    """``layout`` plus partitions for its new items, after the existing ones.

    They are sized like any sweep's (``explicit`` items each, or by ``sizing`` from
    ``per_item`` seconds per item on ``slots`` slots).
    """
    start, count = layout.n_items, new_items - layout.n_items
    if count <= 0:
        return layout
    if explicit:
        sizes = [(explicit, count // explicit), (count % explicit, 1)]
    else:
        sizes = sizing.sizes(count, per_item, slots)
    return Layout(new_items, (*layout.runs, *fill([(start, count)], sizes)), layout.probes)


def sobol_warning(spec: SweepSpec) -> str | None:
    """A Sobol' design whose ``n`` is not a power of two loses its balance properties."""
    sobol = spec.params.sobol
    if sobol is None or sobol.n & (sobol.n - 1) == 0:
        return None
    lower, upper = 1 << (sobol.n.bit_length() - 1), 1 << sobol.n.bit_length()
    return (
        f"params.sobol: n={sobol.n:,} is not a power of two; scipy's Sobol' points keep their"
        f" balance properties only for 2^m points (use n: {lower:,} or {upper:,})"
    )
