"""Tunables, in dask.config under ``sweep`` (YAML in ~/.config/dask or ``DASK_SWEEP__*`` env vars).

Example: ``DASK_SWEEP__PARTITION__TARGET_SECONDS=30 sweep run spec.yaml``.
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    "sweep": {
        "partition": {
            # at most this long and this many items each, while much work is left
            "target-seconds": 10.0,
            "max-items": 1_000_000,
            # then each partition takes 1/(tail-factor x slots) of what is left, down to
            # min-seconds of work, so every worker thread finishes at about the same time
            "tail-factor": 2.0,
            "min-seconds": 0.25,
        },
        # a sweep estimated at most this many seconds of work runs in the runner's own
        # child process, without starting a cluster (local and Kubernetes clusters)
        "inline": {"max-seconds": 3.0, "max-items": 200_000},
        "probe": {
            "seconds": 1.0,
            "max-items": 100_000,
        },
        "progress": {"interval": 5.0},
        "local": {"dashboard-address": ":8787"},
        # extra attempts of a partition task that raised (storage calls are retried in place)
        "task-retries": 0,
        # on SIGTERM/SIGINT: how long running partitions may take to finish
        "grace-seconds": 20.0,
        "storage": {
            "retries": 2,  # after the filesystem's own retries, for unreachable storage
            "retry-wait": 1.0,  # seconds before the first retry, doubling
        },
        # bytes of cache files (runner.cache) each worker process keeps once read: its
        # partitions' keys fall in every bucket, so each would read them all again
        "cache": {"memory": "256MiB"},
        "isolation": {
            # child-process deaths in one isolated partition before its other items give up
            "max-deaths": 10,
            # times one partition may lose its worker even when isolated (then exit 3)
            "max-worker-losses": 3,
            # the child is killed above this fraction of the worker's memory limit
            "memory-fraction": 0.95,
        },
    }
}

_registered = False


def register() -> None:
    """Add :data:`DEFAULTS` to dask.config's defaults (once; values already set are kept)."""
    global _registered
    if not _registered:
        # lazy: importing dask takes 0.15 s, and `sweep --help`, `sweep validate` and the
        # isolated item processes (runner.isolate) read no tunable
        import dask.config

        dask.config.update_defaults(DEFAULTS)
        _registered = True


def get(key: str) -> Any:
    """``dask.config.get('sweep.' + key)``; the defaults are registered on first use.

    A key missing from dask.config falls back to :data:`DEFAULTS` (a ``dask.config.set``
    block that ran before the registration removes its keys on exit, defaults included).
    """
    register()
    import dask.config  # lazy: see register(); a dict look-up once dask is loaded

    default: Any = DEFAULTS["sweep"]
    for part in key.split("."):
        default = default[part]
    return dask.config.get(f"sweep.{key}", default=default)
