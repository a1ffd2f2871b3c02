"""Failure paths on Kubernetes: what users see when the cluster is not right, and that a
lost worker loses no work.

- the Dask CRDs are not installed and the spec asks for the operator (``operator: true``):
  `sweep run` and `sweep submit` say how to install it, exit 3, and create nothing;
- the scheduler pod crash-loops: `sweep run` reports it with the pod's last log lines,
  exits 3 and has its DaskCluster deleted;
- a worker pod is killed mid-sweep: the sweep still finishes with every item exactly once;
- the runner finds bad input in its pod: exit 2 fails the Job at once (podFailurePolicy).

The scheduler and worker tests run in both cluster modes (see tests/kube/test_e2e.py).
"""

from __future__ import annotations

import re
import time

import pytest
import yaml

from tests.kube.sweeps import (
    SWEEP_OBJECT_KINDS,
    WorkerWatcher,
    assert_clean,
    check_results,
    evict,
    kube_cluster,  # noqa: F401 (the fixture: tests in both cluster modes)
    last_json,
    leftovers,
    live_worker_pods,
    make_secret,
    show,
    slow_command,
    start_run,
    submit,
    sweep,
    sweep_env,
    write_spec,
)

pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.timeout(240)]

MISSING_MODULE = "sweep_e2e_no_such_module"


def test_dask_crds_missing(bare_cluster, s3, tmp_path):
    """`operator: true` where the CRDs are not installed: one clear line naming the operator,
    how to install it and the pod mode; exit 3; nothing created."""
    bare = bare_cluster
    env = sweep_env(bare)
    spec = write_spec(
        tmp_path / "spec.yaml", "no-crds", n=20, partition_size=10, namespace="default",
        operator=True,
    )  # fmt: skip

    r = sweep(env, "run", str(spec), "--cluster", "kubernetes", "-o", f"{s3}/no-crds", timeout=120)
    print(r.stderr)
    assert r.returncode == 3, show(r)
    assert "DaskCluster custom resource is not installed" in r.stderr, show(r)
    assert "helm install" in r.stderr and "dask-kubernetes-operator" in r.stderr, show(r)
    assert "cluster.kubernetes.operator: false" in r.stderr, show(r)
    assert "Traceback" not in r.stderr, show(r)

    r = sweep(env, "submit", str(spec), "-o", f"{s3}/no-crds", "--secret", "s3", timeout=120)
    print(r.stderr)
    assert r.returncode == 3, show(r)
    assert "DaskCluster custom resource is not installed" in r.stderr, show(r)
    assert "Traceback" not in r.stderr, show(r)
    no_dask = tuple(k for k in SWEEP_OBJECT_KINDS if not k.startswith("dask"))
    assert not leftovers(bare, "default", no_dask, prefix="no-crds")


def test_scheduler_crash_loop(kube_cluster, kube_namespace, s3, s3_server, tmp_path):
    """A scheduler that cannot start: its log tail in the error, exit 3, nothing left."""
    ns = kube_namespace
    make_secret(kube_cluster, ns, s3_server)
    template = {
        "apiVersion": "v1",
        "kind": "Pod",
        "spec": {
            "containers": [
                {
                    "name": "scheduler",
                    # a preload that does not exist: `dask scheduler` exits 1 at start
                    "env": [
                        {
                            "name": "DASK_DISTRIBUTED__SCHEDULER__PRELOAD",
                            "value": f'["{MISSING_MODULE}"]',
                        }
                    ],
                }
            ]
        },
    }
    (tmp_path / "scheduler.yaml").write_text(yaml.safe_dump(template))
    spec = write_spec(
        tmp_path / "spec.yaml",
        "crashloop",
        n=20,
        partition_size=10,
        namespace=ns,
        scheduler_template="scheduler.yaml",
        **kube_cluster.kube_options,
    )
    t0 = time.monotonic()
    r = sweep(sweep_env(kube_cluster), "run", str(spec), "--cluster", "kubernetes", "-o", f"{s3}/c")
    took = time.monotonic() - t0
    assert r.returncode == 3, show(r)
    err = r.stderr
    assert "scheduler" in err and "crash-looping" in err, show(r)
    assert MISSING_MODULE in err, show(r)  # the pod's own last log lines
    assert "Traceback (most recent call last)" not in err.split("last log lines")[0], show(r)
    # It says so at once and leaves the deletion to Kubernetes: the operator's idle
    # timer is stuck on the dead scheduler and kopf looks again only after 60 s
    # (tests/kube/README.md, "Quirks"), so the DaskCluster may still be terminating.
    limit = 45 if kube_cluster.emulated else 150  # kubelet restart backoff is 10 s, 20 s, ...
    assert took < limit, f"took {took:.0f}s\n{show(r)}"
    if kube_cluster.mode == "operator":
        clusters = kube_cluster.list("daskclusters", ns)
        assert all(c["metadata"].get("deletionTimestamp") for c in clusters), clusters
    else:  # the runner deleted its pods and Service itself
        assert_clean(kube_cluster, ns, timeout=30)


