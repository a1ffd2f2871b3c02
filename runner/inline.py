"""Partitions run by the runner itself, isolated in a child process, while no cluster is up.

The runner runs the probe (partition 0) this way while the cluster starts, so the
first results come before the workers do; and a sweep that is seconds of work runs
here whole and never starts a cluster (see :class:`runner.policy.InlinePolicy`).
The items run in a child process (:mod:`runner.isolate`), never in the runner: an
item that crashes or hangs costs that item, not the run.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .isolate import IsolatedRun, close_thread_child, start_thread_child

if TYPE_CHECKING:
    from .execute import TaskContext
    from .plan import Descriptor


class InlineSlot:
    """One thread of the runner that runs partitions, one at a time, in its child process."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sweep-inline")
        self.run: IsolatedRun | None = None  # the partition running now
        self.stop = threading.Event()

    def submit(self, desc: Descriptor, ctx: TaskContext, elastic: bool = False) -> Future[Any]:
        """Start ``desc``; with ``elastic`` (the probe) it ends early when :attr:`stop` is set."""
        from .execute import run_partition  # execute imports this module

        self.stop.clear()
        self.run = ctx.isolated_run()
        stop = self.stop if elastic else None
        return self._pool.submit(run_partition, desc, ctx, None, False, stop, self.run)

    def warm(self) -> None:
        """Start the child process now, so it is ready when the first partition comes."""
        self._pool.submit(start_thread_child)

    def progress(self) -> tuple[int, float]:
        """``(items done, seconds since the first started)`` of the running partition."""
        return self.run.progress() if self.run is not None else (0, 0.0)

    def close(self, wait: bool = True) -> None:
        """Stop the child process; without ``wait``, kill the running item first."""
        if not wait and self.run is not None:
            self.run.abort()
        self._pool.submit(close_thread_child)
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
