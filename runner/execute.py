"""Run a sweep: spec + what the output holds → the missing partitions as Dask tasks → output.

Worker side: :func:`run_partition` materialises one partition's parameters, calls the
function per item (in the worker, or isolated in a child process: :mod:`runner.isolate`),
writes the partition file and returns a few numbers.

Client side: :class:`SweepRun`, one run of a sweep in named steps::

    prepare   resolve the function, open the source, check the call and the output (no writes)
    begin     record the run in _manifest.json
    probe     partition 0 alone: fixes the result schema and sizes the rest (first run only)
    run       the missing partitions; one whose worker died runs again isolated
    finalise  count what the store holds, write the manifest, and _SUCCESS when complete

:func:`run_sweep` is ``SweepRun(spec, ...).run()``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import __version__, config
from .cache import ItemCache, result_part, sweep_cache
from .calls import Command, check_call, result_columns, run_items
from .clusters.base import ClusterStart
from .exceptions import (
    BudgetExhausted,
    FailureBudgetExceeded,
    InfrastructureError,
    Interrupted,
    OutputConflictError,
    SourceError,
    SpecError,
    Status,
    StorageUnreachable,
    SweepError,
)
from .extend import Extension, extended_layout, find_extension, sobol_warning
from .inline import InlineSlot
from .isolate import IsolatedRun
from .notify import send as send_notification
from .plan import Descriptor, Layout, fill, todo
from .policy import FailureBudget, InlinePolicy, PartitionSizing, SpendCap
from .retry import check_filter, merge_retried, retry_rows, retry_targets
from .secrets import redact
from .sources import Source, make_source
from .spec import SweepSpec, resolve_function
from .store import (
    ITEM,
    ITEM_ERROR,
    ITEM_OK,
    MANIFEST,
    OUTPUT_COLUMNS,
    STATUS_COLUMNS,
    PartitionCounts,
    Store,
    footer_meta,
    part_name,
    partition_table,
    result_schema,
)

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
    timeout: float | None = None
    isolation: str = "auto"
    max_deaths: int = 10  # sweep.isolation.*, read where the sweep starts
    memory_fraction: float = 0.95
    result_schema: bytes | None = None
    batch_format: str = "numpy"
    retry_where: str | None = None  # a retry's filter on the failed rows (SQL)
    cache: ItemCache | None = None  # results reused across sweeps (runner.cache)
    _fn: Any = field(default=None, repr=False, compare=False)

    @property
    def function_key(self) -> str:
        return hashlib.sha256(self.function).hexdigest()[:16]

    @property
    def always_isolated(self) -> bool:
        """Items run in a child process from the start (asked for, or a Python timeout)."""
        python = self.call != "command"  # a command is its own process with its own timeout
        return python and (self.isolation == "process" or self.timeout is not None)

    def isolated_run(self) -> IsolatedRun:
        """A runner of this sweep's items in a child process (:mod:`runner.isolate`)."""
        return IsolatedRun(
            self.function,
            self.function_key,
            self.call,
            self.retries,
            self.timeout,
            self.max_deaths,
            self.memory_fraction,
            self.batch_format,
        )

    def load_function(self) -> Any:
        if self._fn is None:
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
    loop_s: float = 0.0  # the items and their cache lookups: what sizes partitions
    isolated: bool = False
    deaths: int = 0  # child processes that died running its items
    inline: bool = False  # run by the runner itself (in its child process), not on the cluster
    retried: int = 0  # failed items it ran again (a retry: the counts are the whole partition's)
    cached: int = 0  # items whose results came from the cache

    @property
    def items(self) -> int:
        return self.stop - self.start

    def counts(self) -> PartitionCounts:
        """What the partition's footer says, without reading it back."""
        return PartitionCounts(
            self.index, self.start, self.stop, self.ok, self.errors, round(self.compute_s, 4)
        )


def run_partition(
    desc: Descriptor,
    ctx: TaskContext,
    probe_seconds: float | None = None,
    isolated: bool = False,
    stop: threading.Event | None = None,
    isolated_run: IsolatedRun | None = None,
) -> PartitionReport:
    """Compute and write one partition (idempotent: same input, same file).

    With ``probe_seconds`` the partition stops early once its items have run that long
    (after at least one item), and with ``stop`` once that is set: the probe that sizes
    the sweep and fixes its schema. ``isolated`` runs the items in a child process
    (:mod:`runner.isolate`; ``isolated_run`` is that runner, if the caller made it).
    """
    return PartitionTask(desc, ctx, probe_seconds, isolated, stop, isolated_run).run()