def test_worker_pod_killed_mid_sweep(kube_cluster, kube_namespace, s3, s3_server, tmp_path):
    """Kill a busy worker pod (no grace period): its partition runs again elsewhere and the
    output holds every item exactly once."""
    from kr8s.objects import Pod

    ns = kube_namespace
    make_secret(kube_cluster, ns, s3_server)
    n = 100
    spec = write_spec(
        tmp_path / "spec.yaml",
        "killed",
        n=n,
        partition_size=10,
        namespace=ns,
        function=slow_command("0.2"),
        call="command",
        max_workers=2,
        min_workers=2,
        **kube_cluster.kube_options,
    )
    out = f"{s3}/killed"
    with WorkerWatcher(kube_cluster, ns) as watcher:
        run = start_run(kube_cluster, spec, out)
        try:
            # once partitions are being computed (the probe is done) and two workers run
            kube_cluster.wait_for(
                lambda: run.first(f"/{n} items (") and len(_running(kube_cluster, ns)) == 2,
                timeout=150,
                message=lambda: f"two running workers and progress; output so far:\n{run.stderr}",
            )
            victim = _running(kube_cluster, ns)[0]["metadata"]["name"]
            Pod.get(victim, namespace=ns, api=kube_cluster.api).delete(grace_period=0)
            kube_cluster.wait_for(
                lambda: (
                    victim
                    not in {p["metadata"]["name"] for p in live_worker_pods(kube_cluster, ns)}
                ),
                timeout=60,
                message=f"worker pod {victim} to go",
            )
        finally:
            code = run.wait(200)
    assert code == 0, show(run)
    report = last_json(run.stdout)
    assert report["status"] == "succeeded", report
    assert report["ok"] == n and report["errors"] == 0, report
    check_results(out, n)
    print("worker pods over time:", watcher.counts())
    assert_clean(kube_cluster, ns)


def test_an_evicted_worker_costs_nothing(kube_cluster, kube_namespace, s3, s3_server, tmp_path):
    """Evict a busy worker pod through the API (a node drain, spot reclaim or Kueue
    preemption does the same): its partition runs again as it was, no isolation, no worker
    loss counted; the worker is replaced and every item is there once."""
    ns = kube_namespace
    make_secret(kube_cluster, ns, s3_server)
    n = 100
    spec = write_spec(
        tmp_path / "spec.yaml",
        "evicted",
        n=n,
        partition_size=10,
        namespace=ns,
        function=slow_command("0.2"),
        call="command",
        max_workers=2,
        min_workers=2,
        **kube_cluster.kube_options,
    )
    out = f"{s3}/evicted"
    run = start_run(kube_cluster, spec, out)
    try:
        kube_cluster.wait_for(
            lambda: run.first(f"/{n} items (") and len(_running(kube_cluster, ns)) == 2,
            timeout=150,
            message=lambda: f"two running workers and progress; output so far:\n{run.stderr}",
        )
        victim = _running(kube_cluster, ns)[0]["metadata"]["name"]
        evict(kube_cluster, victim, ns)
        kube_cluster.wait_for(
            lambda: (
                victim not in {p["metadata"]["name"] for p in live_worker_pods(kube_cluster, ns)}
            ),
            timeout=60,
            message=f"worker pod {victim} to go",
        )
    finally:
        code = run.wait(200)
    assert code == 0, show(run)
    report = last_json(run.stdout)
    assert report["status"] == "succeeded" and report["ok"] == n, report
    assert report["preempted_partitions"] >= 1, show(run)
    assert report["isolated_partitions"] == 0, show(run)
    assert "not counted as a failure" in run.stderr and "died while running" not in run.stderr
    df = check_results(out, n)
    assert (df["attempts"] == 1).all()
    assert_clean(kube_cluster, ns)


