"""``cache:``: results reused across sweeps, keyed by the function, call style, parameter
values and (for a seeded function) the derived seed; concurrent sweeps writing one cache
never corrupt it; ``sweep plan`` says what hits and, when nothing does, why."""

from __future__ import annotations

import dataclasses
import subprocess
import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import runner
from runner.cache import ItemCache
from runner.execute import run_sweep
from runner.sources import RandomSourceImpl
from runner.spec import build_spec
from tests.clitools import SWEEP, sweep
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(180)


def _spec(out, cache, grid, **fields) -> dict:
    return {
        "name": "cached",
        "function": "tests.funcs:add",
        "params": {"grid": grid},
        "partition_size": 7,
        "output": str(out),
        "cache": str(cache),
        **fields,
    }


def _table(url) -> pd.DataFrame:
    return runner.load_results(str(url)).set_index("item")


def _check_reuse(client, root, cache) -> None:
    grid = {"a": list(range(10)), "b": [0.0, 0.5]}
    first = run_sweep(build_spec(_spec(f"{root}/one", cache, grid)), client=client)
    assert first.items_cached == 0
    # another sweep (another output, name, partitioning) whose grid changed an axis:
    # the points it shares with the first are not computed again
    grid2 = {"a": list(range(10)), "b": [0.0, 0.25, 0.5]}
    second = run_sweep(
        build_spec(_spec(f"{root}/two", cache, grid2, name="other", partition_size=4)),
        client=client,
    )
    t = _table(f"{root}/two")
    shared = t["b"] != 0.25
    assert second.items_cached == 20 == int((t["attempts"] == 0).sum())
    assert (t.loc[shared, "attempts"] == 0).all() and (t.loc[~shared, "attempts"] == 1).all()
    assert (t["result"] == t["a"] + t["b"]).all() and (t["status"] == "ok").all()
    assert (t.loc[shared, "duration_s"] == 0).all()
    # another function: nothing hits
    third = run_sweep(
        build_spec(_spec(f"{root}/three", cache, grid, function="tests.funcs:numpy_scalar")),
        client=client,
    )
    assert third.items_cached == 0


def test_results_are_reused_across_sweeps(client, tmp_path):
    _check_reuse(client, tmp_path, tmp_path / "cache")


def test_the_cache_on_s3(client, s3):
    _check_reuse(client, s3, f"{s3}/sweep-cache")


def test_a_seeded_function_hits_with_the_same_seed_only(client, tmp_path, cli_env):
    cache = tmp_path / "cache"
    grid = {"a": list(range(12))}
    fields = {"function": "tests.funcs:with_seed", "seed": 1}
    run_sweep(build_spec(_spec(tmp_path / "one", cache, grid, **fields)), client=client)
    same = run_sweep(build_spec(_spec(tmp_path / "two", cache, grid, **fields)), client=client)
    assert same.items_cached == 12
    pd.testing.assert_frame_equal(
        _table(tmp_path / "two")[["a", "result"]], _table(tmp_path / "one")[["a", "result"]]
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_spec(tmp_path / "three", cache, grid, **{**fields, "seed": 2})))
    r = sweep("plan", spec, env=cli_env)
    assert r.returncode == 0 and "0 items hit" in r.stdout and "takes a seed" in r.stdout
    other = build_spec(_spec(tmp_path / "three", cache, grid, **{**fields, "seed": 2}))
    assert run_sweep(other, client=client).items_cached == 0  # other seeds: other results


def test_plan_says_why_nothing_hits(cli_env, tmp_path):
    cache, spec = tmp_path / "cache", tmp_path / "spec.yaml"
    func = tmp_path / "model.py"
    func.write_text("def f(a, b):\n    return a * b\n")
    fields = _spec(tmp_path / "one", cache, {"a": [1, 2, 3], "b": [1.0]}, function="model.py:f")
    spec.write_text(yaml.safe_dump(fields))
    r = sweep("plan", spec, env=cli_env)
    assert "0 items hit" in r.stdout and "the cache is empty" in r.stdout
    assert sweep("run", spec, "-q", env=cli_env).returncode == 0
    spec.write_text(yaml.safe_dump({**fields, "output": str(tmp_path / "two")}))
    r = sweep("plan", spec, env=cli_env)
    assert "cache " in r.stdout and ": 3 items hit" in r.stdout, r.stdout
    func.write_text("def f(a, b):\n    return a * b + 1  # fixed\n")
    r = sweep("plan", spec, env=cli_env)
    assert "0 items hit" in r.stdout and "the function's code changed" in r.stdout, r.stdout
    r = sweep("run", spec, "--json", env=cli_env)
    assert r.returncode == 0 and '"items_cached": 0' in r.stdout
    assert (_table(tmp_path / "two")["result"] == [2.0, 3.0, 4.0]).all()


