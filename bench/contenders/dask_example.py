"""The Dask example's three approaches (``dask-embarrassingly-parallel-example``), as written.

The driver builds the example's ``input_params`` DataFrame, the row-style function runs over
``input_params.values`` (a dask.bag of 100 partitions, ``client.map``, or ``dask.delayed``), the
results come back to the driver, which writes params and results as one Parquet file. They
run on the workload's cluster; ``client.map`` and ``dask.delayed`` make a task per item, so
they run at a smaller N.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bench.task import Outcome, Task, prepare_output, write_partition


def _example(task: Task, run: Callable[[Callable[..., Any], np.ndarray], list[Any]]) -> Outcome:
    import pandas as pd

    from bench.contenders.cluster import local_client

    rng = np.random.default_rng(task.seed)
    low, high = (np.array(b) for b in zip(*task.columns.values(), strict=True))
    input_params = pd.DataFrame(
        rng.uniform(low, high, size=(task.n, len(task.columns))), columns=list(task.columns)
    )
    with local_client(task) as counter:
        results = run(task.function("row"), input_params.values)
    prepare_output(task.output)
    params = {c: input_params[c].to_numpy() for c in input_params.columns}
    write_partition(task.output, 0, params, list(results))
    return Outcome(tasks=counter.count)


def dask_bag(task: Task) -> Outcome:
    """``db.from_sequence(list(input_params.values), npartitions=100).map(f).compute()``."""
    import dask.bag as db

    return _example(
        task, lambda fn, values: db.from_sequence(list(values), npartitions=100).map(fn).compute()
    )


def dask_client_map(task: Task) -> Outcome:
    """``client.gather(client.map(f, input_params.values))``."""
    from distributed import get_client

    def run(fn: Callable[..., Any], values: np.ndarray) -> list[Any]:
        client = get_client()
        return client.gather(client.map(fn, values))

    return _example(task, run)


def dask_delayed(task: Task) -> Outcome:
    """``dask.compute(*[dask.delayed(f)(args) for args in input_params.values])``."""
    import dask

    return _example(
        task, lambda fn, values: list(dask.compute(*[dask.delayed(fn)(args) for args in values]))
    )
