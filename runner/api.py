"""The Python API: ``sweep(func, params, output=..., **spec_fields)`` and ``load_results(url)``."""

from __future__ import annotations

import hashlib
import io
import sys
from collections.abc import Callable
from typing import Any

from .exceptions import SpecError
from .execute import SweepReport, run_sweep
from .spec import build_spec
from .store import PARAMS_DIR, Store


def sweep(
    func: Callable[..., Any] | str | list[str],
    params: Any,
    *,
    output: str,
    client: Any = None,
    overwrite: bool = False,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
    retry_failed: bool | str = False,
    **spec_fields: Any,
) -> SweepReport:
    """Run ``func`` on every parameter set of ``params`` and write the results to ``output``.

    Parameters
    ----------
    func
        A function (even one defined in ``__main__`` or a notebook: it travels by
        cloudpickle), a ``"module:function"`` reference, or an argv list for ``call="command"``.
    params
        A pandas DataFrame (one row per item; written once as a Parquet dataset under
        ``output/_params/`` and then swept like any dataset), a params mapping such as
        ``{"grid": {"a": [1, 2]}}``, or a dataset URL.
    output
        Where the Parquet partitions go (any fsspec URL).
    client
        An existing ``distributed.Client``; by default the spec's cluster (a LocalCluster).
    overwrite
        Replace a different sweep found at ``output``.
    retry_failed
        Also run again the items of ``output`` whose ``status`` is ``error`` (and finish
        what is missing); a string narrows it with a SQL filter on the failed rows, e.g.
        ``"error LIKE '%Timeout%'"``. ``attempts`` keeps counting across runs.
    **spec_fields
        Any other spec field: ``call``, ``partition_size``, ``retries``, ``max_failures``,
        ``seed``, ``storage_options``, ``name``, ``cluster``, ``timeout``.

    Returns
    -------
    SweepReport
        Counts and timings. Raises :class:`~runner.FailureBudgetExceeded` when too many items failed.
    """
    _refuse_in_reimported_main()
    storage_options = spec_fields.get("storage_options") or {}
    params_spec = _params_spec(params, output, storage_options, overwrite)
    spec = build_spec(
        {"function": func, "params": params_spec, "output": output, **spec_fields}, where="sweep()"
    )
    return run_sweep(
        spec, client=client, overwrite=overwrite, progress=progress, retry_failed=retry_failed
    )


def _refuse_in_reimported_main() -> None:
    """A worker process that re-runs the user's script must not start a sweep of its own.

    The local cluster keeps its workers from re-running the script; a Dask cluster
    the caller made with ``spawn`` (``client=``) does not, and lands here.
    """
    main = sys.modules.get("__main__")
    if getattr(main, "__name__", None) == "__mp_main__":
        where = getattr(main, "__file__", None) or "your script"
        raise SpecError(
            f"runner.sweep() ran while a worker process imported {where}: put the call under"
            ' `if __name__ == "__main__":` so that worker processes do not start sweeps'
        )


def _params_spec(params: Any, output: str, storage_options: dict[str, Any], overwrite: bool) -> Any:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(params, pd.DataFrame):
        return {"dataset": _write_params_frame(params, output, storage_options)}
    if isinstance(params, list) and params and isinstance(params[0], dict):
        return _params_spec(pd.DataFrame(params), output, storage_options, overwrite)
    if isinstance(params, str):
        return {"dataset": params}
    if isinstance(params, dict):
        return params
    raise SpecError(
        f"sweep(): params must be a pandas DataFrame, a list of dicts, a params mapping or a dataset URL,"
        f" not {type(params).__name__}"
    )


def _write_params_frame(df: Any, output: str, storage_options: dict[str, Any]) -> str:
    """Write the frame once, content-addressed, so resume and change detection just work."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(df) == 0:
        raise SpecError("sweep(): the params DataFrame is empty")
    table = pa.Table.from_pandas(df, preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=65536)
    data = sink.getvalue()
    import pandas as pd

    h = hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    h.update(repr([(str(c), str(t)) for c, t in df.dtypes.items()]).encode())
    digest = h.hexdigest()[:16]
    store = Store(output, storage_options)
    name = f"{PARAMS_DIR}/params-{digest}.parquet"
    if not store.exists(name):
        store.write_bytes(name, data)
    return store.child_url(name)


__all__ = ["sweep"]