class PartitionTask:
    """One partition task, in named steps (:meth:`run`)::

    read      the partition's parameters from the source
    select    a retry: only the failed rows of its partition file run again
    look_up   the cache: rows computed before (by any sweep) are taken from it
    compute   the function over the rest, here or in a child process
    tabulate  the computed rows as a partition table (a probe's cut short)
    remember  the cache: the new successful results are added to it
    merge     the cached rows beside the computed ones, or the retried rows into
              the partition file's
    write     the partition file (atomically), and the report
    """

    def __init__(
        self,
        desc: Descriptor,
        ctx: TaskContext,
        probe_seconds: float | None,
        isolated: bool,
        stop: threading.Event | None,
        isolated_run: IsolatedRun | None,
    ) -> None:
        self.desc, self.ctx = desc, ctx
        self.probe_seconds, self.stop, self.isolated_run = probe_seconds, stop, isolated_run
        self.isolated = isolated or ctx.always_isolated
        self.t0 = time.perf_counter()
        self.params: pa.Table
        self.items: np.ndarray
        self.old: pa.Table | None = None  # a retry: the partition file as it was
        self.rows: np.ndarray | None = None  # a retry: the failed rows of `old` run again
        self.cache = None if desc.retry else ctx.cache  # errors are never cached
        self.keys: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.uint64),) * 2
        self.hits: pa.Table | None = None  # rows whose results came from the cache
        self.retried = 0  # a retry: how many rows ran again
        self.t1 = self.t0  # when the table was whole (then the write)

    def run(self) -> PartitionReport:
        self.read()
        if self.desc.retry:
            self.select()
        looked_s = 0.0
        if self.cache is not None:
            t = time.perf_counter()
            self.look_up()
            looked_s = time.perf_counter() - t  # per-item work too: a hit is not free
        res, loop_s = self.compute()
        loop_s += looked_s
        table = self.tabulate(res)
        if self.cache is not None:
            self.remember(table)
        table, meta = self.merge(table, len(res.errors))
        return self.write(table, meta, loop_s, res.deaths)

    def read(self) -> None:
        desc = self.desc
        try:
            self.params = self.ctx.source.materialise(desc.start, desc.stop)
        except SweepError:
            raise
        except Exception as e:
            raise SourceError(
                f"reading parameters {desc.start}..{desc.stop}: {type(e).__name__}: {e}"
            ) from e
        self.items = np.arange(desc.start, desc.stop, dtype=np.int64)

    def select(self) -> None:
        """Only the failed items run again, with their own item numbers and seeds."""
        store = self.ctx.store
        self.old = store.read_partition(store.path(part_name(self.desc.index)), metadata=True)
        self.rows = retry_rows(self.old, self.ctx.retry_where)
        positions = self.old.column(ITEM).to_numpy()[self.rows] - self.desc.start
        self.params, self.items = self.params.take(pa.array(positions)), self.items[positions]

    def look_up(self) -> None:
        assert self.cache is not None
        keys = self.cache.keys(self.params, self.items, self.ctx.seed)
        found, cached = self.cache.lookup(*keys)
        if len(found):
            every = len(found) == len(self.items)  # (found is sorted: then it is every row)
            hit_params = self.params if every else self.params.take(pa.array(found))
            self.hits = _cached_rows(hit_params, self.items[found], cached, self.ctx.schema())
            miss = np.ones(len(self.items), dtype=bool)
            miss[found] = False
            keys = (keys[0][miss], keys[1][miss])
            self.params, self.items = self.params.filter(pa.array(miss)), self.items[miss]
        self.keys = keys

    def compute(self) -> tuple[Any, float]:
        """The function over the rows left; returns its results and the items' seconds."""
        ctx = self.ctx
        if self.isolated or self.isolated_run is not None:
            runner = self.isolated_run or ctx.isolated_run()
            res = runner.run(self.params, self.items, ctx.seed, self.probe_seconds, self.stop)
            return res, sum(res.durations)  # the child's start-up is not the function's time
        fn = ctx.load_function()
        t_loop = time.perf_counter()
        deadline = t_loop + self.probe_seconds if self.probe_seconds is not None else None
        args = (self.params, self.items, ctx.seed, ctx.retries, deadline, ctx.batch_format)
        res = run_items(fn, ctx.call, *args)
        return res, time.perf_counter() - t_loop

    def tabulate(self, res: Any) -> pa.Table:
        n = res.n
        if n < self.params.num_rows:  # a probe that stopped early: the partition ends there
            if self.hits is not None:
                self.hits = self.hits.filter(pc.less(self.hits.column(ITEM), int(self.items[n])))
            self.params, self.items = self.params.slice(0, n), self.items[:n]
            self.keys = (self.keys[0][:n], self.keys[1][:n])
        results = result_columns(res, self.params.column_names, self.ctx.schema())
        attempts = np.ones(n, dtype=np.int32)
        if res.attempts:
            attempts[list(res.attempts)] = list(res.attempts.values())
        return partition_table(
            self.params, self.items, results, res.errors, attempts, res.durations
        )

    def remember(self, table: pa.Table) -> None:
        assert self.cache is not None
        ok = pc.equal(table.column("status"), ITEM_OK)
        done = ok.to_numpy(zero_copy_only=False)
        hi, lo = self.keys
        self.cache.put(hi[done], lo[done], result_part(table.filter(ok), self.params.column_names))

    def merge(self, table: pa.Table, errors: int) -> tuple[pa.Table, dict[str, Any]]:
        """The partition's whole table and its footer's numbers (``errors``: the computed
        rows' failures; cached rows are never failures)."""
        hits = self.hits
        n_cached = 0 if hits is None else hits.num_rows
        if hits is not None and not table.num_rows:  # every item was in the cache
            table = hits
        elif hits is not None:
            merged = pa.concat_tables([table, hits], promote_options="permissive")
            # a result column only one side has (its items all failed) keeps its place
            names = self.params.column_names
            results_of = [c for c in merged.column_names if c not in (*names, *OUTPUT_COLUMNS)]
            table = merged.select([*names, ITEM, *results_of, *STATUS_COLUMNS]).sort_by(ITEM)
        self.t1 = time.perf_counter()
        if self.old is None:
            meta = {"compute_s": round(self.t1 - self.t0, 4), "cached": n_cached}
            return table, {**meta, "errors": errors}
        assert self.rows is not None
        before = footer_meta(self.old.schema)
        self.retried = table.num_rows
        table = merge_retried(self.old.replace_schema_metadata(None), self.rows, table)
        errors = int(pc.sum(pc.equal(table.column("status"), ITEM_ERROR)).as_py() or 0)
        return table, {
            "compute_s": round(float(before.get("compute_s") or 0.0) + self.t1 - self.t0, 4),
            "retried": int(before.get("retried", 0)) + self.retried,
            "errors": errors,
        }

    def write(
        self, table: pa.Table, meta: dict[str, Any], loop_s: float, deaths: int
    ) -> PartitionReport:
        desc, ctx = self.desc, self.ctx
        n, errors = table.num_rows, meta["errors"]
        stop = desc.start + n
        meta.update(
            index=desc.index, start=desc.start, stop=stop, ok=n - errors, spec_hash=ctx.spec_hash
        )
        nbytes = ctx.store.write_partition(desc.index, table, meta)
        t2 = time.perf_counter()
        schema = None
        if ctx.result_schema is None and errors < n:  # the probe: it fixes the schema
            schema = schema_to_bytes(result_schema(table, self.params.column_names))
        return PartitionReport(
            desc.index, desc.start, stop, n - errors, errors, self.t1 - self.t0, t2 - self.t1,
            nbytes, schema, loop_s, self.isolated, deaths, self.isolated_run is not None,
            self.retried, int(meta.get("cached", 0)),
        )  # fmt: skip


def _cached_rows(
    params: pa.Table, items: np.ndarray, cached: pa.Table | None, schema: pa.Schema | None
) -> pa.Table:
    """Rows whose results come from the cache: ``attempts`` 0 (nothing ran), ``duration_s`` 0."""
    assert cached is not None
    if schema is not None:
        cached = pa.table(
            {f.name: cached.column(f.name).cast(f.type) if f.name in cached.column_names
             else pa.nulls(cached.num_rows, f.type) for f in schema}
        )  # fmt: skip
    n = len(items)
    results = {c: cached.column(c) for c in cached.column_names}
    return partition_table(
        params, items, results, {}, np.zeros(n, dtype=np.int32), np.zeros(n, dtype=np.float64)
    )


def _context(ctx: TaskContext) -> TaskContext:
    """The task that holds the context on the cluster (a worker loss recomputes it)."""
    return ctx


def _executing_keys(dask_worker: Any) -> list[str]:
    """Keys of the tasks a worker is running right now (for ``client.run``)."""
    return [str(ts.key) for ts in dask_worker.state.executing]


# --------------------------------------------------------------------------- client side


@dataclass
class SweepReport:
    """The outcome of a run (what ``--json`` prints)."""

    name: str
    output: str
    status: str  # a Status
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
    isolated_partitions: int = 0
    # partitions that ran again because the cluster took their worker away (eviction,
    # preemption): not the partition's doing, so no isolation and nothing counted
    preempted_partitions: int = 0
    inline_partitions: int = 0  # run by the runner itself: no cluster was needed for them
    items_retried: int = 0  # failed items run again (--retry-failed)
    items_fixed: int = 0  # ... of which now succeed
    items_cached: int = 0  # items whose results came from the cache (not run)
    worker_hours: float = 0.0  # the sweep's, all runs (busy worker time; see SpendCap)
    cost: float | None = None  # worker_hours x price_per_worker_hour, when priced
    peak_rss_mb: float = 0.0  # the runner process's own peak memory
    tasks: int = 0  # tasks this run submitted to the Dask scheduler
    dashboard: str | None = None
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[str, dict[str, Any]], None]


def _noop(event: str, info: dict[str, Any]) -> None:
    pass


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Inputs:
    """What a valid spec resolves to on this machine: the callable, its source, how many items."""

    function: Any  # the function, or a Command
    source: Source
    n_items: int


