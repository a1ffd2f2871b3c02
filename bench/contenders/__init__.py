"""The contenders: name -> function taking a :class:`bench.task.Task`, returning an Outcome.

Adding one is a function (in one of these modules or a new one) plus one line here. A
contender runs in a fresh child process (``bench.child``), which times it, takes the peak RSS
and checks its output; it imports what it needs inside the function, so a light contender's
RSS is not a heavy one's.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.contenders import dask_example, handwritten, plain, rayc, sweep
from bench.task import Outcome, Task

BASELINE = "handwritten"

CONTENDERS: dict[str, Callable[[Task], Outcome]] = {
    "loop": plain.loop,
    "mp-pool": plain.mp_pool,
    "joblib": plain.joblib_loky,
    "ray-remote": rayc.ray_remote,
    "ray-data-row": rayc.ray_data_row,
    "ray-data-batch": rayc.ray_data_batch,
    "dask-bag": dask_example.dask_bag,
    "dask-client-map": dask_example.dask_client_map,
    "dask-delayed": dask_example.dask_delayed,
    BASELINE: handwritten.handwritten,
    "handwritten-batch": handwritten.handwritten_batch,
    "sweep-kwargs": sweep.sweep_kwargs,
    "sweep-row": sweep.sweep_row,
    "sweep-batch": sweep.sweep_batch,
    "sweep-isolated": sweep.sweep_isolated,
}
