"""The output: its table contract, atomic partition writes, the manifest, ``_SUCCESS``, what is done.

Layout under the output URL::

    part-00000.parquet ...   one file per partition: the parameter columns, ``item``, the
                             result column(s), ``status``, ``error``, ``attempts``, ``duration_s``
    _manifest.json           spec, spec hash, plan, counts, timings (written first, updated)
    _SUCCESS                 written last, only when the sweep succeeded
    _params/                 an in-memory DataFrame given to ``runner.sweep`` (if any)

Names starting with ``_`` or ``.`` are ignored by pyarrow, pandas and Spark readers,
and temporary files do not end in ``.parquet`` so DuckDB globs skip them too.

The column contract (:data:`OUTPUT_COLUMNS`, :data:`RESERVED_NAMES`) and the building
of a partition's table (:func:`partition_table`) live here and nowhere else.

Storage failures become one-line errors naming the URL (:func:`storage_error`):
unreachable storage is an :class:`InfrastructureError` (exit 3, rerun to resume), a
refusal (missing bucket, permission, credentials) a :class:`StorageError` (exit 2).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import config
from .exceptions import InfrastructureError, StorageError, StorageUnreachable, SweepError
from .policy import RetryPolicy

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
PARAMS_DIR = "_params"
PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
TMP_PREFIX = ".tmp-"
META_KEY = b"sweep"

# --------------------------------------------------------------------------- the table contract

ITEM = "item"
RESULT = "result"  # the column of a function's scalar result (dict results name their own)
STATUS_COLUMNS = ("status", "error", "attempts", "duration_s")
OUTPUT_COLUMNS = (ITEM, *STATUS_COLUMNS)  # written by the runner into every partition
RESERVED_NAMES = (*OUTPUT_COLUMNS, RESULT)  # no parameter may be named like these
ITEM_OK = "ok"
ITEM_ERROR = "error"
#: how an item's ``error`` says it ran out of time, and that it killed its worker process
TIMEOUT_TEXT = "timed out after"
DIED_TEXT = "worker process died"


def reserved_clash(names: Iterable[str]) -> list[str]:
    """The names among ``names`` that a parameter must not use (output columns and ``result``)."""
    return [n for n in names if n in RESERVED_NAMES]


def partition_table(
    params: pa.Table,
    items: np.ndarray,
    results: Mapping[str, pa.Array],
    errors: Mapping[int, str],
    attempts: np.ndarray,
    durations: Sequence[float],
) -> pa.Table:
    """One partition's table: parameters, ``item``, results, then the status columns.

    ``errors`` maps a row to its error message (the row's status is ``error``);
    ``results`` must not reuse a parameter or output column name.
    """
    n = len(items)
    taken = set(params.column_names) | set(OUTPUT_COLUMNS)
    clash = [c for c in results if c in taken]
    if clash:
        raise ValueError(f"result column(s) {clash} would overwrite parameter or output columns")
    failed = np.zeros(n, dtype=bool)
    failed[list(errors)] = True
    arrays: dict[str, Any] = dict(zip(params.column_names, params.columns, strict=True))
    arrays[ITEM] = pa.array(items, pa.int64())
    arrays.update(results)
    arrays["status"] = pc.if_else(pa.array(failed), ITEM_ERROR, ITEM_OK)
    arrays["error"] = (
        pa.array([errors.get(k) for k in range(n)], type=pa.string())
        if errors
        else pa.nulls(n, pa.string())
    )
    arrays["attempts"] = pa.array(attempts, pa.int32())
    arrays["duration_s"] = pa.array(np.asarray(durations, dtype=np.float64))
    return pa.table(arrays)


def result_schema(table: pa.Table | pa.Schema, param_names: Iterable[str]) -> pa.Schema:
    """The schema of a partition's result columns: what is neither a parameter nor an output column."""
    schema = table.schema if isinstance(table, pa.Table) else table
    skip = set(param_names) | set(OUTPUT_COLUMNS)
    return pa.schema([f for f in schema if f.name not in skip]).remove_metadata()


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


# --------------------------------------------------------------------------- storage failures

# Matched by class name (botocore, aiohttp, gcsfs, adlfs and the standard library use
# different classes for the same conditions; nothing needs importing here).
UNREACHABLE = frozenset(
    {
        "ConnectionError",  # builtin (refused, reset, broken pipe) and botocore's
        "TimeoutError",
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ProxyConnectionError",
        "HTTPClientError",
        "ResponseStreamingError",
        "ClientConnectorError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "FSTimeoutError",
        "IncompleteRead",
    }
)
REFUSED = frozenset(
    {
        "FileNotFoundError",  # also a missing bucket
        "PermissionError",  # s3fs: AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch
        "NotADirectoryError",
        "IsADirectoryError",
        "NoCredentialsError",
        "PartialCredentialsError",
        "NoSuchBucket",
        "InvalidAccessKeyId",
    }
)


# s3fs turns S3 errors into OSError with these numbers (SlowDown, InternalError, timeouts)
TRANSIENT_ERRNO = frozenset(
    {
        errno.EBUSY,
        errno.EREMOTEIO,
        errno.ETIMEDOUT,
        errno.EAGAIN,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    }
)


def _chain(e: BaseException) -> list[BaseException]:
    """``e`` and what it was raised from (filesystems wrap the client's errors)."""
    out: list[BaseException] = []
    while e is not None and e not in out and len(out) < 6:
        out.append(e)
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return out


def _http_status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _names(e: BaseException) -> set[str]:
    return {c.__name__ for c in type(e).__mro__}


def is_unreachable(e: BaseException) -> bool:
    """Is this a failure to reach storage (network, timeouts, 5xx, throttling), worth retrying?"""
    for x in _chain(e):
        status = _http_status(x)
        if _names(x) & UNREACHABLE or (status is not None and (status >= 500 or status == 429)):
            return True
        if type(x) is OSError and x.errno in TRANSIENT_ERRNO:
            return True
    return False


def is_refused(e: BaseException) -> bool:
    """Did storage refuse the request (missing bucket or path, permission, credentials)?"""
    if is_unreachable(e):
        return False
    for x in _chain(e):
        status = _http_status(x)
        if _names(x) & REFUSED or (status is not None and 400 <= status < 500):
            return True
    return False


def storage_error(url: str, doing: str, e: BaseException) -> SweepError:
    """One line naming ``url`` and what to do; ``e`` is what the filesystem raised."""
    if isinstance(e, SweepError):
        return e
    detail = " ".join(f"{type(e).__name__}: {e}".split())[:300]
    if is_unreachable(e):
        return StorageUnreachable(
            f"{url}: storage unreachable while {doing} ({detail}); check the endpoint, the"
            " network and the storage service, then run the same command again to resume"
        )
    if is_refused(e):
        return StorageError(
            f"{url}: storage refused {doing} ({detail}); check that the bucket or path exists"
            " and that the credentials allow it"
        )
    if isinstance(e, TypeError):  # the filesystem was given options it does not take
        return StorageError(f"{url}: cannot use it ({detail}); check the URL and storage_options")
    return InfrastructureError(
        f"{url}: storage failed while {doing} ({detail}); run the same command again to resume"
    )


T = TypeVar("T")


def storage_retry() -> RetryPolicy:
    """The retry policy of ``sweep.storage``, read where the sweep starts.

    It travels with the objects that use it (the store, a dataset source), so workers
    follow the runner's settings, not their own.
    """
    return RetryPolicy(int(config.get("storage.retries")), float(config.get("storage.retry-wait")))


def retrying(fn: Callable[[], T], url: str, doing: str, policy: RetryPolicy | None = None) -> T:
    """Call ``fn``; retry failures to reach storage (``policy.retries`` times, backing off).

    The filesystem retries first (s3fs retries throttling and dropped connections
    itself); this covers what is left, e.g. a storage service restarting. A refusal
    is raised at once as :func:`storage_error`; any other exception (a corrupt file,
    say) is the caller's to explain.
    """
    policy = policy or storage_retry()
    for attempt in range(policy.retries + 1):
        try:
            return fn()
        except SweepError:
            raise
        except Exception as e:
            if is_refused(e) or (is_unreachable(e) and attempt == policy.retries):
                raise storage_error(url, doing, e) from e
            if not is_unreachable(e):
                raise
        time.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class PartitionCounts:
    """What a partition file's footer says about it (no data read)."""

    index: int
    start: int
    stop: int
    ok: int
    errors: int
    #: seconds the partition took to compute (parameters, items, table); older outputs: None
    compute_s: float | None = None

    @property
    def items(self) -> int:
        return self.stop - self.start


def footer_meta(footer: pa.Schema) -> dict[str, Any]:
    """The sweep's metadata in a partition's footer (``{}`` when it has none)."""
    return dict(json.loads((footer.metadata or {}).get(META_KEY, b"{}")))


def counts_of(index: int, footer: pa.Schema) -> PartitionCounts:
    """What a partition's footer (its schema metadata) says about it."""
    m = footer_meta(footer)
    try:
        start, stop, ok, errors = (int(m[k]) for k in ("start", "stop", "ok", "errors"))
    except (KeyError, TypeError, ValueError) as e:
        raise StorageError(
            f"{part_name(index)} was not written by sweep runner (its footer has no sweep"
            " metadata); keep only sweep outputs under the output URL"
        ) from e
    compute_s = m.get("compute_s")
    return PartitionCounts(
        index, start, stop, ok, errors, float(compute_s) if compute_s is not None else None
    )


class Store:
    """An output URL: picklable (workers write through it), creates its filesystem lazily.

    Every storage call goes through :func:`retrying`, so a failure is retried when it
    is transient and otherwise becomes one line that names the URL.
    """

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.url = url.rstrip("/") or "/"
        self.storage_options = dict(storage_options or {})
        self.retry = retry or storage_retry()
        self._fs: Any = None
        self._root: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options, "retry": self.retry}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["storage_options"], state["retry"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # ------------------------------------------------------------------ basics

    @property
    def fs(self) -> Any:
        if self._fs is None:
            from fsspec.core import url_to_fs

            try:
                self._fs, self._root = url_to_fs(self.url, **self.storage_options)
            except (TypeError, ValueError) as e:  # the filesystem refused its options
                raise StorageError(
                    f"output {self.url}: cannot open it ({type(e).__name__}: {e});"
                    " check the URL and storage_options"
                ) from e
            except Exception as e:
                raise storage_error(f"output {self.url}", "opening it", e) from e
        return self._fs

    @property
    def root(self) -> str:
        self.fs  # noqa: B018 - initialises _root
        assert self._root is not None
        return self._root.rstrip("/")

    @property
    def is_local(self) -> bool:
        proto = self.fs.protocol
        return "file" in (proto if isinstance(proto, tuple | list) else (proto,))

    def duckdb_urls(self, con: Any, paths: Sequence[str]) -> list[str]:
        """``paths`` as DuckDB should open them on connection ``con``: local files as they
        are, others through this store's fsspec filesystem (registered on ``con``)."""
        if self.is_local:
            return list(paths)
        con.register_filesystem(self.fs)
        proto = self.fs.protocol
        proto = proto[0] if isinstance(proto, tuple | list) else proto
        return [f"{proto}://{p}" for p in paths]

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def child_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    def _call(self, name: str | None, doing: str, fn: Callable[[], T]) -> T:
        url = f"output {self.child_url(name) if name else self.url}"
        try:
            return retrying(fn, url, doing, self.retry)
        except SweepError:
            raise
        except Exception as e:
            raise storage_error(url, doing, e) from e

    def exists(self, name: str) -> bool:
        def check() -> bool:
            self.fs.invalidate_cache(self.path(name))
            return bool(self.fs.exists(self.path(name)))

        return self._call(name, "checking it", check)

    # ------------------------------------------------------------------ atomic writes

    def write_bytes(self, name: str, data: bytes, sync: bool = True) -> None:
        """Write a whole object atomically (retried when storage is briefly unreachable).

        Object stores make a single PUT visible whole; on a file system we write a
        temporary file beside the target and rename it into place, flushed to disk first
        unless ``sync`` is false (what a crash may then leave is a whole file or an
        unreadable one, never a partly written one under the name).
        """
        target = self.path(name)

        def write() -> None:
            if not self.is_local:
                self.fs.pipe_file(target, data)
                return
            parent = os.path.dirname(target)
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(name)}")
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    if sync:
                        fh.flush()
                        os.fsync(fh.fileno())
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

        self._call(name, "writing it", write)

    def read_bytes(self, name: str) -> bytes | None:
        def read() -> bytes | None:
            try:
                return self.fs.cat_file(self.path(name))
            except FileNotFoundError:
                return None

        return self._call(name, "reading it", read)

    def remove(self, name: str) -> None:
        def rm() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.path(name), recursive=True)

        self._call(name, "deleting it", rm)

    # ------------------------------------------------------------------ partitions

    def write_partition(self, index: int, table: pa.Table, meta: dict[str, Any]) -> int:
        """Encode ``table`` once as Parquet (with ``meta`` in the footer) and write it atomically.

        Returns the number of bytes written. Writing the same partition twice gives the
        same content, so a task rerun by Dask after a worker loss is harmless.
        """
        import pyarrow.parquet as pq  # lazy: see read_footer

        schema_meta = dict(table.schema.metadata or {})
        schema_meta[META_KEY] = json.dumps(meta, sort_keys=True).encode()
        table = table.replace_schema_metadata(schema_meta)
        sink = io.BytesIO()
        pq.write_table(
            table,
            sink,
            compression="zstd",
            compression_level=1,
            use_dictionary=[
                f.name
                for f in table.schema
                if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            ],
            write_statistics=[ITEM],
        )
        data = sink.getvalue()
        self.write_bytes(part_name(index), data)
        return len(data)

    def _list(self, detail: bool) -> list[Any]:
        """The output folder's entries, fresh (an absent folder is empty)."""

        def ls() -> list[Any]:
            try:
                self.fs.invalidate_cache(self.root)
                return self.fs.ls(self.root, detail=detail)
            except FileNotFoundError:
                return []

        return self._call(None, "listing it", ls)

    def list_partitions(self) -> dict[int, str]:
        """Finished partitions: index -> path. A partition file exists whole or not at all."""
        out = {}
        for p in self._list(detail=False):
            m = PART_RE.match(p.rstrip("/").rsplit("/", 1)[-1])
            if m:
                out[int(m.group(1))] = p
        return out

    def partition_times(self) -> dict[int, float]:
        """Finished partitions: index -> when the file was written (seconds since the epoch)."""
        out = {}
        for info in self._list(detail=True):
            m = PART_RE.match(info["name"].rstrip("/").rsplit("/", 1)[-1])
            when = info.get("mtime", info.get("LastModified", info.get("last_modified")))
            if m and when is not None:
                out[int(m.group(1))] = (
                    when.timestamp() if hasattr(when, "timestamp") else float(when)
                )
        return out

    def read_footer(self, path: str) -> pa.Schema:
        """The Arrow schema of a partition file, with its metadata (the footer only)."""
        # lazy: pyarrow.parquet adds 20-30 ms to pyarrow; `sweep validate`, `sweep plan`
        # and the isolated item processes (runner.isolate) never read or write Parquet
        import pyarrow.parquet as pq

        def read() -> pa.Schema:
            with self.fs.open(path, "rb") as fh:
                return pq.ParquetFile(fh).schema_arrow

        return self._call(path.rsplit("/", 1)[-1], "reading its footer", read)

    def read_partition(
        self, path: str, columns: Sequence[str] | None = None, metadata: bool = False
    ) -> pa.Table:
        """A partition file's table (only ``columns`` that it has, if given); its footer
        metadata dropped unless ``metadata``."""
        import pyarrow.parquet as pq  # lazy: see read_footer

        def read() -> pa.Table:
            with self.fs.open(path, "rb") as fh:
                table = pq.ParquetFile(fh).read(columns=columns)
            return table if metadata else table.replace_schema_metadata(None)

        return self._call(path.rsplit("/", 1)[-1], "reading it", read)

    def read_footers(
        self, indices: Iterable[int] | None = None, listed: Mapping[int, str] | None = None
    ) -> dict[int, pa.Schema]:
        """The footers (Arrow schema and metadata, no data) of finished partitions, in parallel.

        ``listed`` is :meth:`list_partitions`' answer when the caller has it already.
        """
        done = self.list_partitions() if listed is None else listed
        wanted = sorted(done if indices is None else set(indices) & set(done))
        if not wanted:
            return {}
        with ThreadPoolExecutor(max_workers=min(16, len(wanted))) as pool:
            return dict(
                zip(wanted, pool.map(lambda i: self.read_footer(done[i]), wanted), strict=True)
            )

    def partition_counts(
        self, indices: Iterable[int] | None = None, listed: Mapping[int, str] | None = None
    ) -> list[PartitionCounts]:
        """What the footers of finished partitions say (see :meth:`read_footers`)."""
        return [counts_of(i, schema) for i, schema in self.read_footers(indices, listed).items()]

    def remove_root_if_empty(self) -> None:
        """Remove the output folder if it holds nothing (local outputs; object stores have none)."""
        if self.is_local:
            with contextlib.suppress(OSError):
                os.rmdir(self.root)

    def cleanup_temporaries(self) -> int:
        """Remove temporary files left by writers that were killed mid-write."""
        if not self.is_local:
            return 0
        try:
            names = os.listdir(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return 0
        n = 0
        for name in names:
            if name.startswith(TMP_PREFIX):
                try:
                    os.unlink(os.path.join(self.root, name))
                    n += 1
                except FileNotFoundError:
                    pass
        return n

    # ------------------------------------------------------------------ manifest

    def read_manifest(self) -> dict[str, Any] | None:
        data = self.read_bytes(MANIFEST)
        if data is None:
            return None
        try:
            return json.loads(data)
        except json.JSONDecodeError as e:
            raise InfrastructureError(
                f"output {self.child_url(MANIFEST)} is not valid JSON; delete it or use --overwrite"
            ) from e

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.write_bytes(
            MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        )

    def has_success(self) -> bool:
        return self.exists(SUCCESS)

    def mark_success(self) -> None:
        self.write_bytes(SUCCESS, b"")

    def clear_success(self) -> None:
        self.remove(SUCCESS)

    def clear(self) -> None:
        """Delete the sweep's results here (``--overwrite``); inputs in ``_params/`` and foreign files stay."""
        self.clear_success()
        for index in self.list_partitions():
            self.remove(part_name(index))
        self.remove(MANIFEST)
        self.cleanup_temporaries()
