"""Call styles and the per-item loop: the hot path of every sweep.

The loop works on plain Python lists built once per partition (never pandas rows),
catches each item's exception (with retries), and gathers results into Arrow
columns once at the end.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import string
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .exceptions import SpecError
from .store import ITEM, OUTPUT_COLUMNS, RESULT, TIMEOUT_TEXT

MAX_ERROR_CHARS = 2000
SEED_NAMES = ("seed", "rng")

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def item_seeds(seed: int, items: np.ndarray) -> np.ndarray:
    """Per-item seeds from ``(seed, item)`` with splitmix64: deterministic, well mixed, vectorised.

    Returned as non-negative int64 (63 bits) so they fit every RNG and Parquet.
    """
    with np.errstate(over="ignore"):
        z = (np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)) ^ items.astype(
            np.uint64
        )
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z & np.uint64(0x7FFFFFFFFFFFFFFF)).astype(np.int64)


def seed_kind(fn: Callable[..., Any], param_names: Sequence[str] = ()) -> str | None:
    """'seed' or 'rng' if the function accepts that keyword, else None.

    A parameter of that name is passed as the parameter: it is never overwritten.
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    for name in SEED_NAMES:
        p = params.get(name)
        if (
            p is not None
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            and name not in param_names
        ):
            return name
    return None


def check_call(fn: Any, call: str, param_names: Sequence[str], ref: str) -> None:
    """Refuse at once a function that cannot take the parameters the way ``call`` passes them.

    ``kwargs`` calls ``fn(**row)``: every parameter must bind to an argument (unless
    the function takes ``**kwargs``) and every required argument must be a parameter
    (or ``seed``/``rng``). ``row`` calls ``fn(values)``; ``command`` fills ``{name}``
    fields of its argv template from the parameters, ``item`` and ``seed``.

    Raises
    ------
    SpecError
        Naming the arguments or parameters that do not match.
    """
    if call == "command":
        known = {*param_names, ITEM, "seed"}
        fields = {
            f.split(".")[0].split("[")[0]
            for arg in fn.argv
            for _, f, _, _ in string.Formatter().parse(arg)
            if f
        }
        unknown = sorted(fields - known)
        if unknown:
            raise SpecError(
                f"function: the command template names {', '.join(map(repr, unknown))}, which is not"
                f" a parameter (parameters: {', '.join(param_names)}; also item, seed)"
            )
        return
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: find out per item
    args = sig.parameters.values()
    if call == "batch":
        if "rng" in sig.parameters and "rng" not in param_names:
            raise SpecError(
                f"function: {ref}{sig} takes rng, but call: batch passes seed (an array with one"
                " seed per row) instead of one generator per item; take seed and draw with"
                " np.random.default_rng(seed[i]), or use call: kwargs"
            )
        seeded = seed_kind(fn, param_names) == "seed"
        try:
            sig.bind({}, seed=None) if seeded else sig.bind({})
        except TypeError as e:
            raise SpecError(
                f"function: {ref}{sig} cannot be called with one batch of rows as call: batch"
                f" does ({e}); it takes the batch (a dict of NumPy arrays or a DataFrame)"
                " as its one argument"
            ) from e
        return
    if call == "row":
        try:
            sig.bind(list(param_names))
        except TypeError as e:
            raise SpecError(
                f"function: {ref}{sig} cannot be called with one list of values as call: row"
                f" does ({e}); use call: kwargs to pass the parameters by name"
            ) from e
        return
    takes_any = any(a.kind is a.VAR_KEYWORD for a in args)
    by_name = {a.name for a in args if a.kind in (a.POSITIONAL_OR_KEYWORD, a.KEYWORD_ONLY)}
    unexpected = [] if takes_any else [n for n in param_names if n not in by_name]
    # a positional-only argument can never get a parameter by name
    missing = [
        a.name + (" (positional-only)" if a.kind is a.POSITIONAL_ONLY else "")
        for a in args
        if a.default is a.empty
        and a.kind in (a.POSITIONAL_OR_KEYWORD, a.KEYWORD_ONLY, a.POSITIONAL_ONLY)
        and (
            a.kind is a.POSITIONAL_ONLY or (a.name not in param_names and a.name not in SEED_NAMES)
        )
    ]
    if unexpected or missing:
        parts = []
        if unexpected:
            parts.append(f"parameter(s) {', '.join(unexpected)} match no argument")
        if missing:
            parts.append(f"argument(s) {', '.join(missing)} get no parameter")
        raise SpecError(
            f"function: {ref}{sig} does not take the parameters {', '.join(param_names)} by name"
            f" (call: kwargs): {'; '.join(parts)}; rename the parameters or the arguments, or give"
            " the function **kwargs"
        )


