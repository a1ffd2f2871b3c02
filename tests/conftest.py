"""Shared fixtures: one real S3-protocol server (moto) and one real Dask LocalCluster per session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "sweep-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's ThreadedMotoServer on a free 127.0.0.1 port, as s3fs's own suite does."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    # Pods of a real test cluster (kind) reach it at SWEEP_TEST_S3_HOST (tests/kube/sweeps.py):
    # only then does it listen beyond the loopback interface.
    ip = "0.0.0.0" if os.environ.get("SWEEP_TEST_S3_HOST") else "127.0.0.1"
    server = ThreadedMotoServer(ip_address=ip, port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def s3_auth_server() -> Iterator[str]:
    """A second moto S3 server that checks credentials (it knows none: every key is refused)."""
    import requests

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"moto server exited with {server.returncode}"
            try:
                requests.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, f"moto at {endpoint} did not answer in 30 s"
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def s3(s3_server: str) -> Iterator[str]:
    """A fresh server state and an empty bucket for each test; yields ``s3://bucket``."""
    import boto3
    import requests
    import s3fs

    requests.post(f"{s3_server}/moto-api/reset", timeout=10)
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=BUCKET)
    s3fs.S3FileSystem.clear_instance_cache()
    yield f"s3://{BUCKET}"
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def dask_cluster(s3_server: str) -> Iterator[object]:
    """A real LocalCluster: 2 single-threaded worker processes (they inherit the S3 env)."""
    from distributed import LocalCluster

    sys.path.insert(0, str(ROOT))
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def client(dask_cluster: object) -> Iterator[object]:
    from distributed import Client

    with Client(dask_cluster) as c:
        yield c


@pytest.fixture
def cli_env(s3_server: str) -> dict[str, str]:
    """Environment for `sweep` subprocesses: plain progress lines, fast probes, no fixed dashboard port."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        DASK_SWEEP__LOCAL__DASHBOARD_ADDRESS=":0",
        DASK_SWEEP__PROGRESS__INTERVAL="0.5",
        DASK_SWEEP__PROBE__SECONDS="0.2",
        # sweeps of test size would run in the runner without a cluster: the tests of the
        # cluster need one (tests/test_inline.py runs the default)
        DASK_SWEEP__INLINE__MAX_SECONDS="0",
        COLUMNS="200",
    )
    return env


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until truthy or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def fault_proxy(s3_server: str) -> Iterator[object]:
    """A started ``FaultProxy`` (tests/faultproxy.py) in front of ``s3_server``, injecting no
    faults until told to (``fault_proxy.configure(fraction=..., kinds=...)``); stopped after."""
    from tests.faultproxy import FaultProxy

    with FaultProxy(s3_server, fraction=0.0) as proxy:
        yield proxy
