"""sweep runner: run one function over many parameter sets on Dask, resumably.

Python API::

    import runner
    report = runner.sweep(costly_simulation, input_params, output="results/", call="row")
    df = runner.load_results("results/")
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sweep-runner")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from .api import load_results, summarise, sweep
from .exceptions import (
    FailureBudgetExceeded,
    InfrastructureError,
    Interrupted,
    OutputConflictError,
    SourceError,
    SpecError,
    SweepError,
)
from .spec import SweepSpec, load_spec

__all__ = [
    "FailureBudgetExceeded",
    "InfrastructureError",
    "Interrupted",
    "OutputConflictError",
    "SourceError",
    "SpecError",
    "SweepError",
    "SweepSpec",
    "__version__",
    "load_results",
    "load_spec",
    "summarise",
    "sweep",
]
