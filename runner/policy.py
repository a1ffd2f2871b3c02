"""Pure policies: decisions with no cluster, storage or Dask in them.

Each is a small frozen object with a method that maps numbers to numbers, so it can
be unit-tested exhaustively and swapped without touching the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PartitionSizing:
    """Choose items per partition from a timing sample.

    Partitions should take about ``target_seconds`` (seconds, not microseconds: the
    per-task overhead of Dask is ~1 ms), yet there must be at least
    ``min_partitions_per_worker`` per worker so every worker stays busy to the end
    and the tail is short. ``max_items`` bounds the memory a partition needs.
    """

    target_seconds: float = 10.0
    min_partitions_per_worker: int = 4
    max_items: int = 1_000_000
    min_items: int = 1

    def size(self, n_items: int, seconds_per_item: float, workers: int) -> int:
        if n_items <= 0:
            return 1
        per_item = max(seconds_per_item, 1e-9)
        by_time = int(self.target_seconds / per_item)
        by_balance = math.ceil(n_items / max(1, workers * self.min_partitions_per_worker))
        size = min(by_time, by_balance, self.max_items)
        return max(self.min_items, size)


@dataclass(frozen=True)
class ScalingPolicy:
    """How many workers the sweep can use now: ``ceil(remaining / per_worker)`` within bounds.

    Recomputed as partitions finish, so the tail of a sweep does not hold idle workers;
    ``remaining == 0`` scales to ``minimum``.
    """

    minimum: int = 0
    maximum: int = 10
    partitions_per_worker: int = 2

    def __post_init__(self) -> None:
        if (
            self.minimum < 0
            or self.maximum < max(1, self.minimum)
            or self.partitions_per_worker < 1
        ):
            raise ValueError(f"invalid scaling bounds: {self}")

    def workers(self, remaining_partitions: int) -> int:
        want = math.ceil(max(0, remaining_partitions) / self.partitions_per_worker)
        return max(self.minimum, min(self.maximum, want))


@dataclass(frozen=True)
class FailureBudget:
    """Failed items a sweep may have and still succeed: a count, or a fraction of all items."""

    max_failures: int | float = 0

    def allowed(self, total_items: int) -> int:
        if isinstance(self.max_failures, float) and self.max_failures < 1:
            return math.floor(self.max_failures * total_items)
        return int(self.max_failures)

    def exceeded(self, failures: int, total_items: int) -> bool:
        return failures > self.allowed(total_items)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a storage call that could not reach storage: how many, and the waits.

    Item errors have ``retries`` in the spec; a partition task that raised has
    ``sweep.task-retries``; this one covers storage the runner could not reach.
    """

    retries: int = 2
    wait: float = 1.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based): doubling from ``wait``."""
        return self.wait * 2**attempt
