"""Rerun only what failed: the items of an output whose ``status`` is ``error``.

A retry is desired state like a resume: the same spec on the same output, where the
desired state is "no item failed" (or none that matches a filter). The runner finds the
partitions that hold such items (:func:`retry_targets`: the footers' error counts, and
with a filter one scan of those files' ``status``/``error`` columns); each becomes a
task that reads its partition back, runs the chosen rows again with their own item
numbers and seeds (:func:`retry_rows`), and rewrites the partition atomically with
those rows replaced (:func:`merge_retried`). ``attempts`` keeps counting across runs.
A retry that is stopped leaves every partition either as it was or rewritten whole, so
the same command continues with what is still failing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .exceptions import SpecError
from .store import ITEM, ITEM_ERROR, PartitionCounts, Store

ROW = "__sweep_row"


def check_filter(where: str, schema: pa.Schema) -> None:
    """Refuse a ``--where`` that does not bind to the output's columns (one line, exit 2)."""
    import duckdb  # lazy: only a filter needs it (`sweep run` starts without it)

    con = duckdb.connect()
    con.register("output", schema.empty_table())
    try:
        con.execute(f"SELECT count(*) FROM output WHERE {where}").fetchall()
    except duckdb.Error as e:
        raise SpecError(
            f"--where {where!r}: {str(e).splitlines()[0]}; it is SQL on the output's columns"
            f" ({', '.join(schema.names)}), e.g. \"error LIKE '%Timeout%'\""
        ) from e


def retry_targets(
    store: Store,
    counts: Iterable[PartitionCounts],
    listed: Mapping[int, str],
    where: str | None = None,
) -> dict[int, int]:
    """Partitions to retry and how many of their items: ``{index: items}``.

    Without ``where`` the footers' error counts say it (no data is read); with it one
    DuckDB scan of the partitions that have errors counts their matching rows.
    """
    failing = {c.index: c.errors for c in counts if c.errors and c.index in listed}
    if not where or not failing:
        return failing
    import duckdb  # lazy: only a filter needs it (`sweep run` starts without it)

    con = duckdb.connect()
    order = sorted(failing)
    files = dict(zip(store.duckdb_urls(con, [listed[i] for i in order]), order, strict=True))
    names = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    try:
        rows = con.execute(
            f"SELECT filename, count(*) FROM read_parquet([{names}], union_by_name = true,"
            f" filename = true) WHERE status = '{ITEM_ERROR}' AND ({where}) GROUP BY filename"
        ).fetchall()
    except duckdb.Error as e:
        raise SpecError(f"--where {where!r}: {str(e).splitlines()[0]}") from e
    by_name = {f.rstrip("/"): i for f, i in files.items()}
    return {by_name[str(f).rstrip("/")]: int(n) for f, n in rows if n}


def retry_rows(old: pa.Table, where: str | None) -> np.ndarray:
    """Positions of ``old``'s rows to run again: failed ones (that match ``where``)."""
    if not where:
        failed = pc.equal(old.column("status"), ITEM_ERROR)
        return np.flatnonzero(failed.to_numpy(zero_copy_only=False))
    import duckdb  # lazy: see check_filter

    con = duckdb.connect()
    con.register("part", old.append_column(ROW, pa.array(np.arange(old.num_rows, dtype=np.int64))))
    got = con.execute(
        f"SELECT {ROW} FROM part WHERE status = '{ITEM_ERROR}' AND ({where})"
    ).fetchnumpy()
    return np.sort(np.asarray(got[ROW], dtype=np.int64))


def merge_retried(old: pa.Table, rows: np.ndarray, new: pa.Table) -> pa.Table:
    """``old`` with its rows at ``rows`` replaced by ``new`` (the same items), in item order.

    ``attempts`` adds up: the new rows' attempts are added to the old ones'. Column
    types follow the old file where it has them (a result column that was all nulls
    takes the new values' type).
    """
    prior = old.column("attempts").take(pa.array(rows)).to_numpy(zero_copy_only=False)
    attempts = new.column("attempts").to_numpy(zero_copy_only=False) + prior
    new = new.set_column(
        new.schema.get_field_index("attempts"), "attempts", pa.array(attempts, pa.int32())
    )
    keep = np.ones(old.num_rows, dtype=bool)
    keep[rows] = False
    kept = old.filter(pa.array(keep))
    merged = pa.concat_tables([kept, new.select(_order(old, new))], promote_options="permissive")
    return merged.sort_by(ITEM)


def _order(old: pa.Table, new: pa.Table) -> list[str]:
    """``new``'s columns in ``old``'s order (any column only ``new`` has, after them)."""
    return [c for c in old.column_names if c in new.column_names] + [
        c for c in new.column_names if c not in old.column_names
    ]
