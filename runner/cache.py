"""Reuse results across sweeps: a content-addressed cache of items' results.

An item's key is a 128-bit hash of what decides its result: the function's identity
(its reference; for a live function or a ``file.py`` its code too; a command's argv),
the call style, the item's parameter values (by name) and, when the function takes a
seed, the item's derived seed. Keys are computed per partition with NumPy, never per
item in Python. Only successful results are cached.

Layout under ``cache:`` (a Parquet dataset bucketed by key hash)::

    <cache>/<function key>/_function.json         what the function key stands for
    <cache>/<function key>/b=<NN>/<uuid>.parquet  key_hi, key_lo, the result columns

A partition task hashes its items, searches the files of the buckets its keys fall in
(each sorted by key, each key once), runs only the misses and writes their results into
one new file per bucket (each written atomically under a fresh name, not flushed to disk:
a file a machine crash leaves unreadable is a miss). A cache file never changes once
written, so each process keeps the files it has read (``sweep.cache.memory`` bytes): a
worker reads the cache once, not once per partition. :meth:`ItemCache.compact` merges
each bucket's files into one, writing the merged file before deleting what it merged: a
reader that finds a file gone treats its entries as misses, and two compactions at once
only leave duplicates (the same key has the same result), dropped when read. Concurrent
sweeps never corrupt the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import config
from .calls import Command, item_seeds, seed_kind
from .spec import SweepSpec, function_code_hash
from .store import OUTPUT_COLUMNS, Store, retrying

BUCKET_BITS = 4
BUCKETS = 1 << BUCKET_BITS  # a key's bucket: its top bits (so key order is bucket order)
KEYS = ("key_hi", "key_lo")
FUNCTION_FILE = "_function.json"
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BUCKET_STARTS = np.arange(BUCKETS, dtype=np.uint64) << np.uint64(64 - BUCKET_BITS)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, vectorised (uint64 in, uint64 out)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _text_hash(text: str, salt: int) -> np.uint64:
    digest = hashlib.blake2b(text.encode(), digest_size=8, salt=salt.to_bytes(8, "little"))
    return np.uint64(int.from_bytes(digest.digest(), "little"))


def _column_words(arr: pa.Array | pa.ChunkedArray, salt: int) -> np.ndarray:
    """One uint64 per value, equal for equal values (floats: -0.0 is 0.0, NaNs are one)."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    t = arr.type
    nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
        values = arr if pa.types.is_float64(t) else arr.cast(pa.float64())
        values = values.fill_null(0).to_numpy(zero_copy_only=False) + 0.0  # -0.0 + 0.0 is 0.0
        nan = np.isnan(values)
        if nan.any():
            values[nan] = np.nan  # one NaN, whatever its payload
        words = values.view(np.uint64)
    else:  # strings and the rest: hash each distinct value once
        enc = pc.dictionary_encode(arr.cast(pa.string()) if not pa.types.is_string(t) else arr)
        table = np.array(
            [_text_hash(str(v), salt) for v in enc.dictionary.to_pylist()] or [0], dtype=np.uint64
        )
        words = table[enc.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)]
    if nulls is not None:
        words = np.where(nulls, np.uint64(0xA5A5A5A5A5A5A5A5), words)
    return words


