"""Parameter sources: each can *count* its items and *materialise* any range of them.

A source object is small and picklable: it travels to the workers once, and each
partition task materialises only its own ``[start, stop)`` range there. The client
never holds the parameter table.

Generated values depend only on ``(seed, item index)`` — never on how the sweep is
partitioned — so a resumed sweep regenerates exactly the same parameters.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .exceptions import SourceError, SweepError
from .policy import RetryPolicy
from .secrets import redact_url
from .spec import DatasetSource, Linspace, ParamsSpec, QMCSource, RandomSource
from .store import RESERVED_NAMES, reserved_clash, retrying, storage_retry

# Random values are generated in fixed blocks of items so that item i's value does
# not depend on the partition that asks for it.
RANDOM_BLOCK = 1 << 14


class Source:
    """Base class: ``count()`` items and ``materialise(start, stop)`` them as an Arrow table."""

    kind: str = "?"
    columns: list[str]

    def count(self) -> int:
        raise NotImplementedError

    def materialise(self, start: int, stop: int) -> pa.Table:
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind


# --------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class GridSource(Source):
    """Cartesian product of axes; item ``i`` is the C-order (last axis fastest) index."""

    axes: dict[str, list[Any]]
    kind: str = "grid"

    @classmethod
    def from_spec(cls, grid: dict[str, list[Any] | Linspace]) -> GridSource:
        axes: dict[str, list[Any]] = {}
        for name, axis in grid.items():
            if isinstance(axis, Linspace):
                fn = np.geomspace if axis.log else np.linspace
                axes[name] = fn(axis.start, axis.stop, axis.num).tolist()
            else:
                axes[name] = list(axis)
        return cls(axes)

    @property
    def columns(self) -> list[str]:  # type: ignore[override]
        return list(self.axes)

    def count(self) -> int:
        return math.prod(len(v) for v in self.axes.values())

    def materialise(self, start: int, stop: int) -> pa.Table:
        shape = tuple(len(v) for v in self.axes.values())
        idx = np.unravel_index(np.arange(start, stop, dtype=np.int64), shape)
        cols = {}
        for (name, values), ix in zip(self.axes.items(), idx, strict=True):
            cols[name] = _take(_axis_array(tuple(values)), ix)
        return pa.table(cols)

    def describe(self) -> str:
        return "grid " + " x ".join(f"{k}[{len(v)}]" for k, v in self.axes.items())


@functools.lru_cache(maxsize=64)
def _axis_array(values: tuple[Any, ...]) -> pa.Array:
    try:
        return pa.array(list(values))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise SourceError(
            f"params.grid: cannot store values {values[:3]!r}… in one column ({e})"
        ) from e


def _take(arr: pa.Array, ix: np.ndarray) -> pa.Array:
    return arr.take(pa.array(ix))


# --------------------------------------------------------------------------- random


@dataclass(frozen=True)
class RandomSourceImpl(Source):
    n: int
    seed: int
    dists: dict[str, tuple[str, Any]]
    kind: str = "random"

    @classmethod
    def from_spec(cls, spec: RandomSource, default_seed: int) -> RandomSourceImpl:
        dists = {}
        for name, col in spec.columns.items():
            ((dist, arg),) = ((k, v) for k, v in col.model_dump().items() if v is not None)
            dists[name] = (dist, tuple(arg) if isinstance(arg, list | tuple) else arg)
        seed = spec.seed if spec.seed is not None else default_seed
        return cls(spec.n, seed, dists)

    @property
    def columns(self) -> list[str]:  # type: ignore[override]
        return list(self.dists)

    def count(self) -> int:
        return self.n

    def materialise(self, start: int, stop: int) -> pa.Table:
        cols: dict[str, list[np.ndarray]] = {name: [] for name in self.dists}
        first, last = start // RANDOM_BLOCK, (stop - 1) // RANDOM_BLOCK
        for block in range(first, last + 1):
            lo = block * RANDOM_BLOCK
            hi = min(lo + RANDOM_BLOCK, self.n)
            a, b = max(start, lo) - lo, min(stop, hi) - lo
            for c, (name, (dist, arg)) in enumerate(self.dists.items()):
                rng = np.random.default_rng([self.seed, c, block])
                cols[name].append(_draw(rng, dist, arg, hi - lo)[a:b])
        return pa.table({k: pa.array(np.concatenate(v)) for k, v in cols.items()})

    def describe(self) -> str:
        return f"random n={self.n} seed={self.seed} columns={','.join(self.dists)}"


def _draw(rng: np.random.Generator, dist: str, arg: Any, size: int) -> np.ndarray:
    if dist == "uniform":
        return rng.uniform(arg[0], arg[1], size)
    if dist == "normal":
        return rng.normal(arg[0], arg[1], size)
    if dist == "loguniform":
        return np.exp(rng.uniform(math.log(arg[0]), math.log(arg[1]), size))
    if dist == "integers":
        return rng.integers(arg[0], arg[1], size, endpoint=False)
    if dist == "choice":
        return np.asarray(arg, dtype=object)[rng.integers(0, len(arg), size)]
    raise SourceError(f"unknown distribution {dist!r}")


# --------------------------------------------------------------------------- lhs / sobol


@dataclass(frozen=True)
class QMCSourceImpl(Source):
    method: str  # "lhs" | "sobol" | "halton"
    n: int
    seed: int
    bounds: dict[str, tuple[float, float]]
    scramble: bool = True

    @classmethod
    def from_spec(cls, method: str, spec: QMCSource, default_seed: int) -> QMCSourceImpl:
        seed = spec.seed if spec.seed is not None else default_seed
        return cls(method, spec.n, seed, dict(spec.bounds), spec.scramble)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.method

    @property
    def columns(self) -> list[str]:  # type: ignore[override]
        return list(self.bounds)

    def count(self) -> int:
        return self.n

    def materialise(self, start: int, stop: int) -> pa.Table:
        from scipy.stats import qmc

        d = len(self.bounds)
        lo = [b[0] for b in self.bounds.values()]
        hi = [b[1] for b in self.bounds.values()]
        if self.method in ("sobol", "halton"):  # sequences: item i is the i-th point
            engine = (qmc.Sobol if self.method == "sobol" else qmc.Halton)(
                d, scramble=self.scramble, seed=self.seed
            )
            if start:
                engine.fast_forward(start)
            with warnings.catch_warnings():  # n not a power of two: the runner says it once
                warnings.filterwarnings("ignore", "The balance properties", UserWarning)
                unit = engine.random(stop - start)
        else:
            # A Latin hypercube is a property of all n points together: build it once
            # per worker process and slice.
            unit = _lhs(self.n, d, self.seed)[start:stop]
        values = qmc.scale(unit, lo, hi)
        return pa.table({name: values[:, j] for j, name in enumerate(self.bounds)})

    def describe(self) -> str:
        return f"{self.method} n={self.n} seed={self.seed} dims={','.join(self.bounds)}"


@functools.lru_cache(maxsize=2)
def _lhs(n: int, d: int, seed: int) -> np.ndarray:
    from scipy.stats import qmc

    return qmc.LatinHypercube(d, seed=seed).random(n)


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class FilePiece:
    path: str
    rows: int


@dataclass(frozen=True)
class DatasetSourceImpl(Source):
    """Files listed once on the client (names and row counts, no data)."""

    url: str
    format: str
    files: tuple[FilePiece, ...]
    schema: pa.Schema
    storage_options: dict[str, Any] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=storage_retry)
    kind: str = "dataset"

    @property
    def columns(self) -> list[str]:  # type: ignore[override]
        return list(self.schema.names)

    def count(self) -> int:
        return sum(f.rows for f in self.files)

    def describe(self) -> str:
        return f"dataset {redact_url(self.url)} ({len(self.files)} {self.format} file(s))"

    def materialise(self, start: int, stop: int) -> pa.Table:
        fs = _fs(self.url, tuple(sorted(self.storage_options.items())))
        pieces = []
        offset = 0
        for f in self.files:
            lo, hi = offset, offset + f.rows
            offset = hi
            if hi <= start or lo >= stop or f.rows == 0:
                continue
            a, b = max(start, lo) - lo, min(stop, hi) - lo
            pieces.append(
                retrying(
                    functools.partial(_read_rows, fs, f.path, self.format, a, b, self.schema),
                    f"params.dataset {f.path}",
                    f"reading rows {a}..{b}",
                    self.retry,
                )
            )
        table = pa.concat_tables(pieces) if pieces else self.schema.empty_table()
        return table


@functools.lru_cache(maxsize=8)
def _fs(url: str, options: tuple[tuple[str, Any], ...]) -> Any:
    from fsspec.core import url_to_fs

    return url_to_fs(url, **dict(options))[0]


def _read_rows(fs: Any, path: str, fmt: str, a: int, b: int, schema: pa.Schema) -> pa.Table:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            md = pf.metadata
            groups, row0, first_row = [], 0, None
            for g in range(md.num_row_groups):
                n = md.row_group(g).num_rows
                if row0 + n > a and row0 < b:
                    groups.append(g)
                    if first_row is None:
                        first_row = row0
                row0 += n
            t = pf.read_row_groups(groups, columns=schema.names)
        t = t.slice(a - (first_row or 0), b - a)
    else:
        t = _read_whole_text_file(fs, path, fmt, schema).slice(a, b - a)
    return t.select(schema.names).cast(schema)


def _read_whole_text_file(fs: Any, path: str, fmt: str, schema: pa.Schema) -> pa.Table:
    # CSV/JSONL have no row index: read the file once per worker and keep the last
    # one or two (partitions of one file usually land on the same worker in order).
    key = (path, fmt, schema)
    hit = _TEXT_CACHE.get(key)
    if hit is not None:
        return hit
    with fs.open(path, "rb", compression="infer") as fh:
        t = _parse_text(fh, fmt, schema)
    if len(_TEXT_CACHE) >= 2:
        _TEXT_CACHE.pop(next(iter(_TEXT_CACHE)))
    _TEXT_CACHE[key] = t
    return t


_TEXT_CACHE: dict[Any, pa.Table] = {}


def _parse_text(fh: Any, fmt: str, schema: pa.Schema | None) -> pa.Table:
    if fmt == "csv":
        from pyarrow import csv

        opts = csv.ConvertOptions(column_types=schema) if schema is not None else None
        return csv.read_csv(fh, convert_options=opts)
    from pyarrow import json as pajson

    opts = pajson.ParseOptions(explicit_schema=schema) if schema is not None else None
    return pajson.read_json(fh, parse_options=opts)


_EXT = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def _guess_format(path: str) -> str | None:
    p = path.lower()
    for suffix in (".gz", ".bz2", ".zst"):
        p = p.removesuffix(suffix)
    return next((fmt for ext, fmt in _EXT.items() if p.endswith(ext)), None)


def open_dataset(spec: DatasetSource, storage_options: dict[str, Any]) -> DatasetSourceImpl:
    """List the dataset's files and row counts (footers only for Parquet).

    Raises
    ------
    SourceError
        The URL does not exist, holds no readable files, or files disagree on columns.
    """
    from fsspec.core import url_to_fs

    url = spec.url

    def listing() -> tuple[Any, list[str]]:
        fs, root = url_to_fs(url, **storage_options)
        if fs.isdir(root):
            return fs, sorted(
                p
                for p in fs.find(root)
                if not any(part.startswith(("_", ".")) for part in p[len(root) :].split("/"))
            )
        return fs, [root] if fs.exists(root) else []

    try:
        fs, paths = retrying(listing, f"params.dataset {url}", "listing it")
    except SweepError:
        raise
    except Exception as e:
        raise SourceError(
            f"params.dataset: cannot list {url} ({type(e).__name__}: {e}); check the URL and"
            " storage_options"
        ) from e
    if not paths:
        raise SourceError(
            f"params.dataset: {url} does not exist or holds no files; check the URL and credentials"
        )
    fmt = spec.format
    if fmt is None:
        fmts = {_guess_format(p) for p in paths} - {None}
        if len(fmts) != 1:
            raise SourceError(
                f"params.dataset: cannot tell the format of {url}"
                f" (found {', '.join(sorted(map(str, fmts))) or 'no .parquet/.csv/.jsonl files'});"
                " set params.dataset.format"
            )
        fmt = fmts.pop()
    paths = [p for p in paths if spec.format is not None or _guess_format(p) == fmt]
    if not paths:
        raise SourceError(f"params.dataset: no {fmt} files under {url}")
    files: list[FilePiece] = []
    schema: pa.Schema | None = None
    for p in paths:
        try:
            rows, file_schema = retrying(
                functools.partial(_inspect_file, fs, p, fmt), f"params.dataset {p}", "reading it"
            )
        except SweepError:
            raise
        except Exception as e:
            raise SourceError(
                f"params.dataset: cannot read {p} as {fmt} ({' '.join(str(e).split())[:200]});"
                " check the file, or set params.dataset.format"
            ) from e
        if spec.columns:
            missing = [c for c in spec.columns if c not in file_schema.names]
            if missing:
                raise SourceError(f"params.dataset: {p} has no column(s) {', '.join(missing)}")
            file_schema = pa.schema([file_schema.field(c) for c in spec.columns])
        if schema is None:
            schema = file_schema
        elif set(schema.names) != set(file_schema.names):
            raise SourceError(
                f"params.dataset: {p} has columns {file_schema.names}, other files have {schema.names}"
            )
        else:
            try:
                schema = pa.unify_schemas([schema, file_schema], promote_options="permissive")
            except pa.ArrowInvalid as e:
                raise SourceError(
                    f"params.dataset: {p}: column types disagree with other files ({e})"
                ) from e
        files.append(FilePiece(p, rows))
    assert schema is not None
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    files = [
        FilePiece(p if "://" in p or proto == "file" else f"{proto}://{p}", r)
        for p, r in ((f.path, f.rows) for f in files)
    ]
    return DatasetSourceImpl(url, fmt, tuple(files), schema, dict(storage_options))


def _inspect_file(fs: Any, path: str, fmt: str) -> tuple[int, pa.Schema]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            return pf.metadata.num_rows, pf.schema_arrow
    # Row counts of text files need one pass; this is done once, on the client.
    with fs.open(path, "rb", compression="infer") as fh:
        t = _parse_text(fh, fmt, None)
    return t.num_rows, t.schema


# --------------------------------------------------------------------------- factory


def make_source(
    params: ParamsSpec, seed: int = 0, storage_options: dict[str, Any] | None = None
) -> Source:
    """Build the source described by a spec's ``params``.

    Raises
    ------
    SourceError
        The source cannot be read, or a parameter is named like an output column.
    """
    source: Source
    if params.grid is not None:
        source = GridSource.from_spec(params.grid)
    elif params.random is not None:
        source = RandomSourceImpl.from_spec(params.random, seed)
    elif params.lhs is not None:
        source = QMCSourceImpl.from_spec("lhs", params.lhs, seed)
    elif params.sobol is not None:
        source = QMCSourceImpl.from_spec("sobol", params.sobol, seed)
    elif params.halton is not None:
        source = QMCSourceImpl.from_spec("halton", params.halton, seed)
    else:
        assert params.dataset is not None
        source = open_dataset(params.dataset, storage_options or {})
    clash = reserved_clash(source.columns)
    if clash:
        pick = " or pick columns with params.dataset.columns" if params.dataset else ""
        raise SourceError(
            f"params.{params.kind}: parameter(s) {', '.join(map(repr, clash))} are named like output"
            f" columns ({', '.join(RESERVED_NAMES)}): rename them{pick}"
        )
    return source