def format_exception(e: BaseException) -> str:
    """``Type: message (at file:line in func)`` — the user's frame, not ours."""
    msg = f"{type(e).__name__}: {e}"
    user = [
        (frame, line)
        for frame, line in traceback.walk_tb(e.__traceback__)
        if os.path.basename(frame.f_code.co_filename) != "calls.py"
    ]
    if user:
        frame, line = user[-1]
        name = frame.f_code.co_filename
        if name.startswith("<"):  # e.g. cloudpickle's <dynamic-code>: it keeps __file__
            name = frame.f_globals.get("__file__") or name
        msg += f" (at {os.path.basename(name)}:{line} in {frame.f_code.co_name})"
    return msg[:MAX_ERROR_CHARS]


class ItemError(Exception):
    """An item failed in a way that is not a Python exception (e.g. a command's exit code)."""


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    """Run an external program per item: argv template, params as JSON on stdin."""

    argv: tuple[str, ...]
    timeout: float | None = None

    def __call__(self, **params: Any) -> Any:
        try:
            argv = [a.format_map(params) for a in self.argv]
        except (KeyError, IndexError, ValueError) as e:
            raise ItemError(
                f"command template {list(self.argv)!r} names an unknown field {e}"
            ) from None
        try:
            proc = subprocess.run(
                argv,
                input=json.dumps(params, default=_json_default).encode(),
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise ItemError(
                f"command not found: {argv[0]!r} (give a path or put it on PATH)"
            ) from None
        except PermissionError:
            raise ItemError(f"command not executable: {argv[0]!r} (chmod +x it)") from None
        except subprocess.TimeoutExpired:
            raise ItemError(f"command {TIMEOUT_TEXT} {self.timeout}s") from None
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip()[-800:]
            raise ItemError(f"command exited with code {proc.returncode}: {tail}")
        out = proc.stdout.decode(errors="replace")
        for line in reversed(out.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            raise ItemError(
                f"command printed no JSON object on stdout (last line: {out.strip()[-200:]!r})"
            ) from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


# --------------------------------------------------------------------------- the loop


@dataclass
class ItemResults:
    """The outcome of a partition's items, by row: values, errors, attempts, durations."""

    values: list[Any]
    errors: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)  # only where != 1
    durations: list[float] = field(default_factory=list)
    deaths: int = 0  # child processes that died running these items (isolated runs)
    columns: dict[str, pa.Array] | None = None  # a batch call's results, already columns
    rows: int | None = None  # the number of items when ``columns`` holds the results

    @property
    def n(self) -> int:
        return self.rows if self.rows is not None else len(self.values)


def _pylist(col: pa.ChunkedArray | pa.Array) -> list[Any]:
    t = col.type
    if (
        pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)
    ) and col.null_count == 0:
        return col.to_numpy().tolist()
    return col.to_pylist()


EXACT_TIMING_S = 50e-6  # items slower than this on average are timed one by one
BLOCK_SECONDS = 0.01  # faster items are timed in blocks of about this long
MAX_BLOCK = 65_536


