"""Ray: ``ray.remote`` per item, and Ray Data ``range -> map_batches -> write_parquet``.

Ray is an optional extra (``pip install -e '.[bench]'``): without it these contenders are
reported as skipped. Ray runs with as many CPUs as the workload's Dask cluster has slots.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from bench.contenders.plain import in_blocks
from bench.task import Outcome, Skipped, Task, call_rows, generate


def _start(task: Task) -> Any:
    try:
        import ray
    except ImportError as e:
        raise Skipped("ray not installed") from e
    ray.init(num_cpus=task.slots, include_dashboard=False, log_to_driver=False)
    return ray


def ray_remote(task: Task) -> Outcome:
    """One ``ray.remote`` task per item (row style), the driver drawing params and writing."""
    ray = _start(task)
    try:
        remote = ray.remote(task.function("row"))
        in_blocks(task, lambda rows: ray.get([remote.remote(r) for r in rows]))
    finally:
        ray.shutdown()
    return Outcome(tasks=task.n)


def _ray_data(task: Task, style: str) -> Outcome:
    ray = _start(task)
    fn = task.function(style)

    def compute(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = batch["id"]
        params = generate(task, int(ids[0]), len(ids))
        result = fn(params) if style == "batch" else call_rows(fn, params)
        return {**params, "result": np.asarray(result)}

    try:
        ds = ray.data.range(task.n, override_num_blocks=task.partitions)
        ds = ds.map_batches(compute, batch_format="numpy", batch_size=None)
        ds.write_parquet(os.path.abspath(task.output))
    finally:
        ray.shutdown()
    return Outcome(extra={"blocks": task.partitions})


def ray_data_row(task: Task) -> Outcome:
    """Ray Data, one batch per block, the function called per row in a list comprehension."""
    return _ray_data(task, "kwargs")


def ray_data_batch(task: Task) -> Outcome:
    """Ray Data, one batch per block, the vectorised (batch) function called on it."""
    return _ray_data(task, "batch")
