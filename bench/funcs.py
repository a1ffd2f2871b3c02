"""Workload functions of the benchmarks (a module, so workers and child processes import it).

Every workload has one function per call style: ``kwargs`` (``f(a, b, c, d)``), ``row``
(``f([a, b, c, d])``, as in the Dask example) and ``batch`` (``f({"a": array, ...})`` for a
whole partition, returning one result per row). :data:`FAMILIES` names them by workload.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def zero_work(a: float, b: float, c: float, d: float) -> float:
    """The Dask example's function without its sleep: what is left is the runner's cost."""
    return a + b + c + d


def zero_work_row(values: Sequence[float]) -> float:
    """:func:`zero_work` in the Dask example's row style, ``f(list_of_values)``."""
    return sum(values)


def zero_work_batch(batch: dict[str, np.ndarray]) -> np.ndarray:
    """:func:`zero_work` over a whole partition: one array per parameter column in, one out."""
    return np.asarray(batch["a"] + batch["b"] + batch["c"] + batch["d"])


def sleep_item(a: float, b: float, c: float, d: float) -> float:
    """Heterogeneous work: sleep ``a`` seconds (the workload draws it from U(0, 20 ms)).

    The sleep time is the parameter itself, so the ideal wall of a sweep is known from its
    output: the sum of column ``a`` over the number of slots.
    """
    time.sleep(a)
    return a + b + c + d


def sleep_item_row(values: Sequence[float]) -> float:
    """:func:`sleep_item` in row style (the first value is the sleep time)."""
    time.sleep(values[0])
    return sum(values)


def sleep_item_batch(batch: dict[str, np.ndarray]) -> np.ndarray:
    """:func:`sleep_item` over a whole partition: the partition's sleeps, one after another."""
    time.sleep(float(np.sum(batch["a"])))
    return zero_work_batch(batch)


def vector_work(a: float, b: float, c: float, d: float) -> float:
    """Some real arithmetic per item: a few transcendental functions of the four parameters."""
    return math.sin(a) * math.exp(-b) + math.sqrt(c) * math.log1p(d) + math.atan2(a, 1.0 + d)


def vector_work_row(values: Sequence[float]) -> float:
    """:func:`vector_work` in row style."""
    a, b, c, d = values
    return vector_work(a, b, c, d)


def vector_work_batch(batch: dict[str, np.ndarray]) -> np.ndarray:
    """:func:`vector_work` vectorised with NumPy over a whole partition."""
    a, b, c, d = (np.asarray(batch[k]) for k in "abcd")
    return np.sin(a) * np.exp(-b) + np.sqrt(c) * np.log1p(d) + np.arctan2(a, 1.0 + d)


FAMILIES: dict[str, dict[str, Callable[..., Any]]] = {
    "zero": {"kwargs": zero_work, "row": zero_work_row, "batch": zero_work_batch},
    "sleep": {"kwargs": sleep_item, "row": sleep_item_row, "batch": sleep_item_batch},
    "vector": {"kwargs": vector_work, "row": vector_work_row, "batch": vector_work_batch},
}


def response_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """W7's function (results at scale): ``y`` driven by ``a`` (and a little ``b``), ``z`` by
    ``kind``, two result columns for the summary to explain."""
    a, b = np.asarray(batch["a"]), np.asarray(batch["b"])
    kind = np.asarray(batch["kind"])
    return {"y": 10.0 * a + b, "z": np.where(kind == "x", 5.0, 0.0) + 0.1 * a}