class CallPlan:
    """How one partition's rows become calls: ``fn(*args_at(k))`` for row ``k``.

    Every call style is reduced to a positional call on per-row argument columns, so
    the loop can hand whole blocks to ``map`` (a C loop) instead of building a dict
    per item. ``kwargs`` whose parameters are the function's leading positional
    arguments are passed by position; other ``kwargs`` and ``command`` build a dict.
    A function that takes ``seed`` or ``rng`` gets a per-item one (:func:`item_seeds`).
    ``batch`` calls are per item here (a one-row batch): the whole-partition call is
    :func:`run_batch`.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        call: str,
        params: pa.Table,
        items: np.ndarray,
        seed: int,
        batch_format: str = "numpy",
    ) -> None:
        names = list(params.column_names)
        cols = [_pylist(params.column(i)) for i in range(params.num_columns)]
        kind = (
            ("seed" if "seed" not in names else None) if call == "command" else seed_kind(fn, names)
        )
        if call == "batch":
            kind = "seed" if kind else None  # a batch's seed is an array: one per row
        if kind:
            cols.append(item_seeds(seed, items).tolist())
            names.append(kind)
        if call == "command":
            cols.append(items.tolist())
            names.append(ITEM)
        self.n = params.num_rows
        self.columns = cols
        self.fn: Callable[..., Any]
        self.rows = False  # one argument per call: the list of the row's values
        if call == "row" and not kind:
            self.fn, self.rows = fn, True
        elif call == "row":
            self.fn = _RowWithSeed(fn, kind)
        elif call == "batch":
            self.fn = _OneRowBatch(fn, names, batch_format, bool(kind))
        elif kind != "rng" and (order := _positional_order(fn, names)) is not None:
            self.fn = fn
            self.columns = [cols[i] for i in order]
        else:
            self.fn = _ByName(fn, names, kind == "rng")

    def args_at(self, k: int) -> tuple[Any, ...]:
        """The arguments of row ``k``'s call."""
        if self.rows:
            return ([c[k] for c in self.columns],)
        return tuple(c[k] for c in self.columns)

    def iterators(self) -> list[Iterator[Any]]:
        """One iterator per argument, all from row 0: ``map(self.fn, *iterators)`` calls every row."""
        if self.rows:
            rows = zip(*self.columns, strict=True) if self.columns else iter([()] * self.n)
            return [map(list, rows)]
        if not self.columns:
            return []
        return [iter(c) for c in self.columns]


