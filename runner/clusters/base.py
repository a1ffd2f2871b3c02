"""The provider interface: a context manager that yields a ``distributed.Client``."""

from __future__ import annotations

import abc
import threading
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

    #: The provider starts the cluster (it takes seconds): the runner runs the probe itself
    #: meanwhile, and a sweep that turns out to be seconds of work needs no cluster at all.
    starts_cluster = False

    def slots_hint(self) -> int:
        """Worker threads the sweep can count on (partitions are sized for them)."""
        info = self.client.scheduler_info(n_workers=-1) if self.client is not None else {}
        workers = info.get("workers", {}).values()
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers))

    def on_remaining(self, remaining_partitions: int) -> None:  # noqa: B027 - optional hook
        """Called as partitions finish; scaling providers resize here."""

    def disrupted(self, worker: str) -> str | None:
        """Why worker ``worker`` (its Dask name) was taken away from outside, if it was:
        evicted, preempted, its node drained or reclaimed. Such a loss says nothing about
        the partition it ran; ``None`` (the default: the provider cannot tell) means it may."""
        return None

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


class ClusterStart:
    """A provider's cluster, started in a background thread so the runner can work meanwhile.

    :meth:`start` begins (at most once), :meth:`ready` says whether it is done (up or
    failed), :meth:`wait` starts if needed and returns the client (or raises what the
    start raised), and :meth:`close` stops whatever was started.
    """

    def __init__(self, provider: ClusterProvider) -> None:
        self.provider = provider
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._error: BaseException | None = None
        self._entered = False

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._enter, name="sweep-cluster", daemon=True)
            self._thread.start()

    def _enter(self) -> None:
        try:
            self._client = self.provider.__enter__()
            self._entered = True
        except BaseException as e:  # handed to the thread that waits
            self._error = e

    def ready(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def failed(self) -> bool:
        return self.ready() and self._error is not None

    def wait(self) -> Any:
        self.start()
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(0.1)  # a timeout, so the main thread still sees its signals
        if self._error is not None:
            raise self._error
        return self._client

    def close(self) -> None:
        if self._thread is None:
            return
        self._thread.join()
        if self._entered:
            self._entered = False
            self.provider.__exit__(None, None, None)
