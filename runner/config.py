"""Tunables, in dask.config under ``sweep`` (YAML in ~/.config/dask or ``DASK_SWEEP__*`` env vars).

Example: ``DASK_SWEEP__PARTITION__TARGET_SECONDS=30 sweep run spec.yaml``.
"""

from __future__ import annotations

from typing import Any

import dask.config

DEFAULTS: dict[str, Any] = {
    "sweep": {
        "partition": {
            "target-seconds": 10.0,
            "min-per-worker": 4,
            "max-items": 1_000_000,
        },
        "probe": {
            "seconds": 1.0,
            "max-items": 100_000,
        },
        "progress": {"interval": 5.0},
        "local": {"dashboard-address": ":8787"},
        "task-retries": 2,
        "grace-seconds": 20.0,
    }
}

dask.config.update_defaults(DEFAULTS)


def get(key: str) -> Any:
    """``dask.config.get('sweep.' + key)``."""
    return dask.config.get(f"sweep.{key}")