@pytest.mark.slow
def test_concurrent_sweeps_share_one_cache(cli_env, tmp_path):
    """Two sweeps at once write overlapping items into one cache (and compact it as they
    end); afterwards every file reads, and a third sweep finds every item."""
    cache = tmp_path / "cache"
    specs = []
    for k, a in enumerate([list(range(0, 60)), list(range(30, 90))]):
        path = tmp_path / f"spec{k}.yaml"
        path.write_text(yaml.safe_dump(_spec(tmp_path / f"out{k}", cache, {"a": a, "b": [0.0, 1.0]},
                                             partition_size=6)))  # fmt: skip
        specs.append(path)
    procs = [
        subprocess.Popen([SWEEP, "run", str(p), "-q"], env=cli_env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in specs
    ]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=150)
        assert p.returncode == 0, err
    files = list(cache.rglob("*.parquet"))
    assert files and all(pq.read_table(f).num_rows > 0 for f in files)  # none torn
    assert not [f for f in cache.rglob(".tmp-*")]
    whole = tmp_path / "spec-all.yaml"
    whole.write_text(yaml.safe_dump(_spec(tmp_path / "all", cache, {"a": list(range(90)),
                                                                   "b": [0.0, 1.0]})))  # fmt: skip
    r = sweep("run", whole, "--json", env=cli_env)
    assert r.returncode == 0 and '"items_cached": 180' in r.stdout, r.stdout
    t = _table(tmp_path / "all")
    assert (t["result"] == t["a"] + t["b"]).all() and (t["attempts"] == 0).all()


def test_a_cache_hit_is_a_real_hit_not_a_recompute(client, tmp_path):
    """The cached value is what is written (a function whose result changes per process
    would otherwise show it)."""
    cache = tmp_path / "cache"
    grid = {"a": list(range(6)), "b": [0.0]}
    run_sweep(build_spec(_spec(tmp_path / "one", cache, grid, function="tests.funcs:pid_after_sleep")),
              client=client)  # fmt: skip
    run_sweep(build_spec(_spec(tmp_path / "two", cache, grid, function="tests.funcs:pid_after_sleep")),
              client=client)  # fmt: skip
    one, two = _table(tmp_path / "one"), _table(tmp_path / "two")
    pd.testing.assert_series_equal(one["result"], two["result"])
    assert (two["attempts"] == 0).all()


