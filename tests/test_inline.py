"""The runner runs the probe itself while the cluster starts, and small sweeps need no cluster.

Real CLI processes with the default inline policy (``sweep.inline.max-seconds``), real
child processes for the items, and a real LocalCluster when one is needed.
"""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

import runner
from tests.clitools import Running, sweep, write_spec
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(180)


def _env(cli_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = dict(cli_env, **extra)
    env.pop("DASK_SWEEP__INLINE__MAX_SECONDS", None)  # the default, as users get it
    return env


def _report(r) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_small_sweep_runs_in_the_runner_without_a_cluster(tmp_path, cli_env):
    spec = write_spec(
        tmp_path / "s.yaml",
        function="tests.funcs:add",
        params={"grid": {"a": list(range(50)), "b": [0, 1]}},
        partition_size="auto",
    )
    r = sweep("run", spec, "--json", env=_env(cli_env), timeout=60)
    assert r.returncode == 0, r.stderr
    report = _report(r)
    assert report["ok"] == 100 and report["tasks"] == 0 and report["dashboard"] is None
    assert report["inline_partitions"] == report["partitions_run"] >= 1
    assert "Dask cluster" not in r.stderr
    df = runner.load_results(str(tmp_path / "out"))
    assert df["item"].tolist() == list(range(100))
    np.testing.assert_allclose(df["result"], df["a"] + df["b"])
    # partitions beyond the probe also ran here (a small explicit size makes several)
    spec2 = write_spec(
        tmp_path / "s2.yaml",
        function="tests.funcs:add",
        params={"grid": {"a": list(range(50)), "b": [0, 1]}},
        partition_size=30,
        output=str(tmp_path / "out2"),
    )
    r = sweep("run", spec2, "--json", env=_env(cli_env), timeout=60)
    report = _report(r)
    assert r.returncode == 0 and report["partitions"] == 4 == report["inline_partitions"]
    assert report["tasks"] == 0


def test_an_item_that_kills_the_runners_child_costs_only_that_item(tmp_path, cli_env):
    spec = write_spec(
        tmp_path / "s.yaml",
        function="tests.funcs:crash_on",
        params={"grid": {"a": list(range(10)), "b": [0, 1, 2]}},
        max_failures=2,
    )
    r = sweep("run", spec, "--json", env=_env(cli_env), timeout=60)
    assert r.returncode == 0, r.stderr
    report = _report(r)
    assert report["ok"] == 28 and report["errors"] == 2 and report["tasks"] == 0
    df = runner.load_results(str(tmp_path / "out"))
    bad = df[df["status"] == "error"].set_index("item")["error"].to_dict()
    assert bad == {
        9: "worker process died (signal 11 SIGSEGV) while running this item",
        22: "worker process died (exit code 1) while running this item",
    }


def test_a_bigger_sweep_starts_the_cluster_while_the_runner_probes(tmp_path, cli_env):
    """Seconds of work: the cluster starts at once; the probe runs inline until it is up."""
    spec = write_spec(
        tmp_path / "s.yaml",
        function="tests.funcs:slow",
        params={"grid": {"a": list(range(40)), "b": list(range(10))}},
        partition_size="auto",
    )
    env = _env(cli_env, SWEEP_TEST_SLEEP="0.02", DASK_SWEEP__INLINE__MAX_SECONDS="1")
    r = sweep("run", spec, "--workers", "2", "--json", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    report = _report(r)
    assert report["inline_partitions"] == 1 and report["partitions_run"] > 1
    assert report["tasks"] == report["partitions_run"] - 1 + 1  # each partition, and the context
    assert "Dask cluster (local) ready" in r.stderr
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    head = manifest["layout"]["runs"][0][1]
    # the probe ran while the cluster started (seconds), not just probe.seconds (0.2 s)
    assert head >= 20, manifest["layout"]
    df = runner.load_results(str(tmp_path / "out"))
    assert df["item"].tolist() == list(range(400)) and (df["status"] == "ok").all()


def test_ctrl_c_during_an_inline_sweep_keeps_its_partitions_and_resumes(tmp_path, cli_env):
    spec = write_spec(
        tmp_path / "s.yaml",
        function="tests.funcs:slow",
        params={"grid": {"a": list(range(10)), "b": list(range(10))}},
        partition_size=10,
    )
    out = tmp_path / "out"
    env = _env(cli_env, SWEEP_TEST_SLEEP="0.02", DASK_SWEEP__INLINE__MAX_SECONDS="30")
    run = Running("run", spec, env=env)
    try:
        wait_for(lambda: len(list(out.glob("part-*.parquet"))) >= 2, 60, "2 partitions")
        run.send(signal.SIGINT)
        assert run.wait(60) == 130, run.stderr
    finally:
        run.kill_group()
    done = len(list(out.glob("part-*.parquet")))
    assert 2 <= done < 10 and not (out / "_SUCCESS").exists()
    r = sweep("run", spec, "--json", env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert _report(r)["partitions_run"] == 10 - done
    df = runner.load_results(str(out))
    assert df["item"].tolist() == list(range(100)) and (df["status"] == "ok").all()


def test_cluster_inline_false_runs_every_item_on_the_workers(tmp_path, cli_env):
    spec = write_spec(
        tmp_path / "s.yaml",
        function="tests.funcs:add",
        params={"grid": {"a": list(range(10)), "b": [0, 1]}},
        partition_size="auto",
        cluster={"inline": False, "workers": 1},
    )
    r = sweep("run", spec, "--json", env=_env(cli_env), timeout=90)
    assert r.returncode == 0, r.stderr
    report = _report(r)
    assert report["ok"] == 20 and report["inline_partitions"] == 0
    assert report["tasks"] == report["partitions_run"] + 1  # and the context task
