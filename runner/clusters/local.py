"""The embedded default: a ``LocalCluster`` sized to the machine."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import dask

from .. import config
from ..exceptions import InfrastructureError
from .base import SCHEDULER_CONFIG, ClusterProvider


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def dask_setup(worker: Any) -> None:
    """Worker preload: Ctrl-C in the terminal is for the runner, which drains gracefully.

    The terminal sends SIGINT to the whole process group, local workers included;
    they ignore it and are stopped by the runner when it is done.
    """
    with contextlib.suppress(ValueError):  # not the main thread: nothing to do
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def hide_main_origin() -> Callable[[], None]:
    """Keep spawned worker processes from running the launching script again; returns the undo.

    The ``spawn`` start method imports the main script (or ``-m`` module) in every new
    process, so a script that calls ``runner.sweep()`` without an
    ``if __name__ == "__main__":`` guard would start a sweep inside each worker. The
    workers need nothing from that script (the function travels by cloudpickle), so
    while the local cluster lives, the main module does not say where it came from.
    """
    main = sys.modules.get("__main__")
    if main is None:
        return lambda: None
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None

    def restore() -> None:
        main.__dict__.update(saved)

    return restore


class LocalProvider(ClusterProvider):
    """One single-threaded worker process per core (user code often holds the GIL)."""

    name = "local"
    starts_cluster = True

    def __init__(self, workers: int | None = None, threads_per_worker: int = 1) -> None:
        self.n_workers = workers or default_workers()
        self.threads_per_worker = threads_per_worker
        self.cluster: Any = None
        self.client = None
        self._restore_main: Callable[[], None] | None = None

    def start(self) -> Any:
        from distributed import Client
        from distributed import LocalCluster as DaskLocalCluster

        self._restore_main = hide_main_origin()
        try:
            with dask.config.set(SCHEDULER_CONFIG):
                self.cluster = DaskLocalCluster(
                    n_workers=self.n_workers,
                    threads_per_worker=self.threads_per_worker,
                    processes=True,
                    dashboard_address=config.get("local.dashboard-address"),
                    silence_logs=logging.CRITICAL,
                    preload=[__name__],
                )
        except Exception as e:
            raise InfrastructureError(f"could not start a local Dask cluster: {e}") from e
        return Client(self.cluster)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        if self._restore_main is not None:
            self._restore_main()
            self._restore_main = None

    def slots_hint(self) -> int:
        return self.n_workers * self.threads_per_worker