def check_inputs(spec: SweepSpec) -> Inputs:
    """Import the function, open the source, check that the call fits (no output is touched).

    Raises
    ------
    SpecError, SourceError, StorageError
        Bad input, in one line naming the field, file or URL.
    """
    fn = resolve_function(spec)
    source = make_source(spec.params, spec.seed, spec.storage_options)
    n_items = source.count()
    if n_items == 0:
        raise SourceError(f"params: the {source.kind} source has no items; nothing to sweep")
    function = Command(tuple(fn), spec.timeout) if isinstance(fn, list) else fn
    check_call(function, spec.call, source.columns, str(spec.function_ref()))
    return Inputs(function, source, n_items)


def check_output(
    store: Store, spec: SweepSpec, overwrite: bool
) -> tuple[dict[str, Any] | None, Extension | None]:
    """Compare the output with the spec: the existing manifest when it is the same sweep,
    and the extension when the spec is that sweep with more items (:mod:`runner.extend`).

    Raises
    ------
    OutputConflictError
        The output holds a different sweep (or files of unknown origin) and ``overwrite`` is off.
    """
    manifest = store.read_manifest()
    if overwrite:
        store.clear()
        return None, None
    if manifest is None:
        if store.list_partitions():
            raise OutputConflictError(
                f"output {store.url} holds partition files but no _manifest.json;"
                " choose another output or pass --overwrite to replace them"
            )
        return None, None
    if manifest.get("spec_hash") != spec.spec_hash():
        extension = find_extension(spec, manifest)
        if extension is not None:
            return manifest, extension
        raise OutputConflictError(
            f"output {store.url} holds a different sweep (spec hash {manifest.get('spec_hash')},"
            f" this spec {spec.spec_hash()}); use another output or pass --overwrite to replace it"
        )
    return manifest, None


