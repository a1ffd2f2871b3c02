"""End to end on Kubernetes: `sweep run --cluster kubernetes` and `sweep submit/status/cancel`.

Runs against the emulated cluster of tests/kube (real Dask operator, pods as local
processes) with moto as S3. Pods share the host's network stack, so moto's
127.0.0.1:<port> is reachable from them; they get the endpoint and credentials
through a Secret (``env_from_secret`` / ``--secret``), as on a real cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3-credentials"

pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.timeout(240)]

LEFTOVER_KINDS = (
    "daskclusters",
    "daskworkergroups",
    "daskautoscalers",
    "deployments.apps",
    "pods",
    "services",
)


# --------------------------------------------------------------------------- helpers


def _make_secret(kube_cluster, namespace: str, s3_server: str) -> None:
    from kr8s.objects import Secret

    Secret(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": namespace},
            "stringData": {
                "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
                "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
                "AWS_ENDPOINT_URL": s3_server,
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        },
        api=kube_cluster.api,
    ).create()


def _env(kube_cluster) -> dict[str, str]:
    env = dict(os.environ)
    env.update(kube_cluster.env())
    env["KUBECONFIG"] = kube_cluster.kubeconfig
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
    env.update(DASK_SWEEP__PROGRESS__INTERVAL="0.5", COLUMNS="200")
    return env


def _sweep(env, *args: str, timeout: float = 200) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _show(r: subprocess.CompletedProcess) -> str:
    return f"exit {r.returncode}\n--stdout--\n{r.stdout[-4000:]}\n--stderr--\n{r.stderr[-4000:]}"


def _write_spec(
    path: Path,
    name: str,
    *,
    n: int,
    partition_size: int,
    namespace: str,
    function: object = "examples.montecarlo:pi_hits",
    call: str = "kwargs",
    max_workers: int = 3,
    max_failures: int = 0,
) -> Path:
    spec = {
        "name": name,
        "function": function,
        "call": call,
        "params": {"random": {"n": n, "seed": 1, "columns": {"n_points": {"integers": [1, 4]}}}},
        "partition_size": partition_size,
        "max_failures": max_failures,
        "cluster": {
            "kind": "kubernetes",
            "kubernetes": {
                "namespace": namespace,
                "max_workers": max_workers,
                "partitions_per_worker": 2,
                "startup_timeout": 120,
                "env_from_secret": SECRET,
            },
        },
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def _leftovers(kube_cluster, namespace: str, keep_job_pods: bool = False) -> dict[str, list[str]]:
    left: dict[str, list[str]] = {}
    for kind in LEFTOVER_KINDS:
        names = [o["metadata"]["name"] for o in kube_cluster.list(kind, namespace)]
        if kind == "pods" and keep_job_pods:
            names = [
                o["metadata"]["name"]
                for o in kube_cluster.list(kind, namespace)
                if "job-name" not in (o["metadata"].get("labels") or {})
                and "batch.kubernetes.io/job-name" not in (o["metadata"].get("labels") or {})
            ]
        if names:
            left[kind] = names
    return left


def _assert_clean(kube_cluster, namespace: str, keep_job_pods: bool = False) -> None:
    kube_cluster.wait_for(
        lambda: not _leftovers(kube_cluster, namespace, keep_job_pods),
        timeout=45,
        message=lambda: (
            f"left in {namespace}: {_leftovers(kube_cluster, namespace, keep_job_pods)}"
        ),
    )


class WorkerWatcher:
    """Records the most worker pods seen at once, in a background thread."""

    def __init__(self, kube_cluster, namespace: str) -> None:
        self.kube_cluster, self.namespace = kube_cluster, namespace
        self.max_seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self.kube_cluster.list(
                    "pods", self.namespace, label_selector="dask.org/component=worker"
                )
                live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
                self.max_seen = max(self.max_seen, len(live))
            except Exception:
                pass
            self._stop.wait(0.25)

    def __enter__(self) -> WorkerWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _check_results(url: str, n: int) -> None:
    import s3fs

    from runner import load_results

    s3fs.S3FileSystem.clear_instance_cache()
    df = load_results(url)
    assert len(df) == n, f"{len(df)} rows, expected {n}"
    assert df["item"].is_unique
    assert sorted(df["item"]) == list(range(n))


# --------------------------------------------------------------------------- tests


def test_run_on_kubernetes(kube_cluster, kube_namespace, s3, s3_server, tmp_path):
    """`sweep run --cluster kubernetes`: every item once, workers scaled up, nothing left."""
    ns = kube_namespace
    _make_secret(kube_cluster, ns, s3_server)
    n = 160
    # ~0.2 s per item (one single-threaded worker would need ~32 s): enough for the
    # operator's autoscaler to add workers.
    spec = _write_spec(
        tmp_path / "spec.yaml",
        "e2e-run",
        n=n,
        partition_size=10,
        namespace=ns,
        function=["sh", "-c", 'sleep 0.{n_points}; echo "{{\\"n\\": {n_points}}}"'],
        call="command",
    )
    out = f"{s3}/run"
    t0 = time.monotonic()
    with WorkerWatcher(kube_cluster, ns) as watcher:
        r = _sweep(
            _env(kube_cluster), "run", str(spec), "--cluster", "kubernetes", "-o", out, "--json"
        )
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, _show(r)
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["status"] == "succeeded", report
    print(f"sweep run took {elapsed:.1f}s, at most {watcher.max_seen} worker pods")
    _check_results(out, n)
    assert watcher.max_seen >= 2, f"at most {watcher.max_seen} worker pods seen ({elapsed:.0f}s)"
    assert watcher.max_seen <= 3, f"{watcher.max_seen} worker pods seen, max_workers is 3"
    _assert_clean(kube_cluster, ns)


def test_submit_wait_status_failure_and_cancel(
    kube_cluster, kube_namespace, s3, s3_server, tmp_path
):
    """`sweep submit --wait` runs the runner Job: exit 0 and results on S3; `sweep status`
    reports it; a failing sweep exits 1; `sweep cancel` removes every object of both.

    The Job's namespace is not the kubeconfig's: the runner must create its Dask cluster
    in its own pod's namespace (SWEEP_NAMESPACE from the downward API).
    """
    ns = kube_namespace
    _make_secret(kube_cluster, ns, s3_server)
    env = _env(kube_cluster)
    try:
        _submit_scenario(kube_cluster, ns, env, s3, tmp_path)
    finally:
        for name in ("e2e-ok", "e2e-bad"):
            _sweep(env, "cancel", name, "-n", ns, timeout=120)


def _submit_scenario(kube_cluster, ns, env, s3, tmp_path):
    n = 60
    # The runner pod imports the function from the spec's ConfigMap (a module of the
    # repo is not on the pod's path).
    (tmp_path / "sim.py").write_text(
        "def sim(n_points, seed):\n    return {'n': n_points, 'seed': seed}\n"
    )
    spec = _write_spec(
        tmp_path / "spec.yaml",
        "e2e-ok",
        n=n,
        partition_size=10,
        namespace=ns,
        function="sim.py:sim",
        max_workers=2,
    )
    out = f"{s3}/ok"
    r = _sweep(
        env,
        "submit",
        str(spec),
        "-o",
        out,
        "--secret",
        SECRET,
        "--name",
        "e2e-ok",
        "-n",
        ns,
        "--wait",
    )
    assert r.returncode == 0, _show(r)
    _check_results(out, n)

    st = _sweep(env, "status", "e2e-ok", "-n", ns, "--json", timeout=60)
    assert st.returncode == 0, _show(st)
    info = json.loads(st.stdout.strip().splitlines()[-1])
    assert info["name"] == "e2e-ok", info
    assert info["exit_code"] == 0, info
    st = _sweep(env, "status", "e2e-ok", "-n", ns, timeout=60)
    assert st.returncode == 0 and "e2e-ok" in st.stdout, _show(st)
    # the runner deleted its Dask cluster
    kube_cluster.wait_for(
        lambda: not kube_cluster.list("daskclusters", ns),
        timeout=45,
        message=lambda: f"daskclusters left: {kube_cluster.list('daskclusters', ns)}",
    )

    # a sweep whose function raises, with max_failures 0: the runner exits 1
    (tmp_path / "boom.py").write_text(
        "def boom(n_points, seed):\n    raise ValueError(f'boom {seed}')\n"
    )
    bad = _write_spec(
        tmp_path / "bad.yaml",
        "e2e-bad",
        n=20,
        partition_size=10,
        namespace=ns,
        function="boom.py:boom",
        max_workers=1,
    )
    r = _sweep(
        env,
        "submit",
        str(bad),
        "-o",
        f"{s3}/bad",
        "--secret",
        SECRET,
        "--name",
        "e2e-bad",
        "-n",
        ns,
        "--wait",
    )
    assert r.returncode == 1, _show(r)
    assert "runner exited with code 1" in r.stderr, _show(r)

    # cancel removes the Job, its pods, the ConfigMap, the RBAC objects and any Dask cluster
    for name in ("e2e-ok", "e2e-bad"):
        c = _sweep(env, "cancel", name, "-n", ns, timeout=120)
        assert c.returncode == 0, _show(c)
    kinds = (
        *LEFTOVER_KINDS,
        "jobs.batch",
        "configmaps",
        "roles.rbac.authorization.k8s.io",
        "rolebindings.rbac.authorization.k8s.io",
        "serviceaccounts",
    )

    def left():
        found = {}
        for kind in kinds:
            names = [
                o["metadata"]["name"]
                for o in kube_cluster.list(kind, ns)
                if o["metadata"]["name"].startswith("e2e-")
            ]
            if names:
                found[kind] = names
        return found

    kube_cluster.wait_for(lambda: not left(), timeout=60, message=lambda: f"left: {left()}")
