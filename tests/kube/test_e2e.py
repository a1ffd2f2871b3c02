"""End to end on Kubernetes: `sweep run --cluster kubernetes`, `sweep submit/status/logs/cancel`
and the Helm chart's objects, on the emulated cluster of tests/kube (real Dask operator, pods
as local processes) or on a real one (``SWEEP_TEST_KUBECONFIG``), with moto as S3.

Each test runs in both cluster modes (``kube_cluster`` from tests/kube/sweeps.py):
``operator`` (the Dask operator makes the pods) and ``pods`` (the runner makes them
itself; emulated: on a second cluster without the Dask CRDs, where ``operator: auto``
has to notice).

Pods get the S3 endpoint and credentials through a Secret (``env_from_secret`` /
``--secret`` / ``s3Secret``), as on a real cluster; see tests/kube/sweeps.py.
"""

from __future__ import annotations

import pytest
import yaml

from runner.kube.cluster_spec import QUEUE_LABEL
from tests.kube.sweeps import (
    IMAGE,
    ROOT,
    SECRET,
    SWEEP_OBJECT_KINDS,
    SweepProcess,
    WorkerWatcher,
    assert_clean,
    check_results,
    has_dask_crds,
    kube_cluster,  # noqa: F401 (the fixture: every test in both cluster modes)
    last_json,
    load,
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


# --------------------------------------------------------------------------- tests


def test_run_on_kubernetes(kube_cluster, kube_namespace, s3, s3_server, tmp_path):
    """`sweep run --cluster kubernetes`: workers scale up with the sweep and back down at
    its tail, every item is written once, and nothing of the sweep is left afterwards."""
    ns = kube_namespace
    make_secret(kube_cluster, ns, s3_server)
    # The operator's autoscaler acts on a 5 s timer and waits 15 s after each change, so
    # both ends are made long: the body's items take 0.3 s (33 s on one worker: the second
    # comes up for it), the last 10 items 3 s each. Partitions run in order, so for the
    # last one the policy lowers the maximum to one, and the operator retires the idle
    # worker before the sweep ends. Pod mode's Adaptive looks every second and retires
    # after three looks: a shorter tail shows the same.
    n, size = 120, 10
    slow = 3.0 if kube_cluster.mode == "operator" else 1.5
    spec = write_spec(
        tmp_path / "spec.yaml",
        "e2e-run",
        n=n,
        partition_size=size,
        namespace=ns,
        function=slow_command("0.3", tail=(n - size, slow)),
        call="command",
        max_workers=2,
        **kube_cluster.kube_options,
    )
    out = f"{s3}/run"
    with WorkerWatcher(kube_cluster, ns) as watcher:
        run = start_run(kube_cluster, spec, out)
        run.wait(200)
    print(run.stderr[-3000:])
    print("worker pods over time:", watcher.counts())
    assert run.returncode == 0, show(run)
    report = last_json(run.stdout)
    assert report["status"] == "succeeded", report
    check_results(out, n)
    assert watcher.max_seen == 2, f"worker pods over time: {watcher.counts()}, max_workers is 2"
    # The tail: before the last partition was done (and teardown began), the autoscaler's
    # maximum went down and so did the number of worker pods.
    last_partition = run.first(f"{n}/{n}")
    assert last_partition is not None, show(run)
    assert "autoscaler: 0..1 workers" in run.stderr, show(run)
    during = watcher.counts(until=last_partition)
    peak = during.index(max(during))
    assert min(during[peak:]) < max(during), f"no scale-down before the end: {during}"
    assert_clean(kube_cluster, ns)


def test_submit_wait_status_logs_failure_and_cancel(
    kube_cluster, kube_namespace, s3, s3_server, tmp_path
):
    """`sweep submit --wait` runs the runner Job: exit 0 and results on S3; `sweep status`
    and `sweep logs` report it; a failing sweep exits 1; `sweep cancel` of a running sweep
    removes its Job, pods, Dask cluster, ConfigMap and RBAC.

    The Job's namespace is not the kubeconfig's: the runner must create its Dask cluster
    in its own pod's namespace (SWEEP_NAMESPACE from the downward API).
    """
    ns = kube_namespace
    make_secret(kube_cluster, ns, s3_server)
    env = sweep_env(kube_cluster)
    try:
        _submit_scenario(kube_cluster, ns, env, s3, tmp_path)
    finally:
        for name in ("e2e-ok", "e2e-bad", "e2e-long"):
            sweep(env, "cancel", name, "-n", ns, timeout=120)


def _submit_scenario(kube_cluster, ns, env, s3, tmp_path):
    n = 60
    # The runner pod imports the function from the spec's ConfigMap (a module of the
    # repo is not on the pod's path).
    (tmp_path / "sim.py").write_text(
        "def sim(n_points, seed):\n    return {'n': n_points, 'seed': seed}\n"
    )
    spec = write_spec(
        tmp_path / "spec.yaml",
        "e2e-ok",
        n=n,
        partition_size=10,
        namespace=ns,
        function="sim.py:sim",
        max_workers=2,
        **kube_cluster.kube_options,
    )
    out = f"{s3}/ok"
    r = submit(env, spec, "e2e-ok", ns, out, "--wait")
    assert r.returncode == 0, show(r)
    check_results(out, n)

    st = sweep(env, "status", "e2e-ok", "-n", ns, "--json", timeout=60)
    assert st.returncode == 0, show(st)
    info = last_json(st.stdout)
    assert info["name"] == "e2e-ok", info
    assert info["exit_code"] == 0, info
    # the sweep's own progress, read from its output
    p = info["progress"]
    assert p["state"] == "succeeded" and p["items_done"] == p["items"] == n, p
    assert p["percent_done"] == 100.0 and p["eta_s"] is None, p
    st = sweep(env, "status", "e2e-ok", "-n", ns, timeout=60)
    assert st.returncode == 0 and "e2e-ok" in st.stdout, show(st)
    assert f"progress   {n}/{n} items (100.0%), 0 failed" in st.stdout, show(st)
    logs = sweep(env, "logs", "e2e-ok", "-n", ns, timeout=60)
    assert logs.returncode == 0, show(logs)
    assert f"{n}/{n} items (100.0%)" in logs.stdout, show(logs)
    deleted = "deleted DaskCluster" if kube_cluster.mode == "operator" else "deleted the pods of"
    assert deleted in logs.stdout, show(logs)
    # the runner deleted its Dask cluster
    kube_cluster.wait_for(
        lambda: not kube_cluster.dask_objects(ns),
        timeout=45,
        message=lambda: f"Dask cluster objects left: {kube_cluster.dask_objects(ns)}",
    )

    # a sweep whose function raises, with max_failures 0: the runner exits 1
    (tmp_path / "boom.py").write_text(
        "def boom(n_points, seed):\n    raise ValueError(f'boom {seed}')\n"
    )
    bad = write_spec(
        tmp_path / "bad.yaml",
        "e2e-bad",
        n=20,
        partition_size=10,
        namespace=ns,
        function="boom.py:boom",
        max_workers=1,
        **kube_cluster.kube_options,
    )
    r = submit(env, bad, "e2e-bad", ns, f"{s3}/bad", "--wait")
    assert r.returncode == 1, show(r)
    assert "runner exited with code 1" in r.stderr, show(r)

    # a long sweep, cancelled while its workers run: everything of it goes, results stay
    long = write_spec(
        tmp_path / "long.yaml",
        "e2e-long",
        n=400,
        partition_size=10,
        namespace=ns,
        function=slow_command("0.2"),
        call="command",
        max_workers=1,
        **kube_cluster.kube_options,
    )
    r = submit(env, long, "e2e-long", ns, f"{s3}/long")
    assert r.returncode == 0, show(r)
    kube_cluster.wait_for(
        lambda: "items (" in sweep(env, "logs", "e2e-long", "-n", ns, timeout=60).stdout,
        timeout=120,
        message="progress lines in `sweep logs e2e-long`",
    )
    st = sweep(env, "status", "e2e-long", "-n", ns, "--json", timeout=60)
    assert st.returncode == 0 and last_json(st.stdout)["exit_code"] is None, show(st)
    p = last_json(st.stdout)["progress"]
    assert p["state"] == "running" and 0 < p["items_done"] < p["items"] == 400, p
    assert p["items_per_s"] > 0 and p["eta_s"] > 0, p
    st = sweep(env, "status", "e2e-long", "-n", ns, timeout=60)
    assert "items/s, ETA " in st.stdout, show(st)
    assert kube_cluster.dask_objects(ns), "the running sweep has no Dask cluster"
    # its NetworkPolicies, owned by its Job (they go with it)
    policies = kube_cluster.list(
        "networkpolicies.networking.k8s.io", ns, "app.kubernetes.io/instance=e2e-long"
    )
    assert sorted(p["metadata"]["name"] for p in policies) == [
        "e2e-long-sweep-runner",
        "e2e-long-sweep-scheduler",
    ], policies
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "Job" for p in policies), policies
    if kube_cluster.mode == "pods":
        st = sweep(env, "status", "e2e-long", "-n", ns, "--json", timeout=60)
        clusters = last_json(st.stdout)["dask_clusters"]
        assert [c["mode"] for c in clusters] == ["pods"] and clusters[0]["workers"] >= 1, clusters

    for name in ("e2e-ok", "e2e-bad", "e2e-long"):
        c = sweep(env, "cancel", name, "-n", ns, timeout=120)
        assert c.returncode == 0, show(c)
    assert_clean(kube_cluster, ns, SWEEP_OBJECT_KINDS, prefix="e2e-", timeout=60)
    assert load(f"{s3}/long")["item"].is_unique  # what finished before the cancel is kept