class SweepRun:
    """One run (or resume) of a sweep; state lives on the object, steps are methods.

    Parameters
    ----------
    spec
        The validated sweep.
    client
        An existing ``distributed.Client`` to use instead of the spec's cluster.
    overwrite
        Replace whatever sweep the output holds.
    progress
        ``callback(event, info)`` for ``cluster``, ``probe``, ``start``, ``partition``,
        ``isolate``, ``drain`` and ``end`` events.
    provider
        A :class:`~runner.clusters.ClusterProvider` (overrides ``spec.cluster`` and ``client``).
    retry_failed
        Also run again the items whose ``status`` is ``error`` (:mod:`runner.retry`); a
        string is a SQL filter on the failed rows, e.g. ``"error LIKE '%Timeout%'"``.
    """

    def __init__(
        self,
        spec: SweepSpec,
        *,
        client: Any = None,
        overwrite: bool = False,
        progress: ProgressCallback | None = None,
        provider: Any = None,
        retry_failed: bool | str = False,
    ) -> None:
        self.spec = spec
        self.overwrite = overwrite
        self.retry = bool(retry_failed)
        self.retry_where = retry_failed if isinstance(retry_failed, str) else None
        self.retrying: dict[int, int] = {}  # partitions retried: index -> its errors before
        self.retry_items = 0  # failed items chosen to run again
        self.over_budget: FailureBudgetExceeded | None = None  # stopping: the running finish
        self.fixable: dict[int, int] = {}  # retried partitions not yet back: their chosen items
        self.judge_early = True  # False: a retry that cannot end within the failure budget
        self.items_run = 0  # items this run computed (a retried partition: its retried ones)
        self.emit = progress or _noop
        self._client = client
        self.provider = provider
        self.t_start = time.perf_counter()
        self.started = _now()
        self.status = Status.RUNNING
        self.phase = "prepare"
        self.layout: Layout | None = None
        self.done: set[int] = set()  # partitions in the output when the run began
        self.known: dict[int, PartitionCounts] = {}  # their footers
        self.reports: dict[int, PartitionReport] = {}  # what this run computed
        self.pending: dict[str, tuple[Any, Descriptor]] = {}  # future key -> (future, partition)
        self.worker_losses: Counter[int] = Counter()
        self.lost_contexts: set[str] = set()  # keys of context tasks lost with their worker
        self.preempted: set[int] = set()  # partitions whose worker the cluster took away
        self.isolated: set[int] = set()
        self.crashed_inline: set[str] = set()  # workers that died running items in-process
        # (partition, worker) deaths forgiven as a neighbour's crash: once each, so a worker
        # that keeps dying (or an unknown one, "?") cannot rerun a partition forever
        self.forgiven: set[tuple[int, str]] = set()
        self.dashboard: str | None = None
        self.created = False  # this run created the output's manifest
        self.created_root = False  # ... and its local folder
        self.failures = 0
        self.items_done = 0
        self.stop_at: float | None = None  # drain deadline after SIGTERM/SIGINT
        self.cancelled: set[str] = set()  # keys a drain cancelled (a worker may run one still)
        self.cap_cancelled = 0  # partitions left undone at the spending cap
        self.extension: Extension | None = None  # the spec adds items to the output's sweep
        self._stop = threading.Event()
        self.client: Any = None
        self.cluster: ClusterStart | None = None
        self.inline: InlineSlot | None = None
        self.tasks = 0  # submitted to the scheduler
        self.per_item: float | None = None  # seconds per item, measured by this run's probe
        self._context: tuple[bytes | None, Any] | None = None  # (schema, the context's future)

    # ------------------------------------------------------------------ the run

    def run(self) -> SweepReport:
        """Run the steps; raise the outcome's error (or return the report on success).

        Raises
        ------
        FailureBudgetExceeded
            More items failed than ``max_failures`` allows (the report is ``e.report``).
        SpecError, SourceError, OutputConflictError, StorageError
            Bad input; nothing was written.
        InfrastructureError
            The cluster or the storage failed; finished partitions are kept.
        Interrupted
            SIGINT/SIGTERM; finished partitions are kept, rerun to resume.
        """
        with contextlib.ExitStack() as inline:
            if self._make_provider().starts_cluster and self.spec.cluster.inline:
                # its child process starts now: it imports while the spec is checked
                self.inline = InlineSlot()
                inline.callback(self._close_inline)
                self.inline.warm()
            self.prepare()
            self.begin()
            report = self._run_steps()
        if report.status == Status.BUDGET_EXHAUSTED:
            cap = self.cap
            stop = BudgetExhausted(
                f"stopped at {cap.describe_spent(self._spent_s())} of {cap.describe()}: finished"
                " partitions are kept; raise the cap and run the same command to continue"
            )
            stop.report = report  # type: ignore[attr-defined]
            raise stop
        if report.status == Status.FAILED:
            err = FailureBudgetExceeded(
                f"{report.errors} of {report.items} items failed, max_failures allows"
                f" {report.allowed_failures}; see the error column: sweep results {self.spec.output}"
            )
            err.report = report  # type: ignore[attr-defined]
            raise err
        return report

    def _run_steps(self) -> SweepReport:
        """The steps after :meth:`begin`; always ends with :meth:`finalise`."""
        error: BaseException | None = None
        # the cluster stops last: the output is complete before a slow teardown begins
        with contextlib.ExitStack() as stack:
            try:
                self.cluster = ClusterStart(self.provider)
                stack.callback(self.cluster.close)
                if self.layout is None and self.inline is not None:
                    self.probe_inline()
                elif self.layout is None:
                    self.probe()
                self.run_missing()
                self.status = Status.SUCCEEDED
            except FailureBudgetExceeded:
                self.status = Status.FAILED
            except BudgetExhausted:
                self.status = Status.BUDGET_EXHAUSTED
            except (KeyboardInterrupt, Interrupted) as e:
                self.status = Status.INTERRUPTED
                if isinstance(e, KeyboardInterrupt):
                    error = Interrupted()
                    raise error from e
                error = e
                raise
            except BaseException as e:
                self.status = Status.ERROR
                error = e
                raise
            finally:
                report = self.finalise(error)
                self.emit("end", report.to_dict())
                self._notify(report)
        return report

    def _notify(self, report: SweepReport) -> None:
        """POST the report to the spec's webhook if it asks for this end (never raises)."""
        if self.spec.notify is None:
            return
        outcome = send_notification(self.spec.notify, report.status, report.to_dict())
        if outcome is not None:
            self.emit("notify", outcome)

    def request_stop(self) -> bool:
        """Drain: submit nothing more, let running partitions finish within ``grace-seconds``.

        Returns False when there is nothing to drain yet (before partitions run): the
        caller then stops at once. Safe to call from a signal handler.
        """
        if self.phase not in ("probe", "run"):
            return False
        self._stop.set()
        return True

    # ------------------------------------------------------------------ steps

    def prepare(self) -> None:
        """Everything that can refuse bad input, before anything is written."""
        spec = self.spec
        inputs = check_inputs(spec)
        self.source, self.n_items = inputs.source, inputs.n_items
        self.spec_hash = spec.spec_hash()
        self.store = Store(spec.output, spec.storage_options)
        if self.retry and self.overwrite:
            raise SpecError(
                "--retry-failed keeps what the output holds; --overwrite replaces it: pick one"
            )
        manifest, self.extension = check_output(self.store, spec, self.overwrite)
        if self.retry:
            self._check_retry(manifest)
        warning = sobol_warning(spec)
        if warning:
            self.emit("warning", {"message": warning})
        if self.extension is not None:
            assert manifest is not None
            self._extend(manifest, self.extension)
        elif manifest is not None and manifest.get("items") not in (None, self.n_items):
            raise OutputConflictError(
                f"output {self.store.url} was planned for {manifest['items']} items, the source"
                f" now has {self.n_items}; the parameters changed: use another output or --overwrite"
            )
        self.manifest = manifest or self._new_manifest()
        self.created = manifest is None
        self.created_root = self.created and self.store.is_local and not self.store.exists("")
        if self.manifest.get("layout"):
            self.layout = Layout.from_dict(self.manifest["layout"])
        self.budget = FailureBudget(spec.max_failures)
        self.cap = SpendCap(
            max_worker_hours=spec.max_worker_hours,
            max_cost=spec.max_cost,
            price_per_worker_hour=spec.price_per_worker_hour,
            threads_per_worker=self._threads_per_worker(),
        )
        self.prior_worker_s = float(self.manifest.get("worker_s") or 0.0)
        self.allowed = self.budget.allowed(self.n_items)
        self.ctx = TaskContext(
            function=cloudpickle.dumps(inputs.function),
            call=spec.call,
            source=self.source,
            store=self.store,
            seed=spec.seed,
            retries=spec.retries,
            spec_hash=self.spec_hash,
            timeout=spec.timeout,
            isolation=spec.isolation,
            max_deaths=int(config.get("isolation.max-deaths")),
            memory_fraction=float(config.get("isolation.memory-fraction")),
            result_schema=_b64decode(self.manifest.get("result_schema")),
            batch_format=spec.batch_format,
            retry_where=self.retry_where,
            cache=sweep_cache(spec, inputs.function, inputs.source.columns),
        )

    def _extend(self, manifest: dict[str, Any], ext: Extension) -> None:
        """Make the manifest this spec's: more items, new partitions after the old ones.

        Written by :meth:`begin` with the rest; a run stopped after that resumes as any
        sweep (the manifest's spec hash is this spec's).
        """
        self.emit(
            "extend",
            {"source": ext.kind, "items_from": ext.old_items, "items_to": ext.new_items},
        )
        if manifest.get("layout"):
            layout = Layout.from_dict(manifest["layout"])
            done = max(1, (manifest.get("counts") or {}).get("items") or ext.old_items)
            per_item = float(manifest.get("worker_s") or 0.0) / done or 1e-4
            self.per_item = per_item  # an estimate: sizes, inline or not, the projection
            explicit = self.spec.partition_size
            manifest["layout"] = extended_layout(
                layout,
                ext.new_items,
                explicit if isinstance(explicit, int) else None,
                per_item,
                self._make_provider().slots_hint(),
                self._sizing(),
            ).to_dict()
        manifest.update(
            spec=redact(self.spec.to_dict()),
            spec_hash=self.spec_hash,
            source=self.source.describe(),
            items=ext.new_items,
        )
        manifest.setdefault("history", []).append(ext.record())

    def _check_retry(self, manifest: dict[str, Any] | None) -> None:
        """A retry needs a sweep in the output (and a filter that fits its columns)."""
        if manifest is None or not manifest.get("layout"):
            raise SpecError(
                f"--retry-failed: {self.store.url} holds no run of this sweep yet; run it"
                " without --retry-failed first"
            )
        if self.retry_where:
            listed = self.store.list_partitions()
            if listed:
                footer = self.store.read_footer(listed[min(listed)])
                check_filter(self.retry_where, footer.remove_metadata())

    def begin(self) -> None:
        """Record the run in the manifest; the first write (an unwritable output fails here)."""
        self.store.cleanup_temporaries()
        self.run_record: dict[str, Any] = {"started": self.started}
        self.manifest["runs"].append(self.run_record)
        self.manifest["status"] = Status.RUNNING
        self.store.write_manifest(self.manifest)
        self.store.clear_success()
        self.listed = self.store.list_partitions()
        self.done = set(self.listed)

    def probe(self) -> None:
        """Run the probes on the cluster, one per slot at once (or recover them); record the layout.

        Probe ``k`` starts at item ``k * n / slots`` and stops after ``probe.seconds``;
        the partitions planned from them fill the item ranges they left.
        """
        self.phase = "probe"
        if self._recover_probe():
            return
        self._connect()
        descs = self._probe_descriptors(min(self.provider.slots_hint(), self._threads_now()))
        if len(descs) > 1:  # so that a run which dies now can recover the probes
            self.manifest["probes"] = [[d.start, d.stop] for d in descs]
            self.store.write_manifest(self.manifest)
        self.emit("probe", {"items": sum(d.items for d in descs), "probes": len(descs)})
        reports = self.run_partitions(descs, probe_seconds=config.get("probe.seconds"))
        reports.sort(key=lambda r: r.index)
        self._conform_probes(reports)
        loop_s = sum(r.loop_s for r in reports)
        self._plan([(r.start, r.items) for r in reports], loop_s / sum(r.items for r in reports))

    def _threads_now(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def _probe_descriptors(self, slots: int) -> list[Descriptor]:
        """One probe per slot, each at the start of an equal share of the items."""
        n, cap = self.n_items, self._probe_cap()
        k = max(1, min(slots, n))
        starts = [i * n // k for i in range(k)] + [n]
        return [Descriptor(i, starts[i], min(starts[i] + cap, starts[i + 1])) for i in range(k)]

    def _conform_probes(self, reports: list[PartitionReport]) -> None:
        """Give every probe file the schema of the first probe that has one.

        Probes run at once, so each inferred its own result types; a probe whose types
        differ (or whose items all failed, leaving null columns) runs again with the
        sweep's schema, as any later partition would, so the dataset has one schema.
        """
        chosen = next((r.result_schema for r in reports if r.result_schema is not None), None)
        if chosen is None:
            return
        self.ctx.result_schema = chosen
        redo = [r for r in reports if r.result_schema != chosen]
        if not redo:
            return
        again = self.run_partitions([Descriptor(r.index, r.start, r.stop) for r in redo])
        by_index = {r.index: r for r in again}
        reports[:] = [by_index.get(r.index, r) for r in reports]

    def probe_inline(self) -> None:
        """Run partition 0 in the runner's child process; start the cluster only if needed.

        The probe runs until the cluster is up (at least ``probe.seconds`` when that
        is quicker), or to its end when the policy says the sweep is seconds of work.
        """
        self.phase = "probe"
        if self._recover_probe():
            return
        assert self.inline is not None
        cap = self._probe_cap()
        self.emit("probe", {"items": cap, "inline": True})
        policy = self._inline_policy()
        least = float(config.get("probe.seconds"))
        fut = self.inline.submit(Descriptor(0, 0, cap), self.ctx, elastic=True)
        while not self._wait_future(fut):
            done, elapsed = self.inline.progress()
            if not self.cluster.started and policy.start_cluster(self.n_items, done, elapsed):
                self.cluster.start()
            if self._stop.is_set() or (
                self.cluster.ready() and (elapsed >= least or self.cluster.failed())
            ):
                self.inline.stop.set()
        report = fut.result()
        self._record(report, announce=False)
        if report.result_schema is not None:
            self.ctx.result_schema = report.result_schema
        self._plan([(0, report.items)], report.loop_s / max(1, report.items))
        if self._stop.is_set():
            raise Interrupted()

    def _recover_probe(self) -> bool:
        """A previous run wrote probes but died before it recorded the layout: plan from them.

        A probe it did not finish becomes a partition as long as the longest one that
        finished; the time per item comes from the finished probes' ``duration_s``.
        """
        spans = self.manifest.get("probes") or [[0, self._probe_cap()]]
        done = [k for k in range(len(spans)) if k in self.done]
        if not done:
            return False
        paths = self.store.list_partitions()
        counts = {c.index: c for c in self.store.partition_counts(done, listed=paths)}
        schema = self.store.read_footer(paths[done[0]])
        self.ctx.result_schema = schema_to_bytes(result_schema(schema, self.source.columns))
        longest = max(c.items for c in counts.values())
        probes = [
            (start, counts[k].items if k in counts else min(stop - start, longest))
            for k, (start, stop) in enumerate(spans)
        ]
        seconds = sum(
            pc.sum(self.store.read_partition(paths[k], ["duration_s"])["duration_s"]).as_py() or 0.0
            for k in done
        )
        self._plan(probes, seconds / sum(counts[k].items for k in done))
        return True

    def _probe_cap(self) -> int:
        explicit = self.spec.partition_size if isinstance(self.spec.partition_size, int) else None
        return min(self.n_items, explicit or config.get("probe.max-items"))

    def _inline_policy(self) -> InlinePolicy:
        return InlinePolicy(
            max_seconds=float(config.get("inline.max-seconds")),
            max_items=int(config.get("inline.max-items")),
        )

    def _wait_future(self, fut: Future[Any], seconds: float = 0.05) -> bool:
        with contextlib.suppress(TimeoutError):
            fut.exception(timeout=seconds)
        return fut.done()

    def _plan(self, probes: list[tuple[int, int]], per_item: float) -> None:
        """Fix the layout: the probes' ``(start, items)``, then partitions filling what they left.

        The rest is sized from ``per_item`` (seconds per item, measured by the probes).
        """
        self.per_item = per_item
        ends = [start for start, _ in probes[1:]] + [self.n_items]
        gaps = [(start + k, end - start - k) for (start, k), end in zip(probes, ends, strict=True)]
        explicit = self.spec.partition_size if isinstance(self.spec.partition_size, int) else None
        if explicit:  # the user's size in each gap (its last partition takes the remainder)
            runs = [
                run
                for gap in gaps
                for run in fill([gap], [(explicit, gap[1] // explicit), (gap[1] % explicit, 1)])
            ]
        else:
            sizing = self._sizing()
            rest = sum(g for _, g in gaps)
            slots = self.provider.slots_hint()
            runs = fill(gaps, sizing.sizes(rest, per_item, slots)) if rest else []
        self.layout = Layout(
            self.n_items, (*((start, k, 1) for start, k in probes), *runs), probes=len(probes)
        )
        self.manifest["layout"] = self.layout.to_dict()
        self.manifest["result_schema"] = _b64encode(self.ctx.result_schema)
        self.manifest["result_columns"] = _schema_types(self.ctx.schema())
        self.store.write_manifest(self.manifest)

    def run_missing(self) -> None:
        """Compute the partitions the output does not hold; stop early past the failure budget."""
        assert self.layout is not None
        missing = [d for d in todo(self.layout, self.done) if d.index not in self.reports]
        prior = self.store.partition_counts(self.done - set(self.reports))
        self.known.update((c.index, c) for c in prior)
        self.failures = sum(c.errors for c in self._counts())
        self.items_done = sum(c.items for c in self._counts())
        retry = self._retry_descriptors() if self.retry else []
        self.emit(
            "start",
            {
                "items": self.n_items,
                "items_done": self.items_done,
                "failures": self.failures,
                "partitions": self.layout.partitions,
                "todo": len(missing) + len(retry),
                "todo_items": sum(d.items for d in missing) + self.retry_items,
                "allowed": self.allowed,
                "retry": {
                    "items": self.retry_items,
                    "partitions": len(retry),
                    "where": self.retry_where,
                }
                if self.retry
                else None,
            },
        )
        self._check_budget(early=False)
        if self.per_item is not None:  # measured by this run's probe: the whole sweep's cost
            projected = self.per_item * self.n_items
            self.emit(
                "projection",
                {
                    "worker_s": round(projected, 3),
                    "worker_hours": self.cap.hours(projected),
                    "cost": self.cap.cost(projected),
                    "cap": self.cap.describe() if self.cap.limited else None,
                    "over_cap": self.cap.reached(projected),
                },
            )
        if (missing or retry) and self.cap.reached(self._spent_s()):
            raise BudgetExhausted(f"{self.cap.describe()} is already spent")
        left = sum(d.items for d in missing) + self.retry_items
        if retry and not missing and self.per_item is None:
            # a retry's items cannot take longer than their whole partitions took: when
            # those took seconds, the runner retries them itself and starts no cluster
            took = sum(self.known[d.index].compute_s or math.inf for d in retry)
            self.per_item = took / max(1, left)
        missing += retry
        if not missing:
            return
        self.phase = "run"
        if (
            self.inline is not None
            and not self.cluster.started
            and self.per_item is not None
            and self._inline_policy().finish_inline(left, self.per_item)
        ):
            self.run_inline(missing)
        else:
            if self.inline is not None:  # the cluster takes over: its child is not needed
                self._close_inline()
                self.inline = None
            self._connect()
            self.run_partitions(missing)

    def _retry_descriptors(self) -> list[Descriptor]:
        """The finished partitions holding failed items to run again (matching the filter)."""
        assert self.layout is not None
        targets = retry_targets(self.store, self.known.values(), self.listed, self.retry_where)
        self.retry_items = sum(targets.values())
        self.retrying = {i: self.known[i].errors for i in targets}
        self.fixable = dict(targets)
        # a filtered retry of a sweep already past its budget runs what it was asked for
        self.judge_early = not self.budget.exceeded(self._certain_failures(), self.n_items)
        return [dataclasses.replace(self.layout.descriptor(i), retry=True) for i in sorted(targets)]

    def run_inline(self, descs: list[Descriptor]) -> None:
        """Run the partitions one by one in the runner's child process (a small sweep)."""
        assert self.inline is not None
        self.phase = "run"
        for k, desc in enumerate(descs):
            if self._stop.is_set():
                raise Interrupted()
            fut = self.inline.submit(desc, self.ctx)
            while not self._wait_future(fut, 0.2):
                if self._stop.is_set():
                    if self.stop_at is None:
                        grace = float(config.get("grace-seconds"))
                        self.stop_at = time.monotonic() + grace
                        self.emit(
                            "drain", {"running": [desc.index], "cancelled": 0, "grace": grace}
                        )
                    elif time.monotonic() >= self.stop_at:
                        raise Interrupted()
            try:
                report = fut.result()
            except SweepError:
                raise
            except Exception as e:
                raise _failed(desc, e) from e
            self._record(report, announce=True)
            self._check_budget(early=True)
            if k + 1 < len(descs) and self.cap.reached(self._spent_s()):
                self.emit("budget", {"spent": self.cap.describe_spent(self._spent_s()),
                                     "cap": self.cap.describe(), "running": [], "cancelled": 0})  # fmt: skip
                raise BudgetExhausted(self.cap.describe())

    def run_partitions(
        self, descs: list[Descriptor], probe_seconds: float | None = None
    ) -> list[PartitionReport]:
        """Submit the partitions and follow them to the end (or to a drain, or to the budget).

        A partition whose worker died runs again with its items isolated, once per loss.
        """
        from distributed import KilledWorker, as_completed

        probe = self.phase == "probe"
        if self._stop.is_set():
            raise Interrupted()
        ac = as_completed(self._submit(descs, probe_seconds, isolated=False, spread=probe))
        remaining = len(descs)
        out: list[PartitionReport] = []
        self.provider.on_remaining(remaining)
        try:
            while not ac.is_empty():
                for fut in self._next_batch(ac):
                    _, desc = self.pending.pop(fut.key, (None, None))
                    if desc is None:
                        continue  # cancelled by a drain
                    try:
                        report = fut.result()
                    except KilledWorker as e:
                        if self._context_lost(e) or self._preempted(desc, e):
                            # not this partition's doing: run it again as it was
                            isolated = desc.index in self.isolated
                            ac.update(self._submit([desc], probe_seconds, isolated=isolated))
                        else:
                            ac.update(self._isolate(desc, probe_seconds, e))
                        continue
                    except SweepError:
                        raise
                    except Exception as e:
                        raise _failed(desc, e) from e
                    self._record(report, announce=not probe)
                    out.append(report)
                    remaining -= 1
                    self.provider.on_remaining(remaining)
                    if not probe and self.over_budget is None:
                        try:
                            self._check_budget(early=True)
                        except FailureBudgetExceeded as e:  # the running ones finish first
                            self.over_budget = e
                if (
                    self._stop.is_set()
                    or self.over_budget is not None
                    or (not probe and remaining and self.cap.reached(self._spent_s()))
                ):
                    self._drain()
        except BaseException:
            self._cancel()
            raise
        return out

    def finalise(self, error: BaseException | None) -> SweepReport:
        """Count what the store holds, write the manifest, and ``_SUCCESS`` if it is all there.

        Footers already read or reported this run are not read again; only partition
        files written by tasks that finished while being cancelled are.
        """
        wall = time.perf_counter() - self.t_start
        worker_s = sum(r.compute_s + r.write_s for r in self.reports.values())
        counts = self._final_counts()
        ok = sum(c.ok for c in counts)
        errors = sum(c.errors for c in counts)
        layout = self.layout
        partitions = layout.partitions if layout else 0
        complete = (
            layout is not None
            and len(counts) == partitions
            and sum(c.items for c in counts) == self.n_items
        )
        # partitions the workers reported written that the runner cannot list
        unseen = sorted(set(self.reports) - {c.index for c in counts})
        if unseen and self.status == Status.SUCCEEDED:
            self.status = Status.ERROR
        elif self.status == Status.SUCCEEDED and not (complete and errors <= self.allowed):
            self.status = Status.FAILED
        items_run = self.items_run
        retried = sum(r.retried for r in self.reports.values())
        fixed = sum(
            self.retrying[i] - r.errors for i, r in self.reports.items() if i in self.retrying
        )
        isolated = sorted(i for i, r in self.reports.items() if r.isolated)
        cached = sum(r.cached for r in self.reports.values())
        if self.ctx.cache is not None and any(r.ok > r.cached for r in self.reports.values()):
            self._compact_cache()
        self.run_record.update(
            finished=_now(),
            status=self.status,
            partitions_run=len(self.reports),
            items_run=items_run,
            wall_s=round(wall, 3),
            worker_s=round(worker_s, 3),
            worker_hours=self.cap.hours(worker_s),
            cost=self.cap.cost(worker_s),
            isolated_partitions=isolated,
            item_process_deaths=sum(r.deaths for r in self.reports.values()),
            worker_losses=sum(self.worker_losses.values()),
            preempted_partitions=len(self.preempted),
            items_cached=cached,
        )
        if self.retry:
            self.run_record["retry"] = {
                "where": self.retry_where,
                "partitions": len(self.retrying),
                "items_retried": retried,
                "items_fixed": fixed,
            }
        self.manifest.update(
            status=self.status,
            finished=_now(),
            partitions=partitions,
            counts={
                "items": self.n_items,
                "ok": ok,
                "errors": errors,
                "partitions_done": len(counts),
            },
            wall_s=round(sum(r.get("wall_s", 0.0) for r in self.manifest["runs"]), 3),
            worker_s=round(self.prior_worker_s + worker_s, 3),
            worker_hours=self.cap.hours(self.prior_worker_s + worker_s),
            cost=self.cap.cost(self.prior_worker_s + worker_s),
        )
        if self.cap.limited:
            self.manifest["cap"] = self.cap.describe()
        self._write_final_manifest(error, bool(counts))
        if unseen and error is None:
            raise InfrastructureError(
                f"the workers wrote {len(unseen)} partition(s) (part-{unseen[0]:05d}, ...) to"
                f" {self.store.url}, but the runner does not see them there: a local path is"
                " each machine's own disk; give an output the runner and the workers share"
                " (s3://..., or one volume mounted at the same path in both)"
            )
        return SweepReport(
            name=self.spec.name,
            output=self.spec.output,
            status=self.status,
            spec_hash=self.spec_hash,
            items=self.n_items,
            ok=ok,
            errors=errors,
            allowed_failures=self.allowed,
            partitions=partitions,
            partitions_done=len(counts),
            partitions_run=len(self.reports),
            items_run=items_run,
            wall_s=round(wall, 3),
            worker_s=round(worker_s, 3),
            items_per_s=round(items_run / wall, 1) if wall > 0 else 0.0,
            isolated_partitions=len(isolated),
            preempted_partitions=len(self.preempted),
            inline_partitions=sum(r.inline for r in self.reports.values()),
            items_retried=retried,
            items_fixed=fixed,
            items_cached=cached,
            worker_hours=self.cap.hours(self.prior_worker_s + worker_s),
            cost=self.cap.cost(self.prior_worker_s + worker_s),
            peak_rss_mb=peak_rss_mb(),
            tasks=self.tasks,
            dashboard=self.dashboard,
            exit_code=self.status.exit_code,
        )

    # ------------------------------------------------------------------ helpers

    def _new_manifest(self) -> dict[str, Any]:
        return {
            "format": 1,
            "name": self.spec.name,
            "spec": redact(self.spec.to_dict()),
            "spec_hash": self.spec_hash,
            "version": __version__,
            "source": self.source.describe(),
            "items": self.n_items,
            "layout": None,
            "result_schema": None,
            "started": self.started,
            "runs": [],
            "worker_s": 0.0,
        }

    def _make_provider(self) -> Any:
        if self.provider is None:
            from .clusters import make_provider

            self.provider = make_provider(
                self.spec.cluster,
                client=self._client,
                name=self.spec.name,
                base_dir=self.spec.base_dir,
            )
        return self.provider

    def _submit(
        self,
        descs: list[Descriptor],
        probe_seconds: float | None,
        isolated: bool,
        spread: bool = False,
    ) -> list[Any]:
        """One task per partition, run in this order; the context rides along as one task.

        ``spread`` places task ``k`` on worker thread ``k`` (loosely: another worker may
        take it): the scheduler would otherwise put tasks next to the context's data,
        all on one worker, until work stealing moves them.
        """
        if self._context is None or self._context[0] != self.ctx.result_schema:
            holder = self.client.submit(_context, self.ctx, pure=False)
            self.tasks += 1
            self._context = (self.ctx.result_schema, holder)
        self.tasks += len(descs)
        kwargs = {
            "ctx": self._context[1],
            "probe_seconds": probe_seconds,
            "isolated": isolated,
            "pure": False,
            "retries": config.get("task-retries"),
        }
        if spread:
            slots = [addr for addr, n in sorted(self.client.nthreads().items()) for _ in range(n)]
            futures = [
                self.client.submit(
                    run_partition, desc, workers=[slot], allow_other_workers=True, **kwargs
                )
                for desc, slot in zip(descs, itertools.cycle(slots), strict=False)
            ]
        else:
            futures = self.client.map(run_partition, descs, **kwargs)
        for fut, desc in zip(futures, descs, strict=True):
            self.pending[fut.key] = (fut, desc)
        return futures

    def _connect(self) -> None:
        """The cluster's client (starting it if needed); says where its dashboard is."""
        if self.client is None:
            self.client = self.cluster.wait()
            self.dashboard = self.provider.dashboard_link
            self.emit("cluster", {"dashboard": self.dashboard, "provider": self.provider.name})

    def _close_inline(self) -> None:
        if self.inline is not None:
            self.inline.close(wait=self.status in (Status.SUCCEEDED, Status.FAILED))

    def _context_lost(self, e: Exception) -> bool:
        """Whether ``e`` is the context task's own loss (its worker died while it ran).

        Every partition waiting for that task then fails with the same ``KilledWorker``.
        The first drops the context, so the next submission makes a new one; a context
        that keeps killing its workers fails the sweep after ``max-worker-losses``.
        """
        key = str(getattr(e, "task", ""))
        if key in self.lost_contexts:
            return True
        holder = self._context[1] if self._context is not None else None
        if holder is None or key != str(holder.key):
            return False
        self.lost_contexts.add(key)
        self._context = None
        worker = getattr(getattr(e, "last_worker", None), "address", "?")
        self.emit("context-lost", {"worker": worker})
        if len(self.lost_contexts) > int(config.get("isolation.max-worker-losses")):
            raise InfrastructureError(
                f"the sweep's context task lost its worker {len(self.lost_contexts)} times (last"
                f" worker {worker}): check the worker logs (memory, the function's import),"
                " then run the same command again to resume"
            ) from e
        return True

    def _preempted(self, desc: Descriptor, e: Exception) -> bool:
        """Whether the partition's worker was taken away by the cluster (the provider knows)."""
        worker = getattr(e, "last_worker", None)
        name = getattr(worker, "name", None)
        why = self.provider.disrupted(str(name)) if name is not None else None
        if not why:
            return False
        self.preempted.add(desc.index)
        self.emit(
            "preempted",
            {"index": desc.index, "worker": str(name), "why": why},
        )
        return True

    def _isolate(self, desc: Descriptor, probe_seconds: float | None, e: Exception) -> list[Any]:
        """The partition's worker died: run it again, its items isolated in child processes."""
        worker = getattr(getattr(e, "last_worker", None), "address", "?")
        if desc.index not in self.isolated:
            self.crashed_inline.add(worker)
            self.worker_losses[desc.index] += 1
        elif worker in self.crashed_inline and (desc.index, worker) not in self.forgiven:
            self.forgiven.add((desc.index, worker))  # a neighbour's crash took it along
        else:
            self.worker_losses[desc.index] += 1
            losses = self.worker_losses[desc.index]
            if losses > int(config.get("isolation.max-worker-losses")):
                raise InfrastructureError(
                    f"part-{desc.index:05d}: its worker died {losses} times, the last times with"
                    f" its items isolated in child processes (last worker {worker}): workers are"
                    " lost for another reason (node preemption, the worker's own memory); check"
                    " the worker logs, then run the same command again to resume"
                ) from e
        self.isolated.add(desc.index)
        self.emit("isolate", {"index": desc.index, "worker": worker})
        return self._submit([desc], probe_seconds, isolated=True)

    def _next_batch(self, ac: Any) -> list[Any]:
        """Finished futures, waiting at most a moment (so a drain request is seen).

        Partitions that ran in-process come first: when one worker death took several
        partitions, the isolated ones among them then know they were not the cause.
        """
        if not ac.has_ready():
            with ac.thread_condition:
                ac.thread_condition.wait(timeout=0.2)
        batch = ac.next_batch(block=False)
        if len(batch) > 1:
            batch.sort(
                key=lambda f: (
                    f.key in self.pending and self.pending[f.key][1].index in self.isolated
                )
            )
        return batch

    def _record(self, r: PartitionReport, announce: bool) -> None:
        before = self.reports.get(r.index) or self.known.get(r.index)
        if before is not None:  # a probe run again, or a retried partition: its new counts
            self.failures -= before.errors
            self.items_done -= before.items
        self.reports[r.index] = r
        self.failures += r.errors
        self.items_done += r.items
        self.fixable.pop(r.index, None)
        self.items_run += r.retried if r.index in self.retrying else r.items
        if announce:
            self.emit(
                "partition",
                {
                    "index": r.index,
                    "items": r.items,
                    "errors": r.errors,
                    "items_done": self.items_done,
                    "items_run": self.items_run,
                    "failures": self.failures,
                    "isolated": r.isolated,
                    "deaths": r.deaths,
                },
            )

    def _certain_failures(self) -> int:
        """The failures no partition still to run can undo (a retry's are not yet known)."""
        return self.failures - sum(self.fixable.values())

    def _check_budget(self, early: bool) -> None:
        """Stop once the sweep can no longer end within ``max_failures``.

        Before anything runs, a retry is never refused (it is how a failed sweep is
        mended); while it runs, the items it ran and the new partitions' count.
        """
        if self.retry and (not early or not self.judge_early):
            return
        failures = self._certain_failures()
        if self.budget.exceeded(failures, self.n_items):
            more = f" ({self.allowed} allowed); stopped early" if early else " already"
            raise FailureBudgetExceeded(
                f"{failures} failed items exceed max_failures={self.spec.max_failures}{more}"
            )

    def _drain(self) -> None:
        """After a stop request, past the failure budget or at the spending cap: cancel what
        has not started; end when the rest is done (or, but at the cap, ``grace-seconds`` on).

        The running partitions' files are then in the report and the manifest, not written
        by cancelled tasks after the run has ended.
        """
        signalled = self._stop.is_set()
        failing = self.over_budget is not None and not signalled  # else the cap was reached
        grace = float(config.get("grace-seconds"))
        if self.stop_at is None:
            # at the cap, the running partitions finish: their work is paid for
            self.stop_at = time.monotonic() + grace if signalled or failing else math.inf
            running = self._running_keys()
            # (a finished one not yet collected is not waiting: its result is kept)
            waiting = [
                f for key, (f, _) in self.pending.items() if key not in running and not f.done()
            ]
            for f in waiting:
                self.pending.pop(f.key, None)
            if waiting:
                self.client.cancel(waiting, force=True)
                self.cancelled = {str(f.key) for f in waiting}
            self.cap_cancelled = 0 if signalled or failing else len(waiting)
            info = {
                "running": sorted(d.index for _, d in self.pending.values()),
                "cancelled": len(waiting),
            }
            if signalled or failing:
                why = "signal" if signalled else "failures"
                self.emit("drain", {**info, "grace": grace, "why": why})
            else:
                spent = self.cap.describe_spent(self._spent_s())
                self.emit("budget", {**info, "spent": spent, "cap": self.cap.describe()})
        elif signalled and self.stop_at == math.inf:  # a signal while draining at the cap
            self.stop_at = time.monotonic() + grace
        if not self.pending:
            self._await_cancelled(min(self.stop_at, time.monotonic() + grace))
        if not self.pending or time.monotonic() >= self.stop_at:
            if signalled:
                raise Interrupted()
            if failing:
                raise self.over_budget
            if self.cap_cancelled:
                raise BudgetExhausted(self.cap.describe())

    def _await_cancelled(self, deadline: float) -> None:
        """Wait for cancelled tasks that a worker had just started (until ``deadline``).

        A worker cannot stop a task it runs: one cancelled as it started still writes its
        partition, and the run's counts should include that file.
        """
        while self.cancelled and time.monotonic() < deadline:
            try:
                running = {k for keys in self.client.run(_executing_keys).values() for k in keys}
            except Exception:
                return
            self.cancelled &= running
            if self.cancelled:
                time.sleep(0.1)

    def _running_keys(self) -> set[str]:
        """Keys of this run's tasks that workers are executing now."""
        try:
            per_worker = self.client.run(_executing_keys)
        except Exception:
            per_worker = self.client.processing()
        running = {str(k) for keys in per_worker.values() for k in keys}
        return {key for key in self.pending if str(key) in running}

    def _cancel(self) -> None:
        pending = [f for f, _ in self.pending.values() if not f.done()]
        self.pending.clear()
        if pending:
            with contextlib.suppress(Exception):
                self.client.cancel(pending, force=True)

    def _compact_cache(self) -> None:
        """Merge the cache's small files (this run added some); a failure costs only speed."""
        assert self.ctx.cache is not None
        try:
            merged = self.ctx.cache.compact()
        except Exception as e:  # the cache is an optimisation: never fail the sweep for it
            self.emit("warning", {"message": f"cache {self.ctx.cache.url}: not compacted ({e})"})
            return
        self.emit("cache", {"compacted": merged})

    def _sizing(self) -> PartitionSizing:
        return PartitionSizing(
            target_seconds=config.get("partition.target-seconds"),
            min_seconds=config.get("partition.min-seconds"),
            tail_factor=config.get("partition.tail-factor"),
            max_items=config.get("partition.max-items"),
        )

    def _spent_s(self) -> float:
        """Busy worker-thread seconds of the sweep so far: earlier runs' and this run's."""
        return self.prior_worker_s + sum(r.compute_s + r.write_s for r in self.reports.values())

    def _threads_per_worker(self) -> int:
        cluster = self.spec.cluster
        if cluster.kind == "kubernetes":
            return cluster.kubernetes.worker_threads
        return cluster.threads_per_worker

    def _counts(self) -> list[PartitionCounts]:
        merged = {**self.known, **{i: r.counts() for i, r in self.reports.items()}}
        return list(merged.values())

    def _final_counts(self) -> list[PartitionCounts]:
        merged = {c.index: c for c in self._counts()}
        try:
            done = self.store.list_partitions()
            unknown = set(done) - set(merged)
            if unknown:
                merged.update((c.index, c) for c in self.store.partition_counts(unknown))
            return [merged[i] for i in done if i in merged]
        except SweepError:
            return list(merged.values())

    def _write_final_manifest(self, error: BaseException | None, any_partition: bool) -> None:
        """Write the manifest (and ``_SUCCESS``); a new output that got no partition is removed.

        When storage is what failed, one attempt is enough: the error is already known.
        """
        if isinstance(error, StorageUnreachable):
            self.store.retry = dataclasses.replace(self.store.retry, retries=0)
        try:
            if self.created and not any_partition:
                self.store.remove(MANIFEST)  # nothing was done: leave nothing behind
                if self.created_root:
                    self.store.remove_root_if_empty()
                return
            self.store.write_manifest(self.manifest)
            if self.status == Status.SUCCEEDED:
                self.store.mark_success()
        except SweepError:
            if self.status == Status.SUCCEEDED:
                raise


def run_sweep(
    spec: SweepSpec,
    *,
    client: Any = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    provider: Any = None,
    retry_failed: bool | str = False,
) -> SweepReport:
    """Run (or resume) a sweep and return its report: ``SweepRun(...).run()``."""
    return SweepRun(
        spec,
        client=client,
        overwrite=overwrite,
        progress=progress,
        provider=provider,
        retry_failed=retry_failed,
    ).run()


def _failed(desc: Descriptor, e: Exception) -> InfrastructureError:
    """A partition task that raised something other than a sweep error: the infrastructure's."""
    return InfrastructureError(f"part-{desc.index:05d} failed: {type(e).__name__}: {e}")


def peak_rss_mb() -> float:
    """This process's own peak resident memory (``VmHWM``; ``ru_maxrss`` survives ``exec``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def _b64encode(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _b64decode(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _schema_types(schema: pa.Schema | None) -> dict[str, str] | None:
    return None if schema is None else {f.name: str(f.type) for f in schema}
