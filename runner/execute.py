"""Run a sweep: spec + store state → plan → a dask.bag of partition tasks → reports.

Worker side: :func:`run_partition` materialises one partition's parameters, calls the
function per item, writes the partition file and returns a few numbers.
Client side: :func:`run_sweep` decides what is missing, submits one task per missing
partition, follows progress, enforces the failure budget and finalises the output.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import __version__, config
from .calls import RESERVED, Command, result_columns, run_items
from .exceptions import (
    FailureBudgetExceeded,
    InfrastructureError,
    Interrupted,
    OutputConflictError,
    SourceError,
    SweepError,
)
from .plan import Descriptor, Layout, todo
from .policy import FailureBudget, PartitionSizing
from .sources import Source, make_source
from .spec import SweepSpec, resolve_function
from .store import PartitionCounts, Store

SECRET_WORDS = ("secret", "key", "token", "password", "credential", "session")

# --------------------------------------------------------------------------- worker side


@dataclass
class TaskContext:
    """Everything a partition task needs besides its descriptor; shipped to each worker once."""

    function: bytes  # cloudpickled: local modules travel by value
    call: str
    source: Source
    store: Store
    seed: int
    retries: int
    spec_hash: str
    result_schema: bytes | None = None
    _fn: Any = field(default=None, repr=False, compare=False)

    def load_function(self) -> Any:
        if self._fn is None:
            import cloudpickle

            self._fn = cloudpickle.loads(self.function)
        return self._fn

    def schema(self) -> pa.Schema | None:
        return schema_from_bytes(self.result_schema)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fn"] = None
        return state


def schema_to_bytes(schema: pa.Schema | None) -> bytes | None:
    return None if schema is None else schema.serialize().to_pybytes()


def schema_from_bytes(data: bytes | None) -> pa.Schema | None:
    return None if data is None else pa.ipc.read_schema(pa.py_buffer(data))


@dataclass(frozen=True)
class PartitionReport:
    """What a partition task returns: counts and timings, never data."""

    index: int
    start: int
    stop: int
    ok: int
    errors: int
    compute_s: float
    write_s: float
    bytes: int
    result_schema: bytes | None = None

    @property
    def items(self) -> int:
        return self.stop - self.start

    def counts(self) -> PartitionCounts:
        """What the partition's footer says, without reading it back."""
        return PartitionCounts(self.index, self.start, self.stop, self.ok, self.errors)


def run_partition(
    desc: Descriptor, ctx: TaskContext, probe_seconds: float | None = None
) -> PartitionReport:
    """Compute and write one partition (idempotent: same input, same file).

    With ``probe_seconds`` the partition stops early once that much time has passed
    (after at least one item): the probe that sizes the sweep and fixes its schema.
    """
    t0 = time.perf_counter()
    fn = ctx.load_function()
    try:
        params = ctx.source.materialise(desc.start, desc.stop)
    except SweepError:
        raise
    except Exception as e:
        raise SourceError(
            f"reading parameters {desc.start}..{desc.stop}: {type(e).__name__}: {e}"
        ) from e
    items = np.arange(desc.start, desc.stop, dtype=np.int64)
    deadline = t0 + probe_seconds if probe_seconds is not None else None
    res = run_items(fn, ctx.call, params, items, ctx.seed, ctx.retries, deadline)
    n = res.n
    if n < params.num_rows:
        params, items = params.slice(0, n), items[:n]
    schema = ctx.schema()
    cols = result_columns(res, (*params.column_names, *RESERVED), schema)
    errors = res.errors
    failed = np.zeros(n, dtype=bool)
    failed[list(errors)] = True
    attempts = np.ones(n, dtype=np.int32)
    if res.attempts:
        attempts[list(res.attempts)] = list(res.attempts.values())
    arrays = dict(zip(params.column_names, params.columns, strict=True))
    arrays["item"] = pa.array(items)
    arrays.update(cols)
    arrays["status"] = pc.if_else(pa.array(failed), "error", "ok")
    if errors:
        arrays["error"] = pa.array([errors.get(k) for k in range(n)], type=pa.string())
    else:
        arrays["error"] = pa.nulls(n, pa.string())
    arrays["attempts"] = pa.array(attempts)
    arrays["duration_s"] = pa.array(np.asarray(res.durations, dtype=np.float64))
    table = pa.table(arrays)
    t1 = time.perf_counter()
    stop = desc.start + n
    meta = {
        "index": desc.index,
        "start": desc.start,
        "stop": stop,
        "ok": n - len(errors),
        "errors": len(errors),
        "spec_hash": ctx.spec_hash,
    }
    nbytes = ctx.store.write_partition(desc.index, table, meta)
    t2 = time.perf_counter()
    result_schema = None
    if probe_seconds is not None and len(errors) < n:
        result_schema = schema_to_bytes(pa.schema([table.schema.field(c) for c in cols]))
    return PartitionReport(
        desc.index,
        desc.start,
        stop,
        n - len(errors),
        len(errors),
        t1 - t0,
        t2 - t1,
        nbytes,
        result_schema,
    )


