"""Read what a sweep's output holds — finished, failed, interrupted or still running."""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .exceptions import SourceError, SweepError
from .store import ITEM, ITEM_ERROR, OUTPUT_COLUMNS, STATUS_COLUMNS, Store


def _open(
    url: str, storage_options: dict[str, Any] | None
) -> tuple[Store, dict[str, Any] | None, dict[int, str]]:
    store = Store(url, storage_options)
    try:
        manifest = store.read_manifest()
        parts = store.list_partitions()
    except SweepError:
        raise
    except Exception as e:
        raise SourceError(f"{url}: cannot read the sweep output: {type(e).__name__}: {e}") from e
    if manifest is None and not parts:
        raise SourceError(
            f"{url}: no sweep output here (no _manifest.json, no part-*.parquet); check the URL"
        )
    return store, manifest, parts


def load_table(
    url: str, storage_options: dict[str, Any] | None = None, columns: list[str] | None = None
) -> pa.Table:
    """All finished partitions as one Arrow table, ordered by ``item``.

    Partitions agree on schema by construction (the probe fixes it); where they do not
    (e.g. a sweep whose probe items all failed wrote null-typed result columns), the
    types are unified. Each file is read on its own (in parallel, storage failures
    retried like every storage call): ``pyarrow.dataset`` would import pandas, which
    ``sweep results`` does not need without ``--csv``/``--plot``.
    """
    store, _, parts = _open(url, storage_options)
    if not parts:
        return pa.table({"item": pa.nulls(0, pa.int64())})
    paths = [parts[i] for i in sorted(parts)]
    with ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
        tables = list(pool.map(lambda p: store.read_partition(p, columns), paths))
    table = pa.concat_tables(tables, promote_options="permissive")
    if columns is not None:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise SourceError(f"{url}: no column {missing} in the sweep output")
        table = table.select(columns)
    if "item" in table.column_names:
        table = table.sort_by("item")
    return table


def load_results(
    url: str, storage_options: dict[str, Any] | None = None, columns: list[str] | None = None
) -> Any:
    """Load a sweep's results as a pandas DataFrame (one row per finished item, by ``item``).

    Parameters
    ----------
    url
        The sweep's output (any fsspec URL).
    storage_options
        Passed to fsspec (``endpoint_url``, ``anon``, ...).
    columns
        Read only these columns.
    """
    return load_table(url, storage_options, columns).to_pandas()


def result_columns(table_schema: pa.Schema, manifest: dict[str, Any] | None) -> list[str]:
    """Names of the function's result columns."""
    if manifest and manifest.get("result_columns"):
        return [c for c in manifest["result_columns"] if c in table_schema.names]
    names = table_schema.names
    if ITEM in names:
        after = names[names.index(ITEM) + 1 :]
        return [c for c in after if c not in STATUS_COLUMNS]
    return [c for c in names if c not in OUTPUT_COLUMNS]


def progress(
    url: str, storage_options: dict[str, Any] | None = None, now: float | None = None
) -> dict[str, Any]:
    """How far a sweep is: items done of all, failures, and this run's rate and ETA.

    Read from the manifest and the partition files' footers and times (no data is
    read), so it is cheap on a running sweep of any size. The rate counts the items of
    partitions written since the current run started; ``eta_s`` is ``None`` until
    there is one, and once the sweep has ended.
    """
    store, manifest, parts = _open(url, storage_options)
    manifest = manifest or {}
    counts = {c.index: c for c in store.partition_counts(listed=parts)}
    times = store.partition_times()
    total = manifest.get("items")
    done = sum(c.items for c in counts.values())
    errors = sum(c.errors for c in counts.values())
    runs = manifest.get("runs") or []
    started = runs[-1].get("started") if runs else None
    state = "succeeded" if store.has_success() else manifest.get("status", "unknown")
    rate = eta = None
    if started and state == "running":
        t0 = dt.datetime.fromisoformat(started).timestamp()
        now = time.time() if now is None else now
        recent = sum(c.items for i, c in counts.items() if times.get(i, 0) >= t0)
        if recent and now > t0:
            rate = recent / (now - t0)
            eta = (total - done) / rate if total else None
    return {
        "output": url,
        "state": state,
        "items": total,
        "items_done": done,
        "errors": errors,
        "percent_done": round(100.0 * done / total, 2) if total else None,
        "partitions": (manifest.get("layout") or {}).get("partitions"),
        "partitions_done": len(counts),
        "run_started": started,
        "items_per_s": round(rate, 1) if rate is not None else None,
        "eta_s": round(eta, 1) if eta is not None else None,
    }


