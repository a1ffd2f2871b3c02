"""The baseline: a hand-written Dask + pyarrow pipeline (every ratio in the table is against it).

A dask.bag over the partition indices (``task.partitions``, 300 at full size); each partition
draws its params with NumPy from its own seed (or reads its file of the W4 dataset), calls the
function in a list comprehension (or once on the arrays, ``handwritten-batch``) and writes one
Parquet file with ``pyarrow.parquet.write_table``.
"""

from __future__ import annotations

from functools import partial

from bench.task import (
    Outcome,
    Task,
    call_rows,
    partition_bounds,
    partition_params,
    prepare_output,
    write_partition,
)


def run_partition(task: Task, style: str, part: tuple[int, tuple[int, int]]) -> int:
    """Compute and write one partition; returns its item count."""
    index, (lo, hi) = part
    params = partition_params(task, index, hi - lo)
    fn = task.function(style)
    result = fn(params) if style == "batch" else call_rows(fn, params)
    write_partition(task.output, index, params, result)
    return hi - lo


def _pipeline(task: Task, style: str) -> Outcome:
    import dask.bag as db

    from bench.contenders.cluster import local_client

    prepare_output(task.output)
    parts = list(enumerate(partition_bounds(task.n, task.partitions)))
    with local_client(task) as counter:
        bag = db.from_sequence(parts, npartitions=len(parts))
        done = bag.map(partial(run_partition, task, style)).sum().compute()
    if done != task.n:
        raise RuntimeError(f"computed {done} items of {task.n}")
    return Outcome(tasks=counter.count, extra={"partitions": len(parts)})


def handwritten(task: Task) -> Outcome:
    """The hand-written pipeline, the function called per item (kwargs style, positionally)."""
    return _pipeline(task, "kwargs")


def handwritten_batch(task: Task) -> Outcome:
    """The hand-written pipeline, the batch function called once per partition."""
    return _pipeline(task, "batch")
