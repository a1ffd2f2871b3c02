"""Pure policies: decisions with no cluster, storage or Dask in them.

Each is a small frozen object with a method that maps numbers to numbers, so it can
be unit-tested exhaustively and swapped without touching the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PartitionSizing:
    """Choose the partition sizes of a sweep from the time per item and the slots.

    A *slot* is one worker thread. Partitions take at most ``target_seconds`` (and
    ``max_items``, which bounds a partition's memory) while much work is left; then
    guided self-scheduling: each next partition gets ``1 / (tail_factor * slots)`` of
    what is left, so the last ones are small and every slot finishes at about the
    same time. No partition is below ``min_seconds`` (a task and a file cost a few
    milliseconds) unless the items run out. The result is a run-length list.
    """

    target_seconds: float = 10.0
    min_seconds: float = 0.25
    tail_factor: float = 2.0
    max_items: int = 1_000_000

    def sizes(self, n_items: int, seconds_per_item: float, slots: int) -> list[tuple[int, int]]:
        """``(size, count)`` runs that add up to ``n_items``."""
        per = max(seconds_per_item, 1e-9)
        cap = max(1, min(self.max_items, int(self.target_seconds / per)))
        floor = max(1, min(cap, math.ceil(self.min_seconds / per)))
        share = self.tail_factor * max(1, slots)  # the tail's divisor: left / share
        runs: list[tuple[int, int]] = []
        left = n_items

        def add(size: int, count: int) -> None:
            nonlocal left
            if count > 0:
                if runs and runs[-1][0] == size:
                    runs[-1] = (size, runs[-1][1] + count)
                else:
                    runs.append((size, count))
                left -= size * count

        # full partitions while left / share > cap (closed form: a sweep may have millions)
        add(cap, max(0, math.floor((left - cap * share) / cap)))
        while left > 0:
            want = math.ceil(left / share)
            if want > floor:
                add(min(cap, want), 1)
                continue
            if left >= floor * slots:
                add(floor, left // floor)
                add(left, 1 if left else 0)
            else:  # less than a floor-sized partition per slot: split it evenly, one each
                k = min(max(1, slots), left)
                q, r = divmod(left, k)
                add(q + 1, r)
                add(q, k - r)
        return runs


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
class SpendCap:
    """What a sweep may spend, in worker-hours and (priced) money, and whether it has.

    Spending is measured in busy worker-thread seconds (each partition's compute and
    write time, summed over the sweep's runs); a worker-hour is an hour of a worker's
    ``threads_per_worker`` threads, so a 4-thread worker busy for an hour is one.
    """

    max_worker_hours: float | None = None
    max_cost: float | None = None
    price_per_worker_hour: float | None = None
    threads_per_worker: int = 1

    def hours(self, thread_seconds: float) -> float:
        return round(thread_seconds / 3600.0 / max(1, self.threads_per_worker), 6)

    def cost(self, thread_seconds: float) -> float | None:
        if self.price_per_worker_hour is None:
            return None
        return round(self.hours(thread_seconds) * self.price_per_worker_hour, 6)

    @property
    def limit_hours(self) -> float | None:
        """The cap in worker-hours: the lower of the two caps (``None``: no cap)."""
        caps = [self.max_worker_hours] if self.max_worker_hours is not None else []
        if self.max_cost is not None and self.price_per_worker_hour:  # free workers: no cap
            caps.append(self.max_cost / self.price_per_worker_hour)
        return min(caps) if caps else None

    @property
    def limited(self) -> bool:
        return self.limit_hours is not None

    def reached(self, thread_seconds: float) -> bool:
        limit = self.limit_hours
        return limit is not None and self.hours(thread_seconds) >= limit

    def describe(self) -> str:
        """The cap, e.g. ``max_worker_hours 2`` or ``max_cost 10 (4 worker-hours at 2.5)``."""
        parts = []
        if self.max_worker_hours is not None:
            parts.append(f"max_worker_hours {self.max_worker_hours:g}")
        if self.max_cost is not None:
            parts.append(f"max_cost {self.max_cost:g}")
        return " and ".join(parts) or "no cap"

    def describe_spent(self, thread_seconds: float) -> str:
        cost = self.cost(thread_seconds)
        money = f" (cost {cost:.4g})" if cost is not None else ""
        return f"{self.hours(thread_seconds):.4g} worker-hours{money}"


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


@dataclass(frozen=True)
class InlinePolicy:
    """When the runner should start the cluster instead of running the items itself.

    The runner runs the probe in its own (isolated) child process first. A sweep of at
    most ``max_items`` items whose estimated work is at most ``max_seconds`` is finished
    there, with no cluster (the runner holds a partition's results: ``max_items`` keeps
    its memory small); a bigger one starts the cluster as soon as the estimate says so
    (after ``decide_after`` seconds of items), and the probe goes on while it starts.
    """

    max_seconds: float = 3.0
    max_items: int = 200_000
    decide_after: float = 0.05

    def start_cluster(self, n_items: int, done: int, elapsed: float) -> bool:
        """Whether the cluster is needed, after ``done`` items took ``elapsed`` seconds."""
        if n_items > self.max_items:
            return True
        if elapsed >= self.max_seconds:
            return done < n_items
        if done == 0 or elapsed < self.decide_after:
            return False
        return elapsed / done * n_items > self.max_seconds

    def finish_inline(self, items_left: int, seconds_per_item: float) -> bool:
        """Whether what is left after the probe is small enough to run without a cluster."""
        return items_left <= self.max_items and items_left * seconds_per_item <= self.max_seconds