def summarise(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts, completeness, the commonest errors and ``describe()`` of the result columns."""
    store, manifest, parts = _open(url, storage_options)
    counts = store.partition_counts()
    ok = sum(c.ok for c in counts)
    errors = sum(c.errors for c in counts)
    items_done = ok + errors
    planned_items = (manifest or {}).get("items")
    layout = (manifest or {}).get("layout") or {}
    planned_parts = layout.get("partitions")
    success = store.has_success()
    state = "succeeded" if success else (manifest or {}).get("status", "unknown")
    if state == "running" and planned_parts and len(counts) == planned_parts:
        state = "finalising"
    out: dict[str, Any] = {
        "output": url,
        "name": (manifest or {}).get("name"),
        "state": state,
        "complete": success,
        "items": planned_items,
        "items_done": items_done,
        "ok": ok,
        "errors": errors,
        "partitions": planned_parts,
        "partitions_done": len(counts),
        "percent_done": round(100.0 * items_done / planned_items, 2) if planned_items else None,
        "wall_s": (manifest or {}).get("wall_s"),
        "worker_s": (manifest or {}).get("worker_s"),
        "top_errors": [],
        "describe": {},
    }
    if not parts:
        return out
    table = load_table(url, storage_options)
    if errors:
        # not pc.equal(..., ITEM_ERROR): pyarrow converts a Python value to a scalar
        # only after importing pandas (0.2-0.4 s) to check that it is no pandas object
        failed = pc.match_substring_regex(table["status"], f"^{ITEM_ERROR}$")
        err = table.filter(failed)["error"]
        vc = pc.value_counts(err).to_pylist()
        vc.sort(key=lambda d: -d["counts"])
        out["top_errors"] = [{"error": d["values"], "count": d["counts"]} for d in vc[:5]]
    for c in result_columns(table.schema, manifest):
        stats = describe(table[c])
        if stats is not None:
            out["describe"][c] = stats
    return out


def describe(column: pa.ChunkedArray) -> dict[str, float | None] | None:
    """pandas' ``describe()`` of a numeric column, computed in Arrow (no pandas import).

    Integers and floats only: ``None`` for every other type (booleans and strings, as
    pandas' ``select_dtypes("number")``; durations too, which pandas would describe).
    NaN and nulls are skipped, ``std`` has one degree of freedom, quartiles interpolate
    linearly (as ``numpy.percentile``); a statistic without a value (no values, the
    ``std`` of one value) is ``None``.
    """
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return None
    if pa.types.is_float16(column.type):  # no Arrow kernel computes on half floats
        column = column.cast(pa.float32())
    if pa.types.is_floating(column.type):  # skip NaN (a filter: pa.scalar imports pandas)
        column = column.filter(pc.invert(pc.is_nan(column)))
    low, high = pc.min_max(column).values()
    q25, q50, q75 = pc.quantile(column, q=[0.25, 0.5, 0.75], interpolation="linear").to_pylist()
    stats = {
        "count": pc.count(column).as_py(),
        "mean": pc.mean(column).as_py(),
        "std": pc.stddev(column, ddof=1).as_py(),
        "min": low.as_py(),
        "25%": q25,
        "50%": q50,
        "75%": q75,
        "max": high.as_py(),
    }
    return {k: _num(v) for k, v in stats.items()}


def _num(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return None if f != f else f


def plot_results(
    df: Any, path: str, columns: list[str] | None = None, title: str | None = None
) -> list[str]:
    """Plot each numeric result column against ``item`` and as a histogram; write a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if columns is None:
        names = list(df.columns)
        start = names.index(ITEM) + 1 if ITEM in names else 0
        columns = [c for c in names[start:] if c not in STATUS_COLUMNS]
    columns = [
        c
        for c in columns
        if c in df and str(df[c].dtype) not in ("object", "str", "string") and df[c].dtype != bool
    ]
    if not columns:
        raise SourceError("no numeric result column to plot")
    ok = df[df["status"] == "ok"] if "status" in df else df
    fig, axes = plt.subplots(len(columns), 2, figsize=(11, 3.2 * len(columns)), squeeze=False)
    for row, col in zip(axes, columns, strict=True):
        x = ok["item"] if "item" in ok else range(len(ok))
        row[0].plot(x, ok[col], lw=0.6 if len(ok) > 2000 else 1.0)
        row[0].set_xlabel("item")
        row[0].set_ylabel(col)
        row[1].hist(ok[col].dropna(), bins=min(60, max(5, len(ok) // 20)))
        row[1].set_xlabel(col)
        row[1].set_ylabel("count")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return columns
