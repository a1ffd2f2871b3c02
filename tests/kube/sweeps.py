"""Helpers of the Kubernetes end-to-end tests: run `sweep` as users do, watch the cluster.

The same helpers serve the emulated cluster and a real one (kind, ``make test-kind``):

- ``SWEEP_TEST_IMAGE``: the sweep-runner image for the runner Job, the scheduler and the
  workers (a real cluster needs it; the emulator ignores images).
- ``SWEEP_TEST_S3_HOST``: an address of this machine that pods can reach; the moto server
  then listens on every interface and pods get ``http://$SWEEP_TEST_S3_HOST:<port>``
  (emulated pods share the host's network, so 127.0.0.1 works there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3-credentials"
IMAGE = os.environ.get("SWEEP_TEST_IMAGE") or None

LEFTOVER_KINDS = (
    "daskclusters",
    "daskworkergroups",
    "daskautoscalers",
    "deployments.apps",
    "pods",
    "services",
)
SWEEP_OBJECT_KINDS = (
    *LEFTOVER_KINDS,
    "jobs.batch",
    "configmaps",
    "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "serviceaccounts",
    "networkpolicies.networking.k8s.io",
)


# --------------------------------------------------------------------------- cluster modes

#: How the runner runs its Dask cluster: through the Dask operator, or as its own pods.
MODES = ("operator", "pods")


def has_dask_crds(kube_cluster: Any) -> bool:
    """Whether the cluster serves the Dask CRDs (the emulated bare cluster does not)."""
    return getattr(kube_cluster, "dask_crds", True) is not False


class OnCluster:
    """A cluster handle (see cluster/handle.py) and the mode the sweeps on it run in.

    Pod mode runs on the emulated cluster without the Dask CRDs, where the default
    ``operator: auto`` has to find that out; on a real cluster (which has them) the spec
    says ``operator: false``.
    """

    def __init__(self, handle: Any, mode: str) -> None:
        self.handle = handle
        self.mode = mode

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    @property
    def kube_options(self) -> dict[str, Any]:
        """``cluster.kubernetes`` fields a spec for this mode needs."""
        if self.mode == "pods" and has_dask_crds(self.handle):
            return {"operator": False}
        return {}

    def dask_objects(self, namespace: str) -> list[dict[str, Any]]:
        """The Dask cluster's own objects: DaskClusters (operator) or its pods (pods)."""
        if self.mode == "operator":
            return self.handle.list("daskclusters", namespace)
        return self.handle.list("pods", namespace, label_selector="dask.org/cluster-name")


@pytest.fixture(params=MODES)
def kube_cluster(request: pytest.FixtureRequest, kube_cluster: Any) -> OnCluster:
    """The session's cluster in one of the two :data:`MODES` (overrides conftest's for the
    tests that import it: every test runs in both, unless it parametrizes
    ``kube_cluster`` indirectly with one mode)."""
    if request.param == "pods" and kube_cluster.emulated:
        return OnCluster(request.getfixturevalue("bare_cluster"), "pods")
    return OnCluster(kube_cluster, request.param)


