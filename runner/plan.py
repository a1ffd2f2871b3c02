"""Partitions: the layout of a sweep, its descriptors, and what is still to do.

Everything here is pure: a layout plus the set of finished partitions gives the
descriptors to run. A layout is a run-length list of partition sizes, fixed when the
sweep is first planned and kept in its manifest: partition 0 is the *probe* (it fixes
the result schema and measures the time per item), then partitions of the sizes the
sizing policy chose — full ones, then a tail that gets finer so every slot finishes
together (see :class:`runner.policy.PartitionSizing`).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Descriptor:
    """One partition, as it travels through the scheduler: a few integers."""

    index: int
    start: int
    stop: int

    @property
    def items(self) -> int:
        return self.stop - self.start


def run_lengths(sizes: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """``[5, 5, 5, 3]`` → ``((5, 3), (3, 1))``: sizes as ``(size, count)`` runs."""
    return tuple((size, len(list(group))) for size, group in itertools.groupby(sizes))


@dataclass(frozen=True)
class Layout:
    """``n_items`` split into consecutive partitions: ``segments`` of ``(size, count)``."""

    n_items: int
    segments: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple((int(s), int(c)) for s, c in self.segments))
        if (
            self.n_items < 0
            or not self.segments
            or any(s < 1 or c < 1 for s, c in self.segments)
            or sum(s * c for s, c in self.segments) != max(self.n_items, 1)
        ):
            raise ValueError(f"invalid layout {self}")

    @classmethod
    def of_sizes(cls, n_items: int, sizes: Sequence[int]) -> Layout:
        return cls(n_items, run_lengths(sizes))

    @cached_property
    def _firsts(self) -> tuple[list[int], list[int]]:
        """Per segment: its first partition index and its first item."""
        index, item = [0], [0]
        for size, count in self.segments:
            index.append(index[-1] + count)
            item.append(item[-1] + size * count)
        return index, item

    @property
    def partitions(self) -> int:
        return self._firsts[0][-1]

    @property
    def head(self) -> int:
        """Items in the probe partition (partition 0)."""
        return self.segments[0][0]

    def descriptor(self, index: int) -> Descriptor:
        if not 0 <= index < self.partitions:
            raise IndexError(index)
        firsts, items = self._firsts
        seg = bisect.bisect_right(firsts, index) - 1
        size = self.segments[seg][0]
        start = items[seg] + (index - firsts[seg]) * size
        return Descriptor(index, start, min(start + size, self.n_items))

    def descriptors(self) -> list[Descriptor]:
        return [self.descriptor(i) for i in range(self.partitions)]

    def describe(self) -> str:
        """ "Say what the partitions are, e.g. ``the probe of 100 items, then 47 of 1,000 down to 50 items``."""
        sizes = [s for s, _ in self.segments[1:]]
        rest = sum(c for _, c in self.segments[1:])
        if not rest:
            return f"1 partition of {self.head:,} items"
        spread = (
            f"{sizes[0]:,}"
            if min(sizes) == max(sizes)
            else f"{max(sizes):,} down to {min(sizes):,}"
        )
        return f"the probe of {self.head:,} items, then {rest:,} of {spread} items"

    def to_dict(self) -> dict[str, object]:
        return {
            "n_items": self.n_items,
            "segments": [list(s) for s in self.segments],
            "partitions": self.partitions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Layout:
        n = int(d["n_items"])  # type: ignore[call-overload]
        if "segments" in d:
            return cls(n, tuple(tuple(s) for s in d["segments"]))  # type: ignore[union-attr]
        # the first format: a head partition, then equal ones
        head, size = int(d["head"]), int(d["size"])  # type: ignore[call-overload]
        head = min(head, max(n, 1))
        rest = n - head
        sizes = [head] + [size] * (rest // size) + ([rest % size] if rest % size else [])
        return cls.of_sizes(n, sizes)


def todo(layout: Layout, done: Iterable[int]) -> list[Descriptor]:
    """Descriptors of the partitions not yet in the output (resume = desired - actual)."""
    finished = set(done)
    return [d for d in layout.descriptors() if d.index not in finished]
