"""The Dask cluster every Dask-based contender of a workload runs on, and its task count."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin

from bench.task import Task


class TaskCounter(SchedulerPlugin):
    """Counts the tasks the scheduler ran to completion (each ``processing -> memory|erred``)."""

    name = "bench-task-counter"

    def __init__(self) -> None:
        self.count = 0

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """Count a task that finished (its result in memory, or an error)."""
        if start == "processing" and finish in ("memory", "erred"):
            self.count += 1


@contextmanager
def local_client(task: Task) -> Iterator[TaskCounter]:
    """A LocalCluster of ``task.workers`` processes x ``task.threads`` threads and its client.

    The scheduler runs in this process (as the ``sweep`` CLI's does), so its memory counts in
    the driving process's peak RSS. Yields the scheduler's :class:`TaskCounter`; the client
    is the default for ``compute()`` while the block runs.
    """
    with (
        LocalCluster(
            n_workers=task.workers,
            threads_per_worker=task.threads,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster),
    ):
        counter = TaskCounter()
        cluster.scheduler.add_plugin(counter)
        yield counter