@pytest.mark.parametrize("kube_cluster", ["pods"], indirect=True)  # the runner's part: one mode
def test_an_evicted_runner_resumes_where_it_was(
    kube_cluster, kube_namespace, s3, s3_server, tmp_path
):
    """Evict the runner pod of a submitted sweep: it drains, its Job ignores the
    disruption (podFailurePolicy, not counted against backoffLimit) and starts a new runner,
    which computes only what is missing. Every item once; the Job completes."""
    ns = kube_namespace
    make_secret(kube_cluster, ns, s3_server)
    env = sweep_env(kube_cluster)
    n = 200
    spec = write_spec(
        tmp_path / "spec.yaml",
        "e2e-evict",
        n=n,
        partition_size=10,
        namespace=ns,
        function=slow_command("0.2"),
        call="command",
        max_workers=2,
        **kube_cluster.kube_options,
    )
    out = f"{s3}/evict"
    try:
        r = submit(env, spec, "e2e-evict", ns, out)
        assert r.returncode == 0, show(r)

        def runner_pods():
            return [p for p in kube_cluster.list("pods", ns, "app.kubernetes.io/component=runner")]

        kube_cluster.wait_for(
            lambda: f"/{n} items (" in sweep(env, "logs", "e2e-evict", "-n", ns, timeout=60).stdout,
            timeout=120,
            message="progress in `sweep logs e2e-evict`",
        )
        (first,) = runner_pods()
        evict(kube_cluster, first["metadata"]["name"], ns)
        second = kube_cluster.wait_for(
            lambda: [p for p in runner_pods() if p["metadata"]["uid"] != first["metadata"]["uid"]],
            timeout=120,
            message=lambda: (
                f"a second runner pod: {[p['metadata']['name'] for p in runner_pods()]}"
            ),
        )[0]
        job = kube_cluster.wait_for(
            lambda: next(
                (
                    j
                    for j in kube_cluster.list("jobs.batch", ns)
                    if any(
                        c["type"] in ("Complete", "Failed") and c["status"] == "True"
                        for c in (j.get("status") or {}).get("conditions", [])
                    )
                ),
                None,
            ),
            timeout=180,
            message=lambda: sweep(env, "logs", "e2e-evict", "-n", ns, timeout=60).stdout[-3000:],
        )
        conditions = {c["type"] for c in job["status"]["conditions"] if c["status"] == "True"}
        logs = kube_cluster.pod_logs(second["metadata"]["name"], ns)
        assert "Complete" in conditions, (conditions, logs[-3000:])
        assert not job["status"].get("failed"), job["status"]  # the eviction was not counted
        assert re.search(r"\d+ to run, \d+ already done", logs), logs[-3000:]
        done_before = int(re.search(r"(\d+) to run, (\d+) already done", logs).group(2))
        assert done_before > 0, logs[-3000:]
        check_results(out, n)
    finally:
        sweep(env, "cancel", "e2e-evict", "-n", ns, timeout=120)


def _running(kube_cluster, ns: str) -> list[dict]:
    return [
        p
        for p in live_worker_pods(kube_cluster, ns)
        if (p.get("status") or {}).get("phase") == "Running"
        and all(c.get("ready") for c in (p["status"].get("containerStatuses") or [{}]))
    ]


@pytest.mark.parametrize("kube_cluster", ["operator"], indirect=True)  # no Dask cluster
def test_bad_input_fails_the_job_at_once(kube_cluster, kube_namespace, s3, s3_server, tmp_path):
    """A sweep whose parameter file is missing: the runner exits 2 (bad input), the Job's
    podFailurePolicy fails it without retries, and `submit --wait` exits 2."""
    ns = kube_namespace
    make_secret(kube_cluster, ns, s3_server)
    spec = write_spec(
        tmp_path / "spec.yaml",
        "bad-input",
        n=10,
        partition_size=10,
        namespace=ns,
        function=slow_command("0"),
        call="command",
    )
    data = yaml.safe_load(spec.read_text())
    data["params"] = {"dataset": f"{s3}/no/such/params.parquet"}
    spec.write_text(yaml.safe_dump(data))
    env = sweep_env(kube_cluster)
    r = submit(env, spec, "bad-input", ns, f"{s3}/bad-input", "--wait")
    assert r.returncode == 2, show(r)
    assert "no/such/params.parquet" in r.stdout + r.stderr, show(r)
    job = kube_cluster.list("jobs.batch", ns)[0]
    failed = [c for c in job["status"].get("conditions", []) if c["type"] == "Failed"]
    assert failed and failed[0]["reason"] == "PodFailurePolicy", job["status"]
    pods = kube_cluster.list("pods", ns, label_selector={"job-name": job["metadata"]["name"]})
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]  # not retried
    sweep(env, "cancel", "bad-input", "-n", ns, timeout=120)