def _positional_order(fn: Callable[..., Any], names: Sequence[str]) -> list[int] | None:
    """Column order that passes ``names`` by position, if they are ``fn``'s leading arguments."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    lead = params[: len(names)]
    if len(lead) < len(names) or any(p.kind not in (p.POSITIONAL_OR_KEYWORD,) for p in lead):
        return None
    where = {n: i for i, n in enumerate(names)}
    if set(where) != {p.name for p in lead}:
        return None
    return [where[p.name] for p in lead]


@dataclass(frozen=True)
class _ByName:
    """``fn(**row)``: the general ``kwargs`` and ``command`` call."""

    fn: Callable[..., Any]
    names: Sequence[str]
    rng: bool = False

    def __call__(self, *values: Any) -> Any:
        kw = dict(zip(self.names, values, strict=True))
        if self.rng:
            kw["rng"] = np.random.default_rng(kw["rng"])
        return self.fn(**kw)


@dataclass(frozen=True)
class _RowWithSeed:
    fn: Callable[..., Any]
    kind: str

    def __call__(self, *values: Any) -> Any:
        s = values[-1]
        return self.fn(
            list(values[:-1]), **{self.kind: s if self.kind == "seed" else np.random.default_rng(s)}
        )


@dataclass(frozen=True)
class _OneRowBatch:
    """One item of a ``batch`` function: a batch of one row, its one result unwrapped."""

    fn: Callable[..., Any]
    names: Sequence[str]
    batch_format: str
    seeded: bool

    def __call__(self, *values: Any) -> Any:
        names = self.names[:-1] if self.seeded else self.names
        data = dict(zip(names, values, strict=False))
        kw = {"seed": np.array([values[-1]], dtype=np.int64)} if self.seeded else {}
        out = self.fn(
            make_batch({k: np.array([v]) for k, v in data.items()}, self.batch_format), **kw
        )
        return unwrap_one(out)


def make_batch(arrays: dict[str, np.ndarray], batch_format: str) -> Any:
    """What a ``batch`` function receives: a dict of NumPy arrays, or a pandas DataFrame."""
    if batch_format == "pandas":
        import pandas as pd  # lazy: 0.2 s to import, and only this batch format needs it

        return pd.DataFrame(arrays, copy=False)
    return arrays


def unwrap_one(out: Any) -> Any:
    """A one-row batch's result as one item's result (a value, or a dict for several columns)."""
    cols = batch_result_columns(out, 1)
    if list(cols) == [RESULT]:
        return cols[RESULT][0].as_py()
    return {k: v[0].as_py() for k, v in cols.items()}


def batch_result_columns(out: Any, n: int) -> dict[str, pa.Array]:
    """A ``batch`` function's return value as Arrow columns of ``n`` rows.

    An array, Series or list is the ``result`` column; a DataFrame, a dict of arrays or
    an Arrow table gives one column per key.

    Raises
    ------
    ValueError
        The value has another length or a shape that is not columns.
    """
    pd = sys.modules.get("pandas")  # a pandas result means pandas is imported already
    if pd is not None and isinstance(out, pd.DataFrame):
        cols = {str(k): pa.Array.from_pandas(out[k]) for k in out.columns}
    elif isinstance(out, pa.Table | pa.RecordBatch):
        cols = {
            name: pa.concat_arrays(c.chunks) if isinstance(c, pa.ChunkedArray) else c
            for name, c in zip(out.column_names, out.columns, strict=True)
        }
    elif isinstance(out, dict):
        cols = {k: _batch_array(v) for k, v in out.items()}
    else:
        cols = {RESULT: _batch_array(out)}
    for k, arr in cols.items():
        if len(arr) != n:
            what = "" if k == RESULT else f" for {k!r}"
            raise ValueError(f"the batch function returned {len(arr)} values{what} for {n} rows")
    return cols


def _batch_array(v: Any) -> pa.Array:
    if isinstance(v, pa.ChunkedArray):
        return pa.concat_arrays(v.chunks)
    if isinstance(v, pa.Array):
        return v
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(v, pd.Series):
        return pa.Array.from_pandas(v)
    if isinstance(v, np.ndarray):
        if v.ndim != 1:
            raise ValueError(
                f"the batch function returned an array of shape {v.shape}; return one value per row"
            )
        return pa.array(v, from_pandas=True)
    if isinstance(v, list | tuple):
        return pa.array(list(v), from_pandas=True)
    raise ValueError(
        f"the batch function returned {type(v).__name__}; return an array, Series or list with one"
        " value per row, or a DataFrame/dict of them"
    )


def run_items(
    fn: Callable[..., Any],
    call: str,
    params: pa.Table,
    items: np.ndarray,
    seed: int,
    retries: int,
    deadline: float | None = None,
    batch_format: str = "numpy",
) -> ItemResults:
    """Call ``fn`` on every row of ``params`` (or until ``deadline``, a perf_counter value).

    ``call: batch`` calls ``fn`` on whole blocks of rows (:func:`run_batch`); the
    other styles call it once per row (:func:`run_each`).
    """
    if call == "batch":
        return run_batch(fn, params, items, seed, retries, deadline, batch_format)
    return run_each(CallPlan(fn, call, params, items, seed), retries, deadline)


def run_each(plan: CallPlan, retries: int, deadline: float | None = None) -> ItemResults:
    """Call every row of ``plan`` in blocks through ``map``, catching each item's exception.

    Items slower than ``EXACT_TIMING_S`` on average are timed one by one; faster ones
    in blocks of about ``BLOCK_SECONDS``, each item getting its block's mean (so
    ``duration_s`` still sums to the loop's time, at no cost per item).
    """
    g, its, n = plan.fn, plan.iterators(), plan.n
    values: list[Any] = []
    durations: list[float] = []
    errors: dict[int, str] = {}
    attempts: dict[int, int] = {}
    clock = time.perf_counter

    def failed(k: int, args: tuple[Any, ...], e: Exception) -> Any:
        r, tries, err = retry_item(g, args, {}, retries, e)
        if err is not None:
            errors[k] = err
        attempts[k] = tries
        return r

    block, mean = 1, 0.0
    while (done := len(values)) < n:
        end = min(n, done + block)
        part = [islice(it, end - done) for it in its]
        t0 = clock()
        if mean >= EXACT_TIMING_S:
            for args in zip(*part, strict=True) if part else iter([()] * (end - done)):
                t1 = clock()
                try:
                    r = g(*args)
                except Exception as e:
                    r = failed(len(values), args, e)
                values.append(r)
                durations.append(clock() - t1)
                if deadline is not None and clock() >= deadline:
                    break
        else:
            seg = t0
            while True:
                try:
                    values.extend(
                        map(g, *part) if part else (g() for _ in range(end - len(values)))
                    )
                    break
                except Exception as e:
                    k = len(values)
                    t1 = clock()
                    _spread(durations, t1 - seg, k - len(durations))
                    values.append(failed(k, plan.args_at(k), e))
                    seg = clock()
                    durations.append(seg - t1)
                    if len(values) >= end:
                        break
            _spread(durations, clock() - seg, len(values) - len(durations))
        mean = (clock() - t0) / max(1, len(values) - done)
        if deadline is not None and clock() >= deadline:
            break
        block = min(MAX_BLOCK, block * 4, max(1, int(BLOCK_SECONDS / max(mean, 1e-9))))
    return ItemResults(values, errors, attempts, durations)


def _spread(durations: list[float], seconds: float, m: int) -> None:
    if m > 0:
        durations.extend([seconds / m] * m)


def run_batch(
    fn: Callable[..., Any],
    params: pa.Table,
    items: np.ndarray,
    seed: int,
    retries: int,
    deadline: float | None = None,
    batch_format: str = "numpy",
) -> ItemResults:
    """Call a ``batch`` function on whole blocks of rows; a block that raises runs per item.

    Without ``deadline`` the block is the whole partition. With one (the probe), blocks
    grow from one row, four times each, until the deadline passes. A block whose call
    raises (or returns the wrong number of values) runs again one row at a time, so
    each item keeps its own error.
    """
    n = params.num_rows
    calls = BatchBlocks(fn, params, items, seed, batch_format)
    blocks: list[dict[str, pa.Array]] = []
    each: ItemResults | None = None  # once one block ran per item, all results are values
    durations: list[float] = []
    clock = time.perf_counter
    start, size = 0, n if deadline is None else 1
    while start < n:
        stop = min(n, start + size)
        t0 = clock()
        cols = calls.columns(start, stop)
        took = clock() - t0
        if cols is not None and each is None:
            blocks.append(cols)
            _spread(durations, took, stop - start)
        else:
            if each is None:
                each = ItemResults(values_of(blocks), durations=durations)
            if cols is not None:
                each.values.extend(values_of([cols]))
                _spread(each.durations, took, stop - start)
            else:
                plan = CallPlan(
                    fn,
                    "batch",
                    params.slice(start, stop - start),
                    items[start:stop],
                    seed,
                    batch_format,
                )
                _append(each, run_each(plan, retries), start)
        start = stop
        if deadline is not None and clock() >= deadline:
            break
        size *= 4
    if each is not None:
        return each
    columns = _concat_blocks(blocks)
    if columns is None:  # blocks disagree on columns or types: let the per-item checks say how
        return ItemResults(values_of(blocks), durations=durations)
    return ItemResults([], durations=durations, columns=columns, rows=start)


@dataclass
class BatchBlocks:
    """A ``batch`` function called on blocks of a partition's rows."""

    fn: Callable[..., Any]
    params: pa.Table
    items: np.ndarray
    seed: int
    batch_format: str

    def __post_init__(self) -> None:
        names = self.params.column_names
        self.arrays = {name: self.params.column(name).to_numpy() for name in names}
        self.seeds = item_seeds(self.seed, self.items) if seed_kind(self.fn, names) else None

    def columns(self, a: int, b: int) -> dict[str, pa.Array] | None:
        """The result columns of rows ``a..b-1``; None when the call raised or misfit."""
        try:
            kw = {} if self.seeds is None else {"seed": self.seeds[a:b]}
            batch = make_batch({k: v[a:b] for k, v in self.arrays.items()}, self.batch_format)
            return batch_result_columns(self.fn(batch, **kw), b - a)
        except Exception:
            return None  # the caller runs the rows one by one: each gets its own error


