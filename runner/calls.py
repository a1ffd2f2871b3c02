"""Call styles and the per-item loop: the hot path of every sweep.

The loop works on plain Python lists built once per partition (never pandas rows),
catches each item's exception (with retries), and gathers results into Arrow
columns once at the end.
"""

from __future__ import annotations

import inspect
import json
import os
import string
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .exceptions import SpecError
from .store import ITEM, OUTPUT_COLUMNS, RESULT

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
    tb = traceback.extract_tb(e.__traceback__)
    user = [f for f in tb if os.path.basename(f.filename) != "calls.py"]
    if user:
        f = user[-1]
        msg += f" (at {os.path.basename(f.filename)}:{f.lineno} in {f.name})"
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
            raise ItemError(f"command timed out after {self.timeout}s") from None
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

    @property
    def n(self) -> int:
        return len(self.values)


def _pylist(col: pa.ChunkedArray | pa.Array) -> list[Any]:
    t = col.type
    if (
        pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)
    ) and col.null_count == 0:
        return col.to_numpy().tolist()
    return col.to_pylist()


def iter_calls(
    fn: Callable[..., Any], call: str, params: pa.Table, items: np.ndarray, seed: int
) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The ``(args, kwargs)`` of each row's call, in order.

    ``call`` is ``row`` (``fn(list_of_values)``), ``kwargs`` (``fn(**row)``) or ``command``
    (``fn`` is a :class:`Command`, called with the row plus ``item`` and ``seed``).
    A function that takes ``seed`` or ``rng`` gets a per-item one (see :func:`item_seeds`).
    """
    names = params.column_names
    cols = [_pylist(params.column(i)) for i in range(params.num_columns)]
    kind = ("seed" if "seed" not in names else None) if call == "command" else seed_kind(fn, names)
    seeds = item_seeds(seed, items).tolist() if kind else None
    item_list = items.tolist()
    rows: Any = zip(*cols, strict=True) if cols else iter([()] * params.num_rows)
    for k, v in enumerate(rows):
        if call == "row":
            args: tuple[Any, ...] = (list(v),)
            kw: dict[str, Any] = {}
        else:
            args, kw = (), dict(zip(names, v, strict=True))
            if call == "command":
                kw[ITEM] = item_list[k]
        if kind == "seed":
            kw["seed"] = seeds[k]  # type: ignore[index]
        elif kind == "rng":
            kw["rng"] = np.random.default_rng(seeds[k])  # type: ignore[index]
        yield args, kw


def run_items(
    fn: Callable[..., Any],
    call: str,
    params: pa.Table,
    items: np.ndarray,
    seed: int,
    retries: int,
    deadline: float | None = None,
) -> ItemResults:
    """Call ``fn`` on every row of ``params`` (or until ``deadline``, a perf_counter value)."""
    values: list[Any] = []
    durations: list[float] = []
    errors: dict[int, str] = {}
    attempts: dict[int, int] = {}
    append, dappend = values.append, durations.append
    clock = time.perf_counter

    if call == "row" and deadline is None and seed_kind(fn, params.column_names) is None:
        # the common case, kept as tight as a plain Python loop
        cols = [_pylist(params.column(i)) for i in range(params.num_columns)]
        rows: Any = zip(*cols, strict=True) if cols else iter([()] * params.num_rows)
        for k, v in enumerate(rows):
            arg = list(v)
            t0 = clock()
            try:
                r = fn(arg)
            except Exception as e:
                r, tries, err = retry_item(fn, (arg,), {}, retries, e)
                if err is not None:
                    errors[k] = err
                attempts[k] = tries
            dappend(clock() - t0)
            append(r)
        return ItemResults(values, errors, attempts, durations)

    for k, (args, kw) in enumerate(iter_calls(fn, call, params, items, seed)):
        t0 = clock()
        try:
            r = fn(*args, **kw)
        except Exception as e:
            r, tries, err = retry_item(fn, args, kw, retries, e)
            if err is not None:
                errors[k] = err
            attempts[k] = tries
        dappend(clock() - t0)
        append(r)
        if deadline is not None and clock() >= deadline:
            break
    return ItemResults(values, errors, attempts, durations)


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
    values, errors = res.values, res.errors
    reserved = tuple(dict.fromkeys((*param_names, *OUTPUT_COLUMNS)))
    ok = [k for k in range(len(values)) if k not in errors] if errors else range(len(values))
    if schema is None:
        first = next((values[k] for k in ok if values[k] is not None), None)
        dict_mode = isinstance(first, dict)
    else:
        dict_mode = schema.names != [RESULT]
    if not dict_mode:
        typ = schema.field(RESULT).type if schema is not None else None
        column = (
            [None if k in errors else v for k, v in enumerate(values)] if errors else list(values)
        )
        if schema is None:
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
            raise SpecError(
                f"function: it returns key(s) {', '.join(map(repr, bad))}, named like parameter or"
                f" output columns ({', '.join(reserved)}): rename the keys or the parameters"
            )
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


def _to_array(
    column: list[Any], typ: pa.DataType | None, errors: dict[int, str], name: str
) -> pa.Array:
    try:
        arr = pa.array(column, type=typ, from_pandas=True)
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
    for k, v in enumerate(column):
        if v is None:
            continue
        try:
            pa.array([v], type=typ, from_pandas=True)
        except Exception:
            want = f" as {typ}" if typ is not None else ""
            errors[k] = (
                f"result {name!r} of type {type(v).__name__} cannot be stored{want}"
                " (return numbers, strings, bools, lists of them, or a dict of those)"
            )
            column[k] = None
    try:
        arr = pa.array(column, type=typ, from_pandas=True)
    except Exception as e:
        for k, v in enumerate(column):
            if v is not None:
                errors[k] = f"result {name!r}: items returned mixed types ({e})"
        arr = pa.nulls(len(column), typ or pa.null())
    return _normalise(arr) if typ is None else arr


def _normalise(arr: pa.Array) -> pa.Array:
    """Fix widths so partitions agree: all ints int64, all floats float64."""
    t = arr.type
    if pa.types.is_integer(t) and t != pa.int64():
        return arr.cast(pa.int64())
    if pa.types.is_floating(t) and t != pa.float64():
        return arr.cast(pa.float64())
    return arr
