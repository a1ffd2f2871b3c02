"""Kubernetes without a cluster: DaskCluster specs from pod templates, autoscaling decisions,
failure diagnosis, the runner's manifests, and the provider's error messages.

Objects are validated offline: built-in kinds against the real Kubernetes OpenAPI schemas
(kubernetes-validate, strict), DaskClusters against the CRD shipped in dask-kubernetes.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import kubecheck
import pytest
import yaml

from runner.exceptions import InfrastructureError, SpecError
from runner.kube import cluster_spec as cs
from runner.kube import manifests as mf
from runner.policy import ScalingPolicy
from runner.secrets import is_secret_name
from runner.spec import ClusterSpec, KubernetesSpec, load_spec

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CANARY = "canary-secret-value-0123456789"


def defaults() -> tuple[dict, dict]:
    return cs.load_pod_template(None, "worker"), cs.load_pod_template(None, "scheduler")


def dask_container(resource: dict, role: str) -> dict:
    pod = resource["spec"][role]["spec"]
    return pod["containers"][cs.dask_container_index(pod, role)]


# --------------------------------------------------------------------------- templates


def test_default_templates_are_plain_pods() -> None:
    for role in ("worker", "scheduler"):
        path = cs.default_template_path(role)
        doc = yaml.safe_load(path.read_text())
        assert doc["kind"] == "Pod" and doc["apiVersion"] == "v1"
        pod = {**doc, "metadata": {"name": "x", **doc.get("metadata", {})}}
        pod["spec"]["containers"][0]["image"] = "sweep-runner:test"
        kubecheck.validate(pod)  # a real Pod, strictly valid
        ctx = doc["spec"]["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["seccompProfile"]["type"] == "RuntimeDefault"
        c = doc["spec"]["containers"][0]
        assert c["name"] == role
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_load_pod_template_accepts_pod_template_and_podspec(tmp_path: Path) -> None:
    pod_spec = {"containers": [{"name": "worker", "image": "x:1"}]}
    full = {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"a": "b"}}, "spec": pod_spec}
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(full))
    from_file = cs.load_pod_template("w.yaml", "worker", base_dir=str(tmp_path))
    assert from_file == {"metadata": {"labels": {"a": "b"}}, "spec": pod_spec}
    assert cs.load_pod_template(pod_spec, "worker") == {"metadata": {}, "spec": pod_spec}
    assert cs.load_pod_template({"spec": pod_spec}, "worker")["spec"] == pod_spec


@pytest.mark.parametrize(
    "bad",
    [[], {"kind": "Deployment", "spec": {}}, {"spec": {"containers": []}}, {"metadata": {}}],
)
def test_load_pod_template_rejects_non_pods(bad: object) -> None:
    with pytest.raises(SpecError, match=r"pod|Pod|containers"):
        cs.load_pod_template(bad, "worker")  # type: ignore[arg-type]


def test_load_pod_template_missing_file_says_where() -> None:
    with pytest.raises(SpecError, match=r"worker_template.*nope\.yaml.*spec's folder"):
        cs.load_pod_template("nope.yaml", "worker", base_dir="/tmp")


# --------------------------------------------------------------------------- overrides


def test_worker_overrides_follow_the_operator() -> None:
    from dask_kubernetes.operator import make_worker_spec

    worker, _ = defaults()
    out = cs.apply_overrides(
        worker, "worker", image="img:2", env_from_secret="s3", worker_threads=4
    )
    c = out["spec"]["containers"][0]
    assert c["image"] == "img:2"
    assert c["command"] == ["dask", "worker"]
    # the operator's own flags (after its command), then ours
    operator_flags = make_worker_spec(worker_command="dask-worker")["spec"]["containers"][0][
        "args"
    ][1:]
    assert c["args"][: len(operator_flags)] == operator_flags
    assert c["args"][-2:] == ["--nthreads", "4"]
    assert {"secretRef": {"name": "s3"}} in c["envFrom"]
    assert {"name": "http-dashboard", "containerPort": 8788, "protocol": "TCP"} in c["ports"]
    assert worker["spec"]["containers"][0].get("image") is None  # input untouched


def test_overrides_keep_user_command_and_replace_nthreads() -> None:
    template = {
        "metadata": {},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "sidecar", "image": "envoy:1"},
                {
                    "name": "worker",
                    "image": "gpu-img:1",
                    "command": ["tini", "--", "dask", "worker"],
                    "args": ["--nthreads", "8", "--memory-limit", "8GB"],
                },
            ],
        },
    }
    out = cs.apply_overrides(template, "worker", worker_threads=2, service_account="irsa")
    side, c = out["spec"]["containers"]
    assert side == {"name": "sidecar", "image": "envoy:1"}
    assert c["image"] == "gpu-img:1"  # the template's image wins over the default
    assert c["command"] == ["tini", "--", "dask", "worker"]
    assert c["args"].count("--nthreads") == 1 and c["args"][-2:] == ["--memory-limit", "8GB"]
    assert "2" in c["args"] and "8" not in c["args"]
    assert "restartPolicy" not in out["spec"]  # the operator uses Deployments
    assert out["spec"]["serviceAccountName"] == "irsa"


def test_scheduler_overrides() -> None:
    from dask_kubernetes.operator.kubecluster.kubecluster import make_scheduler_spec

    _, scheduler = defaults()
    out = cs.apply_overrides(scheduler, "scheduler", env_from_secret="s3", default_image="d:1")
    c = out["spec"]["containers"][0]
    assert c["image"] == "d:1"
    assert c["command"] == ["dask", "scheduler"] and c["args"] == ["--host", "0.0.0.0"]
    assert "envFrom" not in c  # the scheduler never touches the data
    ref = make_scheduler_spec("x")["spec"]["containers"][0]
    assert {(p["name"], p["containerPort"]) for p in c["ports"]} == {
        (p["name"], p["containerPort"]) for p in ref["ports"]
    }
    assert c["readinessProbe"]["httpGet"] == ref["readinessProbe"]["httpGet"]


# --------------------------------------------------------------------------- DaskCluster


@pytest.mark.parametrize(
    "kube",
    [
        KubernetesSpec(),
        KubernetesSpec(image="reg.example/sim:3", env_from_secret="s3", worker_threads=4),
        KubernetesSpec(min_workers=3, max_workers=50, service_account="sim-irsa"),
    ],
)
def test_dask_cluster_matches_the_crd(kube: KubernetesSpec) -> None:
    worker, scheduler = defaults()
    resource = cs.build_cluster_spec(
        "pi-0a1b2c",
        kube,
        worker_template=worker,
        scheduler_template=scheduler,
        labels=cs.sweep_labels("pi", "dask-cluster"),
        owner={"apiVersion": "v1", "kind": "Pod", "name": "pi-sweep-x", "uid": "1234"},
        idle_timeout=600,
    )
    kubecheck.validate(resource)
    assert resource["kind"] == "DaskCluster"
    assert resource["spec"]["worker"]["replicas"] == max(1, kube.min_workers)
    service = resource["spec"]["scheduler"]["service"]
    assert {(p["name"], p["port"]) for p in service["ports"]} == {
        ("tcp-comm", 8786),
        ("http-dashboard", 8787),
    }
    assert service["selector"]["dask.org/cluster-name"] == "pi-0a1b2c"
    if kube.image:
        assert dask_container(resource, "worker")["image"] == kube.image
        assert dask_container(resource, "scheduler")["image"] == kube.image


# --------------------------------------------------------------------------- pod mode


def _resource(kube: KubernetesSpec | None = None) -> dict:
    worker, scheduler = defaults()
    return cs.build_cluster_spec(
        "pi-0a1b2c",
        kube or KubernetesSpec(env_from_secret="s3", worker_threads=2),
        worker_template=worker,
        scheduler_template=scheduler,
        labels=cs.sweep_labels("pi", "dask-cluster"),
        owner={"apiVersion": "v1", "kind": "Pod", "name": "pi-sweep-x", "uid": "1234"},
        idle_timeout=600,
    )


def test_pod_mode_objects_are_the_operators_layout_as_valid_pods() -> None:
    """Without the operator the runner creates what the operator would from the same
    DaskCluster: the same pod specs, labels and Service, owned by the runner pod."""
    from runner.kube import pods

    resource = _resource()
    sched, svc = pods.scheduler_pod(resource), pods.scheduler_service(resource)
    worker = pods.worker_pod(resource, pods.worker_name("pi-0a1b2c", 3), "sweeps")
    for obj in (sched, svc, worker):
        kubecheck.validate(obj)  # strictly valid built-in objects
        assert obj["metadata"]["ownerReferences"] == resource["metadata"]["ownerReferences"]
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "pi"
        assert labels["dask.org/cluster-name"] == "pi-0a1b2c"
    assert sched["metadata"]["name"] == svc["metadata"]["name"] == "pi-0a1b2c-scheduler"
    assert svc["spec"] == resource["spec"]["scheduler"]["service"]
    # the Service selects the scheduler pod, and only it
    assert svc["spec"]["selector"].items() <= sched["metadata"]["labels"].items()
    assert not svc["spec"]["selector"].items() <= worker["metadata"]["labels"].items()
    assert worker["metadata"]["name"] == "pi-0a1b2c-worker-3"
    assert worker["metadata"]["labels"]["dask.org/component"] == "worker"
    # the pod specs are the DaskCluster's, plus what a controller would add
    for pod, part in ((sched, "scheduler"), (worker, "worker")):
        spec = {k: v for k, v in pod["spec"].items() if k != "restartPolicy"}
        want = resource["spec"][part]["spec"]
        assert {k: v for k, v in spec.items() if k != "containers"} == {
            k: v for k, v in want.items() if k != "containers"
        }
        assert pod["spec"]["restartPolicy"] == "OnFailure"
    c = worker["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["DASK_WORKER_NAME"] == "pi-0a1b2c-worker-3"
    assert env["DASK_SCHEDULER_ADDRESS"] == (
        "tcp://pi-0a1b2c-scheduler.sweeps.svc.cluster.local:8786"
    )
    assert c["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert "$(DASK_WORKER_NAME)" in c["args"] and "--nthreads" in c["args"]
    senv = {e["name"]: e.get("value") for e in sched["spec"]["containers"][0]["env"]}
    assert senv["DASK_DISTRIBUTED__SCHEDULER__IDLE_TIMEOUT"] == "600s"  # the operator's job
    assert "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES" in senv


def test_a_worker_pod_is_lost_when_deleted_disrupted_or_finished() -> None:
    from runner.kube import pods

    def pod(meta: dict | None = None, **status: object) -> dict:
        return {"metadata": meta or {}, "status": status}

    assert pods.lost(pod(phase="Running")) is None
    assert pods.lost(pod(phase="Pending")) is None
    assert pods.lost(pod({"deletionTimestamp": "2026-01-01T00:00:00Z"}, phase="Running"))
    evicted = pod(
        phase="Running",
        conditions=[
            {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
        ],
    )
    assert pods.lost(evicted) == "disrupted (EvictionByEvictionAPI)"
    assert pods.lost(pod(phase="Failed", reason="Evicted")) == "disrupted (Evicted)"
    assert pods.lost(pod(phase="Failed", reason="OOMKilled")) == "failed (OOMKilled)"
    assert pods.disruption(evicted) and not pods.disruption(pod(phase="Running"))
    assert pods.lost(pod(phase="Succeeded")) == "succeeded"


def test_dask_cluster_layout_is_make_cluster_spec_layout() -> None:
    from dask_kubernetes.operator import make_cluster_spec

    ref = make_cluster_spec("ref", n_workers=1)
    worker, scheduler = defaults()
    ours = cs.build_cluster_spec(
        "ref", KubernetesSpec(), worker_template=worker, scheduler_template=scheduler
    )
    assert ours["apiVersion"] == ref["apiVersion"] and ours["kind"] == ref["kind"]
    assert set(ref["spec"]) <= set(ours["spec"])
    assert set(ref["spec"]["worker"]) <= set(ours["spec"]["worker"])
    assert set(ref["spec"]["scheduler"]) <= set(ours["spec"]["scheduler"])
    assert ours["spec"]["scheduler"]["service"] == ref["spec"]["scheduler"]["service"]


def test_gpu_and_placement_templates_pass_the_crd(tmp_path: Path) -> None:
    template = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": {"team": "physics"}, "annotations": {"note": "gpu"}},
        "spec": {
            "nodeSelector": {"accelerator": "nvidia-a100"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["a"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "containers": [
                {
                    "name": "worker",
                    "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "16Gi"}},
                    "env": [
                        {
                            "name": "AWS_SECRET_ACCESS_KEY",
                            "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}},
                        }
                    ],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                }
            ],
            "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
        },
    }
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(template))
    provider = make_provider(
        KubernetesSpec(worker_template="gpu.yaml", max_workers=4), base_dir=str(tmp_path)
    )
    resource = provider.cluster_resource(token="abc123")
    kubecheck.validate(resource)
    assert resource["metadata"]["name"] == "pi-abc123"
    assert resource["spec"]["worker"]["metadata"]["labels"] == {"team": "physics"}
    # the CRD takes quantities as strings only: 1 GPU is "1"
    assert dask_container(resource, "worker")["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_numeric_probe_ports_are_refused_with_a_fix() -> None:
    template = {
        "containers": [
            {"name": "worker", "readinessProbe": {"httpGet": {"port": 8788, "path": "/health"}}}
        ]
    }
    with pytest.raises(SpecError, match="port names"):
        cs.apply_overrides(cs.load_pod_template(template, "worker"), "worker")


def test_cluster_names_are_valid_for_the_operator() -> None:
    from dask_kubernetes.constants import VALID_CLUSTER_NAME

    for sweep in ("pi", "a" * 40, "x-" * 20 + "y", "Weird_Name"):
        name = cs.cluster_name(sweep, "abcdef")
        assert VALID_CLUSTER_NAME.match(name), name
    with pytest.raises(SpecError, match="at most 53"):
        cs.check_cluster_name("a" * 54)


def test_owner_reference_from_the_downward_api() -> None:
    from runner.clusters.kubernetes import owner_reference

    assert owner_reference({}) is None
    assert owner_reference({"SWEEP_POD_NAME": "p", "SWEEP_POD_UID": "u"}) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "p",
        "uid": "u",
    }


# --------------------------------------------------------------------------- provider (pure)


def make_provider(kube: KubernetesSpec, **options: object):
    from runner.clusters.kubernetes import KubernetesProvider

    return KubernetesProvider(ClusterSpec(kind="kubernetes", kubernetes=kube), name="pi", **options)


def test_provider_namespace_in_the_runner_pod_is_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_NAMESPACE", "team-a")
    assert make_provider(KubernetesSpec()).namespace == "team-a"
    assert make_provider(KubernetesSpec(namespace="other")).namespace == "other"
    assert make_provider(KubernetesSpec(), namespace="cli").namespace == "cli"
    monkeypatch.delenv("SWEEP_NAMESPACE")
    assert make_provider(KubernetesSpec()).namespace is None  # then: the kubeconfig's


def test_provider_sizes_for_max_workers_and_contacts_nothing() -> None:
    provider = make_provider(KubernetesSpec(max_workers=7, worker_threads=2))
    assert provider.slots_hint() == 14 and provider.starts_cluster
    resource = provider.cluster_resource()
    kubecheck.validate(resource)
    assert resource["metadata"]["labels"]["app.kubernetes.io/instance"] == "pi"
    provider.stop()  # nothing started: a no-op


def test_provider_default_image_is_the_runners(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_IMAGE", "reg.example/sweep:9")
    resource = make_provider(KubernetesSpec()).cluster_resource()
    assert dask_container(resource, "worker")["image"] == "reg.example/sweep:9"


def test_provider_refuses_literal_credentials_in_templates() -> None:
    template = {
        "containers": [
            {"name": "worker", "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": CANARY}]}
        ]
    }
    with pytest.raises(SpecError, match="AWS_SECRET_ACCESS_KEY") as e:
        make_provider(KubernetesSpec(worker_template=template)).cluster_resource()
    assert CANARY not in str(e.value)


def test_autoscale_follows_the_remaining_partitions() -> None:
    from runner.clusters.kubernetes import Autoscale

    auto = Autoscale(ScalingPolicy(minimum=1, maximum=10, partitions_per_worker=2))
    calls = []
    for remaining in [100, 60, 21, 20, 19, 18, 10, 9, 3, 1, 0]:
        target = auto.next(remaining)
        if target is not None:
            calls.append((remaining, target))
            auto.applied(target)
    # capped at max_workers until the tail, then one call per change, down to the minimum
    assert calls == [
        (100, (1, 10)),
        (18, (1, 9)),
        (10, (1, 5)),
        (3, (1, 2)),
        (1, (1, 1)),
    ]


def test_autoscale_retries_a_failed_call() -> None:
    from runner.clusters.kubernetes import Autoscale

    auto = Autoscale(ScalingPolicy(minimum=0, maximum=4, partitions_per_worker=1))
    assert auto.next(10) == (0, 4)
    assert auto.next(10) == (0, 4)  # not applied (the API call failed): asked again
    auto.applied((0, 4))
    assert auto.next(9) is None
    assert auto.next(0) == (0, 0)  # scale to zero when nothing is left


# --------------------------------------------------------------------------- diagnosis


def pod(name: str, waiting: str | None = None, restarts: int = 0, message: str = "", **status):
    cst = {
        "name": "worker",
        "image": "reg.example/sim:3",
        "restartCount": restarts,
        "state": {"waiting": {"reason": waiting, "message": message}}
        if waiting
        else {"running": {}},
    }
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "worker", "image": "reg.example/sim:3"}]},
        "status": {"phase": "Pending", "containerStatuses": [cst], **status},
    }


def test_diagnose_names_the_image_that_cannot_be_pulled() -> None:
    from runner.kube.diagnose import diagnose

    (p,) = diagnose(
        [pod("w1", "ImagePullBackOff", message='Back-off pulling image "reg.example/sim:3"')]
    )
    assert p.kind == "image" and p.fatal
    assert "reg.example/sim:3" in p.message and "\n" not in p.message


def test_diagnose_missing_secret_crash_loop_and_capacity() -> None:
    from runner.kube.diagnose import diagnose

    found = diagnose(
        [
            pod("ok"),
            pod("cfg", "CreateContainerConfigError", message='secret "s3" not found'),
            pod("loop", "CrashLoopBackOff", restarts=3),
            pod("young", "CrashLoopBackOff", restarts=1),
            pod(
                "big",
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    }
                ],
            ),
        ]
    )
    assert [(p.kind, p.pod, p.fatal) for p in found] == [
        ("config", "cfg", True),
        ("crashloop", "loop", True),
        ("unschedulable", "big", False),
    ]
    assert 'secret "s3" not found' in found[0].message
    assert "Insufficient nvidia.com/gpu" in found[2].message


def test_one_line_log_tail() -> None:
    from runner.kube.diagnose import one_line

    assert one_line(["a\n", "", "  b  ", "Traceback: boom"]) == "a | b | Traceback: boom"
    assert len(one_line(["x" * 5000], limit=100)) == 101


# --------------------------------------------------------------------------- manifests


def build(
    spec_file: Path = EXAMPLES / "pi.yaml", output: str = "s3://bucket/sweeps/pi", **opts
) -> list[dict]:
    spec = load_spec(spec_file, output=output)
    worker, scheduler = defaults()
    data = yaml.safe_load(spec_file.read_text())
    data["output"] = output
    return mf.build_manifests(
        spec,
        worker_template=worker,
        scheduler_template=scheduler,
        spec_data=data,
        options=mf.ManifestOptions(**opts),
    )


def by_kind(objs: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objs}


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"namespace": "sweeps", "secret": "s3-credentials", "image": "reg.example/sweep:1"},
        {
            "instance": "pi-0123abcd",
            "active_deadline_seconds": None,
            "ttl_seconds_after_finished": 0,
        },
    ],
)
def test_manifests_are_valid_kubernetes(opts: dict) -> None:
    objs = build(**opts)
    assert [o["kind"] for o in objs] == [
        "NetworkPolicy",
        "NetworkPolicy",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Job",
    ]
    kubecheck.validate_all(objs)
    instance = opts.get("instance", "pi")
    for o in objs:
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == instance
        assert labels["app.kubernetes.io/name"] == "sweep"
        assert labels["app.kubernetes.io/managed-by"] == "sweep-runner"
        assert o["metadata"].get("namespace") == opts.get("namespace")
        suffix = {"NetworkPolicy": ("-scheduler", "-runner")}.get(o["kind"], ("",))
        assert o["metadata"]["name"] in [mf.fullname(instance) + x for x in suffix]


def _granted(role: dict) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_rbac_in_pod_mode_is_pods_and_services_only() -> None:
    """operator: false: no custom resources; the runner creates and deletes its own pods and
    the scheduler Service; nothing else (no Secrets, no patch, nothing cluster-wide)."""
    role = by_kind(build(namespace="sweeps", operator=False))["Role"]
    assert _granted(role) == {
        ("", "pods"): {"get", "list", "watch", "create", "delete"},
        ("", "services"): {"get", "list", "watch", "create", "delete"},
        ("", "pods/log"): {"get"},
    }
    # auto (the spec's default, `sweep manifest` offline): both, the runner decides
    auto = _granted(by_kind(build(namespace="sweeps"))["Role"])
    assert auto[("", "pods")] >= {"create", "delete"}
    assert ("kubernetes.dask.org", "daskclusters") in auto


def test_a_decided_mode_is_written_into_the_runners_spec() -> None:
    for operator in (True, False):
        cm = by_kind(build(namespace="sweeps", operator=operator))["ConfigMap"]
        spec = yaml.safe_load(cm["data"]["spec.yaml"])
        assert spec["cluster"]["kubernetes"]["operator"] is operator
    cm = by_kind(build(namespace="sweeps"))["ConfigMap"]
    assert "operator" not in yaml.safe_load(cm["data"]["spec.yaml"])["cluster"]["kubernetes"]


def test_rbac_is_namespaced_and_minimal() -> None:
    objs = by_kind(build(namespace="sweeps", operator=True))
    assert "ClusterRole" not in objs and "ClusterRoleBinding" not in objs
    role, binding = objs["Role"], objs["RoleBinding"]
    granted = _granted(role)
    assert set(granted) == {
        ("kubernetes.dask.org", "daskclusters"),
        ("kubernetes.dask.org", "daskworkergroups"),
        ("kubernetes.dask.org", "daskautoscalers"),
        ("", "pods"),
        ("", "pods/log"),
        ("", "services"),
    }
    assert all("*" not in verbs for verbs in granted.values())
    assert granted[("", "pods")] == {"get", "list", "watch"}  # the operator creates pods
    assert granted[("", "pods/log")] == {"get"}
    assert "create" not in granted[("kubernetes.dask.org", "daskworkergroups")]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": objs["ServiceAccount"]["metadata"]["name"],
            "namespace": "sweeps",
        }
    ]


def test_job_is_locked_down() -> None:
    job = by_kind(build(secret="s3-credentials"))["Job"]
    spec = job["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] >= 0
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [1, 2, 4]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    assert c["command"] == ["sweep"]
    assert c["args"] == ["run", "/etc/sweep/spec.yaml", "--cluster", "kubernetes"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/sweep"]["readOnly"] is True and "/tmp" in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/tmp"]["name"]] == {"name": "tmp", "emptyDir": {}}
    assert volumes[mounts["/etc/sweep"]["name"]]["configMap"]["name"] == job["metadata"]["name"]
    assert c["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    env = {e["name"]: e for e in c["env"]}
    assert env["SWEEP_POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    assert env["SWEEP_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["SWEEP_IMAGE"]["value"] == c["image"]
    assert pod["serviceAccountName"] == job["metadata"]["name"]


def test_configmap_spec_runs_on_kubernetes(tmp_path: Path) -> None:
    """What the runner pod reads: the spec loads and its templates build a DaskCluster."""
    cm = by_kind(build(secret="s3-credentials", namespace="elsewhere"))["ConfigMap"]
    for key, text in cm["data"].items():
        (tmp_path / key).write_text(text)
    data = yaml.safe_load(cm["data"]["spec.yaml"])
    kube = data["cluster"]["kubernetes"]
    assert kube["worker_template"] == "/etc/sweep/worker-template.yaml"
    assert kube["scheduler_template"] == "/etc/sweep/scheduler-template.yaml"
    kube["worker_template"] = str(tmp_path / "worker-template.yaml")
    kube["scheduler_template"] = str(tmp_path / "scheduler-template.yaml")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    spec = load_spec(tmp_path / "spec.yaml")
    assert spec.cluster.kind == "kubernetes"
    assert spec.cluster.kubernetes.env_from_secret == "s3-credentials"
    assert spec.cluster.kubernetes.namespace is None  # the runner's own namespace
    assert spec.output == "s3://bucket/sweeps/pi"
    original = yaml.safe_load((EXAMPLES / "pi.yaml").read_text())
    assert data["params"] == original["params"] and data["function"] == original["function"]
    provider = make_provider(spec.cluster.kubernetes)
    resource = provider.cluster_resource()
    kubecheck.validate(resource)
    assert {"secretRef": {"name": "s3-credentials"}} in dask_container(resource, "worker")[
        "envFrom"
    ]


def test_manifests_refuse_local_output_and_literal_secrets(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"local path.*s3://"):
        build(output="demo-output/pi")
    spec_file = tmp_path / "s.yaml"
    data = yaml.safe_load((EXAMPLES / "pi.yaml").read_text())
    data["storage_options"] = {"key": "AKIAEXAMPLE", "secret": CANARY, "anon": False}
    spec_file.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"storage_options\.key.*Secret") as e:
        build(spec_file)
    assert CANARY not in str(e.value)
    data.pop("storage_options")
    data["notify"] = {"webhook": f"https://hooks.example/{CANARY}"}
    spec_file.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"notify\.webhook \(write it as \$\{VAR\}") as e:
        build(spec_file)
    assert CANARY not in str(e.value)
    data["notify"] = {"webhook": "${SLACK_WEBHOOK_URL}"}  # from the Secret: fine
    spec_file.write_text(yaml.safe_dump(data))
    build(spec_file)


def test_no_secret_value_in_rendered_manifests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CANARY)
    text = mf.to_yaml(build(secret="s3-credentials", namespace="sweeps"))
    assert CANARY not in text
    assert "kind: Secret" not in text
    assert "s3-credentials" in text  # by reference only


def test_is_secret_name() -> None:
    for name in ("AWS_SECRET_ACCESS_KEY", "key", "secret", "token", "sessionToken", "password"):
        assert is_secret_name(name), name
    for name in ("secretName", "env_from_secret", "role_arn", "endpoint_url", "anon", "MONKEY"):
        assert not is_secret_name(name), name


# --------------------------------------------------------------------------- the CLI


def sweep(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_sweep_manifest_output_is_valid() -> None:
    res = sweep(
        "manifest",
        "examples/pi.yaml",
        "--output",
        "s3://bucket/sweeps/pi",
        "--namespace",
        "sweeps",
        "--secret",
        "s3-credentials",
        "--image",
        "reg.example/sweep:1",
        "--name",
        "pi-ci-1",
        env={"AWS_SECRET_ACCESS_KEY": CANARY},
    )
    assert res.returncode == 0, res.stderr
    docs = kubecheck.load_docs(res.stdout)
    kubecheck.validate_all(docs)
    assert [d["kind"] for d in docs] == [
        "NetworkPolicy",
        "NetworkPolicy",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Job",
    ]
    assert CANARY not in res.stdout
    job = docs[-1]
    assert job["metadata"]["name"] == "pi-ci-1-sweep"
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.example/sweep:1"


def test_kueue_queue_labels_the_job_the_workers_and_suspends_the_job() -> None:
    """`--queue` (cluster.kubernetes.queue): Kueue admits the Job by unsuspending it;
    the worker pods, in both modes, carry the queue too; the scheduler does not."""
    from runner.kube import pods

    res = sweep("manifest", "examples/pi.yaml", "-o", "s3://b/pi", "--queue", "team-a.gpu")
    assert res.returncode == 0, res.stderr
    docs = {d["kind"]: d for d in kubecheck.load_docs(res.stdout)}
    job = docs["Job"]
    assert job["metadata"]["labels"][cs.QUEUE_LABEL] == "team-a.gpu"
    assert job["spec"]["suspend"] is True
    spec = yaml.safe_load(docs["ConfigMap"]["data"]["spec.yaml"])
    kube = KubernetesSpec.model_validate(spec["cluster"]["kubernetes"] | {
        "worker_template": None, "scheduler_template": None})  # fmt: skip
    assert kube.queue == "team-a.gpu"
    resource = cs.build_cluster_spec(
        "pi-0a1b2c",
        kube,
        worker_template=cs.load_pod_template(None, "worker"),
        scheduler_template=cs.load_pod_template(None, "scheduler"),
    )
    assert resource["spec"]["worker"]["metadata"]["labels"][cs.QUEUE_LABEL] == "team-a.gpu"
    worker = pods.worker_pod(resource, pods.worker_name("pi-0a1b2c", 0), "sweeps")
    assert worker["metadata"]["labels"][cs.QUEUE_LABEL] == "team-a.gpu"
    assert cs.QUEUE_LABEL not in pods.scheduler_pod(resource)["metadata"]["labels"]
    # without a queue: no label, not suspended
    res = sweep("manifest", "examples/pi.yaml", "-o", "s3://b/pi")
    job = next(d for d in kubecheck.load_docs(res.stdout) if d["kind"] == "Job")
    assert cs.QUEUE_LABEL not in job["metadata"]["labels"] and "suspend" not in job["spec"]


@pytest.mark.parametrize("operator", [True, False, "auto"])
def test_network_policies_follow_the_mode(operator: bool | str) -> None:
    """The scheduler's comm port: the sweep's pods, plus the operator's namespace where the
    operator may run the cluster (operator mode, and auto while undecided); the runner
    takes no connections; --no-network-policy leaves them out."""
    spec = load_spec(ROOT / "examples" / "pi.yaml", output="s3://b/pi")
    kube = spec.cluster.kubernetes.model_copy(update={"operator": operator})
    spec = spec.model_copy(update={"cluster": spec.cluster.model_copy(update={"kubernetes": kube})})
    templates = {
        "worker_template": cs.load_pod_template(None, "worker"),
        "scheduler_template": cs.load_pod_template(None, "scheduler"),
    }
    objs = mf.build_manifests(spec, **templates, options=mf.ManifestOptions(namespace="sweeps"))
    kubecheck.validate_all(objs)
    policies = {o["metadata"]["name"]: o for o in objs if o["kind"] == "NetworkPolicy"}
    assert sorted(policies) == ["pi-sweep-runner", "pi-sweep-scheduler"]
    comm = policies["pi-sweep-scheduler"]["spec"]["ingress"][0]
    namespaces = [p["namespaceSelector"] for p in comm["from"] if "namespaceSelector" in p]
    if operator is False:
        assert namespaces == []
    else:
        assert namespaces == [{"matchLabels": {"kubernetes.io/metadata.name": "dask-operator"}}]
    runner = next(o for o in objs if o["kind"] == "Job")["spec"]["template"]["metadata"]
    selector = policies["pi-sweep-runner"]["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= runner["labels"].items()
    assert policies["pi-sweep-runner"]["spec"]["ingress"] == []
    off = mf.build_manifests(spec, **templates, options=mf.ManifestOptions(network_policy=False))
    assert "NetworkPolicy" not in {o["kind"] for o in off}
    res = sweep("manifest", "examples/pi.yaml", "-o", "s3://b/pi", "--no-network-policy")
    assert res.returncode == 0, res.stderr
    assert "NetworkPolicy" not in {d["kind"] for d in kubecheck.load_docs(res.stdout)}


def test_sweep_manifest_ships_a_function_file(tmp_path: Path) -> None:
    (tmp_path / "sim.py").write_text("def f(a):\n    return a * 2\n")
    (tmp_path / "spec.yaml").write_text(
        "name: sim\nfunction: sim.py:f\nparams: {grid: {a: [1, 2, 3]}}\noutput: s3://b/sim\n"
    )
    res = sweep("manifest", str(tmp_path / "spec.yaml"))
    assert res.returncode == 0, res.stderr
    cm = next(d for d in kubecheck.load_docs(res.stdout) if d["kind"] == "ConfigMap")
    assert cm["data"]["sim.py"].startswith("def f(a)")
    assert yaml.safe_load(cm["data"]["spec.yaml"])["function"] == "/etc/sweep/sim.py:f"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["manifest", "examples/pi.yaml"], "local path"),
        (["manifest", "nope.yaml"], "cannot read"),
        (["manifest", "examples/pi.yaml", "-o", "s3://b/x", "--name", "Bad_Name"], "sweep name"),
        (
            ["manifest", "examples/pi.yaml", "-o", "s3://b/x", "--queue", "Team_A"],
            "cluster.kubernetes.queue",
        ),
    ],
)
def test_sweep_manifest_bad_input_exits_2(args: list[str], message: str) -> None:
    res = sweep(*args)
    assert res.returncode == 2
    assert message in res.stderr and res.stderr.count("\n") == 1


def test_sweep_submit_without_kubeconfig_exits_3(tmp_path: Path) -> None:
    env = {"KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    env["KUBERNETES_SERVICE_HOST"] = ""
    res = sweep("submit", "examples/pi.yaml", "-o", "s3://b/pi", env=env)
    assert res.returncode == 3, res.stderr
    assert "KUBECONFIG" in res.stderr and res.stderr.count("\n") == 1


# --------------------------------------------------------------------------- against an HTTP API


class FakeApi(http.server.BaseHTTPRequestHandler):
    """A Kubernetes API that knows no custom resources: /version, and 404 or 403 for the rest."""

    status_for_dask = 404
    status_for_pods = 404
    posted: list[str] = []  # paths of the creations asked for (each fixture: its own list)

    def do_POST(self) -> None:
        self.posted.append(self.path)
        code = 403 if "networkpolicies" in self.path else 500
        self._send(code, {"kind": "Status", "apiVersion": "v1", "code": code, "message": "no"})

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/version":
            self._send(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0"})
        elif "kubernetes.dask.org" in self.path or "/pods" in self.path:
            code = (
                self.status_for_dask if "kubernetes.dask.org" in self.path else self.status_for_pods
            )
            self._send(code, {"kind": "Status", "apiVersion": "v1", "code": code, "message": "no"})
        else:
            self._send(404, {"kind": "Status", "apiVersion": "v1", "code": 404, "message": "nope"})

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeApi]]:
    handler = type("Handler", (FakeApi,), {"posted": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"},
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "sweeps"}}
                ],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield handler
    server.shutdown()


def test_provider_says_how_to_install_the_operator(fake_api: type[FakeApi]) -> None:
    provider = make_provider(KubernetesSpec(operator=True))
    with pytest.raises(InfrastructureError) as e, provider:
        pass
    text = str(e.value)
    assert "DaskCluster custom resource is not installed" in text
    assert "helm repo add dask https://helm.dask.org" in text and "\n" not in text
    assert "cluster.kubernetes.operator: false" in text


def test_provider_in_auto_mode_runs_pods_where_the_crd_is_missing(
    fake_api: type[FakeApi], capsys: pytest.CaptureFixture[str]
) -> None:
    """auto: a 404 for DaskClusters means pods; this API then refuses pods too (403), which
    is the error, naming pods and the Role to use."""
    fake_api.status_for_pods = 403
    provider = make_provider(KubernetesSpec())
    with pytest.raises(InfrastructureError, match=r"not allowed to manage pods.*sweeps"), provider:
        pass
    assert "runs the Dask cluster as plain pods" in capsys.readouterr().err


def test_provider_says_when_rbac_is_missing(fake_api: type[FakeApi]) -> None:
    fake_api.status_for_dask = 403
    provider = make_provider(KubernetesSpec(operator=True))
    with (
        pytest.raises(InfrastructureError, match=r"not allowed to manage DaskClusters.*sweeps"),
        provider,
    ):
        pass


def test_submit_checks_for_the_operator(fake_api: type[FakeApi]) -> None:
    from runner.kube.submit import KubeApi

    api = KubeApi()
    assert api.namespace == "sweeps"  # the kubeconfig context's
    with pytest.raises(InfrastructureError, match="helm repo add dask"):
        api.cluster_mode(True)
    said: list[str] = []
    assert api.cluster_mode("auto", out=said.append) is False  # no CRD: pods
    assert "plain pods" in said[0]
    assert api.cluster_mode(False) is False
    fake_api.status_for_dask = 403  # this account may not look: the runner decides
    assert api.cluster_mode("auto") is None
    assert api.cluster_mode(True) is True


def test_submit_without_the_right_to_create_network_policies_creates_nothing(
    fake_api: type[FakeApi],
) -> None:
    from runner.kube.commands import build_objects
    from runner.kube.submit import KubeApi

    api = KubeApi()
    objs = build_objects(ROOT / "examples" / "pi.yaml", output="s3://b/pi", namespace="sweeps")
    with pytest.raises(InfrastructureError) as e:
        api.create(objs)
    assert "may not create NetworkPolicies in namespace sweeps" in str(e.value)
    assert "--no-network-policy" in str(e.value)
    assert len(fake_api.posted) == 1 and "networkpolicies" in fake_api.posted[0]


# --------------------------------------------------------------------------- submit helpers


def test_job_state_and_exit_codes() -> None:
    from kubernetes import client as k

    from runner.kube.submit import admission_note, job_exit_code, job_state, runner_exit_code

    def job(
        *conditions: tuple[str, str], active: int = 0, suspend: bool = False, queue: str = ""
    ) -> k.V1Job:
        return k.V1Job(
            metadata=k.V1ObjectMeta(
                name="pi-sweep", labels={cs.QUEUE_LABEL: queue} if queue else {}
            ),
            spec=k.V1JobSpec(template=k.V1PodTemplateSpec(), suspend=suspend),
            status=k.V1JobStatus(
                active=active,
                conditions=[k.V1JobCondition(type=t, status=s) for t, s in conditions],
            ),
        )

    def runner_pod(code: int | None) -> k.V1Pod:
        state = (
            k.V1ContainerState(terminated=k.V1ContainerStateTerminated(exit_code=code))
            if code is not None
            else k.V1ContainerState(running=k.V1ContainerStateRunning())
        )
        cst = k.V1ContainerStatus(
            name="runner", image="i", image_id="", ready=False, restart_count=0, state=state
        )
        return k.V1Pod(status=k.V1PodStatus(container_statuses=[cst]))

    assert job_state(job(active=1)) == "running"
    assert job_state(job()) == "pending"
    assert job_state(job(("Complete", "True"))) == "succeeded"
    assert job_state(job(("Failed", "True"))) == "failed"
    queued = job(("Suspended", "True"), suspend=True, queue="team-a")
    assert job_state(queued) == "queued"
    assert "waiting for admission by Kueue (LocalQueue team-a)" in admission_note(queued, "ns")
    assert job_state(job(suspend=True)) == "suspended"
    assert "kubectl patch job pi-sweep -n ns" in admission_note(job(suspend=True), "ns")
    assert admission_note(job(active=1, queue="team-a"), "ns") is None  # admitted
    assert job_state(job(("Complete", "True"), suspend=True, queue="q")) == "succeeded"
    assert job_exit_code(job(("Complete", "True")), []) == 0
    assert job_exit_code(job(active=1), [runner_pod(None)]) is None
    assert job_exit_code(job(("Failed", "True")), [runner_pod(3), runner_pod(1)]) == 1
    assert job_exit_code(job(("Failed", "True")), [runner_pod(None)]) == 3  # e.g. never started
    assert runner_exit_code(runner_pod(2)) == 2


def test_api_errors_are_one_line_with_a_hint() -> None:
    from kubernetes.client.exceptions import ApiException

    from runner.kube.submit import api_error

    e = ApiException(status=403, reason="Forbidden")
    e.body = json.dumps({"message": 'jobs.batch is forbidden: User "ci" cannot create'})
    err = api_error("creating Job pi-sweep", e, "sweeps")
    assert str(err).startswith("creating Job pi-sweep: HTTP 403: jobs.batch is forbidden")
    assert "namespace sweeps" in str(err) and "\n" not in str(err)
    e = ApiException(status=404, reason="Not Found")
    e.body = json.dumps({"message": 'namespaces "nope" not found'})
    assert "kubectl create namespace" in str(api_error("x", e, "nope"))