def test_compactions_at_once_lose_nothing(tmp_path):
    """Two compactions of one cache at the same time (and a lookup during them): every
    entry is still found with its value; duplicates they leave are dropped when read."""

    cache = ItemCache.for_sweep(str(tmp_path / "cache"), {"function": "m:f"}, False, {})
    source = RandomSourceImpl(4000, 1, {"a": ("uniform", (0, 1))})
    keys = []
    for start in range(0, 4000, 250):  # 16 writers' worth of files in every bucket
        params = source.materialise(start, start + 250)
        hi, lo = cache.keys(params, np.arange(start, start + 250), 0)
        cache.put(hi, lo, pa.table({"result": params.column("a")}))
        keys.append((hi, lo, params.column("a").to_numpy()))
    hi, lo, want = (np.concatenate(k) for k in zip(*keys, strict=True))
    before = len(list((tmp_path / "cache").rglob("*.parquet")))
    errors: list[BaseException] = []

    def run(fn):
        try:
            fn()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(cache.compact,)) for _ in range(2)]
    reader = dataclasses.replace(cache, run="another-run")  # a run's own files it skips
    threads.append(threading.Thread(target=run, args=(lambda: reader.lookup(hi, lo),)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    after = list((tmp_path / "cache").rglob("*.parquet"))
    assert len(after) < before and all(pq.read_table(f).num_rows for f in after)
    rows, got = reader.lookup(hi, lo)
    assert len(rows) == 4000
    assert np.array_equal(got.column("result").to_numpy(), want[rows])


def test_cached_results_survive_a_partition_whose_other_items_all_fail(client, tmp_path):
    """A partition mixing cached items with new ones that all fail keeps the cached
    results in their column, in its place."""
    cache = tmp_path / "cache"
    run_sweep(build_spec(_spec(tmp_path / "one", cache, {"a": [0, 2, 4], "b": [0.5]},
                               function="tests.funcs:fail_on_odd")), client=client)  # fmt: skip
    report = run_sweep(
        build_spec(_spec(tmp_path / "two", cache, {"a": [0, 1, 2, 3, 4, 5], "b": [0.5]},
                         function="tests.funcs:fail_on_odd", max_failures=3, partition_size=6)),
        client=client,
    )  # fmt: skip
    t = _table(tmp_path / "two")
    assert report.items_cached == 3 and report.errors == 3
    assert list(t.columns) == ["a", "b", "result", "status", "error", "attempts", "duration_s"]
    assert t.loc[t["a"] % 2 == 0, "result"].tolist() == [0.5, 2.5, 4.5]


def _entries(cache, n, start=0):
    """``n`` entries put in the cache: their keys and the values stored with them."""

    params = RandomSourceImpl(start + n, 3, {"a": ("uniform", (0, 1))}).materialise(
        start, start + n
    )
    hi, lo = cache.keys(params, np.arange(start, start + n), 0)
    cache.put(hi, lo, pa.table({"result": params.column("a")}))
    return hi, lo, params.column("a").to_numpy()


def test_keys_sharing_their_high_word_are_told_apart(tmp_path):
    """Entries whose keys share the high 64 bits (and a key written twice) each keep their
    own value, and a file holds each key once."""

    cache = ItemCache.for_sweep(str(tmp_path / "cache"), {"function": "m:f"}, False, {})
    hi = np.array([5, 9, 5, 5, 2**63, 5, 9], dtype=np.uint64)
    lo = np.array([3, 1, 1, 2, 0, 3, 1], dtype=np.uint64)  # (5,3) and (9,1) twice
    values = np.array([53.0, 91.0, 51.0, 52.0, 80.0, 53.0, 91.0])
    cache.put(hi, lo, pa.table({"result": values}))
    files = list(tmp_path.rglob("*.parquet"))
    assert sum(pq.read_table(f).num_rows for f in files) == 5
    reader = dataclasses.replace(cache, run="another-run")
    want_hi = np.array([5, 5, 5, 9, 7, 2**63], dtype=np.uint64)
    want_lo = np.array([2, 1, 3, 1, 3, 0], dtype=np.uint64)
    rows, got = reader.lookup(want_hi, want_lo)
    assert rows.tolist() == [0, 1, 2, 3, 5]  # (7, 3) was never put
    assert got.column("result").to_pylist() == [52.0, 51.0, 53.0, 91.0, 80.0]


def test_a_cache_file_cut_short_by_a_crash_is_a_miss_and_compaction_drops_it(tmp_path):
    """Cache files are written without a flush to disk; one a crash left unreadable costs
    only its entries, and the next compaction deletes it."""

    cache = ItemCache.for_sweep(str(tmp_path / "cache"), {"function": "m:f"}, False, {}, memory=0)
    hi, lo, want = _entries(cache, 400)
    files = sorted((tmp_path / "cache").rglob("*.parquet"))
    broken = files[0]
    broken.write_bytes(broken.read_bytes()[:50])
    reader = dataclasses.replace(cache, run="another-run")
    rows, got = reader.lookup(hi, lo)
    assert 0 < len(rows) < 400
    assert np.array_equal(got.column("result").to_numpy(), want[rows])
    assert reader.compact(min_files=1) == len(files)
    left = list((tmp_path / "cache").rglob("*.parquet"))
    assert broken not in left and all(pq.read_table(f).num_rows for f in left)
    assert len(reader.lookup(hi, lo)[0]) == len(rows)


def test_a_process_reads_each_cache_file_once_within_its_budget(tmp_path):
    """A worker's lookups keep the files they read (cache files never change); with no
    memory for it every lookup reads them again."""

    for memory, hits_after in ((64 * 2**20, 300), (0, 0)):
        root = tmp_path / f"cache-{memory}"
        cache = ItemCache.for_sweep(str(root), {"function": "m:f"}, False, {}, memory=memory)
        hi, lo, _ = _entries(cache, 300)
        reader = dataclasses.replace(cache, run="another-run")
        assert len(reader.lookup(hi, lo)[0]) == 300
        for f in root.rglob("*.parquet"):  # a lookup that reads them again finds nothing
            f.write_bytes(b"")
        assert len(reader.lookup(hi, lo)[0]) == hits_after


def test_an_items_key_is_its_values_by_name():
    """Equal values give equal keys (3 and 3.0, -0.0 and 0.0, any NaN); another value,
    another column name, or (for a seeded function) another seed gives another key."""
    cache = ItemCache.for_sweep("/unused", {"function": "m:f"}, False, {}, memory=0)
    seeded = dataclasses.replace(cache, seeded=True)

    def key(table, cache=cache, items=(0,), seed=1):
        hi, lo = cache.keys(table, np.asarray(items, dtype=np.int64), seed)
        return int(hi[0]), int(lo[0])

    nan_bits = np.array([0x7FF8000000000001], dtype=np.uint64).view(np.float64)
    assert key(pa.table({"a": [3]})) == key(pa.table({"a": [3.0]}))
    assert key(pa.table({"a": [-0.0]})) == key(pa.table({"a": [0.0]}))
    assert key(pa.table({"a": [float("nan")]})) == key(pa.table({"a": nan_bits}))
    assert key(pa.table({"a": [1.0], "b": ["x"]})) == key(pa.table({"b": ["x"], "a": [1.0]}))
    assert key(pa.table({"a": [1.0]})) != key(pa.table({"a": [1.5]}))
    assert key(pa.table({"a": [1.0]})) != key(pa.table({"b": [1.0]}))
    assert key(pa.table({"a": ["x"]})) != key(pa.table({"a": ["y"]}))
    assert key(pa.table({"a": [None]}, schema=pa.schema([("a", pa.float64())]))) != key(
        pa.table({"a": [0.0]})
    )
    one = pa.table({"a": [1.0]})
    assert key(one, items=(0,), seed=1) == key(one, items=(5,), seed=2)  # unseeded: no seed
    assert key(one, seeded, (0,), 1) != key(one, seeded, (0,), 2)
    assert key(one, seeded, (0,), 1) != key(one, seeded, (1,), 1)
