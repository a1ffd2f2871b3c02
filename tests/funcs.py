"""Functions the tests sweep (a local module: cloudpickle ships it to workers by value)."""

from __future__ import annotations

import math
import os

import numpy as np

_attempts: dict[int, int] = {}


def add(a, b):
    return a + b


def row_sum(values):
    return sum(values)


def stats(a, b):
    return {"total": a + b, "prod": a * b, "label": f"{a}:{b}"}


def numpy_scalar(a, b):
    return np.float32(a) * np.int16(2) + b


def fail_on_odd(a, b):
    if int(a) % 2:
        raise ValueError(f"odd a={a}")
    return a + b


def flaky(a, b):
    """Fails on the first attempt of every item (per worker process), then succeeds."""
    key = (a, b)
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] == 1:
        raise RuntimeError("transient")
    return a + b


def unstorable(a, b):
    if a == 1:
        return object()
    return float(a + b)


def with_seed(a, seed):
    return a + (seed % 1000) / 1000


def with_rng(a, rng):
    return float(a + rng.random())


def slow(a, b):
    import time

    time.sleep(float(os.environ.get("SWEEP_TEST_SLEEP", "0.02")))
    return math.sqrt(a * a + b * b)


def crash_on(a, b):
    """Kills its own process for two items: exit code 1 (a=7, b=1) and SIGSEGV (a=3, b=0)."""
    if a == 7 and b == 1:
        os._exit(1)
    if a == 3 and b == 0:
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)
    return a + b


def crash_when_even(a, b):
    if int(a) % 2 == 0:
        os._exit(3)
    return a + b


def hang_on(a, b):
    """Never returns for a == 5."""
    import time

    if a == 5:
        time.sleep(3600)
    return a * b


def memory_hog(a, b):
    """Touches ~1.5 GiB for a == 2."""
    if a == 2:
        hog = np.ones(200_000_000)  # 1.6 GB, every page written
        return float(hog.sum())
    return float(a + b)


def result_key_clash(a, b):
    return {"a": a * 2, "total": a + b}


# --------------------------------------------------------------------------- call: batch


def add_batch(batch):
    """A vectorised add: a dict of arrays (or a DataFrame) in, one array out."""
    return np.asarray(batch["a"]) + np.asarray(batch["b"])


def batch_fails_on_a3(batch):
    """Raises for the whole batch when any row has a == 3: the engine retries per row."""
    a = np.asarray(batch["a"])
    if (a == 3).any():
        raise ValueError("a is 3")
    return a * 10


def batch_stats_frame(batch, seed):
    """A DataFrame of two result columns, and the per-row seeds as a third."""
    import pandas as pd  # lazy: tests/test_imports.py checks what `sweep validate` imports

    return pd.DataFrame(
        {"total": batch["a"] + batch["b"], "diff": batch["a"] - batch["b"], "s": seed}
    )


def batch_wrong_length(batch):
    return np.zeros(len(batch["a"]) + 1)


def batch_with_rng(batch, rng):
    return batch["a"] * rng.random()


def ordered_args(b, a, c=5):
    """Parameters passed in another order than the source's columns, and a default."""
    return a * 100 + b * 10 + c


def keyword_only(a, *, b):
    return a - b


def batch_crash_on_a3(batch):
    """Kills its process when a block holds a row with a == 3."""
    a = np.asarray(batch["a"])
    if (a == 3).any():
        os._exit(1)
    return a * 10


def pid_after_sleep(a, b):
    """The worker process that ran the item (items take 20 ms)."""
    import time

    time.sleep(0.02)
    return os.getpid()


def int_then_float(a, b):
    """Fails for ``a < 5``, an int for ``a < 20``, else a float: the probes disagree on the type."""
    if a < 5:
        raise ValueError("low a")
    return int(a) if a < 20 else float(a) + 0.5


def fail_low(a, b):
    """Fails for ``a < 20``, else a float: the first probe's items all fail."""
    if a < 20:
        raise ValueError("low a")
    return float(a) + 0.5


def hang_or_crash(a, b):
    """Never returns for a == 5; kills its own process for a == 7."""
    import time

    if a == 5:
        time.sleep(3600)
    if a == 7:
        os._exit(1)
    return a + b


def needs_fix(a, b, marker, delay, seed):
    """``a == 0`` always fails; ``b >= 0.5`` fails until the file ``marker`` exists, then
    takes ``delay`` s. The result carries the item's seed (a retry must use the same)."""
    import time

    if a == 0:
        raise TimeoutError(f"a={a} never works")
    if b >= 0.5:
        if not os.path.exists(marker):
            raise RuntimeError(f"dependency missing (b={b})")
        time.sleep(delay)
    return a + b + (seed % 1000) / 1000


def broken_after(a, delay):
    """Fails every time, after ``delay`` s (a retry that cannot succeed)."""
    import time

    time.sleep(delay)
    raise RuntimeError(f"a={a}: still broken")


def hangs_until_fixed(a, b, marker):
    """``b >= 0.5`` hangs until the file ``marker`` exists (a timeout's case for a retry)."""
    import time

    if b >= 0.5 and not os.path.exists(marker):
        time.sleep(3600)
    return a + b
