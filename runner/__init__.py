"""sweep runner: run one function over many parameter sets on Dask, resumably.

Python API::

    import runner
    report = runner.sweep(costly_simulation, input_params, output="results/", call="row")
    df = runner.load_results("results/")
"""

from __future__ import annotations

import importlib
from typing import Any

from .exceptions import (
    FailureBudgetExceeded,
    InfrastructureError,
    Interrupted,
    OutputConflictError,
    SourceError,
    SpecError,
    Status,
    StorageError,
    StorageUnreachable,
    SweepError,
)

# The API is imported on first use: `sweep --help` and the isolated item processes
# (runner.isolate) need none of it. Nothing here imports dask (runner.config registers
# its defaults on first use), so `import runner` stays a few milliseconds.
_LAZY = {
    "sweep": "api",
    "load_results": "results",
    "open_results": "results",
    "summarise": "results",
    "SweepOutput": "results",
    "SweepSpec": "spec",
    "load_spec": "spec",
}


def _version() -> str:
    # lazy: importlib.metadata and the look-up take 20-30 ms; only manifests and the
    # Kubernetes objects need the version
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sweep-runner")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()["__version__"] = value = _version()
        return value
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module 'runner' has no attribute {name!r}") from None


__all__ = [
    "FailureBudgetExceeded",
    "InfrastructureError",
    "Interrupted",
    "OutputConflictError",
    "SourceError",
    "SpecError",
    "Status",
    "StorageError",
    "StorageUnreachable",
    "SweepError",
    "SweepOutput",
    "SweepSpec",
    "__version__",
    "load_results",
    "load_spec",
    "open_results",
    "summarise",
    "sweep",
]