def evict(kube_cluster: Any, name: str, namespace: str) -> None:
    """Evict a pod through the eviction API, as a node drain or a preemption does."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=kube_cluster.kubeconfig))
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace))
    api.create_namespaced_pod_eviction(name, namespace, body)


def pod_s3_endpoint(s3_server: str) -> str:
    """The moto endpoint as pods reach it."""
    host = os.environ.get("SWEEP_TEST_S3_HOST")
    if not host:
        return s3_server
    return f"http://{host}:{urlsplit(s3_server).port}"


def make_secret(kube_cluster: Any, namespace: str, s3_server: str, name: str = SECRET) -> None:
    """The S3 credentials and endpoint as a Secret, as users pass them on a real cluster."""
    from kr8s.objects import Secret

    Secret(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": {
                "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
                "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
                "AWS_ENDPOINT_URL": pod_s3_endpoint(s3_server),
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        },
        api=kube_cluster.api,
    ).create()


def sweep_env(kube_cluster: Any, kubeconfig: str | None = None) -> dict[str, str]:
    """Environment of a host-side `sweep` process that talks to the cluster."""
    env = dict(os.environ)
    env.update(kube_cluster.env())
    env["KUBECONFIG"] = kubeconfig or kube_cluster.kubeconfig
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
    env.update(DASK_SWEEP__PROGRESS__INTERVAL="0.5", COLUMNS="200")
    return env


def sweep(env: dict[str, str], *args: str, timeout: float = 200) -> subprocess.CompletedProcess:
    """Run ``sweep ARGS`` to the end."""
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def submit(
    env: dict[str, str], spec: Path, name: str, ns: str, out: str, *extra: str
) -> subprocess.CompletedProcess:
    """``sweep submit SPEC`` as sweep NAME into namespace NS, with the test S3 Secret."""
    args = ["submit", str(spec), "-o", out, "--secret", SECRET, "--name", name, "-n", ns]
    if IMAGE:
        args += ["--image", IMAGE]
    return sweep(env, *args, *extra)


def show(r: Any) -> str:
    return f"exit {r.returncode}\n--stdout--\n{r.stdout[-4000:]}\n--stderr--\n{r.stderr[-4000:]}"


class SweepProcess:
    """``sweep ARGS`` in the background, its output lines kept with their arrival times."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner.cli", *args],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, str, str]] = []  # (monotonic time, stream, line)
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, "err"), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream: Any, name: str) -> None:
        for line in stream:
            with self._lock:
                self.lines.append((time.monotonic(), name, line.rstrip("\n")))

    def text(self, stream: str) -> str:
        with self._lock:
            return "\n".join(line for _, s, line in self.lines if s == stream)

    @property
    def stdout(self) -> str:
        return self.text("out")

    @property
    def stderr(self) -> str:
        return self.text("err")

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def first(self, needle: str) -> float | None:
        """Arrival time of the first output line containing ``needle``."""
        with self._lock:
            return next((t for t, _, line in self.lines if needle in line), None)

    def wait(self, timeout: float = 200) -> int:
        """Wait for the exit; on a timeout, kill it and raise with its output so far."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired as e:
            self.proc.kill()
            self.proc.wait()
            for t in self._readers:
                t.join(5)
            raise TimeoutError(
                f"`sweep {self.args[0]}` did not exit within {timeout:.0f}s; its stderr:\n"
                f"{self.stderr[-6000:]}"
            ) from e
        finally:
            for t in self._readers:
                t.join(5)
        return self.proc.returncode


def start_run(kube_cluster: Any, spec: Path, out: str) -> SweepProcess:
    """``sweep run SPEC --cluster kubernetes -o OUT --json`` in the background."""
    env = sweep_env(kube_cluster)
    return SweepProcess(env, "run", str(spec), "--cluster", "kubernetes", "-o", out, "--json")


def write_spec(
    path: Path,
    name: str,
    *,
    n: int,
    partition_size: int,
    namespace: str | None,
    function: object = "examples.montecarlo:pi_hits",
    call: str = "kwargs",
    max_workers: int = 3,
    max_failures: int = 0,
    secret: str | None = SECRET,
    inline: bool = False,
    **kube: Any,
) -> Path:
    """A spec of ``n`` random items (``n_points`` in 1..3) on ``cluster.kind: kubernetes``.

    ``inline`` is off by default: these sweeps are small enough for the runner to run them
    itself, and the tests are about the cluster.
    """
    kubernetes: dict[str, Any] = {
        "max_workers": max_workers,
        "partitions_per_worker": 2,
        "startup_timeout": 120,
    }
    if namespace:
        kubernetes["namespace"] = namespace
    if secret:
        kubernetes["env_from_secret"] = secret
    if IMAGE:
        kubernetes["image"] = IMAGE
    kubernetes.update(kube)
    spec = {
        "name": name,
        "function": function,
        "call": call,
        "params": {"random": {"n": n, "seed": 1, "columns": {"n_points": {"integers": [1, 4]}}}},
        "partition_size": partition_size,
        "max_failures": max_failures,
        "cluster": {"kind": "kubernetes", "inline": inline, "kubernetes": kubernetes},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def slow_command(seconds: str = "0.{n_points}", tail: tuple[int, float] | None = None) -> list[str]:
    """A ``call: command`` function that sleeps and prints ``{"n": n_points}`` (any image has sh).

    ``tail=(item, seconds)``: items from ``item`` on sleep ``seconds`` instead (a slow end).
    """
    sleep = f"sleep {seconds}"
    if tail is not None:
        sleep = f"if [ {{item}} -ge {tail[0]} ]; then sleep {tail[1]}; else {sleep}; fi"
    # the command line is a str.format template: {{ and }} are literal braces
    return ["sh", "-c", sleep + '; echo "{{\\"n\\": {n_points}}}"']


def leftovers(
    kube_cluster: Any,
    namespace: str,
    kinds: tuple[str, ...] = LEFTOVER_KINDS,
    keep_job_pods: bool = False,
    prefix: str = "",
    describe: bool = False,
) -> dict[str, list[str]]:
    """Names of the objects of ``kinds`` still in ``namespace`` (starting with ``prefix``).

    ``describe``: each name says whether it is being deleted and what holds it (finalizers),
    which tells a slow operator from an object nobody deleted.
    """
    left: dict[str, list[str]] = {}
    for kind in kinds:
        if kind.startswith("dask") and not has_dask_crds(kube_cluster):
            continue
        objs = kube_cluster.list(kind, namespace)
        if kind == "pods" and keep_job_pods:
            objs = [o for o in objs if not _is_job_pod(o)]
        names = [
            _described(o) if describe else o["metadata"]["name"]
            for o in objs
            if o["metadata"]["name"].startswith(prefix)
            and not (kind == "serviceaccounts" and o["metadata"]["name"] == "default")
            and not (kind == "configmaps" and o["metadata"]["name"] == "kube-root-ca.crt")
        ]
        if names:
            left[kind] = names
    return left


def _described(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    if not meta.get("deletionTimestamp"):
        return f"{meta['name']} (not being deleted)"
    return (
        f"{meta['name']} (deleting since {meta['deletionTimestamp']},"
        f" finalizers {meta.get('finalizers') or []})"
    )


def _is_job_pod(pod: dict[str, Any]) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return "job-name" in labels or "batch.kubernetes.io/job-name" in labels


def assert_clean(
    kube_cluster: Any,
    namespace: str,
    kinds: tuple[str, ...] = LEFTOVER_KINDS,
    keep_job_pods: bool = False,
    prefix: str = "",
    timeout: float = 45,
) -> None:
    """Wait until nothing of ``kinds`` is left in ``namespace``."""
    kube_cluster.wait_for(
        lambda: not leftovers(kube_cluster, namespace, kinds, keep_job_pods, prefix),
        timeout=timeout,
        message=lambda: (
            f"left in {namespace}:"
            f" {leftovers(kube_cluster, namespace, kinds, keep_job_pods, prefix, describe=True)}"
        ),
    )


def live_worker_pods(kube_cluster: Any, namespace: str) -> list[dict[str, Any]]:
    pods = kube_cluster.list("pods", namespace, label_selector="dask.org/component=worker")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


class WorkerWatcher:
    """Samples the number of live worker pods in a background thread."""

    def __init__(self, kube_cluster: Any, namespace: str) -> None:
        self.kube_cluster, self.namespace = kube_cluster, namespace
        self.samples: list[tuple[float, int]] = []  # (monotonic time, live worker pods)
        self.labels: dict[str, dict[str, str]] = {}  # every worker pod seen: its labels
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                live = live_worker_pods(self.kube_cluster, self.namespace)
                self.samples.append((time.monotonic(), len(live)))
                for p in live:
                    self.labels[p["metadata"]["name"]] = p["metadata"].get("labels") or {}
            except Exception:
                pass
            self._stop.wait(0.25)

    @property
    def max_seen(self) -> int:
        return max((n for _, n in self.samples), default=0)

    def counts(self, until: float | None = None) -> list[int]:
        """The sampled counts up to ``until``, consecutive repeats folded."""
        out: list[int] = []
        for t, n in self.samples:
            if until is not None and t > until:
                break
            if not out or out[-1] != n:
                out.append(n)
        return out

    def __enter__(self) -> WorkerWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def load(url: str) -> Any:
    import s3fs

    from runner import load_results

    s3fs.S3FileSystem.clear_instance_cache()
    return load_results(url)


def check_results(url: str, n: int) -> Any:
    """Every item 0..n-1 exactly once in the output; returns the table."""
    df = load(url)
    assert len(df) == n, f"{len(df)} rows, expected {n}"
    assert df["item"].is_unique, "an item was written twice"
    assert sorted(df["item"]) == list(range(n))
    return df


def last_json(text: str) -> dict[str, Any]:
    return json.loads(text.strip().splitlines()[-1])
