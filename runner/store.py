"""The output layout: atomic partition writes, the manifest, ``_SUCCESS``, what is done.

Layout under the output URL::

    part-00000.parquet ...   one file per partition (params, item, results, status, ...)
    _manifest.json           spec, spec hash, plan, counts, timings (written first, updated)
    _SUCCESS                 written last, only when the sweep succeeded
    _params/                 an in-memory DataFrame given to ``runner.sweep`` (if any)

Names starting with ``_`` or ``.`` are ignored by pyarrow, pandas and Spark readers,
and temporary files do not end in ``.parquet`` so DuckDB globs skip them too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .exceptions import InfrastructureError

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
PARAMS_DIR = "_params"
PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
TMP_PREFIX = ".tmp-"
META_KEY = b"sweep"


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


@dataclass(frozen=True)
class PartitionCounts:
    """What a partition file's footer says about it (no data read)."""

    index: int
    start: int
    stop: int
    ok: int
    errors: int

    @property
    def items(self) -> int:
        return self.stop - self.start


class Store:
    """An output URL: picklable (workers write through it), creates its filesystem lazily."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/") or "/"
        self.storage_options = dict(storage_options or {})
        self._fs: Any = None
        self._root: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["storage_options"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # ------------------------------------------------------------------ basics

    @property
    def fs(self) -> Any:
        if self._fs is None:
            from fsspec.core import url_to_fs

            try:
                self._fs, self._root = url_to_fs(self.url, **self.storage_options)
            except Exception as e:
                raise InfrastructureError(f"output {self.url}: cannot open storage: {e}") from e
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

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def child_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    def exists(self, name: str) -> bool:
        self.fs.invalidate_cache(self.path(name))
        return bool(self.fs.exists(self.path(name)))

    # ------------------------------------------------------------------ atomic writes

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a whole object atomically.

        Object stores make a single PUT visible whole; on a file system we write a
        temporary file beside the target and rename it into place.
        """
        target = self.path(name)
        try:
            if self.is_local:
                parent = os.path.dirname(target)
                os.makedirs(parent, exist_ok=True)
                tmp = os.path.join(
                    parent, f"{TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(name)}"
                )
                try:
                    with open(tmp, "wb") as fh:
                        fh.write(data)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, target)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            else:
                self.fs.pipe_file(target, data)
        except OSError as e:
            raise InfrastructureError(f"output {self.child_url(name)}: write failed: {e}") from e

    def read_bytes(self, name: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.path(name))
        except FileNotFoundError:
            return None

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(name), recursive=True)

    # ------------------------------------------------------------------ partitions

    def write_partition(self, index: int, table: pa.Table, meta: dict[str, Any]) -> int:
        """Encode ``table`` once as Parquet (with ``meta`` in the footer) and write it atomically.

        Returns the number of bytes written. Writing the same partition twice gives the
        same content, so a task rerun by Dask after a worker loss is harmless.
        """
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
            write_statistics=["item"],
        )
        data = sink.getvalue()
        self.write_bytes(part_name(index), data)
        return len(data)

    def list_partitions(self) -> dict[int, str]:
        """Finished partitions: index -> path. A partition file exists whole or not at all."""
        try:
            self.fs.invalidate_cache(self.root)
            entries = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return {}
        out = {}
        for p in entries:
            m = PART_RE.match(p.rstrip("/").rsplit("/", 1)[-1])
            if m:
                out[int(m.group(1))] = p
        return out

    def partition_counts(self, indices: Iterable[int] | None = None) -> list[PartitionCounts]:
        """Read the footers (not the data) of finished partitions, in parallel."""
        done = self.list_partitions()
        wanted = sorted(done if indices is None else set(indices) & set(done))

        def one(i: int) -> PartitionCounts:
            with self.fs.open(done[i], "rb") as fh:
                md = pq.ParquetFile(fh).schema_arrow.metadata or {}
            m = json.loads(md.get(META_KEY, b"{}"))
            return PartitionCounts(
                i, int(m["start"]), int(m["stop"]), int(m["ok"]), int(m["errors"])
            )

        if not wanted:
            return []
        with ThreadPoolExecutor(max_workers=min(16, len(wanted))) as pool:
            return list(pool.map(one, wanted))

    def cleanup_temporaries(self) -> int:
        """Remove temporary files left by writers that were killed mid-write."""
        if not self.is_local:
            return 0
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
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
        for path in self.list_partitions().values():
            self.fs.rm(path)
        self.remove(MANIFEST)
        self.cleanup_temporaries()
