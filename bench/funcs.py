"""Workload functions of the benchmarks (a module, so workers and child processes import it)."""

from __future__ import annotations


def zero_work(a: float, b: float, c: float, d: float) -> float:
    """The Dask example's function without its sleep: what is left is the runner's cost."""
    return a + b + c + d


def zero_work_row(values: list[float]) -> float:
    return sum(values)
