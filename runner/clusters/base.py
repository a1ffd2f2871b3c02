"""The provider interface: a context manager that yields a ``distributed.Client``."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Any

# The engine handles a worker's death itself: the partition runs again with its items
# isolated in child processes, which finds the item that killed the worker. So the
# schedulers a provider starts give up on a task after one death, instead of Dask's
# default of three more workers killed by the same item; and a worker holds only the
# tasks it runs (no queued extra one), so a death takes no innocent partition along.
# Partitions take seconds: the scheduler round trip between two of them costs nothing.
SCHEDULER_CONFIG: dict[str, Any] = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-saturation": 1.0,
}


def config_env(config: dict[str, Any]) -> dict[str, str]:
    """Dask config as the ``DASK_*`` variables a process in a container reads."""
    return {
        "DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
        for key, value in config.items()
    }


class ClusterProvider(abc.ABC):
    """Gives the engine a Dask client and, optionally, scales with the work left.

    Subclasses implement :meth:`start` and :meth:`stop`; :meth:`on_remaining` lets a
    provider that can scale (Kubernetes) follow the sweep. A provider must clean up
    everything it started in :meth:`stop`, whatever the outcome.
    """

    name = "cluster"
    client: Any = None

    @abc.abstractmethod
    def start(self) -> Any:
        """Start or connect; return a ``distributed.Client``."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Release everything :meth:`start` created."""

    def workers_hint(self) -> int:
        """How many workers the sweep can count on (used to size partitions)."""
        info = self.client.scheduler_info(n_workers=-1) if self.client is not None else {}
        return max(1, len(info.get("workers", {})))

    def on_remaining(self, remaining_partitions: int) -> None:  # noqa: B027 - optional hook
        """Called as partitions finish; scaling providers resize here."""

    @property
    def dashboard_link(self) -> str | None:
        try:
            return self.client.dashboard_link if self.client is not None else None
        except Exception:
            return None

    def __enter__(self) -> Any:
        try:
            self.client = self.start()
        except BaseException:
            self.stop()
            raise
        return self.client

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ClientProvider(ClusterProvider):
    """An existing client handed in by the caller: used as is, never closed."""

    name = "client"

    def __init__(self, client: Any) -> None:
        self.client = client

    def start(self) -> Any:
        return self.client

    def stop(self) -> None:
        pass
