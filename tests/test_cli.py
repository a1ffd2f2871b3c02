"""The `sweep` command driven as users drive it: subprocesses, exit codes, messages, files."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest

import runner
from tests.clitools import sweep, write_spec
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(180)


def test_run_json_summary_and_results(tmp_path, cli_env, dask_cluster):
    spec = write_spec(tmp_path / "s.yaml")
    r = sweep("run", spec, "--scheduler", dask_cluster.scheduler_address, "--json", env=cli_env)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["items"] == 20 and summary["exit_code"] == 0
    # non-tty progress: plain lines on stderr
    assert "20/20 items (100.0%)" in r.stderr and "items/s" in r.stderr
    r = sweep("results", tmp_path / "out", "--json", env=cli_env)
    s = json.loads(r.stdout)
    assert s["complete"] and s["ok"] == 20 and s["describe"]["result"]["count"] == 20
    csv, png = tmp_path / "r.csv", tmp_path / "r.png"
    r = sweep(
        "results",
        tmp_path / "out",
        "--csv",
        csv,
        "--plot",
        png,
        "--where",
        "result > 5",
        env=cli_env,
    )
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(csv)
    assert len(df) == 9 and (df["result"] > 5).all()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_and_validate(tmp_path, cli_env, dask_cluster):
    spec = write_spec(tmp_path / "s.yaml")
    r = sweep("validate", spec, env=cli_env)
    assert r.returncode == 0 and "20 items" in r.stdout
    r = sweep("plan", spec, "--json", env=cli_env)
    info = json.loads(r.stdout)
    assert info["items"] == 20 and info["layout"] is None and info["partitions_about"] == 5
    sweep("run", spec, "--scheduler", dask_cluster.scheduler_address, env=cli_env)
    (tmp_path / "out" / "part-00002.parquet").unlink()
    info = json.loads(sweep("plan", spec, "--json", env=cli_env).stdout)
    # two probes at once (items 0..3 and 10..13), then each gap in partitions of 4: 4..7 is #2
    assert info["todo_count"] == 1 and info["todo"] == [[2, 4, 8]]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {
                "params": {
                    "grid": {"a": [1]},
                    "random": {"n": 3, "columns": {"x": {"uniform": [0, 1]}}},
                }
            },
            "params: give exactly one parameter source",
        ),
        ({"paramz": {}}, "paramz: unknown field"),
        ({"retries": "lots"}, "retries: Input should be a valid integer"),
        ({"output": "nosuchproto://bucket/x"}, "output: unknown storage protocol"),
        ({"output": "s3://"}, "names no bucket"),
        ({"partition_size": 0}, "partition_size"),
        ({"max_failures": 1.5}, "max_failures"),
        ({"name": "Bad Name"}, "name: use lowercase"),
        ({"function": "no-colon"}, "function: use 'package.module:function'"),
        ({"function": "tests.funcs:nope"}, "has no attribute 'nope'"),
        ({"function": ["./x"], "call": "row"}, "a command list needs call: command"),
        ({"params": {"random": {"n": 5, "columns": {"x": {"uniform": [1, 0]}}}}}, "low < high"),
        ({"params": {"dataset": "/definitely/not/here.parquet"}}, "does not exist"),
    ],
)
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, cli_env, fields, message):
    spec = write_spec(tmp_path / "bad.yaml", **fields)
    for cmd in ("validate", "run"):
        r = sweep(cmd, spec, env=cli_env)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert message in lines[0], lines[0]
        if "unknown field" in message or "Input should" in message:
            assert "bad.yaml" in lines[0]
    assert not (tmp_path / "out").exists()


def test_unreadable_spec_files(tmp_path, cli_env):
    r = sweep("run", tmp_path / "missing.yaml", env=cli_env)
    assert r.returncode == 2 and "cannot read the spec file" in r.stderr
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    r = sweep("run", tmp_path / "broken.yaml", env=cli_env)
    assert r.returncode == 2 and "not valid YAML at line" in r.stderr
    (tmp_path / "empty.yaml").write_text("")
    assert "empty" in sweep("validate", tmp_path / "empty.yaml", env=cli_env).stderr


def test_budget_exceeded_exit_1_and_changed_spec_exit_2(tmp_path, cli_env, dask_cluster):
    spec = write_spec(tmp_path / "s.yaml", function="tests.funcs:fail_on_odd")
    r = sweep("run", spec, "--scheduler", dask_cluster.scheduler_address, env=cli_env)
    assert r.returncode == 1, r.stderr
    assert "max_failures allows 0" in r.stderr and "failed" in r.stdout
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    r = sweep("results", tmp_path / "out", env=cli_env)
    assert ("ValueError: odd a=" in r.stdout and "incomplete" in r.stdout) or "failed" in r.stdout
    spec2 = write_spec(tmp_path / "s.yaml", function="tests.funcs:add")
    r = sweep("run", spec2, "--scheduler", dask_cluster.scheduler_address, env=cli_env)
    assert r.returncode == 2 and "holds a different sweep" in r.stderr and "--overwrite" in r.stderr
    r = sweep(
        "run", spec2, "--scheduler", dask_cluster.scheduler_address, "--overwrite", env=cli_env
    )
    assert r.returncode == 0 and (tmp_path / "out" / "_SUCCESS").exists()


def test_unreachable_scheduler_is_infrastructure_error(tmp_path, cli_env):
    spec = write_spec(tmp_path / "s.yaml")
    env = dict(cli_env, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s")
    r = sweep("run", spec, "--scheduler", "tcp://127.0.0.1:9", env=env)
    assert r.returncode == 3 and "cannot reach the Dask scheduler" in r.stderr


@pytest.mark.slow
def test_embedded_local_default_runs_the_example(tmp_path, cli_env):
    r = sweep(
        "run",
        ROOT / "examples" / "montecarlo.yaml",
        "--output",
        tmp_path / "mc",
        "--json",
        env=cli_env,
    )
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["ok"] == 1000 and s["dashboard"].startswith("http://")
    df = runner.load_results(str(tmp_path / "mc"))
    cols = ["param_a", "param_b", "param_c", "param_d"]
    np.testing.assert_allclose(df["result"], df[cols].sum(axis=1))


def test_python_file_function_reference(tmp_path, cli_env, dask_cluster):
    (tmp_path / "model.py").write_text(
        textwrap.dedent("""
        def energy(a, b):
            return {"e": a * a - b}
    """)
    )
    spec = write_spec(tmp_path / "s.yaml", function="model.py:energy")
    r = sweep(
        "run",
        spec,
        "--scheduler",
        dask_cluster.scheduler_address,
        "--json",
        env=cli_env,
        cwd=tmp_path.parent,
    )
    assert r.returncode == 0, r.stderr
    df = runner.load_results(str(tmp_path / "out"))
    np.testing.assert_allclose(df["e"], df["a"] ** 2 - df["b"])
