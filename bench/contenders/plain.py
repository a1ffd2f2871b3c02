"""Contenders without a cluster: a plain loop, ``multiprocessing.Pool`` and joblib.

The pool and joblib follow how they are usually fed: the driver draws the params in blocks of
up to 10^6 items, hands the rows (tuples) to ``map`` in the Dask example's row style
(``f(list_of_values)``), gathers the results and writes one Parquet file per block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.task import (
    Outcome,
    Skipped,
    Task,
    call_rows,
    generate,
    ncores,
    partition_bounds,
    partition_params,
    prepare_output,
    write_partition,
)

BLOCK = 1_000_000


def loop(task: Task) -> Outcome:
    """One process: per partition, draw the params, a list comprehension, one Parquet file."""
    prepare_output(task.output)
    fn = task.function("kwargs")
    for index, (lo, hi) in enumerate(partition_bounds(task.n, task.partitions)):
        params = partition_params(task, index, hi - lo)
        write_partition(task.output, index, params, call_rows(fn, params))
    return Outcome()


def in_blocks(task: Task, compute: Callable[[list[tuple[float, ...]]], list[Any]]) -> None:
    """Draw the params in the driver, block by block; ``compute`` maps the rows of a block."""
    prepare_output(task.output)
    for index, (lo, hi) in enumerate(partition_bounds(task.n, -(-task.n // BLOCK))):
        params = generate(task, index, hi - lo)
        rows = list(zip(*(v.tolist() for v in params.values()), strict=True))
        write_partition(task.output, index, params, compute(rows))


def mp_pool(task: Task) -> Outcome:
    """``multiprocessing.Pool(ncores).map`` with four chunks per process and block."""
    from multiprocessing import Pool

    fn = task.function("row")
    procs = ncores()
    with Pool(procs) as pool:
        in_blocks(task, lambda rows: pool.map(fn, rows, chunksize=max(1, len(rows) // (4 * procs))))
    return Outcome(extra={"processes": procs})


def joblib_loky(task: Task) -> Outcome:
    """``joblib.Parallel(n_jobs=ncores, backend="loky", batch_size="auto")``, one call per block."""
    try:
        from joblib import Parallel, delayed
    except ImportError as e:
        raise Skipped("joblib not installed") from e
    fn = task.function("row")
    with Parallel(n_jobs=ncores(), backend="loky", batch_size="auto") as parallel:
        in_blocks(task, lambda rows: parallel(delayed(fn)(r) for r in rows))
    return Outcome(extra={"processes": ncores()})