def _run_bag_partition(
    descs: list[Descriptor], ctx: TaskContext, probe_seconds: float | None
) -> list[PartitionReport]:
    return [run_partition(d, ctx, probe_seconds) for d in descs]


# --------------------------------------------------------------------------- client side


@dataclass
class SweepReport:
    """The outcome of :func:`run_sweep` (what ``--json`` prints)."""

    name: str
    output: str
    status: str  # succeeded | failed | interrupted
    spec_hash: str
    items: int
    ok: int
    errors: int
    allowed_failures: int
    partitions: int
    partitions_done: int
    partitions_run: int
    items_run: int
    wall_s: float
    worker_s: float
    items_per_s: float
    dashboard: str | None = None
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[str, dict[str, Any]], None]


def _noop(event: str, info: dict[str, Any]) -> None:
    pass


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def redact(obj: Any) -> Any:
    """Replace values of secret-looking keys: secrets are never written anywhere."""
    if isinstance(obj, dict):
        return {
            k: (
                "***"
                if any(w in str(k).lower() for w in SECRET_WORDS) and v not in (None, "")
                else redact(v)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def check_output(store: Store, spec: SweepSpec, overwrite: bool) -> dict[str, Any] | None:
    """Compare the output with the spec; return the existing manifest when it is the same sweep.

    Raises
    ------
    OutputConflictError
        The output holds a different sweep (or files of unknown origin) and ``overwrite`` is off.
    """
    manifest = store.read_manifest()
    if overwrite:
        store.clear()
        return None
    if manifest is None:
        if store.list_partitions():
            raise OutputConflictError(
                f"output {store.url} holds partition files but no _manifest.json;"
                " choose another output or pass --overwrite to replace them"
            )
        return None
    if manifest.get("spec_hash") != spec.spec_hash():
        raise OutputConflictError(
            f"output {store.url} holds a different sweep (spec hash {manifest.get('spec_hash')},"
            f" this spec {spec.spec_hash()}); use another output or pass --overwrite to replace it"
        )
    return manifest


def run_sweep(
    spec: SweepSpec,
    *,
    client: Any = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    provider: Any = None,
) -> SweepReport:
    """Run (or resume) a sweep and return its report.

    Parameters
    ----------
    spec
        The validated sweep.
    client
        An existing ``distributed.Client`` to use instead of the spec's cluster.
    overwrite
        Replace whatever sweep the output holds.
    progress
        ``callback(event, info)`` for ``start``, ``probe``, ``partition`` and ``end`` events.
    provider
        A :class:`~runner.clusters.ClusterProvider` (overrides ``spec.cluster`` and ``client``).

    Raises
    ------
    FailureBudgetExceeded
        More items failed than ``max_failures`` allows (the report is ``e.report``).
    SpecError, SourceError, OutputConflictError
        Bad input; nothing was written.
    InfrastructureError
        The cluster or the storage failed; finished partitions are kept.
    Interrupted
        SIGINT/SIGTERM; finished partitions are kept, rerun to resume.
    """
    from .clusters import make_provider

    emit = progress or _noop
    t_start = time.perf_counter()
    started = _now()
    fn = resolve_function(spec)
    source = make_source(spec.params, spec.seed, spec.storage_options)
    n_items = source.count()
    if n_items == 0:
        raise SourceError(f"params: the {source.kind} source has no items; nothing to sweep")
    store = Store(spec.output, spec.storage_options)
    manifest = check_output(store, spec, overwrite)
    store.cleanup_temporaries()

    if manifest is not None and manifest.get("items") not in (None, n_items):
        raise OutputConflictError(
            f"output {store.url} was planned for {manifest['items']} items, the source now has {n_items};"
            " the parameters changed: use another output or --overwrite"
        )
    if manifest is None:
        manifest = {
            "format": 1,
            "name": spec.name,
            "spec": redact(spec.to_dict()),
            "spec_hash": spec.spec_hash(),
            "version": __version__,
            "source": source.describe(),
            "items": n_items,
            "layout": None,
            "result_schema": None,
            "started": started,
            "runs": [],
            "worker_s": 0.0,
        }
    manifest["status"] = "running"
    store.clear_success()
    store.write_manifest(manifest)

    import cloudpickle

    callable_ = Command(tuple(fn), spec.timeout) if isinstance(fn, list) else fn
    ctx = TaskContext(
        function=cloudpickle.dumps(callable_),
        call=spec.call,
        source=source,
        store=store,
        seed=spec.seed,
        retries=spec.retries,
        spec_hash=spec.spec_hash(),
        result_schema=_b64decode(manifest.get("result_schema")),
    )
    budget = FailureBudget(spec.max_failures)
    allowed = budget.allowed(n_items)
    prov = provider or make_provider(
        spec.cluster, client=client, name=spec.name, base_dir=spec.base_dir
    )
    reports: list[PartitionReport] = []
    status = "failed"
    run_record = {"started": started}
    manifest["runs"].append(run_record)
    futures: list[Any] = []
    known: dict[int, PartitionCounts] = {}
    dashboard = None
    try:
        with prov as dask_client:
            dashboard = prov.dashboard_link
            emit("cluster", {"dashboard": dashboard, "provider": prov.name})
            layout = Layout.from_dict(manifest["layout"]) if manifest.get("layout") else None
            done = set(store.list_partitions())
            if layout is None:
                layout, probe = _probe(dask_client, ctx, spec, n_items, done, store, prov, emit)
                if probe is not None:
                    reports.append(probe)
                    done.add(0)
                manifest["layout"] = layout.to_dict()
                manifest["result_schema"] = _b64encode(ctx.result_schema)
                manifest["result_columns"] = _schema_types(ctx.schema())
                store.write_manifest(manifest)
            missing = todo(layout, done)
            prior = store.partition_counts(done - {r.index for r in reports})
            known.update((c.index, c) for c in prior)
            failures = sum(c.errors for c in prior) + sum(r.errors for r in reports)
            items_done = sum(c.items for c in prior) + sum(r.items for r in reports)
            emit(
                "start",
                {
                    "items": n_items,
                    "items_done": items_done,
                    "failures": failures,
                    "partitions": layout.partitions,
                    "todo": len(missing),
                    "allowed": allowed,
                },
            )
            if budget.exceeded(failures, n_items):
                raise FailureBudgetExceeded(
                    f"{failures} failed items already exceed max_failures={spec.max_failures}"
                )
            if missing:
                futures = _submit(dask_client, ctx, missing)
                remaining = len(missing)
                prov.on_remaining(remaining)
                from distributed import as_completed

                for fut in as_completed(futures):
                    try:
                        batch = fut.result()
                    except SweepError:
                        raise
                    except Exception as e:
                        raise InfrastructureError(
                            f"a partition task failed after retries: {type(e).__name__}: {e}"
                        ) from e
                    for r in batch:
                        reports.append(r)
                        failures += r.errors
                        items_done += r.items
                        remaining -= 1
                        emit(
                            "partition",
                            {
                                "index": r.index,
                                "items": r.items,
                                "errors": r.errors,
                                "items_done": items_done,
                                "failures": failures,
                            },
                        )
                    prov.on_remaining(remaining)
                    if budget.exceeded(failures, n_items):
                        raise FailureBudgetExceeded(
                            f"{failures} failed items exceed max_failures={spec.max_failures}"
                            f" ({allowed} allowed); stopped early"
                        )
            status = "succeeded"
    except FailureBudgetExceeded:
        status = "failed"
        _cancel(futures)
    except KeyboardInterrupt as e:
        status = "interrupted"
        _cancel(futures)
        raise Interrupted(
            "interrupted: finished partitions are kept; run the same command to resume"
        ) from e
    except BaseException:
        status = "error"
        _cancel(futures)
        raise
    finally:
        report = _finalise(
            spec,
            store,
            manifest,
            run_record,
            reports,
            known,
            status,
            n_items,
            allowed,
            t_start,
            dashboard,
        )
        emit("end", report.to_dict())
    if report.status == "failed":
        err = FailureBudgetExceeded(
            f"{report.errors} of {report.items} items failed, max_failures allows {allowed};"
            f" see the error column: sweep results {spec.output}"
        )
        err.report = report  # type: ignore[attr-defined]
        raise err
    return report


def _probe(
    client: Any,
    ctx: TaskContext,
    spec: SweepSpec,
    n_items: int,
    done: set[int],
    store: Store,
    prov: Any,
    emit: ProgressCallback,
) -> tuple[Layout, PartitionReport | None]:
    """Run (or recover) partition 0 alone; derive the layout from its timing."""
    import dask.bag as db

    explicit = spec.partition_size if isinstance(spec.partition_size, int) else None
    if 0 in done:
        # a previous run wrote the probe but died before recording the layout
        (c,) = store.partition_counts([0])
        probe = None
        head, per_item = c.items, None
        import pyarrow.parquet as pq

        with store.fs.open(store.list_partitions()[0], "rb") as fh:
            schema = pq.ParquetFile(fh).schema_arrow
        params = set(ctx.source.columns) | set(RESERVED)
        ctx.result_schema = schema_to_bytes(
            pa.schema([f for f in schema if f.name not in params]).remove_metadata()
        )
    else:
        cap = min(n_items, explicit or config.get("probe.max-items"))
        emit("probe", {"items": cap})
        bag = db.from_sequence([Descriptor(0, 0, cap)], npartitions=1).map_partitions(
            _run_bag_partition, ctx, config.get("probe.seconds")
        )
        try:
            (probe,) = client.compute(bag, retries=config.get("task-retries")).result()
        except SweepError:
            raise
        except Exception as e:
            raise InfrastructureError(f"the first partition failed: {type(e).__name__}: {e}") from e
        head = probe.items
        per_item = probe.compute_s / max(1, probe.items)
        if probe.result_schema is not None:
            ctx.result_schema = probe.result_schema
    if explicit:
        size = explicit
    else:
        sizing = PartitionSizing(
            target_seconds=config.get("partition.target-seconds"),
            min_partitions_per_worker=config.get("partition.min-per-worker"),
            max_items=config.get("partition.max-items"),
        )
        size = sizing.size(
            n_items - head, per_item if per_item is not None else 1.0, prov.workers_hint()
        )
    return Layout(n_items, head, size), probe


def _submit(client: Any, ctx: TaskContext, missing: list[Descriptor]) -> list[Any]:
    """One bag partition per sweep partition; the context rides along as one shared task."""
    import dask
    import dask.bag as db

    ctx_d = dask.delayed(ctx, pure=True, traverse=False)
    bag = db.from_sequence(missing, npartitions=len(missing)).map_partitions(
        _run_bag_partition, ctx_d, None
    )
    return client.compute(bag.to_delayed(), retries=config.get("task-retries"))


def _cancel(futures: list[Any]) -> None:
    pending = [f for f in futures if not f.done()]
    if pending:
        with contextlib.suppress(Exception):
            pending[0].client.cancel(pending, force=True)


def _finalise(
    spec: SweepSpec,
    store: Store,
    manifest: dict[str, Any],
    run_record: dict[str, Any],
    reports: list[PartitionReport],
    known: dict[int, PartitionCounts],
    status: str,
    n_items: int,
    allowed: int,
    t_start: float,
    dashboard: str | None,
) -> SweepReport:
    """Count what the store holds, write the manifest, and ``_SUCCESS`` if it is all there.

    ``known`` holds the counts already read or reported this run; only other partition
    files (e.g. written by tasks that finished while being cancelled) have footers read.
    """
    wall = time.perf_counter() - t_start
    worker_s = sum(r.compute_s + r.write_s for r in reports)
    layout = Layout.from_dict(manifest["layout"]) if manifest.get("layout") else None
    known = {**known, **{r.index: r.counts() for r in reports}}
    try:
        done = store.list_partitions()
        unknown = set(done) - set(known)
        counts = [known[i] for i in done if i in known]
        counts += store.partition_counts(unknown) if unknown else []
    except Exception:
        counts = []
    ok = sum(c.ok for c in counts)
    errors = sum(c.errors for c in counts)
    partitions = layout.partitions if layout else 0
    complete = (
        layout is not None and len(counts) == partitions and sum(c.items for c in counts) == n_items
    )
    if status == "succeeded":
        status = "succeeded" if complete and errors <= allowed else "failed"
    items_run = sum(r.items for r in reports)
    run_record.update(
        finished=_now(),
        status=status,
        partitions_run=len(reports),
        items_run=items_run,
        wall_s=round(wall, 3),
        worker_s=round(worker_s, 3),
    )
    manifest.update(
        status=status,
        finished=_now(),
        partitions=partitions,
        counts={"items": n_items, "ok": ok, "errors": errors, "partitions_done": len(counts)},
        wall_s=round(sum(r.get("wall_s", 0.0) for r in manifest["runs"]), 3),
        worker_s=round(manifest.get("worker_s", 0.0) + worker_s, 3),
    )
    try:
        store.write_manifest(manifest)
        if status == "succeeded":
            store.mark_success()
    except SweepError:
        if status == "succeeded":
            raise
    exit_code = {"succeeded": 0, "failed": 1, "interrupted": 130}.get(status, 3)
    return SweepReport(
        name=spec.name,
        output=spec.output,
        status=status,
        spec_hash=spec.spec_hash(),
        items=n_items,
        ok=ok,
        errors=errors,
        allowed_failures=allowed,
        partitions=partitions,
        partitions_done=len(counts),
        partitions_run=len(reports),
        items_run=items_run,
        wall_s=round(wall, 3),
        worker_s=round(worker_s, 3),
        items_per_s=round(items_run / wall, 1) if wall > 0 else 0.0,
        dashboard=dashboard,
        exit_code=exit_code,
    )


def _b64encode(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _b64decode(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _schema_types(schema: pa.Schema | None) -> dict[str, str] | None:
    return None if schema is None else {f.name: str(f.type) for f in schema}
