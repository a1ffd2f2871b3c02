"""Workloads W1-W6 of issue 9 and which contender runs in each, at which N, per mode.

A workload has one or more :class:`Group` s (W1 at 10^6 and at 3x10^7, W3 at each size); the
ratios of the table compare the contenders of one group to its ``handwritten`` entry. An
:class:`Entry` may run at a smaller N than its group (the approaches that make a task per
item), which the table shows.

Modes: ``default`` (``make bench``, under ~10 minutes on 2 cores), ``quick`` (smaller N; the
Ray contenders and W3/W4 only when named with ``--contenders`` / ``--only``), ``full``
(10^8 items in W3, more contenders at 3x10^7).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

UNIFORM4 = {k: (0.0, 1.0) for k in "abcd"}
SLEEP4 = {"a": (0.0, 0.02), **{k: (0.0, 1.0) for k in "bcd"}}  # a: the sleep time, U(0, 20 ms)
RAY = ("ray-remote", "ray-data-row", "ray-data-batch")
NOT_QUICK = ("W3", "W4")  # run in quick mode only when --only names them


def partitions_for(n: int) -> int:
    """Partitions of the hand-written contenders on ``n`` items: 300, fewer below 30,000."""
    return max(1, min(300, n // 100))


@dataclass(frozen=True)
class Entry:
    """One contender in a group: ``n`` (default: the group's) and where its I/O goes.

    ``io`` is ``local`` (generated params, local output) or ``s3`` (W4: params read from the
    Parquet dataset on the local S3 server, results written to it).
    """

    contender: str
    n: int | None = None
    io: str = "local"

    @property
    def label(self) -> str:
        """The contender's name in the table."""
        return self.contender if self.io == "local" else f"{self.contender} (s3)"


@dataclass(frozen=True)
class Group:
    """Contenders measured side by side on one workload at one size."""

    workload: str
    title: str
    family: str
    n: int
    entries: tuple[Entry, ...]
    columns: dict[str, tuple[float, float]] = field(default_factory=lambda: UNIFORM4)
    workers: int = 2
    threads: int = 1
    cluster: bool = True
    repeat: int = 1

    def size(self, entry: Entry) -> int:
        """Items ``entry`` runs."""
        return self.n if entry.n is None else min(entry.n, self.n)

    def timeout(self, n: int) -> float:
        """Seconds a contender may take on ``n`` items before it is stopped."""
        if self.family == "sleep":
            return 120 + 3 * n * 0.01 / (self.workers * self.threads)
        return 120 + n * 20e-6


def _entries(*names: str, n: int | None = None) -> tuple[Entry, ...]:
    return tuple(Entry(name, n) for name in names)


def plan(mode: str) -> list[Group]:
    """Every group of ``mode`` (``quick``, ``default`` or ``full``), before any selection."""
    quick, full = mode == "quick", mode == "full"
    groups: list[Group] = []

    # W1 overhead: the zero-work function on generated params, local output. The Dask
    # example's approaches and ray.remote pay per item (a task, or an item in the graph) and
    # run at a smaller N: the bag of 10^6 rows took over 140 s here.
    def smaller(q: int, d: int, f: int) -> int:
        return q if quick else f if full else d

    ray_batch = _entries("ray-data-batch") if full else ()  # default: in W6 only
    groups.append(
        Group(
            "W1",
            "overhead",
            "zero",
            100_000 if quick else 1_000_000,
            (
                *_entries("loop", "mp-pool", "joblib"),
                Entry("ray-remote", smaller(2_000, 10_000, 30_000)),
                *_entries("ray-data-row"),
                *ray_batch,
                Entry("dask-bag", smaller(20_000, 100_000, 300_000)),
                *_entries("dask-client-map", "dask-delayed", n=smaller(1_000, 10_000, 30_000)),
                *_entries("handwritten", "handwritten-batch"),
                *_entries("sweep-kwargs", "sweep-row", "sweep-batch", "sweep-isolated"),
            ),
        )
    )
    if not quick:
        big = _entries("handwritten", "sweep-kwargs")
        if full:
            big += (
                *_entries("loop", "mp-pool", "joblib", "ray-data-row", "ray-data-batch"),
                *_entries("handwritten-batch", "sweep-row", "sweep-batch", "sweep-isolated"),
            )
        groups.append(Group("W1", "overhead", "zero", 30_000_000, big))

    # W2 balance: sleep(U(0, 20 ms)) on 4 slots (2 workers x 2 threads).
    balance = _entries("handwritten", "dask-bag", "sweep-kwargs")
    if full:
        balance += _entries("dask-client-map", "dask-delayed", "sweep-row", "sweep-batch")
    groups.append(
        Group("W2", "balance", "sleep", 1_200 if quick else 24_000, balance, SLEEP4, threads=2)
    )

    # W3 scale: the sweep's RSS, tasks and output size from 10^5 items up.
    sizes = (
        [10_000, 100_000]
        if quick
        else [100_000, 1_000_000, 10_000_000] + ([100_000_000] if full else [])
    )
    for size in sizes:
        groups.append(Group("W3", "scale", "zero", size, _entries("handwritten", "sweep-kwargs")))

    # W4 I/O: params from a Parquet dataset on S3 and results to S3, vs generated and local.
    io = tuple(
        Entry(name, io=where)
        for name in ("handwritten", "sweep-kwargs")
        for where in ("local", "s3")
    )
    groups.append(
        Group("W4", "I/O", "zero", 100_000 if quick else 3_000_000 if full else 1_000_000, io)
    )

    # W5 latency: a 10-item sweep, command start to exit, on the embedded local default.
    groups.append(
        Group(
            "W5",
            "latency",
            "zero",
            10,
            _entries("loop", "handwritten", "sweep-kwargs"),
            cluster=False,
            repeat=1 if quick else 3,
        )
    )

    # W6 vectorised: a NumPy function per batch vs per row, the sweep vs Ray Data.
    groups.append(
        Group(
            "W6",
            "vectorised",
            "vector",
            200_000 if quick else 10_000_000 if full else 3_000_000,
            _entries(
                "handwritten",
                "handwritten-batch",
                "sweep-kwargs",
                "sweep-batch",
                "ray-data-row",
                "ray-data-batch",
            ),
        )
    )
    return groups


def select(
    groups: list[Group],
    mode: str,
    only: set[str] | None = None,
    contenders: set[str] | None = None,
    items: int | None = None,
) -> list[Group]:
    """Keep the workloads in ``only`` and the contenders in ``contenders`` (``None``: all).

    In quick mode, W3/W4 need naming in ``only`` and the Ray contenders in ``contenders``.
    ``items`` replaces every group's N (entries that run at a smaller N keep the smaller),
    which makes the groups of a workload one.
    """
    chosen: list[Group] = []
    for g in groups:
        if only is not None and g.workload not in only:
            continue
        if mode == "quick" and only is None and g.workload in NOT_QUICK:
            continue
        entries = tuple(
            e
            for e in g.entries
            if (contenders is None or e.contender in contenders)
            and not (mode == "quick" and contenders is None and e.contender in RAY)
        )
        if not entries:
            continue
        same = next((c for c in chosen if c.workload == g.workload), None)
        if items is None or same is None:
            chosen.append(replace(g, entries=entries, n=g.n if items is None else items))
        else:  # one N for the workload: its groups become one
            have = {(e.contender, e.io) for e in same.entries}
            more = tuple(e for e in entries if (e.contender, e.io) not in have)
            chosen[chosen.index(same)] = replace(same, entries=same.entries + more)
    return chosen
