"""Proof tests for the Kubernetes test cluster (emulated, or real via SWEEP_TEST_KUBECONFIG)."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

pytestmark = [
    pytest.mark.kube,
    # placeholder images ("ignored", "x"): proofs of the emulator with pods as processes
    pytest.mark.skipif(
        os.environ.get("SWEEP_TEST_POD_RUNTIME") == "podman",
        reason="the emulator's proofs use placeholder images (process runtime only)",
    ),
]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# --------------------------------------------------------------------------- a. API basics


@pytest.mark.timeout(60)
def test_crud_watch_selectors(kube_cluster, kube_namespace):
    import kubernetes
    from kubernetes.client.exceptions import ApiException

    ns = kube_namespace
    client = kubernetes.config.new_client_from_config(kube_cluster.kubeconfig)
    v1 = kubernetes.client.CoreV1Api(client)

    cm = v1.create_namespaced_config_map(
        ns, {"metadata": {"name": "a", "labels": {"app": "x", "tier": "1"}}, "data": {"k": "v"}}
    )
    assert cm.metadata.uid and cm.metadata.resource_version and cm.metadata.creation_timestamp
    with pytest.raises(ApiException) as err:
        v1.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    assert err.value.status == 409
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_config_map("missing", ns)
    assert err.value.status == 404

    # Watch from the list's resourceVersion: must see every later change, in order, filtered by selector.
    listed = v1.list_namespaced_config_map(ns, label_selector="app=x")
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def watch() -> None:
        w = kubernetes.watch.Watch()
        for ev in w.stream(
            v1.list_namespaced_config_map,
            ns,
            label_selector="app in (x)",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=20,
        ):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["object"].metadata.name == "a" and ev["type"] == "DELETED":
                w.stop()
        done.set()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    v1.patch_namespaced_config_map("a", ns, {"data": {"k": "v2"}})  # MODIFIED
    v1.create_namespaced_config_map(
        ns, {"metadata": {"name": "b", "labels": {"app": "y"}}}
    )  # filtered out
    v1.patch_namespaced_config_map(
        "b", ns, {"metadata": {"labels": {"app": "x"}}}
    )  # ADDED (enters)
    v1.patch_namespaced_config_map(
        "b", ns, {"metadata": {"labels": {"app": "z"}}}
    )  # DELETED (leaves)
    v1.delete_namespaced_config_map("a", ns)  # DELETED
    assert done.wait(20)
    assert seen == [("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "b"), ("DELETED", "a")]

    def names(sel):
        return sorted(
            c.metadata.name for c in v1.list_namespaced_config_map(ns, label_selector=sel).items
        )

    v1.create_namespaced_config_map(ns, {"metadata": {"name": "c", "labels": {"app": "x"}}})
    assert names("app in (x,z)") == ["b", "c"]
    assert names("app!=x") == ["b"]
    assert names("!tier") == ["b", "c"]
    assert [
        c.metadata.name
        for c in v1.list_namespaced_config_map(ns, field_selector="metadata.name=c").items
    ] == ["c"]

    # JSON patch with a failing test op -> 422 (kopf relies on it).
    with pytest.raises(ApiException) as err:
        v1.patch_namespaced_config_map(
            "c",
            ns,
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
                {"op": "add", "path": "/data", "value": {"x": "y"}},
            ],
            _content_type="application/json-patch+json",
        )
    assert err.value.status == 422

    # Finalizers: delete only marks; removing the finalizer completes the deletion.
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "f", "finalizers": ["test/hold"]}})
    v1.delete_namespaced_config_map("f", ns)
    assert v1.read_namespaced_config_map("f", ns).metadata.deletion_timestamp is not None
    v1.patch_namespaced_config_map("f", ns, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_config_map("f", ns)
    assert err.value.status == 404

    # ownerReferences: background cascading deletion.
    owner = v1.create_namespaced_config_map(ns, {"metadata": {"name": "owner"}})
    v1.create_namespaced_secret(
        ns,
        {
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner.metadata.uid,
                    }
                ],
            },
            "stringData": {"password": "s3cret"},
        },
    )
    assert v1.read_namespaced_secret("child", ns).data == {"password": "czNjcmV0"}
    v1.delete_namespaced_config_map("owner", ns)
    kube_cluster.wait_for(
        lambda: not v1.list_namespaced_secret(ns, field_selector="metadata.name=child").items,
        timeout=10,
        message="the dependent secret to be garbage-collected",
    )

    # Status subresource: main-resource updates ignore status, /status updates only status.
    batch = kubernetes.client.BatchV1Api(client)
    batch.create_namespaced_job(
        ns,
        {
            "metadata": {"name": "j"},
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "x", "command": ["true"]}],
                    }
                },
            },
        },
    )
    batch.patch_namespaced_job_status("j", ns, {"status": {"active": 7}})
    batch.patch_namespaced_job(
        "j", ns, {"status": {"active": 9}, "metadata": {"labels": {"l": "1"}}}
    )
    job = batch.read_namespaced_job("j", ns)
    assert job.status.active == 7 and job.metadata.labels["l"] == "1"


# --------------------------------------------------------------------------- b. DaskCluster via the operator


def _dask_objects(kube_cluster, ns: str, name: str) -> dict[str, list[str]]:
    sel = {"dask.org/cluster-name": name}
    return {
        kind: [o["metadata"]["name"] for o in kube_cluster.list(kind, ns, label_selector=sel)]
        for kind in ("pods", "services", "deployments")
    }


@pytest.mark.timeout(180)
def test_daskcluster_operator(kube_cluster, kube_namespace):
    from dask_kubernetes.operator import make_cluster_spec
    from distributed import Client
    from kr8s.objects import new_class

    ns, name = kube_namespace, _name("dc")
    DaskCluster = new_class("DaskCluster", "kubernetes.dask.org/v1", namespaced=True)
    spec = make_cluster_spec(name=name, image="ignored", n_workers=1)
    dc = DaskCluster(spec, namespace=ns, api=kube_cluster.api)
    dc.create()

    def up() -> bool:
        pods = kube_cluster.list("pods", ns, label_selector={"dask.org/cluster-name": name})
        roles = sorted(
            p["metadata"]["labels"]["dask.org/component"]
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )
        )
        return roles == ["scheduler", "worker"]

    kube_cluster.wait_for(
        up,
        timeout=90,
        message=lambda: f"scheduler+worker pods Ready: {_dask_objects(kube_cluster, ns, name)}",
    )
    objs = _dask_objects(kube_cluster, ns, name)
    assert objs["services"] == [f"{name}-scheduler"]
    assert len(objs["deployments"]) == 2
    kube_cluster.wait_for(
        lambda: kube_cluster.get("daskclusters", name, ns)["status"]["phase"] == "Running",
        timeout=30,
        message="DaskCluster phase Running",
    )

    if kube_cluster.emulated:
        address = f"tcp://{name}-scheduler.{ns}:8786"
        with Client(address, timeout=30) as client:
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
            dc.patch({"spec": {"worker": {"replicas": 2}}})
            client.wait_for_workers(2, timeout=60)
            assert len(client.scheduler_info()["workers"]) == 2
            assert sum(client.gather(client.map(lambda x: x * 2, range(10)))) == 90

    dc.delete()

    def gone() -> bool:
        o = _dask_objects(kube_cluster, ns, name)
        return not any(o.values()) and not kube_cluster.list("daskworkergroups", ns)

    kube_cluster.wait_for(
        gone, timeout=60, message=lambda: f"cleanup: {_dask_objects(kube_cluster, ns, name)}"
    )
    kube_cluster.wait_for(
        lambda: not kube_cluster.pod_processes(ns), timeout=30, message="all pod processes to end"
    )


# --------------------------------------------------------------------------- c. KubeCluster from the test process


@pytest.mark.timeout(180)
def test_kubecluster_and_adapt(kube_cluster, kube_namespace):
    from dask_kubernetes.operator import KubeCluster, make_cluster_spec
    from distributed import Client

    ns, name = kube_namespace, _name("kc")
    spec = make_cluster_spec(name=name, image="ignored", n_workers=1)
    with KubeCluster(
        custom_cluster_spec=spec,
        namespace=ns,
        shutdown_on_close=True,
        quiet=True,
        resource_timeout=60,
    ) as cluster:
        if kube_cluster.emulated:  # reached directly through the service name, no port-forward
            assert cluster.scheduler_address == f"tcp://{name}-scheduler.{ns}:8786"
        with Client(cluster, timeout=30) as client:
            assert client.submit(lambda: 41 + 1).result(timeout=60) == 42

            # The operator's autoscaler asks the scheduler for its adaptive target.
            cluster.adapt(minimum=0, maximum=2)
            kube_cluster.wait_for(
                lambda: (
                    not kube_cluster.list(
                        "pods",
                        ns,
                        label_selector={
                            "dask.org/cluster-name": name,
                            "dask.org/component": "worker",
                        },
                    )
                ),
                timeout=60,
                message="the idle cluster to be scaled down to 0 workers",
            )
            # Work arrives: the autoscaler scales up again (after its 15 s cooldown).
            fut = client.submit(lambda: "scaled up")
            assert fut.result(timeout=90) == "scaled up"
    kube_cluster.wait_for(
        lambda: not kube_cluster.list("daskclusters", ns),
        timeout=60,
        message="the DaskCluster to be deleted on close",
    )
    kube_cluster.wait_for(
        lambda: not kube_cluster.pod_processes(ns), timeout=30, message="all pod processes to end"
    )


# --------------------------------------------------------------------------- d. batch Jobs


def _job(name: str, code: str, **spec) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "ignored",
                            "command": ["python", "-c", code],
                            "volumeMounts": [
                                {"name": "cfg", "mountPath": "/etc/sweep", "readOnly": True}
                            ],
                            "env": [
                                {
                                    "name": "GREETING",
                                    "valueFrom": {
                                        "configMapKeyRef": {
                                            "name": "sweep-config",
                                            "key": "greeting",
                                        }
                                    },
                                },
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                # $(VAR) expands only variables defined earlier in the list (as in k8s).
                                {"name": "MSG", "value": "$(GREETING) from $(POD_NAME)"},
                            ],
                        }
                    ],
                    "volumes": [{"name": "cfg", "configMap": {"name": "sweep-config"}}],
                }
            },
        },
    }


def _job_state(kube_cluster, ns: str, name: str) -> str | None:
    job = kube_cluster.get("jobs.batch", name, ns) or {}
    for cond in job.get("status", {}).get("conditions", []):
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return cond["type"]
    return None


@pytest.mark.timeout(120)
def test_batch_jobs_and_configmap_volume(kube_cluster, kube_namespace):
    import os

    from kr8s.objects import ConfigMap, Job

    ns = kube_namespace
    ConfigMap(
        {
            "metadata": {"name": "sweep-config"},
            "data": {"sweep.yaml": "trials: 3\n", "greeting": "hello"},
        },
        namespace=ns,
        api=kube_cluster.api,
    ).create()
    ok_code = (
        "import os, socket; print(open('/etc/sweep/sweep.yaml').read().strip()); "
        "print('MSG=' + os.environ['MSG']); print('HOST=' + socket.gethostname())"
    )
    jobs = {
        "ok": _job("ok", ok_code),
        "bad": _job("bad", "import sys; sys.exit(3)"),
        "slow": _job("slow", "import time; time.sleep(60)", activeDeadlineSeconds=2),
    }
    for body in jobs.values():
        Job(body, namespace=ns, api=kube_cluster.api).create()
    kube_cluster.wait_for(
        lambda: all(_job_state(kube_cluster, ns, n) for n in jobs),
        timeout=60,
        message=lambda: {n: _job_state(kube_cluster, ns, n) for n in jobs},
    )
    assert _job_state(kube_cluster, ns, "ok") == "Complete"
    assert _job_state(kube_cluster, ns, "bad") == "Failed"
    assert _job_state(kube_cluster, ns, "slow") == "Failed"
    assert (
        kube_cluster.get("jobs.batch", "slow", ns)["status"]["conditions"][-1]["reason"]
        == "DeadlineExceeded"
    )

    [pod] = kube_cluster.list("pods", ns, label_selector={"job-name": "ok"})
    assert pod["status"]["phase"] == "Succeeded"
    logs = kube_cluster.pod_logs(pod["metadata"]["name"], ns)
    assert "trials: 3" in logs
    assert f"MSG=hello from {pod['metadata']['name']}" in logs
    [bad] = kube_cluster.list("pods", ns, label_selector={"job-name": "bad"})
    assert bad["status"]["phase"] == "Failed"
    assert bad["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    if kube_cluster.emulated:
        assert f"HOST={pod['metadata']['name']}" in logs
        assert not os.path.exists("/etc/sweep"), "the pod's mount must not leak to the host"
        kube_cluster.wait_for(
            lambda: not kube_cluster.pod_processes(ns),
            timeout=20,
            message="the deadline-exceeded pod's process to be killed",
        )


# --------------------------------------------------------------------------- e. DaskJob (operator-managed)


@pytest.mark.timeout(120)
def test_daskjob(kube_cluster, kube_namespace):
    """The operator's DaskJob path: a cluster plus a runner pod (which relies on the CRD's
    schema default restartPolicy=OnFailure); the cluster is deleted when the runner succeeds."""
    from dask_kubernetes.operator import make_cluster_spec
    from kr8s.objects import new_class

    ns, name = kube_namespace, _name("dj")
    cluster = make_cluster_spec(name=name, image="ignored", n_workers=1)["spec"]
    code = (
        "from distributed import Client; c = Client(); "
        "print('RESULT', c.submit(sum, [20, 22]).result()); c.close()"
    )
    DaskJob = new_class("DaskJob", "kubernetes.dask.org/v1", namespaced=True)
    DaskJob(
        {
            "metadata": {"name": name},
            "spec": {
                "job": {
                    "spec": {
                        "containers": [
                            {"name": "job", "image": "ignored", "args": ["python", "-c", code]}
                        ]
                    }
                },
                "cluster": {"spec": cluster},
            },
        },
        namespace=ns,
        api=kube_cluster.api,
    ).create()

    def job_status() -> str | None:
        return (kube_cluster.get("daskjobs", name, ns) or {}).get("status", {}).get("jobStatus")

    kube_cluster.wait_for(
        lambda: job_status() in ("Successful", "Failed"), timeout=90, message=lambda: job_status()
    )
    assert job_status() == "Successful"
    assert "RESULT 42" in kube_cluster.pod_logs(f"{name}-runner", ns)
    kube_cluster.wait_for(
        lambda: not kube_cluster.list("daskclusters", ns), timeout=30, message="cluster deletion"
    )


# --------------------------------------------------------------------------- f. Job podFailurePolicy

# The rules of our chart (helm/sweep/templates/job.yaml, runner/kube/manifests.py).
_CHART_POD_FAILURE_POLICY = {
    "rules": [
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "runner", "operator": "In", "values": [1, 2]},
        },
        {
            "action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
        },
    ]
}


def _policy_job(name: str, code: str, backoff_limit: int) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "podFailurePolicy": _CHART_POD_FAILURE_POLICY,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    # python as PID 1 ignores SIGTERM on a real node: do not wait 30 s for the kill
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "runner",
                            "image": "python:3.12-slim",
                            "command": ["python", "-c", code],
                        }
                    ],
                }
            },
        },
    }


def _job_condition(kube_cluster, ns: str, name: str, ctype: str) -> dict | None:
    job = kube_cluster.get("jobs.batch", name, ns) or {}
    for cond in job.get("status", {}).get("conditions") or []:
        if cond["type"] == ctype and cond["status"] == "True":
            return cond
    return None


@pytest.mark.timeout(120)
def test_job_pod_failure_policy_fail_job_and_count(kube_cluster, kube_namespace):
    """Exit 2 matches the FailJob rule: the Job fails at once, without retries. Exit 3
    matches no rule: it counts towards backoffLimit and is retried until that is exceeded."""
    from kr8s.objects import Job

    ns = kube_namespace
    limits = {"bad-input": 3, "flaky": 1}
    Job(
        _policy_job("bad-input", "import sys; sys.exit(2)", limits["bad-input"]),
        namespace=ns,
        api=kube_cluster.api,
    ).create()
    Job(
        _policy_job("flaky", "import sys; sys.exit(3)", limits["flaky"]),
        namespace=ns,
        api=kube_cluster.api,
    ).create()
    failed = kube_cluster.wait_for(
        lambda: (
            all(_job_condition(kube_cluster, ns, n, "Failed") for n in limits)
            and {n: _job_condition(kube_cluster, ns, n, "Failed") for n in limits}
        ),
        timeout=90,  # a real cluster backs off 10 s before the retry
        message=lambda: {n: kube_cluster.get("jobs.batch", n, ns).get("status") for n in limits},
    )

    [pod] = kube_cluster.list("pods", ns, label_selector={"job-name": "bad-input"})
    assert failed["bad-input"]["reason"] == "PodFailurePolicy"
    assert failed["bad-input"]["message"] == (
        f"Container runner for pod {ns}/{pod['metadata']['name']} failed with exit code 2 "
        "matching FailJob rule at index 0"
    )
    assert kube_cluster.get("jobs.batch", "bad-input", ns)["status"].get("failed") == 1

    pods = kube_cluster.list("pods", ns, label_selector={"job-name": "flaky"})
    assert failed["flaky"]["reason"] == "BackoffLimitExceeded"
    assert len(pods) == limits["flaky"] + 1
    assert [
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for p in pods
    ] == [3] * len(pods)
    assert kube_cluster.get("jobs.batch", "flaky", ns)["status"].get("failed") == len(pods)
    # Counted pods lose the Job's tracking finalizer (so that they can be deleted).
    kube_cluster.wait_for(
        lambda: not any(p["metadata"].get("finalizers") for p in kube_cluster.list("pods", ns)),
        timeout=10,
        message="the job-tracking finalizers to be removed",
    )


@pytest.mark.timeout(120)
def test_job_pod_failure_policy_ignores_disruption(kube_cluster, kube_namespace):
    """An evicted pod (condition DisruptionTarget) matches the Ignore rule: it is replaced
    and does not count, so even a Job with backoffLimit 0 survives it."""
    import kubernetes
    from kr8s.objects import Job

    ns = kube_namespace
    client = kubernetes.config.new_client_from_config(kube_cluster.kubeconfig)
    v1 = kubernetes.client.CoreV1Api(client)
    job = Job(
        _policy_job("evicted", "import time; time.sleep(120)", 0),
        namespace=ns,
        api=kube_cluster.api,
    )
    job.create()

    def running() -> list[str]:
        return [
            p["metadata"]["name"]
            for p in kube_cluster.list("pods", ns, label_selector={"job-name": "evicted"})
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]

    [first] = kube_cluster.wait_for(running, timeout=90, message="the Job's pod to run")
    assert "batch.kubernetes.io/job-tracking" in kube_cluster.get("pods", first, ns)[
        "metadata"
    ].get("finalizers", [])
    v1.create_namespaced_pod_eviction(
        first,
        ns,
        kubernetes.client.V1Eviction(
            metadata=kubernetes.client.V1ObjectMeta(name=first, namespace=ns)
        ),
        _preload_content=False,
    )
    replacements = kube_cluster.wait_for(
        lambda: [n for n in running() if n != first],
        timeout=60,
        message=lambda: kube_cluster.get("jobs.batch", "evicted", ns).get("status"),
    )
    assert len(replacements) == 1, replacements
    status = kube_cluster.get("jobs.batch", "evicted", ns)["status"]
    assert not _job_condition(kube_cluster, ns, "evicted", "Failed"), status
    assert not status.get("failed"), status
    kube_cluster.wait_for(
        lambda: kube_cluster.get("pods", first, ns) is None,
        timeout=30,
        message="the evicted pod to go once counted",
    )

    # Deleting the Job releases its pods' tracking finalizers: nothing is left behind.
    job.delete(propagation_policy="Background")
    kube_cluster.wait_for(
        lambda: not kube_cluster.list("pods", ns),
        timeout=30,
        message=lambda: [p["metadata"] for p in kube_cluster.list("pods", ns)],
    )
    if kube_cluster.emulated:
        kube_cluster.wait_for(
            lambda: not kube_cluster.pod_processes(ns),
            timeout=20,
            message="the replacement pod's process to end",
        )
