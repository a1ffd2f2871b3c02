"""The embedded default: a ``LocalCluster`` sized to the machine."""

from __future__ import annotations

import logging
import os
from typing import Any

from .. import config
from ..exceptions import InfrastructureError
from .base import ClusterProvider


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class LocalProvider(ClusterProvider):
    """One single-threaded worker process per core (user code often holds the GIL)."""

    name = "local"

    def __init__(self, workers: int | None = None, threads_per_worker: int = 1) -> None:
        self.n_workers = workers or default_workers()
        self.threads_per_worker = threads_per_worker
        self.cluster: Any = None
        self.client = None

    def start(self) -> Any:
        from distributed import Client
        from distributed import LocalCluster as DaskLocalCluster

        try:
            self.cluster = DaskLocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=self.threads_per_worker,
                processes=True,
                dashboard_address=config.get("local.dashboard-address"),
                silence_logs=logging.ERROR,
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

    def workers_hint(self) -> int:
        return self.n_workers