def _append(res: ItemResults, more: ItemResults, offset: int) -> None:
    res.values.extend(more.values)
    res.durations.extend(more.durations)
    res.errors.update((offset + k, v) for k, v in more.errors.items())
    res.attempts.update((offset + k, v) for k, v in more.attempts.items())


def values_of(blocks: list[dict[str, pa.Array]]) -> list[Any]:
    """Blocks of result columns as per-item values (a value, or a dict of several columns)."""
    values: list[Any] = []
    for cols in blocks:
        if list(cols) == [RESULT]:
            values.extend(cols[RESULT].to_pylist())
        else:
            values.extend(pa.table(cols).to_pylist())
    return values


def _concat_blocks(blocks: list[dict[str, pa.Array]]) -> dict[str, pa.Array] | None:
    if len(blocks) == 1:
        return blocks[0]
    if not blocks or any(list(b) != list(blocks[0]) for b in blocks):
        return None if blocks else {}
    try:
        table = pa.concat_tables([pa.table(b) for b in blocks], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return {name: table.column(name).combine_chunks() for name in table.column_names}


def retry_item(
    fn: Callable[..., Any], args: Any, kw: Any, retries: int, first: Exception
) -> tuple[Any, int, str | None]:
    """Retry an item that raised ``first``; returns (result, attempts, error message or None)."""
    err: BaseException = first
    tries = 1
    while tries <= retries:
        tries += 1
        try:
            return fn(*args, **kw), tries, None
        except Exception as e:
            err = e
    return None, tries, format_exception(err)


# --------------------------------------------------------------------------- results → Arrow


def result_columns(
    res: ItemResults,
    param_names: Sequence[str],
    schema: pa.Schema | None,
) -> dict[str, pa.Array]:
    """Turn gathered values into Arrow columns; values Arrow cannot hold become item errors.

    ``schema`` (the result schema fixed by the sweep's first partition) makes every
    partition's columns agree so the dataset reads as one table.

    Raises
    ------
    SpecError
        Before the schema is fixed, when a dict result has a key named like a
        parameter or an output column (it would overwrite that column).
    """
    reserved = tuple(dict.fromkeys((*param_names, *OUTPUT_COLUMNS)))
    if res.columns is not None:
        fitted = _fit_columns(res.columns, reserved, schema)
        if fitted is not None:
            return fitted
        # columns that do not fit the schema: the per-item checks name each item's problem
        res.values, res.columns, res.rows = values_of([res.columns]), None, None
    values, errors = res.values, res.errors
    ok = [k for k in range(len(values)) if k not in errors] if errors else range(len(values))
    if schema is None:
        first = next((values[k] for k in ok if values[k] is not None), None)
        dict_mode = isinstance(first, dict)
    else:
        dict_mode = schema.names != [RESULT]
    if not dict_mode:
        typ = schema.field(RESULT).type if schema is not None else None
        column = [None if k in errors else v for k, v in enumerate(values)] if errors else values
        if schema is None and dict in set(map(type, column)):
            column = list(column) if column is values else column
            for k, v in enumerate(column):
                if isinstance(v, dict):
                    errors[k] = (
                        "result is a dict, but other items returned a scalar; return one shape"
                    )
                    column[k] = None
        return {RESULT: _to_array(column, typ, errors, RESULT)}

    keys: list[str] = list(schema.names) if schema is not None else []
    for k in ok:
        v = values[k]
        if not isinstance(v, dict):
            errors[k] = (
                f"result is {type(v).__name__}, but other items returned a dict; return one shape"
            )
            continue
        bad = [key for key in v if not isinstance(key, str) or key in reserved]
        if bad and schema is None and all(isinstance(key, str) for key in bad):
            raise _clash_error(bad, reserved)
        if bad:
            errors[k] = f"result key(s) {bad!r} clash with parameter or output columns; rename them"
            continue
        if schema is None:
            for key in v:
                if key not in keys:
                    keys.append(key)
        else:
            extra = [key for key in v if key not in keys]
            if extra:
                errors[k] = (
                    f"result key(s) {extra!r} were not returned by the sweep's first items (known: {keys})"
                )
    out: dict[str, pa.Array] = {}
    for key in keys:
        typ = schema.field(key).type if schema is not None else None
        column = [None if k in errors else values[k].get(key) for k in range(len(values))]
        out[key] = _to_array(column, typ, errors, key)
    if len(errors) and out:
        # a later column may have turned items into errors: null them in every column
        mask = pa.array([k in errors for k in range(len(values))])
        out = {key: pc.if_else(mask, pa.scalar(None, arr.type), arr) for key, arr in out.items()}
    return out


def _clash_error(bad: Sequence[str], reserved: Sequence[str]) -> SpecError:
    return SpecError(
        f"function: it returns key(s) {', '.join(map(repr, bad))}, named like parameter or"
        f" output columns ({', '.join(reserved)}): rename the keys or the parameters"
    )


def _fit_columns(
    cols: dict[str, pa.Array], reserved: Sequence[str], schema: pa.Schema | None
) -> dict[str, pa.Array] | None:
    """A batch's result columns made to agree with ``schema``; None when they cannot."""
    scalar = list(cols) == [RESULT]
    if schema is None:
        bad = [] if scalar else [k for k in cols if k in reserved]
        if bad:
            raise _clash_error(bad, reserved)
        return {k: _normalise(v) for k, v in cols.items()}
    if list(cols) != list(schema.names):
        return None
    try:
        return {k: v.cast(schema.field(k).type) for k, v in cols.items()}
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _to_array(
    column: list[Any], typ: pa.DataType | None, errors: dict[int, str], name: str
) -> pa.Array:
    if typ is None:
        guess = _GUESS.get(type(next((v for v in column if v is not None), None)))
        if guess is not None:
            # converting to a known type is 2-4x faster than inferring one
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                return _array(column, guess)
    try:
        arr = _array(column, typ)
        return _normalise(arr) if typ is None else arr
    except (
        pa.ArrowInvalid,
        pa.ArrowTypeError,
        pa.ArrowNotImplementedError,
        OverflowError,
        TypeError,
        ValueError,
    ):
        pass
    # slow path: find the offending items, one by one
    column = list(column)
    for k, v in enumerate(column):
        if v is None:
            continue
        try:
            _array([v], typ)
        except Exception:
            want = f" as {typ}" if typ is not None else ""
            errors[k] = (
                f"result {name!r} of type {type(v).__name__} cannot be stored{want}"
                " (return numbers, strings, bools, lists of them, or a dict of those)"
            )
            column[k] = None
    try:
        arr = _array(column, typ)
    except Exception as e:
        for k, v in enumerate(column):
            if v is not None:
                errors[k] = f"result {name!r}: items returned mixed types ({e})"
        arr = pa.nulls(len(column), typ or pa.null())
    return _normalise(arr) if typ is None else arr


_GUESS = {float: pa.float64(), int: pa.int64(), bool: pa.bool_(), str: pa.string()}
_INTEGERS = frozenset(
    {int, type(None), np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
     np.uint64}
)  # fmt: skip


def _array(column: Any, typ: pa.DataType | None) -> pa.Array:
    """``pa.array(column, type=typ)``, refusing what it would truncate.

    pyarrow converts Python floats to an integer type by truncating them (20.5 → 20):
    a float result in an int64 column must fail instead (then it is an item error).
    """
    if typ is not None and pa.types.is_integer(typ) and not _INTEGERS.issuperset(map(type, column)):
        raise pa.ArrowInvalid(f"values that are not integers cannot be stored as {typ}")
    return pa.array(column, type=typ, from_pandas=True)


def _normalise(arr: pa.Array) -> pa.Array:
    """Fix widths so partitions agree: all ints int64, all floats float64."""
    t = arr.type
    if pa.types.is_integer(t) and t != pa.int64():
        return arr.cast(pa.int64())
    if pa.types.is_floating(t) and t != pa.float64():
        return arr.cast(pa.float64())
    return arr
