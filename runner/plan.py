"""Partitions: the layout of a sweep, its descriptors, and what is still to do.

Everything here is pure: a layout plus the set of finished partitions gives the
descriptors to run. Partition 0 may be a short *probe* partition: it runs alone,
fixes the result schema and measures the time per item that sizes the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Descriptor:
    """One partition, as it travels through the scheduler: a few integers."""

    index: int
    start: int
    stop: int

    @property
    def items(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Layout:
    """``n_items`` split as ``[0, head)`` then consecutive partitions of ``size`` items."""

    n_items: int
    head: int
    size: int

    def __post_init__(self) -> None:
        if self.n_items < 0 or self.size < 1 or not 0 < self.head <= max(self.n_items, 1):
            raise ValueError(f"invalid layout {self}")

    @property
    def partitions(self) -> int:
        if self.n_items <= self.head:
            return 1
        return 1 + math.ceil((self.n_items - self.head) / self.size)

    def descriptor(self, index: int) -> Descriptor:
        if not 0 <= index < self.partitions:
            raise IndexError(index)
        if index == 0:
            return Descriptor(0, 0, min(self.head, self.n_items))
        start = self.head + (index - 1) * self.size
        return Descriptor(index, start, min(start + self.size, self.n_items))

    def descriptors(self) -> list[Descriptor]:
        return [self.descriptor(i) for i in range(self.partitions)]

    def to_dict(self) -> dict[str, int]:
        return {
            "n_items": self.n_items,
            "head": self.head,
            "size": self.size,
            "partitions": self.partitions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> Layout:
        return cls(int(d["n_items"]), int(d["head"]), int(d["size"]))


def todo(layout: Layout, done: Iterable[int]) -> list[Descriptor]:
    """Descriptors of the partitions not yet in the output (resume = desired - actual)."""
    finished = set(done)
    return [d for d in layout.descriptors() if d.index not in finished]