@dataclass(frozen=True)
class ItemCache:
    """One sweep's view of a cache: where it is and the key of its function."""

    url: str
    function_key: str  # hex: the function's identity, call style, seed use
    seeded: bool  # the derived seed is part of an item's key
    identity: dict[str, Any] = field(default_factory=dict)  # what function_key stands for
    storage_options: tuple[tuple[str, Any], ...] = ()
    # this run's files are named after it and skipped by its own lookups: they hold its
    # other partitions' items, never the one looking
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    memory: int = 256 * 2**20  # bytes of cache files a process keeps read (sweep.cache.memory)

    @classmethod
    def for_sweep(
        cls,
        url: str,
        identity: dict[str, Any],
        seeded: bool,
        storage_options: dict[str, Any],
        memory: int | None = None,
    ) -> ItemCache:
        """The cache at ``url`` of the function ``identity`` describes; ``memory``: bytes of
        cache files each process keeps read (default: ``sweep.cache.memory``)."""
        ident = {**identity, "seeded": seeded, "format": 2}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
        if memory is None:
            from dask.utils import parse_bytes  # lazy: as runner.config, dask loads late

            memory = parse_bytes(config.get("cache.memory"))
        options = tuple(sorted(storage_options.items()))
        return cls(url.rstrip("/"), key[:24], seeded, ident, options, memory=memory)

    @property
    def store(self) -> Store:
        return Store(f"{self.url}/{self.function_key}", dict(self.storage_options))

    # ------------------------------------------------------------------ keys

    def keys(self, params: pa.Table, items: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's 128-bit key as two uint64 arrays."""
        n = params.num_rows
        salt = int(self.function_key[:15], 16)
        hi = np.full(n, np.uint64(salt), dtype=np.uint64)
        lo = np.full(n, np.uint64(salt) ^ _GOLDEN, dtype=np.uint64)
        columns = sorted(params.column_names)
        words = [(name, _column_words(params.column(name), 7)) for name in columns]
        if self.seeded:
            words.append(("\0seed", item_seeds(seed, items).astype(np.uint64)))
        with np.errstate(over="ignore"):
            for name, w in words:
                tag = _text_hash(name, 11)
                hi = _mix(hi ^ _mix(w ^ tag))
                lo = _mix((lo + _GOLDEN) ^ _mix(w + tag * _GOLDEN))
        return hi, lo

    @staticmethod
    def bucket(hi: np.ndarray) -> np.ndarray:
        return (hi >> np.uint64(64 - BUCKET_BITS)).astype(np.int64)

    # ------------------------------------------------------------------ read

    def _files(self, own: bool = False) -> dict[int, list[str]]:
        """The cache's files by bucket (one listing); this run's own only if ``own``."""
        store = self.store
        try:
            store.fs.invalidate_cache(store.root)  # other sweeps write here: a fresh listing
            found = store.fs.find(store.root)
        except FileNotFoundError:
            return {}
        out: dict[int, list[str]] = {}
        for path in found:
            parts = path.rstrip("/").split("/")
            name = parts[-1]
            if len(parts) < 2 or not parts[-2].startswith("b=") or not name.endswith(".parquet"):
                continue
            if name.startswith(".") or (not own and name.startswith(self.run)):
                continue  # being written (store.TMP_PREFIX); this run's: not what it looks for
            out.setdefault(int(parts[-2][2:]), []).append(path)
        return out

    def _read(self, path: str) -> pa.Table | None:
        """A cache file's entries, or None: gone since the listing, or unreadable (a file
        written without a flush and cut short by a machine crash): its entries are then
        missed. Storage briefly unreachable is retried, as for the output.

        Files are kept in this process's memory (:data:`_READ`) up to ``memory`` bytes: a
        worker's partitions look up keys spread over every bucket, so without it each
        would read the whole cache again.
        """
        store = self.store
        key = f"{store.fs.protocol}:{path}"
        table = _READ.get(key)
        if table is not None:
            return table

        def load() -> pa.Table | None:
            try:
                return self._load(path)
            except (FileNotFoundError, pa.ArrowInvalid):
                return None

        table = retrying(load, f"cache {self.url}", "reading it", store.retry)
        if table is not None:
            _READ.put(key, table, self.memory)
        return table

    def _load(self, path: str) -> pa.Table:
        import pyarrow.parquet as pq  # lazy, as store.read_footer

        store = self.store
        if store.is_local:  # pyarrow's own reader: no Python file object
            return pq.read_table(path)
        with store.fs.open(path, "rb") as fh:
            return pq.read_table(fh)

    def lookup(self, hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, pa.Table | None]:
        """Rows found and their cached results: ``(row positions, results table)``.

        Every cache file is sorted by key and holds each key once (:meth:`put`,
        :meth:`compact`), so each is searched, not joined: the cost is reading the files of
        the buckets the keys fall in, plus ``O(rows log entries)``.
        """
        none = np.zeros(0, dtype=np.int64), None
        if not len(hi):
            return none
        files = self._files()
        if not files:
            return none
        order = np.argsort(hi)  # wanted keys in key order, so in bucket order (top bits)
        shi, slo = hi[order], lo[order]
        edges = np.r_[np.searchsorted(shi, _BUCKET_STARTS), len(shi)]
        source = np.full(len(hi), -1, dtype=np.int64)  # per row: its entry among `found`
        found: list[pa.Table] = []
        offset = 0
        for b, paths in files.items():
            left = np.arange(edges[b], edges[b + 1])  # positions among the sorted keys
            if not len(left):
                continue
            for path in paths:
                if not len(left):
                    break
                table = self._read(path)
                if table is None:
                    continue
                at = _find(
                    table.column("key_hi").to_numpy(), table.column("key_lo").to_numpy(),
                    shi[left], slo[left],
                )  # fmt: skip
                hit = at >= 0
                got = int(hit.sum())
                source[order[left[hit]]] = np.arange(offset, offset + got)
                found.append(table.drop_columns(list(KEYS)).take(pa.array(at[hit])))
                offset += got
                left = left[~hit]
        rows = np.flatnonzero(source >= 0)  # in row order, with no sort
        if not len(rows):
            return none
        results = pa.concat_tables(found, promote_options="permissive")
        return rows, results.take(pa.array(source[rows]))

    # ------------------------------------------------------------------ write

    def put(self, hi: np.ndarray, lo: np.ndarray, results: pa.Table) -> int:
        """Add these entries (one new file per bucket they fall in); returns how many."""

        if not len(hi):
            return 0
        store = self.store
        described = f"{store.fs.protocol}:{store.root}"
        if described not in _DESCRIBED:  # once per process
            if not store.exists(FUNCTION_FILE):
                store.write_bytes(FUNCTION_FILE, json.dumps(self.identity, indent=1).encode())
            _DESCRIBED.add(described)
        table = pa.table({"key_hi": hi, "key_lo": lo}).append_column(
            "__bucket", pa.array(self.bucket(hi))
        )
        for name in results.column_names:
            table = table.append_column(name, results.column(name))
        table = _unique(table)  # sorted by key, so by bucket (a key's top bits)
        buckets = table.column("__bucket").to_numpy()
        edges = np.flatnonzero(np.diff(buckets)) + 1
        for a, b in zip(np.r_[0, edges], np.r_[edges, len(buckets)], strict=True):
            part = table.slice(int(a), int(b - a)).drop_columns(["__bucket"])
            name = f"b={int(buckets[a]):02d}/{self.run}-{uuid.uuid4().hex}.parquet"
            # not flushed to disk: a file a machine crash leaves unreadable is a miss
            store.write_bytes(name, _parquet(part), sync=False)
        return len(hi)

    def compact(self, min_files: int = 8) -> int:
        """Merge the files of each bucket that has ``min_files`` or more into one (a lookup
        reads every file of its buckets), the buckets side by side in threads (reading,
        sorting and writing release the GIL); returns how many files were merged away."""
        due = [(b, paths) for b, paths in self._files(own=True).items() if len(paths) >= min_files]
        if not due:
            return 0
        with ThreadPoolExecutor(min(len(due), 4)) as pool:
            return sum(pool.map(lambda job: self._merge(*job), due))

    def _merge(self, bucket: int, paths: list[str]) -> int:
        """One bucket's files into one, written whole before any of them is deleted."""
        tables, merged = [], []
        for path in paths:
            try:
                tables.append(self._load(path))
            except FileNotFoundError:
                continue  # another compaction merged it
            except pa.ArrowInvalid:
                pass  # cut short by a crash: nothing in it to keep
            except OSError:
                continue  # storage failing: left for the next compaction
            merged.append(path)
        store = self.store
        if tables:
            table = _unique(pa.concat_tables(tables, promote_options="permissive"))
            store.write_bytes(f"b={bucket:02d}/{uuid.uuid4().hex}.parquet", _parquet(table))
        count = 0
        for path in merged:  # only after the merged file is whole
            try:
                store.fs.rm(path)
                count += 1
            except FileNotFoundError:
                pass  # another compaction got there first
        return count


class _ReadFiles:
    """Cache files read by this process, least recently used dropped past a byte budget.

    Safe to keep: a cache file never changes (it is written whole under a fresh name and
    only ever deleted, its entries then held by the file that merged it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: OrderedDict[str, pa.Table] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> pa.Table | None:
        with self._lock:
            table = self._tables.get(key)
            if table is not None:
                self._tables.move_to_end(key)
            return table

    def put(self, key: str, table: pa.Table, budget: int) -> None:
        size = table.nbytes
        with self._lock:
            if key in self._tables or size > budget:
                return
            self._tables[key] = table
            self._bytes += size
            while self._bytes > budget:
                _, old = self._tables.popitem(last=False)
                self._bytes -= old.nbytes


_READ = _ReadFiles()
_DESCRIBED: set[str] = set()  # cache folders this process saw holding their FUNCTION_FILE


def sweep_cache(spec: SweepSpec, function: Any, columns: list[str]) -> ItemCache | None:
    """The spec's cache, keyed by what decides an item's result: not the sweep's name,
    output, partitioning or seed (an item's derived seed counts if the function takes it).

    ``function`` is the resolved callable (or :class:`~runner.calls.Command`).
    """
    if spec.cache is None:
        return None
    if isinstance(function, Command):
        seeded = any("{seed}" in a for a in function.argv)
    else:
        seeded = seed_kind(function, columns) is not None
    identity = {
        k: v for k, v in spec.identity().items() if k not in ("params", "seed", "partition_size")
    }
    is_file = str(spec.function).split(":", 1)[0].endswith(".py")  # a file: its code counts
    if "code" not in identity and is_file and not isinstance(function, Command):
        identity["code"] = function_code_hash(function)
    return ItemCache.for_sweep(spec.cache, identity, seeded, spec.storage_options)


def _parquet(table: pa.Table) -> bytes:
    """A cache file's bytes. Keys are random: no dictionary, compression or statistics
    (each would cost time for nothing); strings among the results get a dictionary."""
    import pyarrow.parquet as pq  # lazy, as store.read_footer

    sink = io.BytesIO()
    pq.write_table(
        table, sink,
        compression={c: "none" if c in KEYS else "zstd" for c in table.column_names},
        compression_level={c: 1 for c in table.column_names if c not in KEYS},
        use_dictionary=[f.name for f in table.schema if pa.types.is_string(f.type)
                        or pa.types.is_large_string(f.type)],
        write_statistics=[c for c in table.column_names if c not in KEYS],
    )  # fmt: skip
    return sink.getvalue()


def _unique(table: pa.Table) -> pa.Table:
    """The entries sorted by key, each key once (concurrent writers may add one twice)."""
    hi = table.column("key_hi").to_numpy()
    lo = table.column("key_lo").to_numpy()
    order = np.argsort(hi)  # keys sharing their high 64 bits are rare: only they need lo
    hs = hi[order]
    tie = np.flatnonzero(hs[1:] == hs[:-1])
    if len(tie):
        at = np.unique(np.r_[tie, tie + 1])
        order[at] = order[at][np.lexsort((lo[order[at]], hs[at]))]
        ls = lo[order]
        dup = np.zeros(len(order), dtype=bool)
        dup[tie + 1] = ls[tie + 1] == ls[tie]
        order = order[~dup]
    return table.take(pa.array(order))


def _find(hs: np.ndarray, ls: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Per wanted key, its row among the sorted unique keys ``(hs, ls)``, or -1."""
    at = np.full(len(hi), -1, dtype=np.int64)
    cand = np.searchsorted(hs, hi, side="left")
    while True:  # keys sharing their high 64 bits: a rare few, looked at one after another
        inside = cand < len(hs)
        c = np.where(inside, cand, 0)
        same = inside & (hs[c] == hi) & (at < 0)
        hit = same & (ls[c] == lo)
        at[hit] = c[hit]
        cand = cand + 1
        if not (same & ~hit).any():
            return at


def result_part(table: pa.Table, param_names: Iterable[str]) -> pa.Table:
    """The result columns of a partition table (what the cache keeps of an item)."""
    skip = set(param_names) | set(OUTPUT_COLUMNS)
    return table.select([c for c in table.column_names if c not in skip])


# --------------------------------------------------------------------------- plan


def preview(
    cache: ItemCache, source: Any, seed: int, n: int, limit: int = 1_000_000
) -> dict[str, Any]:
    """How many of the first ``limit`` items hit the cache, and when none does, why.

    Returns ``{"checked", "hits", "why"}``.
    """
    checked = min(n, limit)
    hits = 0
    step = 100_000
    for start in range(0, checked, step):
        stop = min(start + step, checked)
        items = np.arange(start, stop, dtype=np.int64)
        rows, _ = cache.lookup(*cache.keys(source.materialise(start, stop), items, seed))
        hits += len(rows)
    why = None if hits else _why_not(cache)
    return {"checked": checked, "hits": hits, "why": why}


def _why_not(cache: ItemCache) -> str:
    """Why no item hit: what the cache holds for other versions of this function."""
    root = Store(cache.url, dict(cache.storage_options))
    try:
        metas = root.fs.glob(f"{root.root}/*/{FUNCTION_FILE}")
    except FileNotFoundError:
        metas = []
    others = []
    for path in metas:
        try:
            with root.fs.open(path, "rb") as fh:
                others.append(json.loads(fh.read()))
        except (FileNotFoundError, ValueError):
            continue
    mine = cache.identity
    if not others:
        return "the cache is empty"
    same_ref = [o for o in others if o.get("function") == mine.get("function")]
    if not same_ref:
        return "the cache holds no results of this function"
    if all(o.get("code") != mine.get("code") for o in same_ref):
        return "the function's code changed since its results were cached"
    if all(o.get("call") != mine.get("call") for o in same_ref):
        return "the cached results were computed with another call style"
    if mine.get("seeded"):
        return (
            "the function takes a seed: an item hits only with the same seed and item number"
            " (a different seed, or items numbered otherwise)"
        )
    return "no item's parameter values were computed before"
