"""The engine in-process on a real LocalCluster: call styles, results, errors, budget, resume."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import runner
from runner.exceptions import FailureBudgetExceeded, OutputConflictError, SourceError, SpecError
from runner.plan import Layout
from runner.spec import build_spec
from runner.store import Store
from tests import funcs

pytestmark = pytest.mark.timeout(120)

GRID = {"grid": {"a": [0, 1, 2, 3, 4], "b": {"start": 0.0, "stop": 1.0, "num": 4}}}


def run(client, output, function="tests.funcs:add", params=GRID, **fields):
    spec = build_spec({"function": function, "params": params, "output": str(output), **fields})
    return runner.execute.run_sweep(spec, client=client)


def expected_grid():
    a = np.repeat([0, 1, 2, 3, 4], 4)
    b = np.tile(np.linspace(0, 1, 4), 5)
    return a, b


def test_kwargs_call_writes_the_output_contract(client, tmp_path):
    out = tmp_path / "out"
    report = run(client, out, partition_size=3)
    assert report.status == "succeeded" and report.items == 20 and report.ok == 20
    files = sorted(p.name for p in out.iterdir())
    assert "_SUCCESS" in files and "_manifest.json" in files
    parts = [f for f in files if f.startswith("part-")]
    # two probes at once (2 worker threads) of 3 items (the explicit size) at items 0 and 10,
    # then each gap of 7 items in partitions of 3, 3 and 1
    assert len(parts) == report.partitions == 8
    df = pd.read_parquet(out).sort_values("item")
    assert list(df.columns) == [
        "a",
        "b",
        "item",
        "result",
        "status",
        "error",
        "attempts",
        "duration_s",
    ]
    a, b = expected_grid()
    np.testing.assert_array_equal(df["item"], np.arange(20))
    np.testing.assert_allclose(df["result"], a + b)
    assert (df["status"] == "ok").all() and df["error"].isna().all() and (df["attempts"] == 1).all()
    assert (df["duration_s"] >= 0).all()
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["counts"]["ok"] == 20
    assert manifest["spec_hash"] == report.spec_hash and manifest["version"] == runner.__version__
    assert manifest["layout"]["partitions"] == 8 and manifest["worker_s"] > 0
    layout = Layout.from_dict(manifest["layout"])
    assert [(d.start, d.stop) for d in layout.descriptors()] == [
        (0, 3), (10, 13), (3, 6), (6, 9), (9, 10), (13, 16), (16, 19), (19, 20),
    ]  # fmt: skip


def test_probes_run_on_every_slot_at_once(client, tmp_path):
    """On a running cluster the probes start together, one per worker thread."""
    out = tmp_path / "out"
    params = {"grid": {"a": list(range(400)), "b": [0]}}
    with dask.config.set({"sweep.probe.seconds": 0.3}):
        report = run(client, out, function="tests.funcs:pid_after_sleep", params=params)
    assert report.status == "succeeded" and report.ok == 400
    layout = Layout.from_dict(json.loads((out / "_manifest.json").read_text())["layout"])
    assert layout.probes == 2
    first, second = layout.descriptor(0), layout.descriptor(1)
    # each stopped after about probe.seconds of items, at the start of its half
    assert first.start == 0 and second.start == 200 and 2 <= first.items < 200
    df = runner.load_results(str(out))
    pids = [
        set(df[(df["item"] >= d.start) & (df["item"] < d.stop)]["result"]) for d in (first, second)
    ]
    assert len(pids[0]) == len(pids[1]) == 1 and pids[0] != pids[1]  # on both workers
    np.testing.assert_array_equal(df["item"], np.arange(400))


def test_a_run_that_died_during_the_probes_resumes_from_them(client, tmp_path):
    """Probe 0 written, probe 1 not, no layout recorded: the rerun plans from probe 0 and
    the recorded probe ranges, and every item is in the output once."""
    out = tmp_path / "out"
    params = {"grid": {"a": list(range(400)), "b": [0]}}
    with dask.config.set({"sweep.probe.seconds": 0.2}):
        run(client, out, function="tests.funcs:pid_after_sleep", params=params)
    manifest = json.loads((out / "_manifest.json").read_text())
    first = Layout.from_dict(manifest["layout"])
    assert manifest["probes"][1][0] == 200
    kept = first.descriptor(0)
    for p in out.glob("part-*.parquet"):
        if p.name != "part-00000.parquet":
            p.unlink()
    (out / "_SUCCESS").unlink()
    del manifest["layout"]
    (out / "_manifest.json").write_text(json.dumps(manifest))
    report = run(client, out, function="tests.funcs:pid_after_sleep", params=params)
    assert report.status == "succeeded" and report.items_run == 400 - kept.items
    layout = Layout.from_dict(json.loads((out / "_manifest.json").read_text())["layout"])
    assert layout.probes == 2 and layout.descriptor(0) == kept
    # the unfinished probe became a partition at its recorded start, no longer than probe 0
    assert layout.descriptor(1).start == 200 and layout.descriptor(1).items <= kept.items
    df = runner.load_results(str(out))
    np.testing.assert_array_equal(df["item"], np.arange(400))
    assert (df["status"] == "ok").all()


@pytest.mark.parametrize(
    ("function", "typ"), [("int_then_float", pa.int64()), ("fail_low", pa.float64())]
)
def test_probes_that_disagree_on_types_get_one_schema(client, tmp_path, function, typ):
    """Two probes (items 0..9 and 20..29) at once: one inferred int64 and the other
    float64, or one has only failed items (null columns). Every file ends with the
    schema of the first probe that had one, as later partitions always do."""
    out = tmp_path / "out"
    params = {"grid": {"a": list(range(40)), "b": [0]}}
    spec = {"partition_size": 10, "max_failures": 40}
    report = run(client, out, function=f"tests.funcs:{function}", params=params, **spec)
    assert report.items == 40
    files = sorted(out.glob("part-*.parquet"))
    assert {pq.read_schema(p).field("result").type for p in files} == {typ}
    df = runner.load_results(str(out))
    assert df[df["a"] < 5]["error"].str.startswith("ValueError: low a").all()
    if function == "int_then_float":  # floats do not fit the int64 the first probe fixed
        assert df[df["a"] >= 20]["status"].eq("error").all()
        assert df[(df["a"] >= 5) & (df["a"] < 20)]["result"].tolist() == list(range(5, 20))
    else:
        assert df[df["a"] >= 20]["result"].tolist() == [a + 0.5 for a in range(20, 40)]


def test_row_call_and_duckdb_reads_output(client, tmp_path):
    import duckdb

    out = tmp_path / "out"
    run(client, out, function="tests.funcs:row_sum", call="row")
    rel = duckdb.sql(
        f"select count(*), sum(result), count(distinct item) from read_parquet('{out}/*.parquet')"
    )
    ((n, total, distinct),) = rel.fetchall()
    a, b = expected_grid()
    assert n == distinct == 20 and total == pytest.approx((a + b).sum())


def test_dict_results_become_columns_and_numpy_scalars_work(client, tmp_path):
    run(client, tmp_path / "d", function="tests.funcs:stats", partition_size=4)
    df = runner.load_results(str(tmp_path / "d"))
    assert {"total", "prod", "label"} <= set(df.columns) and "result" not in df.columns
    assert df.loc[df["item"] == 7, "label"].item() == "1:1.0"
    run(client, tmp_path / "n", function="tests.funcs:numpy_scalar")
    df = runner.load_results(str(tmp_path / "n"))
    assert df["result"].dtype == np.float64
    a, b = expected_grid()
    np.testing.assert_allclose(df["result"], a * 2 + b, rtol=1e-6)


def test_command_call(client, tmp_path):
    out = tmp_path / "cmd"
    report = run(
        client,
        out,
        function=["python3", "examples/command/simulate.py", "--a", "{a}", "--b", "{b}"],
        params={"grid": {"a": [-1.0, 0.5, 2.0], "b": [0.0, 1.0]}},
        max_failures=2,
    )
    assert report.ok == 4 and report.errors == 2 and report.status == "succeeded"
    df = runner.load_results(str(out))
    bad = df[df["a"] < 0]
    assert (bad["status"] == "error").all()
    assert bad["error"].str.contains("exited with code 3: negative amplitude").all()
    good = df[df["a"] > 0].sort_values("item")
    np.testing.assert_allclose(good["energy"], good["a"] ** 2 + np.sin(good["b"]))


def test_command_failures_count_against_the_budget(client, tmp_path):
    with pytest.raises(FailureBudgetExceeded) as ei:
        run(
            client,
            tmp_path / "c",
            function=["python3", "examples/command/simulate.py", "--a", "{a}", "--b", "{b}"],
            params={"grid": {"a": [-1.0, 1.0], "b": [0.0]}},
        )
    assert ei.value.report.errors == 1 and ei.value.exit_code == 1


def test_item_errors_are_captured_and_budget_enforced(client, tmp_path):
    out = tmp_path / "e"
    with pytest.raises(FailureBudgetExceeded) as ei:
        run(client, out, function="tests.funcs:fail_on_odd", partition_size=5)
    rep = ei.value.report
    assert rep.status == "failed" and rep.errors >= 1
    assert not (out / "_SUCCESS").exists()
    assert json.loads((out / "_manifest.json").read_text())["status"] == "failed"
    assert list(out.glob("part-*.parquet")), "finished partitions are kept"
    df = runner.load_results(str(out))
    err = df[df["status"] == "error"]
    assert (err["a"] % 2 == 1).all() and err["result"].isna().all()
    assert err["error"].str.startswith("ValueError: odd a=").all()
    assert err["error"].str.contains(r":\d+ in fail_on_odd\)").all()


def test_errors_within_budget_succeed(client, tmp_path):
    out = tmp_path / "b"
    report = run(client, out, function="tests.funcs:fail_on_odd", max_failures=0.5)
    assert report.status == "succeeded" and report.errors == 8 and report.allowed_failures == 10
    assert (out / "_SUCCESS").exists()
    report = run(client, tmp_path / "b2", function="tests.funcs:fail_on_odd", max_failures=8)
    assert report.status == "succeeded"
    with pytest.raises(FailureBudgetExceeded):
        run(client, tmp_path / "b3", function="tests.funcs:fail_on_odd", max_failures=7)


def test_retries_recover_transient_errors(client, tmp_path):
    out = tmp_path / "r"
    report = run(client, out, function="tests.funcs:flaky", retries=1)
    assert report.errors == 0
    df = runner.load_results(str(out))
    assert (df["attempts"] == 2).all()
    with pytest.raises(FailureBudgetExceeded):
        run(
            client,
            tmp_path / "r0",
            function="tests.funcs:flaky",
            params={"grid": {"a": [100, 101], "b": [0]}},
        )


def test_unstorable_result_is_an_item_error(client, tmp_path):
    out = tmp_path / "u"
    report = run(client, out, function="tests.funcs:unstorable", max_failures=10)
    assert report.errors == 4
    df = runner.load_results(str(out))
    msg = df.loc[df["a"] == 1, "error"].iloc[0]
    assert "cannot be stored" in msg and "object" in msg


def test_seed_and_rng_are_deterministic_and_per_item(client, tmp_path):
    params = {"random": {"n": 300, "seed": 3, "columns": {"a": {"uniform": [0, 1]}}}}
    r1 = run(client, tmp_path / "s1", function="tests.funcs:with_seed", params=params, seed=11)
    r2 = run(
        client,
        tmp_path / "s2",
        function="tests.funcs:with_seed",
        params=params,
        seed=11,
        partition_size=7,
    )
    d1, d2 = runner.load_results(str(tmp_path / "s1")), runner.load_results(str(tmp_path / "s2"))
    assert r1.partitions != r2.partitions
    np.testing.assert_array_equal(d1["result"], d2["result"])
    np.testing.assert_array_equal(d1["a"], d2["a"])  # params independent of partitioning too
    assert d1["result"].sub(d1["a"]).nunique() > 250  # seeds differ per item
    run(client, tmp_path / "s3", function="tests.funcs:with_seed", params=params, seed=12)
    assert not np.array_equal(d1["result"], runner.load_results(str(tmp_path / "s3"))["result"])
    run(client, tmp_path / "g1", function="tests.funcs:with_rng", params=params)
    run(client, tmp_path / "g2", function="tests.funcs:with_rng", params=params, partition_size=50)
    np.testing.assert_array_equal(
        runner.load_results(str(tmp_path / "g1"))["result"],
        runner.load_results(str(tmp_path / "g2"))["result"],
    )


def test_resume_runs_only_missing_partitions(client, tmp_path):
    out = tmp_path / "res"
    first = run(client, out, partition_size=3)
    before = runner.load_results(str(out))
    for name in ("part-00002.parquet", "part-00005.parquet"):
        (out / name).unlink()
    (out / "_SUCCESS").unlink()
    second = run(client, out, partition_size=3)
    assert second.partitions_run == 2 and second.items_run == 6 and second.status == "succeeded"
    after = runner.load_results(str(out))
    pd.testing.assert_frame_equal(
        before.drop(columns="duration_s"), after.drop(columns="duration_s")
    )
    assert after["item"].is_unique and len(after) == first.items
    third = run(client, out, partition_size=3)
    assert third.partitions_run == 0 and (out / "_SUCCESS").exists()
    manifest = json.loads((out / "_manifest.json").read_text())
    assert len(manifest["runs"]) == 3


def test_resume_with_auto_size_keeps_the_recorded_layout(client, tmp_path):
    out = tmp_path / "auto"
    params = {
        "random": {
            "n": 5000,
            "seed": 1,
            "columns": {"a": {"uniform": [0, 1]}, "b": {"normal": [0, 1]}},
        }
    }
    with dask.config.set({"sweep.probe.max-items": 500}):
        first = run(client, out, params=params)
    assert first.partitions >= 2
    layout = json.loads((out / "_manifest.json").read_text())["layout"]
    assert layout["partitions"] == first.partitions >= 2
    last = sorted(out.glob("part-*.parquet"))[-1]
    last.unlink()
    second = run(client, out, params=params)
    assert second.partitions_run == 1
    assert json.loads((out / "_manifest.json").read_text())["layout"] == layout


def test_changed_spec_is_refused_unless_overwrite(client, tmp_path):
    out = tmp_path / "x"
    run(client, out)
    with pytest.raises(OutputConflictError, match=r"holds a different sweep.*--overwrite"):
        run(client, out, function="tests.funcs:stats")
    with pytest.raises(OutputConflictError):
        run(client, out, seed=99)
    spec = build_spec({"function": "tests.funcs:stats", "params": GRID, "output": str(out)})
    report = runner.execute.run_sweep(spec, client=client, overwrite=True)
    assert report.status == "succeeded"
    assert "total" in runner.load_results(str(out)).columns


def test_stale_temporary_files_are_invisible_and_cleaned(client, tmp_path):
    out = tmp_path / "t"
    out.mkdir()
    stale = out / ".tmp-deadbeef-part-00000.parquet"
    stale.write_bytes(b"half a parquet file")
    run(client, out)
    assert not stale.exists()
    # readers ignore our temporary names even while they exist
    stale.write_bytes(b"junk")
    assert len(pd.read_parquet(out)) == 20


def test_write_partition_is_atomic_and_idempotent(tmp_path):
    import pyarrow as pa

    store = Store(str(tmp_path / "o"))
    table = pa.table({"item": [0, 1], "result": [1.0, 2.0]})
    meta = {"index": 0, "start": 0, "stop": 2, "ok": 2, "errors": 0}
    store.write_partition(0, table, meta)
    first = (tmp_path / "o" / "part-00000.parquet").read_bytes()
    store.write_partition(0, table, meta)
    assert (tmp_path / "o" / "part-00000.parquet").read_bytes() == first
    assert sorted(os.listdir(tmp_path / "o")) == ["part-00000.parquet"]
    (c,) = store.partition_counts()
    assert (c.start, c.stop, c.ok, c.errors) == (0, 2, 2, 0)
    assert pq.read_table(tmp_path / "o" / "part-00000.parquet").num_rows == 2


def test_s3_round_trip_dataset_in_results_out(client, s3):
    import s3fs

    params = pd.DataFrame({"a": np.arange(50, dtype=float), "b": np.arange(50) % 7})
    fs = s3fs.S3FileSystem()
    with fs.open(f"{s3}/params/p1.parquet", "wb") as fh:
        params.iloc[:30].to_parquet(fh)
    with fs.open(f"{s3}/params/p2.parquet", "wb") as fh:
        params.iloc[30:].to_parquet(fh)
    out = f"{s3}/results/run1"
    report = run(client, out, params={"dataset": f"{s3}/params/"}, partition_size=8)
    assert report.status == "succeeded" and report.items == 50
    assert fs.exists(f"{out}/_SUCCESS") and fs.exists(f"{out}/_manifest.json")
    df = runner.load_results(out)
    np.testing.assert_allclose(df["result"], params["a"] + params["b"])
    # pandas reads the S3 output as-is (the _ files are ignored)
    assert len(pd.read_parquet(out)) == 50
    # resume on S3
    fs.rm(f"{out}/part-00003.parquet")
    assert (
        run(client, out, params={"dataset": f"{s3}/params/"}, partition_size=8).partitions_run == 1
    )


def test_dataset_formats_csv_and_jsonl(client, tmp_path):
    df = pd.DataFrame({"a": np.arange(12), "b": np.linspace(0, 1, 12)})
    (tmp_path / "csv").mkdir()
    df.iloc[:5].to_csv(tmp_path / "csv" / "1.csv", index=False)
    df.iloc[5:].to_csv(tmp_path / "csv" / "2.csv", index=False)
    df.to_json(tmp_path / "p.jsonl", orient="records", lines=True)
    for src in (str(tmp_path / "csv"), str(tmp_path / "p.jsonl")):
        out = tmp_path / ("o" + os.path.basename(src))
        run(client, out, params={"dataset": src}, partition_size=4)
        res = runner.load_results(str(out))
        np.testing.assert_allclose(res["result"], df["a"] + df["b"])


def test_bad_sources_are_clear(client, tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        run(client, tmp_path / "o", params={"dataset": str(tmp_path / "nope.parquet")})
    (tmp_path / "weird.txt").write_text("x")
    with pytest.raises(SourceError, match="cannot tell the format"):
        run(client, tmp_path / "o", params={"dataset": str(tmp_path / "weird.txt")})
    pd.DataFrame({"item": [1], "a": [2]}).to_parquet(tmp_path / "clash.parquet")
    with pytest.raises(SourceError, match="named like output columns"):
        run(client, tmp_path / "o", params={"dataset": str(tmp_path / "clash.parquet")})
    assert not (tmp_path / "o").exists(), "nothing is written on bad input"
    with pytest.raises(SpecError, match="cannot import module"):
        run(client, tmp_path / "o", function="no_such_module:f")
    with pytest.raises(SpecError, match="has no attribute"):
        run(client, tmp_path / "o", function="tests.funcs:nope")
    assert not (tmp_path / "o").exists()


def test_api_dataframe_like_the_dask_example(client, tmp_path):
    input_params = pd.DataFrame(
        np.random.default_rng(0).random(size=(1000, 4)),
        columns=["param_a", "param_b", "param_c", "param_d"],
    )

    def costly_simulation(list_param):  # defined here, shipped by cloudpickle
        return sum(list_param)

    out = str(tmp_path / "api")
    report = runner.sweep(costly_simulation, input_params, output=out, call="row", client=client)
    assert report.ok == 1000
    df = runner.load_results(out)
    np.testing.assert_allclose(df["result"], input_params.sum(axis=1))
    np.testing.assert_allclose(df[["param_a", "param_b"]], input_params[["param_a", "param_b"]])
    assert len(list((tmp_path / "api" / "_params").iterdir())) == 1
    # the same call resumes (nothing to do); a different frame or edited function is refused
    assert (
        runner.sweep(
            costly_simulation, input_params, output=out, call="row", client=client
        ).partitions_run
        == 0
    )
    with pytest.raises(OutputConflictError):
        runner.sweep(costly_simulation, input_params * 2, output=out, call="row", client=client)

    def costly_simulation(list_param):
        return sum(list_param) * 2

    with pytest.raises(OutputConflictError):
        runner.sweep(costly_simulation, input_params, output=out, call="row", client=client)


def test_api_rejects_bad_params(tmp_path):
    with pytest.raises(SpecError, match="params must be"):
        runner.sweep(funcs.add, 42, output=str(tmp_path / "o"))
    with pytest.raises(SpecError, match="max_failures"):
        runner.sweep(funcs.add, GRID, output=str(tmp_path / "o"), max_failures=-1)


# ------------------------------------------------------------------ call: batch and the call plan


def test_batch_call_gets_whole_partitions_and_matches_the_per_item_result(client, tmp_path):
    report = run(client, tmp_path / "b", function="tests.funcs:add_batch", call="batch")
    assert report.ok == 20
    df = pd.read_parquet(tmp_path / "b").sort_values("item")
    a, b = expected_grid()
    np.testing.assert_allclose(df["result"], a + b)
    assert (df["status"] == "ok").all() and (df["duration_s"] >= 0).all()
    # the same function on DataFrames
    report = run(
        client,
        tmp_path / "p",
        function="tests.funcs:add_batch",
        call="batch",
        batch_format="pandas",
    )
    assert report.ok == 20
    np.testing.assert_allclose(pd.read_parquet(tmp_path / "p").sort_values("item")["result"], a + b)


def test_a_batch_that_raises_runs_per_item_so_only_the_bad_items_fail(client, tmp_path):
    out = tmp_path / "out"
    report = run(
        client, out, function="tests.funcs:batch_fails_on_a3", call="batch", max_failures=10,
        partition_size=6,
    )  # fmt: skip
    assert report.errors == 4 and report.ok == 16  # a == 3 is 4 of the 20 rows
    df = pd.read_parquet(out).sort_values("item")
    bad = df[df["a"] == 3]
    assert (bad["status"] == "error").all() and bad["error"].str.contains("a is 3").all()
    good = df[df["a"] != 3]
    np.testing.assert_allclose(good["result"], good["a"] * 10)


def test_batch_frames_give_columns_and_seeds_are_per_row(client, tmp_path):
    out = tmp_path / "out"
    run(client, out, function="tests.funcs:batch_stats_frame", call="batch", seed=3)
    df = pd.read_parquet(out).sort_values("item")
    np.testing.assert_allclose(df["total"], df["a"] + df["b"])
    np.testing.assert_allclose(df["diff"], df["a"] - df["b"])
    assert df["s"].nunique() == 20  # one seed per row, from (seed, item): the same on a rerun
    run(client, tmp_path / "again", function="tests.funcs:batch_stats_frame", call="batch", seed=3)
    again = pd.read_parquet(tmp_path / "again").sort_values("item")
    np.testing.assert_array_equal(df["s"], again["s"])


def test_a_batch_of_the_wrong_length_is_an_error_per_item(client, tmp_path):
    report = run(
        client, tmp_path / "w", function="tests.funcs:batch_wrong_length", call="batch",
        max_failures=20,
    )  # fmt: skip
    assert report.errors == 20
    df = pd.read_parquet(tmp_path / "w")
    assert df["error"].str.contains("returned 2 values for 1 rows").all()


def test_batch_refuses_rng_up_front(client, tmp_path):
    with pytest.raises(SpecError, match="takes rng, but call: batch passes seed"):
        run(client, tmp_path / "r", function="tests.funcs:batch_with_rng", call="batch")
    assert not (tmp_path / "r").exists()


def test_kwargs_bind_by_name_whatever_the_order(client, tmp_path):
    run(client, tmp_path / "o", function="tests.funcs:ordered_args")
    df = pd.read_parquet(tmp_path / "o")
    np.testing.assert_allclose(df["result"], df["a"] * 100 + df["b"] * 10 + 5)
    run(client, tmp_path / "k", function="tests.funcs:keyword_only")
    df = pd.read_parquet(tmp_path / "k")
    np.testing.assert_allclose(df["result"], df["a"] - df["b"])


def test_isolated_batches_run_in_blocks_and_a_dying_block_finds_its_rows(client, tmp_path):
    out = tmp_path / "out"
    report = run(
        client, out, function="tests.funcs:batch_crash_on_a3", call="batch",
        isolation="process", max_failures=4, partition_size=10,
    )  # fmt: skip
    assert report.errors == 4 and report.ok == 16
    df = pd.read_parquet(out).sort_values("item")
    bad = df[df["status"] == "error"]
    assert (bad["a"] == 3).all() and bad["error"].str.contains("exit code 1").all()
    good = df[df["status"] == "ok"]
    np.testing.assert_allclose(good["result"], good["a"] * 10)


def test_progress_reads_counts_rate_and_eta_from_the_output(client, tmp_path):
    out = tmp_path / "out"
    run(client, out, partition_size=3)
    p = runner.results.progress(str(out))
    assert p["state"] == "succeeded" and p["items_done"] == p["items"] == 20
    assert p["partitions_done"] == p["partitions"] and p["eta_s"] is None
    # the same output as a running sweep whose run began 10 s ago, two partitions missing
    manifest = json.loads((out / "_manifest.json").read_text())
    t0 = time.time() - 10
    manifest["status"] = "running"
    manifest["runs"][-1]["started"] = dt.datetime.fromtimestamp(t0, dt.UTC).isoformat()
    (out / "_manifest.json").write_text(json.dumps(manifest))
    (out / "_SUCCESS").unlink()
    (out / "part-00002.parquet").unlink()
    os.utime(out / "part-00003.parquet", (t0 - 60, t0 - 60))  # written by an earlier run
    p = runner.results.progress(str(out), now=t0 + 10)
    assert p["state"] == "running" and p["items_done"] == 17 and p["errors"] == 0
    # 17 items done, 3 of them before this run: 14 items in 10 s, 3 left
    assert p["items_per_s"] == pytest.approx(1.4, abs=0.05)
    assert p["eta_s"] == pytest.approx(3 / 1.4, abs=0.1)
