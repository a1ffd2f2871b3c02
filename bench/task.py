"""What a contender is given (:class:`Task`) and what it hands back (:class:`Outcome`).

Also the helpers every hand-rolled contender shares, so they all do the same work per
partition: params drawn with NumPy from a per-partition seed (or read from the W4 dataset),
the function called, one Parquet file written.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench import funcs


class Skipped(Exception):
    """Raised by a contender that cannot run here; its message is the table's reason."""


@dataclass(frozen=True)
class Task:
    """One workload run as handed to a contender (JSON-serialisable).

    Parameters
    ----------
    workload
        ``W1`` … ``W6``.
    family
        Which functions of :data:`bench.funcs.FAMILIES` (``zero``, ``sleep``, ``vector``).
    n
        Items to compute.
    columns
        Parameter name -> ``(low, high)`` of its uniform distribution.
    output
        Directory or URL the results go to (created by the contender if needed).
    workdir
        A scratch directory of this run (spec files, temporary state).
    workers, threads
        The Dask cluster shape (worker processes x threads each); ``slots`` is their product.
    partitions
        How many partitions the hand-written contenders split the items into.
    params_url
        A Parquet dataset of the params, one file per partition (W4); ``None``: generated.
    cluster
        ``False`` for W5: the sweep spec has no ``cluster`` section (the embedded default).
    seed
        Seed of the generated params.
    """

    workload: str
    family: str
    n: int
    columns: dict[str, tuple[float, float]]
    output: str
    workdir: str
    workers: int = 2
    threads: int = 1
    partitions: int = 300
    params_url: str | None = None
    cluster: bool = True
    seed: int = 42

    @property
    def slots(self) -> int:
        """Worker threads of the cluster: how many items run at once."""
        return self.workers * self.threads

    def function(self, style: str) -> Callable[..., Any]:
        """The workload's function in call style ``kwargs``, ``row`` or ``batch``."""
        return funcs.FAMILIES[self.family][style]

    def to_dict(self) -> dict[str, Any]:
        """The task as JSON-ready data (:meth:`from_dict` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """Rebuild a task written by :meth:`to_dict`."""
        columns = {k: (float(lo), float(hi)) for k, (lo, hi) in data["columns"].items()}
        return cls(**{**data, "columns": columns})


@dataclass
class Outcome:
    """What a contender measured beyond the wall time (which the child process takes).

    Parameters
    ----------
    tasks
        Scheduler tasks run, where the contender has a scheduler to count them.
    peak_rss_mb
        Peak RSS of the driving process, when that is not the contender's own process
        (the ``sweep`` CLI); ``None``: the child's own peak RSS is it.
    rss_source
        Where ``peak_rss_mb`` comes from, for the record.
    extra
        Anything else worth keeping in ``results.json``.
    """

    tasks: int | None = None
    peak_rss_mb: float | None = None
    rss_source: str = "own"
    extra: dict[str, Any] = field(default_factory=dict)


def partition_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into at most ``parts`` contiguous ``(start, stop)`` ranges."""
    step = max(1, -(-n // max(1, parts)))
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def generate(task: Task, index: int, size: int) -> dict[str, np.ndarray]:
    """Partition ``index``'s params: one uniform NumPy array per column, seeded by the index."""
    rng = np.random.default_rng([task.seed, index])
    return {name: rng.uniform(lo, hi, size) for name, (lo, hi) in task.columns.items()}


def call_rows(fn: Callable[..., Any], params: dict[str, np.ndarray]) -> list[Any]:
    """``fn(a, b, c, d)`` for every row of four parameter arrays, in a list comprehension."""
    cols = (v.tolist() for v in params.values())
    return [fn(a, b, c, d) for a, b, c, d in zip(*cols, strict=True)]


def dataset_file(url: str, index: int) -> str:
    """Path of partition ``index`` in a params dataset written by the harness."""
    return f"{url.rstrip('/')}/part-{index:05d}.parquet"


def partition_params(task: Task, index: int, size: int) -> dict[str, np.ndarray]:
    """Partition ``index``'s params: generated, or read from ``task.params_url``."""
    if task.params_url is None:
        return generate(task, index, size)
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(dataset_file(task.params_url, index), "rb") as f:
        table = pq.read_table(f)
    return {name: table[name].to_numpy() for name in task.columns}


def write_partition(output: str, index: int, params: dict[str, np.ndarray], result: Any) -> None:
    """Write one partition's params and ``result`` column as ``part-<index>.parquet``."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(output)
    table = pa.table({**params, "result": result})
    with fs.open(f"{root}/part-{index:05d}.parquet", "wb") as f:
        pq.write_table(table, f)


def prepare_output(output: str) -> None:
    """Create a local output directory (object stores need none)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(output)
    if "file" in fs.protocol:
        fs.makedirs(root, exist_ok=True)


def ncores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))
