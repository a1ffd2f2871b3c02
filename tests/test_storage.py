"""Object-storage faults on real S3 traffic: the moto server behind a fault-injecting proxy
(tests/faultproxy.py) answering 503 SlowDown, 500, dropping or resetting connections."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
import yaml

import runner
from tests.clitools import Running, sweep
from tests.conftest import BUCKET, wait_for

pytestmark = pytest.mark.timeout(300)


def moto_fs(s3_server: str) -> s3fs.S3FileSystem:
    """The bucket seen directly (not through the proxy)."""
    s3fs.S3FileSystem.clear_instance_cache()
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})


def upload_params(fs: s3fs.S3FileSystem, n: int, files: int = 4) -> str:
    """``n`` rows of (a, b) as ``files`` Parquet files with small row groups."""
    per = n // files
    for f in range(files):
        a = np.arange(f * per, (f + 1) * per)
        sink = io.BytesIO()
        pq.write_table(pa.table({"a": a, "b": a * 0.5}), sink, row_group_size=50)
        fs.pipe_file(f"{BUCKET}/params/part-{f}.parquet", sink.getvalue())
    return f"s3://{BUCKET}/params"


def write_spec(tmp_path, **fields) -> str:
    spec = {
        "name": "storage",
        "function": "tests.funcs:add",
        "output": f"s3://{BUCKET}/out",
        "partition_size": 100,
        **fields,
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def results(s3_server: str):
    return runner.load_results(f"s3://{BUCKET}/out", {"client_kwargs": {"endpoint_url": s3_server}})


@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_transient_faults_lose_and_duplicate_nothing(
    fraction, tmp_path, cli_env, s3, s3_server, fault_proxy
):
    """Params and output on S3, a fraction of all requests faulted: every item exactly once."""
    params = upload_params(moto_fs(s3_server), 2000)
    spec = write_spec(tmp_path, params={"dataset": params}, partition_size=50)
    fault_proxy.configure(fraction=fraction)
    env = dict(cli_env, AWS_ENDPOINT_URL=fault_proxy.endpoint)
    r = sweep("run", spec, "--workers", "2", "--json", env=env, timeout=280)
    stats = fault_proxy.stats()
    print(f"{fraction:.0%} faulty: {stats}")  # shown with pytest -s
    assert r.returncode == 0, (stats, r.stderr)
    faults = sum(stats[k] for k in ("slowdown", "internal", "drop", "reset"))
    assert faults >= fraction * stats["requests"] * 0.5, stats
    if fraction >= 0.3:  # enough faults that every kind shows up
        assert all(stats[k] for k in ("slowdown", "internal", "drop", "reset")), stats
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["ok"] == 2000 and report["errors"] == 0
    df = results(s3_server)
    assert df["item"].tolist() == list(range(2000)) and (df["attempts"] == 1).all()
    np.testing.assert_allclose(df["result"], df["a"] * 1.5)
    assert moto_fs(s3_server).exists(f"{BUCKET}/out/_SUCCESS")


def test_manifest_and_success_writes_are_retried(tmp_path, cli_env, s3, s3_server, fault_proxy):
    """Past the S3 client's own 5 attempts, the runner retries its manifest and _SUCCESS."""
    spec = write_spec(tmp_path, params={"grid": {"a": list(range(10)), "b": [1, 2]}})
    fault_proxy.fail(rf"^PUT /{BUCKET}/out/_manifest\.json", 7, "internal")
    fault_proxy.fail(rf"^PUT /{BUCKET}/out/_SUCCESS", 7, "internal")
    env = dict(cli_env, AWS_ENDPOINT_URL=fault_proxy.endpoint)
    r = sweep("run", spec, "--workers", "1", "--json", env=env, timeout=200)
    assert r.returncode == 0, r.stderr
    assert fault_proxy.stats()["internal"] == 14
    fs = moto_fs(s3_server)
    assert fs.exists(f"{BUCKET}/out/_SUCCESS")
    assert json.loads(fs.cat_file(f"{BUCKET}/out/_manifest.json"))["status"] == "succeeded"


def test_storage_down_from_the_start(tmp_path, cli_env, s3, s3_server, fault_proxy):
    spec = write_spec(tmp_path, params={"grid": {"a": list(range(10)), "b": [1, 2]}})
    fault_proxy.down()
    env = dict(cli_env, AWS_ENDPOINT_URL=fault_proxy.endpoint)
    t0 = time.monotonic()
    r = sweep("run", spec, "--workers", "1", "-q", env=env, timeout=200)
    elapsed = time.monotonic() - t0
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 3, r.stderr
    assert len(lines) == 1 and lines[0].startswith(
        f"error: output s3://{BUCKET}/out/_manifest.json: storage unreachable while reading it"
    ), r.stderr
    assert "run the same command again to resume" in lines[0]
    assert elapsed < 60, elapsed
    assert moto_fs(s3_server).ls(BUCKET) == []


def test_storage_lost_mid_sweep_stops_bounded_then_resumes(
    tmp_path, cli_env, s3, s3_server, fault_proxy
):
    spec = write_spec(
        tmp_path,
        function="tests.funcs:slow",
        params={"grid": {"a": list(range(40)), "b": list(range(10))}},
        partition_size=10,
    )
    env = dict(cli_env, AWS_ENDPOINT_URL=fault_proxy.endpoint, SWEEP_TEST_SLEEP="0.05")
    fs = moto_fs(s3_server)

    def parts() -> list[str]:
        fs.invalidate_cache()
        return [p for p in fs.ls(f"{BUCKET}/out") if p.endswith(".parquet")]

    run = Running("run", spec, "--workers", "2", "-q", env=env)
    try:
        wait_for(
            lambda: fs.exists(f"{BUCKET}/out/_manifest.json") and len(parts()) >= 4,
            120,
            "4 partitions",
        )
        fault_proxy.down()
        t0 = time.monotonic()
        code = run.wait(200)
        elapsed = time.monotonic() - t0
    finally:
        run.kill_group()
    assert code == 3, run.stderr
    (line,) = [ln for ln in run.err if ln.startswith("error: ")]
    assert f"s3://{BUCKET}/out" in line and "storage unreachable" in line, line
    assert "Traceback" not in run.stderr
    assert elapsed < 120, elapsed
    done = len(parts())
    total = json.loads(fs.cat(f"{BUCKET}/out/_manifest.json"))["layout"]["partitions"]
    assert done < total  # the probe's length (so the count) depends on when the cluster is up
    fault_proxy.up()
    r = sweep("run", spec, "--workers", "2", "--json", env=env, timeout=250)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["partitions_run"] == total - done
    df = results(s3_server)
    assert df["item"].tolist() == list(range(400))
