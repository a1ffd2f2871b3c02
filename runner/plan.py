"""Partitions: the layout of a sweep, its descriptors, and what is still to do.

Everything here is pure: a layout plus the set of finished partitions gives the
descriptors to run. A layout is a run-length list of partitions, fixed when the sweep
is first planned and kept in its manifest: first the *probes* (one per slot at once;
they fix the result schema and measure the time per item), then partitions of the
sizes the sizing policy chose — full ones, then a tail that gets finer so every slot
finishes together (see :class:`runner.policy.PartitionSizing`) — cut into the item
ranges the probes left.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Descriptor:
    """One partition, as it travels through the scheduler: a few integers.

    ``retry``: the partition is in the output; run its failed items again
    (:mod:`runner.retry`).
    """

    index: int
    start: int
    stop: int
    retry: bool = False

    @property
    def items(self) -> int:
        return self.stop - self.start


def run_lengths(sizes: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """``[5, 5, 5, 3]`` → ``((5, 3), (3, 1))``: sizes as ``(size, count)`` runs."""
    return tuple((size, len(list(group))) for size, group in itertools.groupby(sizes))


Run = tuple[int, int, int]  # (first item, size, count): count contiguous partitions


def fill(gaps: Sequence[tuple[int, int]], sizes: Sequence[tuple[int, int]]) -> list[Run]:
    """Cut the item ranges ``gaps`` (``(start, length)``) into partitions of ``sizes``.

    ``sizes`` is a run-length list in the order the partitions should run; it adds up
    to the gaps' total. A partition that does not fit in what is left of a gap is cut
    in two there (its rest opens the next gap), so the sequence keeps its shape.
    """
    out: list[Run] = []

    def emit(start: int, size: int, count: int) -> None:
        if out and out[-1][1] == size and out[-1][0] + out[-1][1] * out[-1][2] == start:
            out[-1] = (out[-1][0], size, out[-1][2] + count)
        else:
            out.append((start, size, count))

    spans = iter([(a, n) for a, n in gaps if n > 0])
    pos, room = 0, 0
    for size, count in sizes:
        while count > 0 and size > 0:
            if room == 0:
                pos, room = next(spans)
            k = min(count, room // size)
            if k:
                emit(pos, size, k)
                pos, room, count = pos + k * size, room - k * size, count - k
            elif room:  # the partition straddles the gap's end: cut it there
                piece = size
                while piece:
                    if room == 0:
                        pos, room = next(spans)
                    t = min(piece, room)
                    emit(pos, t, 1)
                    pos, room, piece = pos + t, room - t, piece - t
                count -= 1
    return out


@dataclass(frozen=True)
class Layout:
    """``n_items`` split into partitions: ``runs`` of ``(first item, size, count)``.

    Partition indices follow the runs' order, which is the order they run in; their
    item ranges tile ``0..n_items`` but need not be in item order. The first ``probes``
    partitions are the probes (one per slot, each at the start of an equal share of
    the items); the others fill the gaps the probes left.
    """

    n_items: int
    runs: tuple[Run, ...]
    probes: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple((int(a), int(s), int(c)) for a, s, c in self.runs))
        spans = sorted((a, s * c) for a, s, c in self.runs)
        ok = (
            self.n_items >= 0
            and bool(self.runs)
            and all(s >= 1 and c >= 1 for _, s, c in self.runs)
            and 1 <= self.probes <= self.partitions
            and spans[0][0] == 0
            and all(a + n == b for (a, n), (b, _) in itertools.pairwise(spans))
            and spans[-1][0] + spans[-1][1] == max(self.n_items, 1)
        )
        if not ok:
            raise ValueError(f"invalid layout {self}")

    @classmethod
    def of_sizes(cls, n_items: int, sizes: Sequence[int]) -> Layout:
        """Consecutive partitions of these sizes, in item order (one probe: the first)."""
        return cls.consecutive(n_items, run_lengths(sizes))

    @classmethod
    def consecutive(cls, n_items: int, segments: Iterable[tuple[int, int]]) -> Layout:
        runs, start = [], 0
        for size, count in segments:
            runs.append((start, size, count))
            start += size * count
        return cls(n_items, tuple(runs))

    @cached_property
    def _firsts(self) -> list[int]:
        """Per run: its first partition index (and the total at the end)."""
        return list(itertools.accumulate((c for _, _, c in self.runs), initial=0))

    @property
    def partitions(self) -> int:
        return self._firsts[-1]

    @property
    def head(self) -> int:
        """Items in the first probe (partition 0)."""
        return self.runs[0][1]

    def descriptor(self, index: int) -> Descriptor:
        if not 0 <= index < self.partitions:
            raise IndexError(index)
        firsts = self._firsts
        r = bisect.bisect_right(firsts, index) - 1
        first, size, _ = self.runs[r]
        start = first + (index - firsts[r]) * size
        return Descriptor(index, start, min(start + size, self.n_items))

    def descriptors(self) -> list[Descriptor]:
        return [self.descriptor(i) for i in range(self.partitions)]

    def describe(self) -> str:
        """Say what the partitions are, e.g. ``the probe of 100 items, then 47 of 1,000 down to 50 items``."""
        probes = [self.descriptor(i).items for i in range(self.probes)]
        if len(probes) == 1:
            lead = f"the probe of {probes[0]:,} items"
        else:
            lead = f"{len(probes)} probes of {min(probes):,}..{max(probes):,} items"
        rest = self.partitions - self.probes
        if not rest:
            return f"1 partition of {self.head:,} items" if self.partitions == 1 else lead
        sizes = {s for _, s, _ in self.runs[self._run_of(self.probes) :]}
        spread = f"{max(sizes):,}" if len(sizes) == 1 else f"{max(sizes):,} down to {min(sizes):,}"
        return f"{lead}, then {rest:,} of {spread} items"

    def _run_of(self, index: int) -> int:
        return bisect.bisect_right(self._firsts, index) - 1

    def to_dict(self) -> dict[str, object]:
        return {
            "n_items": self.n_items,
            "runs": [list(r) for r in self.runs],
            "probes": self.probes,
            "partitions": self.partitions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Layout:
        n = int(d["n_items"])  # type: ignore[call-overload]
        if "runs" in d:
            runs = tuple(tuple(r) for r in d["runs"])  # type: ignore[union-attr]
            return cls(n, runs, int(d.get("probes", 1)))  # type: ignore[arg-type, call-overload]
        if "segments" in d:  # the second format: consecutive (size, count) runs
            return cls.consecutive(n, (tuple(s) for s in d["segments"]))  # type: ignore[union-attr, misc]
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