def test_a_queued_sweep_waits_for_kueue_admission(
    kube_cluster, kube_namespace, s3, s3_server, tmp_path
):
    """`--queue`: the Job is created suspended and labelled, nothing runs and `sweep status`
    and `submit --wait` say it waits for admission; unsuspended as Kueue admits it, it runs
    and its worker pods carry the queue label (the scheduler's does not)."""
    from kr8s.objects import Job

    ns = kube_namespace
    make_secret(kube_cluster, ns, s3_server)
    env = sweep_env(kube_cluster)
    spec = write_spec(
        tmp_path / "spec.yaml",
        "e2e-kueue",
        n=20,
        partition_size=10,
        namespace=ns,
        function=slow_command("0.1"),
        call="command",
        max_workers=1,
        **kube_cluster.kube_options,
    )
    out = f"{s3}/kueue"
    args = ["submit", str(spec), "-o", out, "--secret", SECRET, "--name", "e2e-kueue", "-n", ns]
    args += ["--queue", "team-a", "--wait"] + (["--image", IMAGE] if IMAGE else [])
    with WorkerWatcher(kube_cluster, ns) as watcher:
        waiting = SweepProcess(env, *args)
        try:
            job = kube_cluster.wait_for(
                lambda: next(iter(kube_cluster.list("jobs.batch", ns)), None),
                timeout=60,
                message="the sweep's Job",
            )
            assert job["spec"]["suspend"] is True, job["spec"]
            assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a", job["metadata"]
            # the Job controller has seen it (Suspended) and started nothing
            kube_cluster.wait_for(
                lambda: any(
                    c["type"] == "Suspended" and c["status"] == "True"
                    for c in (kube_cluster.get("jobs.batch", job["metadata"]["name"], ns) or {})
                    .get("status", {})
                    .get("conditions", [])
                ),
                timeout=30,
                message="the Job's Suspended condition",
            )
            assert not kube_cluster.list("pods", ns), "a queued sweep started pods"
            st = sweep(env, "status", "e2e-kueue", "-n", ns, "--json", timeout=60)
            info = last_json(st.stdout)
            assert info["state"] == "queued" and info["queue"] == "team-a", info
            st = sweep(env, "status", "e2e-kueue", "-n", ns, timeout=60)
            assert "waiting    waiting for admission by Kueue (LocalQueue team-a)" in st.stdout, (
                show(st)
            )
            kube_cluster.wait_for(
                lambda: "waiting for admission by Kueue" in waiting.stderr,
                timeout=30,
                message=lambda: f"`submit --wait` saying it waits: {waiting.stderr}",
            )
            # Kueue admits the workload: it unsuspends the Job
            Job.get(job["metadata"]["name"], namespace=ns, api=kube_cluster.api).patch(
                {"spec": {"suspend": False}}
            )
            assert waiting.wait(200) == 0, waiting.stderr[-4000:]
        finally:
            if waiting.returncode is None:
                waiting.proc.kill()
    assert "admitted; the runner starts" in waiting.stderr, waiting.stderr[-4000:]
    check_results(out, 20)
    assert watcher.labels, "no worker pod was seen"
    for name, labels in watcher.labels.items():
        assert labels.get(QUEUE_LABEL) == "team-a", (name, labels)
    schedulers = kube_cluster.list("pods", ns, label_selector="dask.org/component=scheduler")
    assert all(QUEUE_LABEL not in s["metadata"].get("labels", {}) for s in schedulers)
    c = sweep(env, "cancel", "e2e-kueue", "-n", ns, timeout=120)
    assert c.returncode == 0, show(c)
    assert_clean(kube_cluster, ns, SWEEP_OBJECT_KINDS, prefix="e2e-", timeout=60)


