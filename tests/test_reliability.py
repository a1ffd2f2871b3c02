"""Faults a long sweep meets, with real processes and signals: poison items, hangs, memory,
graceful worker loss, SIGTERM/SIGINT drains, SIGKILL at any moment, unguarded scripts."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import runner
from runner.plan import Layout
from runner.spec import build_spec
from runner.store import META_KEY
from tests.clitools import Running, sweep, write_spec
from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.timeout(240)


def errors_by_item(out: Path) -> dict[int, str]:
    df = runner.load_results(str(out))
    bad = df[df["status"] == "error"]
    return dict(zip(bad["item"], bad["error"], strict=True))


# --------------------------------------------------------------------------- poison items


def test_items_that_kill_their_worker_are_isolated_not_fatal(tmp_path, cli_env):
    """os._exit(1) and SIGSEGV in two items: each found in one extra attempt, the rest kept."""
    spec = write_spec(
        tmp_path / "s.yaml",
        function="tests.funcs:crash_on",
        params={"grid": {"a": list(range(10)), "b": [0, 1, 2]}},
        partition_size=5,
        max_failures=2,
    )
    r = sweep("run", spec, "--workers", "2", "--json", env=cli_env, timeout=180)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["status"] == "succeeded" and report["ok"] == 28 and report["errors"] == 2
    assert "its worker died while running it" in r.stderr
    assert "Traceback" not in r.stderr
    df = runner.load_results(str(tmp_path / "out"))
    assert df["item"].tolist() == list(range(30))
    errors = errors_by_item(tmp_path / "out")
    assert errors == {
        9: "worker process died (signal 11 SIGSEGV) while running this item",  # a=3, b=0
        22: "worker process died (exit code 1) while running this item",  # a=7, b=1
    }
    ok = df[df["status"] == "ok"]
    np.testing.assert_array_equal(ok["result"], ok["a"] + ok["b"])
    # at most one worker death per poisoned partition: the rerun isolates its items
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    (run_record,) = manifest["runs"]
    assert run_record["worker_losses"] <= 4 and run_record["item_process_deaths"] == 2
    # the rerun has nothing left to do
    again = sweep("run", spec, "--workers", "2", "--json", env=cli_env, timeout=120)
    assert (
        again.returncode == 0 and json.loads(again.stdout.splitlines()[-1])["partitions_run"] == 0
    )


def test_poison_items_past_the_budget_still_finish_the_sweep(tmp_path, cli_env):
    spec = write_spec(
        tmp_path / "s.yaml",
        function="tests.funcs:crash_on",
        params={"grid": {"a": list(range(10)), "b": [0, 1, 2]}},
        partition_size=5,
    )
    r = sweep("run", spec, "--workers", "2", env=cli_env, timeout=180)
    assert r.returncode == 1, r.stderr  # the failure budget, not an infrastructure error
    assert "max_failures allows 0" in r.stderr
    assert "KilledWorker" not in r.stderr and "Traceback" not in r.stderr


def test_python_timeout_ends_a_hanging_item(client, tmp_path):
    spec = build_spec(
        {
            "function": "tests.funcs:hang_on",
            "params": {"grid": {"a": list(range(8)), "b": [1, 2]}},
            "output": str(tmp_path / "out"),
            "partition_size": 4,
            "timeout": 1,
            "max_failures": 2,
        }
    )
    t0 = time.monotonic()
    report = runner.execute.run_sweep(spec, client=client)
    assert time.monotonic() - t0 < 60
    assert report.status == "succeeded" and report.errors == 2
    df = runner.load_results(str(tmp_path / "out"))
    bad = df[df["status"] == "error"]
    assert bad["a"].tolist() == [5, 5]
    assert (bad["error"] == "timed out after 1s").all()
    assert (bad["duration_s"] >= 1.0).all() and (bad["attempts"] == 1).all()
    ok = df[df["status"] == "ok"]
    np.testing.assert_array_equal(ok["result"], ok["a"] * ok["b"])


def test_isolation_process_retries_crashes_and_bounds_deaths(client, tmp_path):
    """Every item exits its process: each is retried once, and past max-deaths the rest of
    its partition is marked as not run."""
    import dask

    spec = build_spec(
        {
            "function": "tests.funcs:crash_when_even",
            "params": {"grid": {"a": list(range(0, 48, 2)), "b": [0]}},
            "output": str(tmp_path / "out"),
            "partition_size": 6,
            "isolation": "process",
            "retries": 1,
            "max_failures": 24,
        }
    )
    with dask.config.set({"sweep.isolation.max-deaths": 5}):
        report = runner.execute.run_sweep(spec, client=client)
    assert report.isolated_partitions == report.partitions_run and report.errors == 24
    layout = Layout.from_dict(
        json.loads((tmp_path / "out" / "_manifest.json").read_text())["layout"]
    )
    # a full partition after the probes (they stop early; 2 probes leave a gap of >= 6 items)
    full = next(d for d in layout.descriptors()[layout.probes :] if d.items == 6)
    df = runner.load_results(str(tmp_path / "out"))
    part1 = df[(df["item"] >= full.start) & (df["item"] < full.stop)]
    died = "worker process died (exit code 3) while running this item"
    # two items die twice each (one retry), the fifth death ends the partition
    assert part1["error"].tolist()[:2] == [died, died]
    assert part1["attempts"].tolist() == [2, 2, 1, 0, 0, 0]
    assert part1["error"].iloc[2].startswith("not run: the worker process died 5 times in this")
    assert all(e.startswith("not run: the worker process died 5") for e in part1["error"].iloc[3:])
    assert (df["status"] == "error").all()


def test_item_over_the_memory_limit_is_killed(tmp_path):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, memory_limit="600MiB", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as c,
    ):
        c.run(sys.path.insert, 0, str(ROOT))
        spec = build_spec(
            {
                "function": "tests.funcs:memory_hog",
                "params": {"grid": {"a": [0, 1, 2, 3], "b": [1]}},
                "output": str(tmp_path / "out"),
                "partition_size": 4,
                "isolation": "process",
                "max_failures": 1,
            }
        )
        report = runner.execute.run_sweep(spec, client=c)
    assert report.errors == 1
    (error,) = errors_by_item(tmp_path / "out").values()
    assert error.startswith("worker process died (killed: over the memory limit of 570 MiB)")


def test_a_worker_killed_from_outside_costs_no_item(tmp_path, cli_env):
    """SIGKILL a busy worker process (OOM killer, node loss): its partition runs again,
    isolated; no item is blamed, every item is there once."""
    import psutil

    spec = _slow_spec(tmp_path, n_a=20)
    out = tmp_path / "out"
    run = Running(
        "run", spec, "--workers", "2", "--json", env=dict(cli_env, SWEEP_TEST_SLEEP="0.05")
    )
    try:
        run.wait_line(r"200 items in \d+ partitions", 90)
        wait_for(lambda: len(list(out.glob("part-*.parquet"))) >= 3, 60, "3 partitions")
        workers = [
            p
            for p in psutil.Process(run.proc.pid).children()
            if "spawn_main" in " ".join(p.cmdline())  # not the resource tracker
        ]
        assert len(workers) == 2, workers
        workers[0].kill()
        assert run.wait(120) == 0, run.stderr
    finally:
        run.kill_group()
    assert "its worker died while running it" in run.stderr
    report = json.loads(run.out[-1])
    assert report["ok"] == 200 and report["errors"] == 0 and report["isolated_partitions"] >= 1
    df = runner.load_results(str(out))
    assert df["item"].tolist() == list(range(200)) and (df["attempts"] == 1).all()
    np.testing.assert_allclose(df["result"], _reference(20))


def test_a_gracefully_retired_worker_is_not_evidence(tmp_path):
    """Scale-down (retire_workers) mid-sweep: no isolation, no extra attempts, every item once.

    The cluster gives up on a task after one *unexpected* worker loss, as the runner's own
    clusters do; a retired worker is an expected one."""
    import dask
    from distributed import Client, LocalCluster

    from runner.clusters.base import SCHEDULER_CONFIG

    with dask.config.set(SCHEDULER_CONFIG):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
    with cluster, Client(cluster) as c:
        c.run(sys.path.insert, 0, str(ROOT))
        spec = build_spec(
            {
                "function": "tests.funcs:slow",
                "params": {"grid": {"a": list(range(20)), "b": list(range(5))}},
                "output": str(tmp_path / "out"),
                "partition_size": 10,
            }
        )
        events: list[str] = []
        retired: list[object] = []

        def progress(event, info):
            events.append(event)
            if event == "partition" and not retired:
                retired.append(c.retire_workers(n=1))

        report = runner.execute.run_sweep(spec, client=c, progress=progress)
    assert retired and len(retired[0]) == 1
    assert report.status == "succeeded" and report.isolated_partitions == 0
    assert "isolate" not in events
    df = runner.load_results(str(tmp_path / "out"))
    assert df["item"].tolist() == list(range(100)) and (df["attempts"] == 1).all()


def test_a_worker_lost_while_it_computes_the_context_costs_nothing(tmp_path):
    """The worker running the sweep's context task dies: every partition waiting for it
    fails with that task's KilledWorker. The runner makes a new context and runs them again:
    no isolation, no item blamed, every item once (before, the partitions were isolated and
    failed again, forever, on the erred context)."""
    import dask
    from distributed import Client, LocalCluster

    from runner.clusters.base import SCHEDULER_CONFIG
    from tests.plugins import HoldContext

    marker = tmp_path / "context-worker.pid"
    with dask.config.set(SCHEDULER_CONFIG):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
    with cluster, Client(cluster) as c:
        c.run(sys.path.insert, 0, str(ROOT))
        c.register_plugin(HoldContext(str(marker)))
        spec = build_spec(
            {
                "function": "tests.funcs:add",
                "params": {"grid": {"a": list(range(10)), "b": list(range(10))}},
                "output": str(tmp_path / "out"),
                "partition_size": 10,
            }
        )
        events: list[str] = []

        def kill_the_context_worker():
            wait_for(marker.exists, 60, "the context task to start")
            time.sleep(0.2)
            os.kill(int(marker.read_text()), signal.SIGKILL)

        killer = threading.Thread(target=kill_the_context_worker, daemon=True)
        killer.start()
        report = runner.execute.run_sweep(
            spec, client=c, progress=lambda event, info: events.append(event)
        )
        killer.join(5)
    assert "context-lost" in events, events
    assert report.status == "succeeded" and report.isolated_partitions == 0, report
    assert "isolate" not in events, events
    df = runner.load_results(str(tmp_path / "out"))
    assert df["item"].tolist() == list(range(100)) and (df["attempts"] == 1).all()
    assert (df["result"] == df["a"] + df["b"]).all()


# --------------------------------------------------------------------------- signals


def _slow_spec(tmp_path: Path, n_a: int = 40, **fields) -> Path:
    return write_spec(
        tmp_path / "slow.yaml",
        function="tests.funcs:slow",
        params={"grid": {"a": list(range(n_a)), "b": list(range(10))}},
        partition_size=10,
        **fields,
    )


def _reference(n_a: int = 40) -> np.ndarray:
    a, b = np.meshgrid(np.arange(n_a), np.arange(10), indexing="ij")
    return np.sqrt(a * a + b * b).ravel()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_drains_running_partitions_then_resume(tmp_path, cli_env, sig, code):
    spec = _slow_spec(tmp_path)
    out = tmp_path / "out"
    env = dict(cli_env, SWEEP_TEST_SLEEP="0.1")  # 1 s partitions
    run = Running("run", spec, "--workers", "2", env=env)
    try:
        run.wait_line(r"400 items in \d+ partitions", 90)
        wait_for(lambda: len(list(out.glob("part-*.parquet"))) >= 3, 60, "3 partitions")
        run.send(sig)
        line = run.wait_line(r"stopping: waiting up to 20s for \d+ running partition", 30)
        assert run.wait(60) == code, run.stderr
    finally:
        run.kill_group()
    running = [int(i) for i in re.findall(r"part-(\d{5})", line)]
    assert running, line
    done = {int(p.stem.split("-")[1]) for p in out.glob("part-*.parquet")}
    assert set(running) <= done, (running, sorted(done))  # the running ones were let finish
    manifest = json.loads((out / "_manifest.json").read_text())
    total = manifest["layout"]["partitions"]  # 40 or 41: the probe ends when the cluster is up
    assert len(done) < total and not (out / "_SUCCESS").exists()
    assert "finished partitions are kept" in run.stderr
    assert manifest["status"] == "interrupted" and manifest["runs"][-1]["status"] == "interrupted"
    # `sweep results` reads an interrupted sweep and says how complete it is
    partial = json.loads(sweep("results", out, "--json", env=cli_env).stdout)
    assert not partial["complete"] and partial["partitions_done"] == len(done)
    assert 0 < partial["percent_done"] < 100 and partial["items"] == 400
    r = sweep("run", spec, "--workers", "2", "--json", env=dict(cli_env), timeout=180)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["partitions_run"] == total - len(done)
    df = runner.load_results(str(out))
    assert df["item"].tolist() == list(range(400))
    np.testing.assert_allclose(df["result"], _reference())


def test_second_signal_stops_at_once(tmp_path, cli_env):
    spec = _slow_spec(tmp_path, n_a=8)
    env = dict(cli_env, SWEEP_TEST_SLEEP="2", DASK_SWEEP__GRACE_SECONDS="120")  # 20 s partitions
    run = Running("run", spec, "--workers", "2", env=env)
    try:
        run.wait_line(r"80 items in", 120)
        time.sleep(1)
        run.send(signal.SIGTERM)
        run.wait_line(r"stopping: waiting up to 120s", 30)
        t0 = time.monotonic()
        run.send(signal.SIGTERM)
        assert run.wait(30) == 143, run.stderr
        assert time.monotonic() - t0 < 15
    finally:
        run.kill_group()
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["status"] == "interrupted"


# --------------------------------------------------------------------------- crash anywhere


def _check_whole(out: Path) -> int:
    """Every partition file reads completely and agrees with its footer; returns how many."""
    parts = sorted(out.glob("part-*.parquet"))
    for p in parts:
        t = pq.read_table(p)
        meta = json.loads(t.schema.metadata[META_KEY])
        assert t.num_rows == meta["stop"] - meta["start"] == meta["ok"] + meta["errors"], p
        assert t["item"].to_pylist() == list(range(meta["start"], meta["stop"])), p
    if (out / "_manifest.json").exists():
        json.loads((out / "_manifest.json").read_text())
    return len(parts)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_at_any_moment_then_resume_gives_the_uninterrupted_result(tmp_path, cli_env):
    """SIGKILL the runner (and its workers) before the probe, right after it, mid-sweep and
    while finishing, again and again; the result equals an uninterrupted run's."""
    spec = _slow_spec(tmp_path, n_a=100)  # 1,000 items, 101 partitions: 25 s on 2 workers
    out = tmp_path / "out"
    env = dict(cli_env, SWEEP_TEST_SLEEP="0.05")
    rng = random.Random(8)
    moments = ["probing", "sized", "mid", "mid", "probing", "mid", "sized", "mid", "mid"]
    moments += ["mid", "mid", "mid", "finishing"]
    kills = 0
    for moment in moments:
        run = Running("run", spec, "--workers", "2", env=env)
        try:
            if moment == "probing":
                run.wait_line(r"probing the function|items in \d+ partitions", 90)
            elif moment == "sized":
                run.wait_line(r"items in \d+ partitions", 90)
            elif moment == "mid":
                run.wait_line(r"items in \d+ partitions", 90)
                time.sleep(rng.uniform(0.3, 2.0))
            else:  # the last partition reported: finalising, the cluster going down
                run.wait_line(r"1,000/1,000 items", 300)
            assert run.proc.poll() is None, f"the sweep ended before the kill ({moment})"
            run.kill_group()
            kills += 1
            run.wait(30)
        finally:
            run.kill_group()
        _check_whole(out)
    assert kills == len(moments) >= 10
    final = sweep("run", spec, "--workers", "2", "--json", env=env, timeout=300)
    assert final.returncode == 0, final.stderr
    total = json.loads((out / "_manifest.json").read_text())["layout"]["partitions"]
    assert _check_whole(out) == total and (out / "_SUCCESS").exists()
    reference = tmp_path / "reference"
    r = sweep(
        "run", spec, "-o", reference, "--workers", "2", env=dict(env, SWEEP_TEST_SLEEP="0"),
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    timing = ["duration_s"]
    got = runner.load_results(str(out)).drop(columns=timing)
    want = runner.load_results(str(reference)).drop(columns=timing)
    pd.testing.assert_frame_equal(got, want)
    assert got["item"].tolist() == list(range(1000))


# --------------------------------------------------------------------------- scripts


def test_unguarded_script_like_the_dask_example_just_works(tmp_path):
    """runner.sweep() at the top level of a script, no __main__ guard: workers must not re-run it."""
    script = tmp_path / "example.py"
    script.write_text(
        textwrap.dedent(f"""
        import random, time
        import pandas as pd
        import runner

        def costly_simulation(list_param):
            time.sleep(random.random() / 100)
            return sum(list_param)

        print("top-level code ran")
        input_params = pd.DataFrame(
            {{"param_a": range(40), "param_b": range(40, 80), "param_c": 1.0}}
        )
        report = runner.sweep(costly_simulation, input_params, output={str(tmp_path / "out")!r},
                              call="row", cluster={{"workers": 2}})
        print("status", report.status, report.ok)
        """)
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), DASK_SWEEP__LOCAL__DASHBOARD_ADDRESS=":0")
    r = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=180,
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("top-level code ran") == 1, r.stdout
    assert "status succeeded 40" in r.stdout
    assert "Traceback" not in r.stderr and "Nanny failed" not in r.stderr
    df = runner.load_results(str(tmp_path / "out"))
    np.testing.assert_allclose(df["result"], df["param_a"] + df["param_b"] + df["param_c"])
