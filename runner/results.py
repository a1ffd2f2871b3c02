"""Read what a sweep's output holds — finished, failed, interrupted or still running.

Every summary is computed out of core: DuckDB scans the partition files (local paths
directly, any other fsspec URL through the registered filesystem) in a bounded number of
passes, with column selection and filters pushed down, under a memory limit. Nothing
loads the table into pandas unless asked to (:func:`load_results`).

:class:`SweepOutput` opens an output; :meth:`SweepOutput.analyse` computes the one
summary that ``sweep results --json``, the terminal, the plots and the HTML report all
render (:mod:`runner.render`): counts and completeness, ``describe()`` of the results, the
commonest errors with an example item, what each parameter does to each result (binned
mean and p10-p90, first-order sensitivity, a heat map over the two most influential
parameters), the failure map, top and bottom items, time and cost.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from .exceptions import SourceError, SpecError, SweepError
from .store import (
    DIED_TEXT,
    ITEM,
    ITEM_ERROR,
    ITEM_OK,
    OUTPUT_COLUMNS,
    STATUS_COLUMNS,
    TIMEOUT_TEXT,
    PartitionCounts,
    Store,
    counts_of,
)

#: the scans' memory limit (DuckDB spills beyond it where it can)
MEMORY_LIMIT = "512MB"
#: quantiles are exact up to this many items, estimated from a reservoir sample beyond
#: (DuckDB reservoir_quantile: 8,192 values per group; bounded memory)
EXACT_QUANTILES = 2_000_000
#: numbers in an error message (replaced by ``#`` to group messages into kinds)
NUMBER_RE = r"[-+]?\d+(\.\d+)?([eE][-+]?\d+)?"
#: a parameter with more distinct values than this is binned by range, or (not numeric) left out
MAX_LEVELS = 30


def _open(store: Store) -> tuple[Store, dict[str, Any] | None, dict[int, str]]:
    url = store.url
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


def _q(name: str) -> str:
    """A column name as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _num(v: Any) -> Any:
    """A JSON-able number: ints stay ints, NaN and infinities become None."""
    if isinstance(v, int):  # bool too
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return None if f != f or f in (math.inf, -math.inf) else f


@dataclass(frozen=True)
class Binning:
    """How one parameter is grouped: ``range`` bins of equal width, or one per ``value``."""

    name: str
    kind: str  # "range" | "value"
    lo: float | None = None
    hi: float | None = None
    bins: int = 1

    def expr(self) -> str:
        """The SQL expression of a row's bin: an integer 0..bins-1, or the value itself."""
        col = _q(self.name)
        if self.kind == "value":
            return f"CAST({col} AS VARCHAR)"
        width = (self.hi - self.lo) if self.hi is not None and self.lo is not None else 0.0
        if not width:
            return f"CASE WHEN {col} IS NULL THEN NULL ELSE 0 END"
        return (
            f"CAST(LEAST(GREATEST(FLOOR(({col} - {self.lo!r}) / {width!r} * {self.bins}), 0),"
            f" {self.bins - 1}) AS INTEGER)"
        )

    def describe(self, key: Any) -> dict[str, Any]:
        """The JSON form of bin ``key``: ``{"bin": label, "lo", "hi"}`` (range) or the value."""
        if self.kind == "value":
            return {"bin": key}
        if key is None:
            return {"bin": None, "lo": None, "hi": None}
        width = ((self.hi or 0.0) - (self.lo or 0.0)) / self.bins
        lo = (self.lo or 0.0) + int(key) * width
        hi = lo + width if width else lo
        last = int(key) == self.bins - 1
        return {"bin": f"[{lo:.4g}, {hi:.4g}{']' if last else ')'}", "lo": lo, "hi": hi}


