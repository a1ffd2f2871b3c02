"""Pure parts: policies, layout/resume diff, sources, seeds, spec hashing."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from runner.calls import ItemResults, item_seeds, result_columns, run_items
from runner.exceptions import SpecError
from runner.plan import Layout, fill, todo
from runner.policy import FailureBudget, InlinePolicy, PartitionSizing, ScalingPolicy
from runner.sources import make_source
from runner.spec import ParamsSpec, build_spec, load_spec

pytestmark = pytest.mark.timeout(60)


def params(**kw):
    return ParamsSpec.model_validate(kw)


# ------------------------------------------------------------------ policies


def _sizes(runs):
    return [size for size, count in runs for _ in range(count)]


def test_partition_sizing_caps_then_tapers_so_every_slot_finishes_together():
    p = PartitionSizing(target_seconds=10, min_seconds=0.5, tail_factor=2, max_items=1_000_000)
    # zero-work items: every partition at the memory cap, no tail (each takes 0.3 s anyway)
    assert p.sizes(30_000_000, 3e-7, 2) == [(1_000_000, 30)]
    # 10 ms items on 4 slots: 10 s partitions, then a tail down to 0.5 s partitions
    sizes = _sizes(p.sizes(24_000, 0.01, 4))
    assert sum(sizes) == 24_000 and sizes[0] == 1000 and sizes == sorted(sizes, reverse=True)
    assert sizes[-2] == 50 and sizes[-1] <= 50  # the last ones: 0.5 s of work
    # the work still queued behind each partition is always enough to fill every slot
    left = 24_000
    for size in sizes[:-8]:
        left -= size
        assert left >= size * 4 or size == 50
    # slow items: one per partition, still a compact run-length list
    assert p.sizes(10_000_000, 10.0, 4) == [(1, 10_000_000)]
    assert p.sizes(1000, 1e-3, 2) == [(500, 2)]  # 1 s of work: two 0.5 s partitions
    assert p.sizes(3, 60.0, 8) == [(1, 3)]
    for n, per, slots in [(7, 1e-3, 3), (12_345, 2e-3, 5), (10**8, 1e-6, 64), (1, 5.0, 1)]:
        assert sum(s * c for s, c in p.sizes(n, per, slots)) == n


def test_inline_policy_keeps_small_sweeps_off_the_cluster():
    p = InlinePolicy(max_seconds=3.0, max_items=200_000, decide_after=0.2)
    assert not p.start_cluster(10, 5, 0.01)  # too early to tell
    assert not p.start_cluster(1000, 100, 0.25)  # 2.5 s in all: finish here
    assert p.start_cluster(100_000, 100, 0.25)  # 250 s: start the cluster
    assert p.start_cluster(10, 0, 3.0)  # the first item alone takes 3 s
    assert not p.start_cluster(10, 10, 3.5)  # ... but all are done
    assert p.finish_inline(1000, 1e-3) and not p.finish_inline(10_000, 1e-3)
    # past max_items the runner would hold too many results: the cluster starts at once
    assert p.start_cluster(300_000, 0, 0.0) and not p.finish_inline(300_000, 1e-9)


def test_scaling_policy_follows_remaining_work():
    s = ScalingPolicy(minimum=0, maximum=10, partitions_per_worker=2)
    assert [s.workers(r) for r in (100, 20, 19, 3, 1, 0)] == [10, 10, 10, 2, 1, 0]
    assert ScalingPolicy(1, 4, 1).workers(0) == 1
    with pytest.raises(ValueError):
        ScalingPolicy(5, 2)


def test_failure_budget_counts_and_fractions():
    assert FailureBudget(0).exceeded(1, 100)
    assert not FailureBudget(3).exceeded(3, 100)
    assert FailureBudget(0.01).allowed(1000) == 10 and FailureBudget(0.01).exceeded(11, 1000)


# ------------------------------------------------------------------ plan


def test_layout_covers_every_item_exactly_once():
    for n, sizes in [(1, [1]), (10, [3, 3, 3, 1]), (1000, [17, *[100] * 9, 50, 33]), (7, [7])]:
        layout = Layout.of_sizes(n, sizes)
        descs = layout.descriptors()
        covered = np.concatenate([np.arange(d.start, d.stop) for d in descs])
        np.testing.assert_array_equal(covered, np.arange(n))
        assert [d.items for d in descs] == sizes and layout.head == sizes[0]
        assert layout.partitions == len(descs) and Layout.from_dict(layout.to_dict()) == layout
    assert Layout.of_sizes(10, [3, 3, 3, 1]).runs == ((0, 3, 3), (9, 1, 1))


def test_layout_of_several_probes_fills_the_gaps_they_left():
    # three probes at 0, 100 and 200 of 300 items stopped after 10, 100 (all) and 7 items
    probes = [(0, 10), (100, 100), (200, 7)]
    gaps = [(10, 90), (207, 93)]
    runs = fill(gaps, [(50, 3), (20, 1), (13, 1)])
    layout = Layout(300, (*((a, k, 1) for a, k in probes), *runs), probes=3)
    descs = layout.descriptors()
    assert [(d.start, d.items) for d in descs[:3]] == probes
    # the planned order of sizes survives; a partition cut at a gap's end runs as two pieces
    assert [d.items for d in descs[3:]] == [50, 40, 10, 50, 20, 13]
    covered = np.sort(np.concatenate([np.arange(d.start, d.stop) for d in descs]))
    np.testing.assert_array_equal(covered, np.arange(300))
    assert Layout.from_dict(layout.to_dict()) == layout
    assert layout.describe() == "3 probes of 7..100 items, then 6 of 50 down to 10 items"
    with pytest.raises(ValueError):  # two partitions share items 95..99
        Layout(300, ((0, 100, 1), (95, 205, 1)))


def test_fill_cuts_any_sizes_into_any_gaps():
    rng = np.random.default_rng(3)
    for _ in range(500):
        n = int(rng.integers(1, 400))
        cuts = np.unique(rng.integers(0, n + 1, size=2 * int(rng.integers(1, 6))))
        gaps = [(int(a), int(b - a)) for a, b in zip(cuts[::2], cuts[1::2], strict=False)]
        total = sum(g for _, g in gaps)
        if not total:
            continue
        sizes, left = [], total
        while left:
            size = int(rng.integers(1, left + 1))
            count = int(rng.integers(1, left // size + 1))
            sizes.append((size, count))
            left -= size * count
        runs = fill(gaps, sizes)
        covered = sorted(i for a, s, c in runs for i in range(a, a + s * c))
        assert covered == [i for a, g in gaps for i in range(a, a + g)], (gaps, sizes)
        assert len(runs) <= sum(c for _, c in sizes) + 2 * len(gaps)


def test_layout_reads_the_earlier_manifest_formats():
    old = {"n_items": 100, "head": 10, "size": 30, "partitions": 4}
    second = {"n_items": 100, "segments": [[10, 1], [30, 3]], "partitions": 4}
    for d in (old, second):
        assert [(d.start, d.stop) for d in Layout.from_dict(d).descriptors()] == [
            (0, 10), (10, 40), (40, 70), (70, 100),
        ]  # fmt: skip


def test_todo_is_desired_minus_done():
    layout = Layout.of_sizes(100, [10, 30, 30, 30])
    assert [d.index for d in todo(layout, {0, 2})] == [1, 3]
    assert todo(layout, range(4)) == []
    with pytest.raises(ValueError):
        Layout(10, ((0, 3, 3),))  # 9 items, not 10
    with pytest.raises(ValueError):
        Layout(10, ((0, 0, 1), (0, 10, 1)))


# ------------------------------------------------------------------ sources


def _full_and_pieces(src, cuts):
    full = src.materialise(0, src.count())
    bounds = [0, *cuts, src.count()]
    pieces = pa.concat_tables([src.materialise(a, b) for a, b in itertools.pairwise(bounds)])
    return full, pieces


@pytest.mark.parametrize(
    "spec",
    [
        {"grid": {"a": [1, 2, 3], "b": {"start": 0, "stop": 1, "num": 5}, "c": ["x", "y"]}},
        {
            "random": {
                "n": 40000,
                "seed": 5,
                "columns": {
                    "u": {"uniform": [0, 1]},
                    "n": {"normal": [0, 2]},
                    "l": {"loguniform": [1, 100]},
                    "i": {"integers": [0, 5]},
                    "c": {"choice": ["a", "b"]},
                },
            }
        },
        {"lhs": {"n": 1000, "seed": 2, "bounds": {"a": [0, 1], "b": [-5, 5]}}},
        {"sobol": {"n": 1024, "seed": 2, "bounds": {"a": [0, 1], "b": [-5, 5]}}},
    ],
)
def test_generated_sources_do_not_depend_on_partitioning(spec):
    src = make_source(params(**spec), seed=0)
    full, pieces = _full_and_pieces(src, [1, 7, src.count() // 2, src.count() - 3])
    assert full.equals(pieces)
    assert full.num_rows == src.count() and full.column_names == src.columns


def test_grid_is_the_cartesian_product_in_c_order():
    src = make_source(
        params(grid={"a": [1, 2], "b": {"start": 1, "stop": 100, "num": 3, "log": True}})
    )
    t = src.materialise(0, 6).to_pydict()
    assert t["a"] == [1, 1, 1, 2, 2, 2]
    assert t["b"] == pytest.approx([1, 10, 100] * 2)


def test_random_distributions_respect_their_bounds():
    src = make_source(
        params(
            random={
                "n": 20000,
                "seed": 1,
                "columns": {
                    "u": {"uniform": [2, 3]},
                    "i": {"integers": [0, 3]},
                    "l": {"loguniform": [1, 1000]},
                },
            }
        )
    )
    t = src.materialise(0, 20000).to_pandas()
    assert t["u"].between(2, 3).all() and set(t["i"]) == {0, 1, 2}
    assert (
        t["l"].between(1, 1000).all() and 25 < np.median(t["l"]) < 40
    )  # log-uniform median = sqrt(1000)


def test_lhs_hits_every_stratum_once_per_dimension():
    n = 200
    src = make_source(params(lhs={"n": n, "seed": 3, "bounds": {"a": [0, 1], "b": [10, 20]}}))
    t = src.materialise(0, n).to_pandas()
    assert sorted(np.floor(t["a"] * n).astype(int)) == list(range(n))
    assert sorted(np.floor((t["b"] - 10) / 10 * n).astype(int)) == list(range(n))


def test_dataset_ranges_cross_file_and_row_group_boundaries(tmp_path):
    import pyarrow.parquet as pq

    df = pd.DataFrame({"a": np.arange(100), "s": [f"r{i}" for i in range(100)]})
    (tmp_path / "d").mkdir()
    pq.write_table(
        pa.Table.from_pandas(df.iloc[:45], preserve_index=False),
        tmp_path / "d" / "1.parquet",
        row_group_size=10,
    )
    pq.write_table(
        pa.Table.from_pandas(df.iloc[45:], preserve_index=False),
        tmp_path / "d" / "2.parquet",
        row_group_size=7,
    )
    (tmp_path / "d" / "_ignored.parquet").write_bytes(b"not read")
    src = make_source(params(dataset=str(tmp_path / "d")))
    assert src.count() == 100
    full, pieces = _full_and_pieces(src, [3, 44, 46, 61])
    assert full.equals(pieces)
    assert full.to_pandas()["a"].tolist() == list(range(100))
    assert src.materialise(40, 50).to_pandas()["s"].tolist() == [f"r{i}" for i in range(40, 50)]


# ------------------------------------------------------------------ calls


def test_item_seeds_are_deterministic_distinct_and_non_negative():
    items = np.arange(100_000)
    s = item_seeds(7, items)
    assert (s >= 0).all() and len(np.unique(s)) == len(s)
    np.testing.assert_array_equal(s[500:600], item_seeds(7, items[500:600]))
    assert not np.array_equal(s, item_seeds(8, items))


def test_run_items_row_kwargs_and_deadline():
    t = pa.table({"a": [1, 2, 3], "b": [10.0, 20.0, 30.0]})
    items = np.arange(3)
    assert run_items(sum, "row", t, items, 0, 0).values == [11.0, 22.0, 33.0]
    res = run_items(lambda a, b: a * b, "kwargs", t, items, 0, 0)
    assert res.values == [10.0, 40.0, 90.0] and not res.errors and len(res.durations) == 3
    res = run_items(
        lambda a, b: a, "kwargs", t, items, 0, 0, deadline=0.0
    )  # long past: stop after one item
    assert res.n == 1


def test_result_columns_schema_enforced_across_partitions():
    schema = pa.schema([("result", pa.float64())])
    res = ItemResults(values=[1, 2.5, "x", None], errors={3: "boom"})
    cols = result_columns(res, ("a",), schema)
    assert cols["result"].type == pa.float64()
    assert cols["result"].to_pylist() == [1.0, 2.5, None, None]
    assert "cannot be stored as double" in res.errors[2]
    res = ItemResults(values=[{"x": 1}, {"x": 2, "a": 3}, 5])
    cols = result_columns(res, ("a", "item"), pa.schema([("x", pa.int64())]))
    assert (
        cols["x"].to_pylist() == [1, None, None]
        and "clash" in res.errors[1]
        and "dict" in res.errors[2]
    )
    # a float is never truncated into an integer column: pyarrow would store 20.5 as 20
    res = ItemResults(values=[20, 20.5, np.int32(7), None])
    cols = result_columns(res, ("a",), pa.schema([("result", pa.int64())]))
    assert cols["result"].to_pylist() == [20, None, 7, None]
    assert "of type float cannot be stored as int64" in res.errors[1]
    # nor when the first item's int guesses the type of a new partition's column
    cols = result_columns(ItemResults(values=[1, 2.5, None]), ("a",), None)
    assert cols["result"].type == pa.float64() and cols["result"].to_pylist() == [1.0, 2.5, None]
    # before the schema is fixed (the probe), such a key is bad input: it would overwrite `a`
    with pytest.raises(SpecError, match="returns key\\(s\\) 'a', named like parameter"):
        result_columns(ItemResults(values=[{"x": 1}, {"x": 2, "a": 3}]), ("a",), None)


# ------------------------------------------------------------------ spec


def test_spec_hash_covers_what_defines_results(tmp_path):
    base = {"function": "tests.funcs:add", "params": {"grid": {"a": [1]}}, "output": str(tmp_path)}
    h = build_spec(base).spec_hash()
    assert (
        build_spec({**base, "retries": 3, "max_failures": 2, "output": "s3://b/x"}).spec_hash() == h
    )
    assert build_spec({**base, "seed": 1}).spec_hash() != h
    assert build_spec({**base, "params": {"grid": {"a": [2]}}}).spec_hash() != h
    assert build_spec({**base, "partition_size": 10}).spec_hash() != h


def test_load_spec_overrides_and_errors_name_the_file(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("function: tests.funcs:add\nparams: {grid: {a: [1, 2]}}\noutput: out/\n")
    spec = load_spec(
        p, output="s3://bucket/x", **{"cluster.kind": "address", "cluster.address": "tcp://h:1"}
    )
    assert (
        spec.output == "s3://bucket/x"
        and spec.cluster.address == "tcp://h:1"
        and spec.call == "kwargs"
    )
    p.write_text("function: tests.funcs:add\nparams: {grid: {a: 1}}\noutput: out/\n")
    with pytest.raises(SpecError, match=r"s\.yaml: params\.grid\.a"):
        load_spec(p)
    cmd = build_spec({"function": ["./sim", "{a}"], "params": {"grid": {"a": [1]}}, "output": "o"})
    assert cmd.call == "command"


def test_load_results_unifies_partitions_whose_result_types_differ(tmp_path):
    import pyarrow.parquet as pq

    from runner.results import load_results

    # a probe whose items all failed leaves a null-typed result column in part 0
    pq.write_table(
        pa.table({"item": [0, 1], "result": pa.nulls(2)}), tmp_path / "part-00000.parquet"
    )
    pq.write_table(
        pa.table({"item": [3, 2], "result": [2.5, 1.5]}), tmp_path / "part-00001.parquet"
    )
    df = load_results(str(tmp_path))
    assert df["item"].tolist() == [0, 1, 2, 3]
    assert df["result"].isna().tolist() == [True, True, False, False]
    assert df["result"].iloc[2:].tolist() == [1.5, 2.5]


# ------------------------------------------------------------------ storage failures


def test_storage_failures_are_classified_and_named():
    import errno

    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    from runner.exceptions import InfrastructureError, StorageError, StorageUnreachable
    from runner.policy import RetryPolicy
    from runner.store import is_refused, is_unreachable, storage_error

    slow_down = ClientError(
        {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject"
    )
    wrapped = OSError(errno.EBUSY, "Please reduce your request rate.")  # as s3fs raises it
    wrapped.__cause__ = slow_down
    unreachable = [
        EndpointConnectionError(endpoint_url="http://x"),
        ConnectionResetError(),
        slow_down,
        wrapped,
        OSError(errno.EREMOTEIO, "We encountered an internal error"),
    ]
    refused = [
        FileNotFoundError("The specified bucket does not exist"),
        PermissionError("Access Denied"),
        NoCredentialsError(),
        ClientError(
            {"Error": {"Code": "InvalidAccessKeyId"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
            "GetObject",
        ),
    ]
    for e in unreachable:
        assert is_unreachable(e) and not is_refused(e), e
        err = storage_error("output s3://b/x", "writing it", e)
        assert type(err) is StorageUnreachable and err.exit_code == 3
        assert str(err).startswith("output s3://b/x: storage unreachable while writing it")
    for e in refused:
        assert is_refused(e) and not is_unreachable(e), e
        err = storage_error("output s3://b/x", "writing it", e)
        assert type(err) is StorageError and err.exit_code == 2 and "credentials" in str(err)
    other = storage_error("output s3://b/x", "reading it", KeyError("x"))
    assert type(other) is InfrastructureError and "\n" not in str(other)
    assert [RetryPolicy(3, 0.5).delay(a) for a in range(3)] == [0.5, 1.0, 2.0]


def test_check_call_names_what_does_not_bind():
    from runner.calls import check_call

    def f(a, /, b, *, c=1):
        return a + b + c

    def g(a, b, **kw):
        return a + b

    with pytest.raises(SpecError, match=r"argument\(s\) a \(positional-only\) get no parameter"):
        check_call(f, "kwargs", ["a", "b"], "m:f")
    with pytest.raises(SpecError, match=r"parameter\(s\) x match no argument"):
        check_call(f, "kwargs", ["b", "x"], "m:f")
    check_call(g, "kwargs", ["a", "b", "anything"], "m:g")  # **kwargs takes the rest
    with pytest.raises(SpecError, match=r"argument\(s\) b get no parameter"):
        check_call(g, "kwargs", ["a"], "m:g")


def test_run_items_times_fast_items_in_blocks_and_slow_ones_each():
    import time as _time

    from runner.calls import CallPlan, run_each

    n = 5000
    t = pa.table({"a": np.arange(n, dtype=np.float64)})
    items = np.arange(n)
    res = run_each(CallPlan(lambda a: a + 1, "kwargs", t, items, 0), 0)
    assert res.values == list(np.arange(n) + 1.0) and len(res.durations) == n
    assert len(set(res.durations)) < n / 10  # block means, not one clock reading per item

    def slow(a):
        _time.sleep(0.001 * (a % 3))
        return a

    t = pa.table({"a": np.arange(12, dtype=np.float64)})
    res = run_each(CallPlan(slow, "kwargs", t, np.arange(12), 0), 0)
    # every item timed alone once items are slow: a % 3 == 2 takes twice a % 3 == 1
    d = np.array(res.durations)
    assert (d[5::3] > 0.0018).all() and (d[4::3] < 0.0018).all()


def test_run_items_errors_inside_a_block_keep_their_neighbours():
    from runner.calls import CallPlan, run_each

    n = 3000
    t = pa.table({"a": np.arange(n, dtype=np.float64)})

    def f(a):
        if a % 1000 == 7:
            raise ValueError(f"bad {a}")
        return a

    res = run_each(CallPlan(f, "kwargs", t, np.arange(n), 0), 1)
    assert sorted(res.errors) == [7, 1007, 2007] and res.attempts == {7: 2, 1007: 2, 2007: 2}
    assert "bad 1007.0" in res.errors[1007]
    assert [v for k, v in enumerate(res.values) if k not in res.errors] == [
        float(a) for a in range(n) if a % 1000 != 7
    ]
    assert len(res.durations) == n
