"""The Dask "embarrassingly parallel" example's simulation, as a sweep function."""

import random
import time


def costly_simulation(list_param):
    """Sum the four parameters after a short random sleep (stands in for real work)."""
    time.sleep(random.random() * 0.01)
    return sum(list_param)


def pi_hits(n_points: int, seed: int) -> dict:
    """Throw ``n_points`` darts at the unit square; count those inside the quarter circle."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x, y = rng.random(n_points), rng.random(n_points)
    hits = int(np.count_nonzero(x * x + y * y <= 1.0))
    return {"hits": hits, "pi": 4.0 * hits / n_points}


def response(a: float, b: float, kind: str) -> dict:
    """A model whose ``y`` follows ``a`` (and a little ``b``) and whose ``z`` follows ``kind``;
    it fails where ``b > 0.9``: what `sweep results` and `sweep report` are for."""
    if b > 0.9:
        raise ValueError(f"unstable for b={b:.3f}")
    return {"y": 10.0 * a + b, "z": (5.0 if kind == "x" else 0.0) + 0.1 * a}