class SweepOutput:
    """A sweep's output opened for reading: its manifest, partitions, schema and a scan.

    Parameters
    ----------
    url
        The sweep's output (any fsspec URL).
    storage_options
        Passed to fsspec (``endpoint_url``, ``anon``, ...).
    memory_limit
        DuckDB's memory limit for the scans.
    """

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        memory_limit: str = MEMORY_LIMIT,
    ) -> None:
        self.url = url
        store = Store(url, storage_options)
        # before the listing: an existence check drops the folder's cached listing, which
        # the scans' file opens would otherwise answer from (no HEAD request per open)
        self.success = store.has_success()
        self.store, manifest, self.parts = _open(store)
        self.manifest: dict[str, Any] = manifest or {}
        self.memory_limit = memory_limit
        self._con: duckdb.DuckDBPyConnection | None = None
        self._counts: list[PartitionCounts] | None = None
        self.footers = self.store.read_footers(listed=self.parts) if self.parts else {}
        schemas = [f.remove_metadata() for f in self.footers.values()]
        self.schema = (
            pa.unify_schemas(schemas, promote_options="permissive")
            if schemas
            else pa.schema([(ITEM, pa.int64())])
        )

    @property
    def counts(self) -> list[PartitionCounts]:
        """What each partition's footer says (items, errors, compute time)."""
        if self._counts is None:
            self._counts = [counts_of(i, f) for i, f in self.footers.items()]
        return self._counts

    @property
    def planned_partitions(self) -> int | None:
        return (self.manifest.get("layout") or {}).get("partitions")

    def state(self) -> str:
        """``succeeded`` (``_SUCCESS`` was there when opened), ``finalising`` (a running
        sweep whose every partition is written) or the manifest's status."""
        if self.success:
            return "succeeded"
        state = self.manifest.get("status", "unknown")
        planned = self.planned_partitions
        if state == "running" and planned and len(self.footers) == planned:
            return "finalising"
        return str(state)

    # ------------------------------------------------------------------ columns

    @property
    def params(self) -> list[str]:
        """The parameter columns (they come before ``item``)."""
        names = self.schema.names
        return names[: names.index(ITEM)] if ITEM in names else []

    @property
    def results(self) -> list[str]:
        """The function's result columns."""
        return result_columns(self.schema, self.manifest)

    def numeric(self, name: str) -> bool:
        t = self.schema.field(name).type
        return pa.types.is_integer(t) or pa.types.is_floating(t)

    def _valid(self, name: str) -> str:
        """SQL: the row has a usable value of numeric column ``name`` (not null, not NaN)."""
        col = _q(name)
        if pa.types.is_floating(self.schema.field(name).type):
            return f"({col} IS NOT NULL AND NOT isnan({col}))"
        return f"({col} IS NOT NULL)"

    # ------------------------------------------------------------------ scans

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with the view ``results`` over every finished partition."""
        if self._con is None:
            self._con = self._connect()
        return self._con

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(config={"memory_limit": self.memory_limit})
        con.execute("SET preserve_insertion_order = false")
        if not self.parts:
            cols = ", ".join(f"NULL::{_duck_type(f.type)} AS {_q(f.name)}" for f in self.schema)
            con.execute(f"CREATE VIEW results AS SELECT {cols} WHERE false")
            return con
        files = self.store.duckdb_urls(con, [self.parts[i] for i in sorted(self.parts)])
        listing = "[" + ", ".join(_lit(f) for f in files) + "]"
        # union_by_name: a partition whose probe items all failed has null-typed results
        cols = ", ".join(
            f"CAST({_q(f.name)} AS {_duck_type(f.type)}) AS {_q(f.name)}" for f in self.schema
        )
        con.execute(
            f"CREATE VIEW results AS SELECT {cols}"
            f" FROM read_parquet({listing}, union_by_name = true)"
        )
        return con

    def relation(
        self, columns: Sequence[str] | None = None, where: str | None = None
    ) -> duckdb.DuckDBPyRelation:
        """The results as a DuckDB relation (lazy: nothing is read until it is consumed).

        Parameters
        ----------
        columns
            Only these columns.
        where
            A SQL filter on the columns, e.g. ``"status = 'ok' AND b > 0.9"``.
        """
        rel = self.con.table("results")
        if columns is not None:
            missing = [c for c in columns if c not in self.schema.names]
            if missing:
                raise SourceError(
                    f"{self.url}: no column {missing} in the sweep output (it has"
                    f" {', '.join(self.schema.names)})"
                )
            rel = rel.select(*[duckdb.ColumnExpression(c) for c in columns])
        if where:
            try:
                rel = rel.filter(where)
                rel.limit(0).fetchall()  # binds the expression: a bad one fails here
            except duckdb.Error as e:
                raise SpecError(f"--where {where!r}: {str(e).splitlines()[0]}") from e
        return rel

    def export_csv(self, path: Path, where: str | None = None) -> int:
        """Stream the rows (``where`` only), by item, into a CSV file; return how many.

        Written to a temporary name and renamed: nothing half-written stays.
        """
        self.relation(where=where)  # checks the filter before any file exists
        tmp = path.with_name(f".{path.name}.tmp")
        query = "SELECT * FROM results" + (f" WHERE {where}" if where else "") + " ORDER BY item"
        try:
            # COPY streams the rows and answers how many it wrote
            ((count,),) = self.con.execute(
                f"COPY ({query}) TO {_lit(str(tmp))} (HEADER)"
            ).fetchall()
            tmp.replace(path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise SpecError(f"--csv {path}: cannot write ({e.strerror})") from e
        except Exception as e:
            tmp.unlink(missing_ok=True)
            raise SpecError(f"--csv {path}: cannot write: {str(e).splitlines()[0]}") from e
        return int(count)

    def _one(self, sql: str) -> tuple[Any, ...]:
        return self._all(sql)[0]

    def _all(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self.con.execute(sql).fetchall()
        except duckdb.Error as e:
            raise SourceError(f"{self.url}: cannot scan the sweep output: {e}") from e

    # ------------------------------------------------------------------ summary

    def analyse(
        self,
        bins: int = 10,
        top: int | None = None,
        bottom: int | None = None,
        by: str | None = None,
        where: str | None = None,
    ) -> dict[str, Any]:
        """The whole summary, as ``sweep results --json`` prints it (see the README)."""
        return Analysis(self, bins=bins, where=where).run(top=top, bottom=bottom, by=by)


class Analysis:
    """One summary of one output: a few named scans, their results kept on the object.

    Scans: the totals (counts, ranges, describe); the parameter bins of every parameter
    at once (``GROUPING SETS``: effects, failure map); the heat maps; the errors; top and
    bottom items. Each reads only the columns it needs.
    """

    def __init__(self, out: SweepOutput, bins: int = 10, where: str | None = None) -> None:
        if bins < 1:
            raise SpecError(f"--bins {bins}: give at least 1")
        self.out = out
        self.bins = bins
        self.source = "results"
        if where:
            out.relation(where=where)  # checks it
            self.source = f"(SELECT * FROM results WHERE {where})"
        self.numeric_results = [c for c in out.results if out.numeric(c)]
        self.binnings: list[Binning] = []
        self.left_out: dict[str, str] = {}
        self.totals: dict[str, Any] = {}

    def run(
        self, top: int | None = None, bottom: int | None = None, by: str | None = None
    ) -> dict[str, Any]:
        summary = self.counts()
        if not self.out.parts:
            return summary
        self.scan_totals()
        summary["describe"] = self.totals["describe"]
        summary["top_errors"] = self.top_errors()
        summary["failures"] = self.failure_kinds()
        effects, failures_by = self.scan_bins()
        summary["effects"] = effects
        summary["sensitivity"] = {
            y: {p: e["sensitivity"] for p, e in per.items()} for y, per in effects.items()
        }
        summary["failures_by_parameter"] = failures_by
        summary["parameters_left_out"] = self.left_out
        summary["heatmaps"] = self.heatmaps(summary["sensitivity"])
        summary["time"] = self.timing()
        if top or bottom:
            by = by or (self.numeric_results[0] if self.numeric_results else None)
            if by is None or by not in self.out.schema.names:
                raise SpecError(
                    f"--by {by!r}: not a column of the output; give one of"
                    f" {', '.join(self.numeric_results) or 'its numeric results'}"
                )
            summary["by"] = by
            if top:
                summary["top"] = self.extremes(by, top, descending=True)
            if bottom:
                summary["bottom"] = self.extremes(by, bottom, descending=False)
        return summary

    @property
    def exact(self) -> bool:
        """Exact quantiles (deterministic) up to :data:`EXACT_QUANTILES` items, then sampled."""
        return sum(c.items for c in self.out.counts) <= EXACT_QUANTILES

    def _quantiles(self, col: str, qs: str) -> str:
        return f"quantile_cont({col}, {qs})" if self.exact else f"reservoir_quantile({col}, {qs})"

    # ------------------------------------------------------------------ scans

    def counts(self) -> dict[str, Any]:
        """Counts and completeness from the manifest and the footers (no data read)."""
        out, manifest = self.out, self.out.manifest
        ok = sum(c.ok for c in out.counts)
        errors = sum(c.errors for c in out.counts)
        planned_items = manifest.get("items")
        planned_parts = out.planned_partitions
        success = out.success
        state = out.state()
        items_done = ok + errors
        return {
            "output": out.url,
            "name": manifest.get("name"),
            "state": state,
            "complete": success,
            "items": planned_items,
            "items_done": items_done,
            "ok": ok,
            "errors": errors,
            "partitions": planned_parts,
            "partitions_done": len(out.counts),
            "percent_done": round(100.0 * items_done / planned_items, 2) if planned_items else None,
            "wall_s": manifest.get("wall_s"),
            "worker_s": manifest.get("worker_s"),
            "parameters": out.params,
            "results": out.results,
            "top_errors": [],
            "describe": {},
        }

    def _usable(self, name: str, only_ok: bool = True) -> str:
        """SQL: ``name``'s value where it counts (an ok item, not NaN), else NULL."""
        cond = self.out._valid(name) + (f" AND status = {_lit(ITEM_OK)}" if only_ok else "")
        return f"CASE WHEN {cond} THEN {_q(name)} END"

    def scan_totals(self) -> None:
        """One pass: each result's describe() and sums, each parameter's range and levels."""
        out = self.out
        exact = self.exact
        aggs: list[str] = []
        described = [*self.numeric_results, "duration_s"]
        described = [c for c in dict.fromkeys(described) if c in out.schema.names]
        select = [
            f"{self._usable(y, only_ok=y in self.numeric_results)} AS __v{i}"
            for i, y in enumerate(described)
        ]
        for i in range(len(described)):
            v = f"__v{i}"
            aggs += [
                f"count({v})", f"avg({v})", f"stddev_samp({v})", f"min({v})",
                self._quantiles(v, "[0.25, 0.5, 0.75]"), f"max({v})", f"var_pop({v})",
            ]  # fmt: skip
        for p in out.params:
            col = _q(p)
            select.append(col)
            if out.numeric(p):
                aggs += [f"min({col})", f"max({col})"]
            if not pa.types.is_floating(out.schema.field(p).type):  # floats: always ranges
                aggs.append(f"approx_count_distinct({col})")
        row = out._one(
            f"SELECT count(*), {', '.join(aggs) or '0'}"
            f" FROM (SELECT {', '.join(select) or '1'} FROM {self.source})"
        )
        self.totals["rows"] = row[0]
        values = iter(row[1:])
        describe: dict[str, Any] = {}
        moments: dict[str, tuple[float, int]] = {}
        for y in described:
            count, mean, std, low, quarts, high, var = (next(values) for _ in range(7))
            n_ok = count
            q25, q50, q75 = quarts if quarts else (None, None, None)
            stats = {
                "count": count, "mean": mean, "std": std, "min": low,
                "25%": q25, "50%": q50, "75%": q75, "max": high,
            }  # fmt: skip
            describe[y] = {k: _num(v) for k, v in stats.items()}
            moments[y] = (float(var or 0.0), int(n_ok or 0))
        self.totals["describe"] = {y: describe[y] for y in self.numeric_results}
        self.totals["duration_s"] = describe.get("duration_s")
        self.totals["moments"] = moments
        self.totals["quantiles"] = "exact" if exact else "approximate (reservoir sample)"
        for p in out.params:
            lo = hi = None
            if out.numeric(p):
                lo, hi = next(values), next(values)
            floating = pa.types.is_floating(out.schema.field(p).type)
            levels = math.inf if floating else int(next(values) or 0)
            integer = pa.types.is_integer(out.schema.field(p).type)
            if not out.numeric(p) or (integer and levels <= max(self.bins, MAX_LEVELS)):
                if levels > MAX_LEVELS:
                    self.left_out[p] = f"about {levels:,} distinct values (more than {MAX_LEVELS})"
                    continue
                self.binnings.append(Binning(p, "value"))
            else:
                self.binnings.append(
                    Binning(p, "range", _num(lo), _num(hi), self.bins if lo != hi else 1)
                )

    def scan_bins(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """One pass over every parameter's bins: per bin, items, errors and each result's
        mean and p10/p90; the first-order sensitivity Var(E[Y|bin of X]) / Var(Y)."""
        out = self.out
        if not self.binnings:
            return {}, {}
        keys = [f"__bin{i}" for i in range(len(self.binnings))]  # no parameter is named so
        select = [f"{b.expr()} AS {k}" for b, k in zip(self.binnings, keys, strict=True)]
        select.append(f"status = {_lit(ITEM_ERROR)} AS __failed")
        select += [f"{self._usable(y)} AS __v{j}" for j, y in enumerate(self.numeric_results)]
        aggs = ["count(*)", "count_if(__failed)"]
        for j in range(len(self.numeric_results)):
            v = f"__v{j}"
            aggs += [f"count({v})", f"avg({v})", self._quantiles(v, "[0.1, 0.9]")]
        grouping = ", ".join(f"({k})" for k in keys)
        rows = out._all(
            f"SELECT {', '.join(f'GROUPING({k})' for k in keys)}, {', '.join(keys)},"
            f" {', '.join(aggs)}"
            f" FROM (SELECT {', '.join(select)} FROM {self.source})"
            f" GROUP BY GROUPING SETS ({grouping})"
        )
        n = len(keys)
        per_param: dict[str, list[tuple[Any, tuple[Any, ...]]]] = {
            b.name: [] for b in self.binnings
        }
        for row in rows:
            which = next(i for i in range(n) if row[i] == 0)
            per_param[self.binnings[which].name].append((row[n + which], row[2 * n :]))
        effects: dict[str, dict[str, Any]] = {y: {} for y in self.numeric_results}
        failures: dict[str, list[dict[str, Any]]] = {}
        for b in self.binnings:
            groups = sorted(per_param[b.name], key=lambda g: _sort_key(g[0]))
            failures[b.name] = [
                {**b.describe(key), "items": int(vals[0]), "errors": int(vals[1])}
                for key, vals in groups
            ]
            for j, y in enumerate(self.numeric_results):
                mean = self.totals["describe"][y]["mean"]
                var, n_ok = self.totals["moments"][y]
                table, between = [], 0.0
                for key, vals in groups:
                    count, avg, band = vals[2 + 3 * j : 5 + 3 * j]
                    p10, p90 = band if band else (None, None)
                    if count and avg is not None and mean is not None:
                        between += count * (float(avg) - mean) ** 2
                    table.append(
                        {
                            **b.describe(key),
                            "items": int(count or 0),
                            "mean": _num(avg),
                            "p10": _num(p10),
                            "p90": _num(p90),
                        }
                    )
                share = between / (var * n_ok) if var > 0 and n_ok else 0.0
                effects[y][b.name] = {
                    "binning": b.kind,
                    "sensitivity": round(min(max(share, 0.0), 1.0), 6),
                    "bins": table,
                }
        # ranked: the most influential parameter first
        for y in effects:
            effects[y] = dict(sorted(effects[y].items(), key=lambda kv: -kv[1]["sensitivity"]))
        return effects, failures

    def heatmaps(self, sensitivity: dict[str, dict[str, float]]) -> dict[str, Any]:
        """Per result, its mean over the bins of its two most influential parameters (one
        pass for every result: a grouping set per pair of parameters)."""
        index = {b.name: i for i, b in enumerate(self.binnings)}
        pairs: dict[str, tuple[int, int]] = {}
        for y, shares in sensitivity.items():
            ranked = [index[p] for p in shares if p in index]
            if len(ranked) >= 2:
                pairs[y] = (ranked[0], ranked[1])
        if not pairs:
            return {}
        used = sorted({i for pair in pairs.values() for i in pair})
        select = [f"{self.binnings[i].expr()} AS __bin{i}" for i in used]
        select += [f"{self._usable(y)} AS __v{j}" for j, y in enumerate(self.numeric_results)]
        sets = ", ".join(f"(__bin{i}, __bin{j})" for i, j in dict.fromkeys(pairs.values()))
        flags = ", ".join(f"GROUPING(__bin{i})" for i in used)
        keys = ", ".join(f"__bin{i}" for i in used)
        means = ", ".join(f"avg(__v{j})" for j in range(len(self.numeric_results)))
        rows = self.out._all(
            f"SELECT {flags}, {keys}, {means} FROM (SELECT {', '.join(select)} FROM"
            f" {self.source}) GROUP BY GROUPING SETS ({sets})"
        )
        n = len(used)
        pos = {i: k for k, i in enumerate(used)}
        maps: dict[str, Any] = {}
        for j, y in enumerate(self.numeric_results):
            if y not in pairs:
                continue
            ix, iy = pairs[y]
            cells = [
                (r[n + pos[ix]], r[n + pos[iy]], r[2 * n + j])
                for r in rows
                if [k for k in range(n) if r[k] == 0] == sorted((pos[ix], pos[iy]))
            ]
            cells = [c for c in cells if c[2] is not None]
            bx, by_ = self.binnings[ix], self.binnings[iy]
            xs = sorted({c[0] for c in cells}, key=_sort_key)
            ys = sorted({c[1] for c in cells}, key=_sort_key)
            grid: list[list[float | None]] = [[None] * len(xs) for _ in ys]
            xi, yi = {k: i for i, k in enumerate(xs)}, {k: i for i, k in enumerate(ys)}
            for x, yv, avg in cells:
                grid[yi[yv]][xi[x]] = _num(avg)
            maps[y] = {
                "x": bx.name,
                "y": by_.name,
                "x_bins": [bx.describe(k)["bin"] for k in xs],
                "y_bins": [by_.describe(k)["bin"] for k in ys],
                "mean": grid,
            }
        return maps

    def _params_of(self, items: list[int]) -> dict[int, dict[str, Any]]:
        if not items or not self.out.params:
            return {}
        cols = ", ".join(_q(c) for c in (ITEM, *self.out.params))
        rows = self.out._all(
            f"SELECT {cols} FROM results WHERE item IN ({', '.join(str(int(i)) for i in items)})"
        )
        return {int(r[0]): dict(zip(self.out.params, map(_num, r[1:]), strict=True)) for r in rows}

    def top_errors(self, limit: int = 5) -> list[dict[str, Any]]:
        """The commonest error messages, with counts and one example item and its parameters."""
        if not sum(c.errors for c in self.out.counts):
            return []
        # messages that differ only in their numbers are one kind of error
        kind = f"regexp_replace(error, {_lit(NUMBER_RE)}, '#', 'g')"
        rows = self.out._all(
            f"SELECT {kind} AS pattern, count(*) AS n, min(item), arg_min(error, item)"
            f" FROM {self.source} WHERE status = {_lit(ITEM_ERROR)}"
            f" GROUP BY pattern ORDER BY n DESC, pattern LIMIT {limit}"
        )
        params = self._params_of([r[2] for r in rows])
        return [
            {
                "error": example,
                "pattern": pattern,
                "count": int(n),
                "example_item": int(i),
                "example_params": params.get(i),
            }
            for pattern, n, i, example in rows
        ]

    def failure_kinds(self, limit: int = 10) -> dict[str, Any]:
        """Items that timed out and items that killed their worker process, with parameters."""
        kinds = {"timed_out": TIMEOUT_TEXT, "killed_worker": DIED_TEXT}
        out: dict[str, Any] = {}
        if not sum(c.errors for c in self.out.counts):
            return {k: {"count": 0, "items": []} for k in kinds}
        aggs = []
        for text in kinds.values():
            cond = f"contains(error, {_lit(text)})"
            aggs += [
                f"count(*) FILTER (WHERE {cond})",
                f"min(item, {int(limit)}) FILTER (WHERE {cond})",
            ]
        row = self.out._one(  # one pass for both kinds: counts and the first items
            f"SELECT {', '.join(aggs)} FROM {self.source} WHERE status = {_lit(ITEM_ERROR)}"
        )
        firsts = [sorted(row[2 * k + 1] or []) for k in range(len(kinds))]
        params = self._params_of([i for items in firsts for i in items])
        for k, kind in enumerate(kinds):
            out[kind] = {
                "count": int(row[2 * k]),
                "items": [{"item": int(i), "params": params.get(i)} for i in firsts[k]],
            }
        return out

    def extremes(self, by: str, n: int, descending: bool) -> list[dict[str, Any]]:
        """The ``n`` items with the highest (lowest) ``by``, with their parameters."""
        out = self.out
        cols = [ITEM, *out.params, *[c for c in out.results if c != by], by]
        cond = out._valid(by) if out.numeric(by) else f"{_q(by)} IS NOT NULL"
        rows = out._all(
            f"SELECT {', '.join(_q(c) for c in dict.fromkeys(cols))} FROM {self.source}"
            f" WHERE {cond} AND status = {_lit(ITEM_OK)}"
            f" ORDER BY {_q(by)} {'DESC' if descending else 'ASC'}, item LIMIT {int(n)}"
        )
        names = list(dict.fromkeys(cols))
        return [{k: _num(v) for k, v in zip(names, r, strict=True)} for r in rows]

    def timing(self) -> dict[str, Any]:
        """Item durations, partition compute times (stragglers), worker-seconds."""
        manifest = self.out.manifest
        walls = sorted(
            ((c.compute_s, c.index) for c in self.out.counts if c.compute_s is not None),
            reverse=True,
        )
        partitions: dict[str, Any] = {"count": len(walls)}
        if walls:
            values = sorted(w for w, _ in walls)
            median = values[len(values) // 2]
            partitions.update(
                median_s=median,
                max_s=values[-1],
                slowest=[
                    {
                        "partition": i,
                        "compute_s": w,
                        "vs_median": round(w / median, 2) if median else None,
                    }
                    for w, i in walls[:5]
                ],
            )
        runs = manifest.get("runs") or []
        return {
            "duration_s": self.totals.get("duration_s"),
            "partitions": partitions,
            "worker_s": manifest.get("worker_s"),
            "worker_hours": manifest.get("worker_hours"),
            "cost": manifest.get("cost"),
            "cap": manifest.get("cap"),
            "wall_s": manifest.get("wall_s"),
            "runs": len(runs),
            "per_run": [
                {k: r.get(k) for k in ("started", "status", "wall_s", "worker_s", "cost")}
                for r in runs
            ],
            "quantiles": self.totals.get("quantiles"),
        }


def _sort_key(key: Any) -> tuple[int, Any]:
    if key is None:
        return (2, "")
    if isinstance(key, int | float):
        return (0, key)
    try:
        return (0, float(key))
    except (TypeError, ValueError):
        return (1, str(key))


def _duck_type(t: pa.DataType) -> str:
    """The DuckDB type a result column is read as (null-typed columns: DOUBLE)."""
    if pa.types.is_null(t):
        return "DOUBLE"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        name = {8: "TINYINT", 16: "SMALLINT", 32: "INTEGER", 64: "BIGINT"}[t.bit_width]
        return name if pa.types.is_signed_integer(t) else "U" + name
    if pa.types.is_floating(t):
        return "FLOAT" if t.bit_width <= 32 else "DOUBLE"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    if pa.types.is_duration(t):
        return "INTERVAL"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BLOB"
    return "VARCHAR"


# --------------------------------------------------------------------------- the public face


def open_results(
    url: str, storage_options: dict[str, Any] | None = None
) -> duckdb.DuckDBPyRelation:
    """The results as a lazy DuckDB relation, for queries beyond the report.

    Examples
    --------
    >>> rel = runner.open_results("s3://bucket/sweeps/pi")
    >>> rel.filter("b > 0.9").aggregate("a, avg(result)", "a").df()
    """
    return SweepOutput(url, storage_options).relation()


def load_results(
    url: str,
    storage_options: dict[str, Any] | None = None,
    columns: list[str] | None = None,
    where: str | None = None,
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
    where
        A SQL filter pushed down into the scan, e.g. ``"status = 'error'"`` or
        ``"b > 0.9 AND result < 0"``: only matching rows are loaded.
    """
    out = SweepOutput(url, storage_options)
    rel = out.relation(columns=columns, where=where)
    if ITEM in rel.columns:
        rel = rel.order(ITEM)
    return rel.df()


def summarise(
    url: str, storage_options: dict[str, Any] | None = None, **options: Any
) -> dict[str, Any]:
    """The summary ``sweep results --json`` prints; ``options``: see :meth:`SweepOutput.analyse`."""
    return SweepOutput(url, storage_options).analyse(**options)


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
    out = SweepOutput(url, storage_options)
    manifest, counts = out.manifest, out.counts
    times = out.store.partition_times()
    total = manifest.get("items")
    done = sum(c.items for c in counts)
    errors = sum(c.errors for c in counts)
    runs = manifest.get("runs") or []
    started = runs[-1].get("started") if runs else None
    state = out.state()
    rate = eta = None
    if started and state in ("running", "finalising"):
        t0 = dt.datetime.fromisoformat(started).timestamp()
        now = time.time() if now is None else now
        recent = sum(c.items for c in counts if times.get(c.index, 0) >= t0)
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
        "partitions": out.planned_partitions,
        "partitions_done": len(counts),
        "run_started": started,
        "items_per_s": round(rate, 1) if rate is not None else None,
        "eta_s": round(eta, 1) if eta is not None else None,
    }