def _render_chart(values: dict, name: str, namespace: str) -> list[dict]:
    """``helm template``: the chart's objects for one release, rendered by the Helm SDK."""
    helm = pytest.importorskip("helm_python")
    helm.disable_logging()
    with helm.Chart.load(ROOT / "helm" / "sweep") as chart:
        out = chart.render(values, name=name, namespace=namespace)
    return [
        doc
        for path, text in sorted(out.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def test_helm_chart_release(kube_cluster, kube_namespace, s3, s3_server, tmp_path):
    """The chart's rendered objects (what `helm install` applies) run the sweep to the end;
    `sweep status/logs` find the release; deleting the release's objects leaves nothing."""
    from kr8s.objects import object_from_spec

    ns, release, n = kube_namespace, "e2e-chart", 50
    make_secret(kube_cluster, ns, s3_server)
    spec = {
        "name": "chart-sweep",
        "function": slow_command("0.0{n_points}"),
        "call": "command",
        "params": {"random": {"n": n, "seed": 3, "columns": {"n_points": {"integers": [1, 4]}}}},
        "partition_size": 10,
    }
    values: dict = {
        "specYaml": yaml.safe_dump(spec),
        "spec": {"output": f"{s3}/chart"},
        "s3Secret": SECRET,
        "dask": {"maxWorkers": 2, "startupTimeout": 120},
    }
    # the Helm SDK renders offline: its capabilities have no Dask CRD, so `auto` would mean
    # pods; the operator mode says so, and so does the pod mode where the CRDs are served
    if kube_cluster.mode == "operator" or has_dask_crds(kube_cluster):
        values["dask"]["operator"] = kube_cluster.mode == "operator"
    if IMAGE:
        repository, _, tag = IMAGE.rpartition(":")
        values["image"] = {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"}
    objects = _render_chart(values, release, ns)
    assert {o["kind"] for o in objects} >= {"ConfigMap", "Job", "Role", "RoleBinding"}
    role = next(o for o in objects if o["kind"] == "Role")
    groups = {g for rule in role["rules"] for g in rule["apiGroups"]}
    assert ("kubernetes.dask.org" in groups) == (kube_cluster.mode == "operator"), role
    created = []
    for doc in objects:
        doc["metadata"]["namespace"] = ns  # `helm install -n NS`
        obj = object_from_spec(doc, api=kube_cluster.api)
        obj.create()
        created.append(obj)

    def finished():
        jobs = kube_cluster.list("jobs.batch", ns, f"app.kubernetes.io/instance={release}")
        job = jobs[0] if jobs else {}
        conds = {c["type"]: c["status"] for c in (job.get("status") or {}).get("conditions", [])}
        return "Complete" if conds.get("Complete") == "True" else conds.get("Failed") == "True"

    env = sweep_env(kube_cluster)
    state = kube_cluster.wait_for(
        finished,
        timeout=180,
        message=lambda: sweep(env, "logs", release, "-n", ns, timeout=60).stdout[-3000:],
    )
    logs = sweep(env, "logs", release, "-n", ns, timeout=60)
    assert state == "Complete", show(logs)
    assert f"{n}/{n} items (100.0%)" in logs.stdout, show(logs)
    check_results(f"{s3}/chart", n)
    st = sweep(env, "status", release, "-n", ns, "--json", timeout=60)
    assert st.returncode == 0, show(st)
    info = last_json(st.stdout)
    assert info["exit_code"] == 0 and info["output"] == f"{s3}/chart", info

    # `helm uninstall`: the release's objects go (the Job's pods with it), nothing is left
    for obj in reversed(created):
        obj.delete(propagation_policy="Background")
    assert_clean(kube_cluster, ns, SWEEP_OBJECT_KINDS)


@pytest.mark.parametrize("kube_cluster", ["operator"], indirect=True)  # no Dask cluster
def test_a_small_submitted_sweep_runs_in_the_runner_pod_without_a_dask_cluster(
    kube_cluster, kube_namespace, s3, s3_server, tmp_path
):
    """Seconds of work: the runner Job runs every item itself (in its child process) and
    never creates a DaskCluster, so no scheduler or worker pod starts."""
    ns = kube_namespace
    make_secret(kube_cluster, ns, s3_server)
    env = sweep_env(kube_cluster)
    (tmp_path / "sim.py").write_text("def sim(n_points):\n    return n_points * 2\n")
    spec = write_spec(
        tmp_path / "spec.yaml", "e2e-inline", n=40, partition_size=10, namespace=ns,
        function="sim.py:sim", inline=True,
    )  # fmt: skip
    out = f"{s3}/inline"
    try:
        r = submit(env, spec, "e2e-inline", ns, out, "--wait")
        assert r.returncode == 0, show(r)
        df = check_results(out, 40)
        assert (df["result"] == df["n_points"] * 2).all()
        logs = sweep(env, "logs", "e2e-inline", "-n", ns, timeout=60)
        assert "no cluster was started" in logs.stdout, show(logs)
        assert "DaskCluster" not in logs.stdout, show(logs)
        assert not kube_cluster.list("daskclusters", ns)
        pods = [p["metadata"]["name"] for p in kube_cluster.list("pods", ns)]
        assert not [p for p in pods if "scheduler" in p or "worker" in p], pods
    finally:
        sweep(env, "cancel", "e2e-inline", "-n", ns, timeout=120)
