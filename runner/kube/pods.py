"""The pods of a Dask cluster without the Dask operator (pure builders).

When the ``DaskCluster`` custom resource is not installed (the operator needs
cluster-admin to install it), the runner creates the cluster's objects itself, exactly
as the operator would lay them out from the same ``DaskCluster`` resource
(:func:`runner.kube.cluster_spec.build_cluster_spec`), so both modes run the same pods:

- the scheduler ``Pod`` and ``Service`` ``<cluster>-scheduler``;
- one ``Pod`` per worker, ``<cluster>-<n>``, with ``DASK_WORKER_NAME`` (its own name)
  and ``DASK_SCHEDULER_ADDRESS`` (the Service) in the environment of every container.

The labels are the operator's (``dask.org/cluster-name``, ``dask.org/component``,
``dask.org/workergroup-name``) on top of the DaskCluster's and the templates' own, so
pod diagnosis, ``sweep status`` and cleanup find both modes' pods the same way. The
DaskCluster's owner (the runner pod) owns every object: Kubernetes deletes them with
the runner even when it is killed without cleaning up.

Bare pods have no controller that restarts them elsewhere: the runner replaces a worker
pod that is deleted, evicted or fails (:mod:`runner.clusters.kubepods`). Containers
restart in place on failure (``OnFailure``); a scheduler that exits after its idle
timeout stays down, so a cluster leaked by a runner killed outside Kubernetes stops
using CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from . import cluster_spec as cs

CLUSTER_LABEL = "dask.org/cluster-name"
COMPONENT_LABEL = "dask.org/component"
GROUP_LABEL = "dask.org/workergroup-name"
WORKER_GROUP = "default"

#: What the runner does in pod mode, verb by verb: it creates, watches and deletes the
#: scheduler and worker pods and the scheduler Service, reads pod logs for diagnosis,
#: and nothing else (no custom resources, no Secrets, nothing cluster-wide).
RBAC_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "resources": ["pods", "services"],
        "verbs": ["get", "list", "watch", "create", "delete"],
    },
    {
        "apiGroups": [""],
        "resources": ["pods/log"],
        "verbs": ["get"],
    },
]


def scheduler_name(cluster: str) -> str:
    """Name of the scheduler pod and Service (the operator's ``<cluster>-scheduler``)."""
    return f"{cluster}-scheduler"


def worker_name(cluster: str, n: int) -> str:
    """Name of worker ``n`` (its pod and its Dask worker name)."""
    return f"{cluster}-worker-{n}"


def scheduler_address(cluster: str, namespace: str) -> str:
    """The scheduler's address inside the cluster, as the operator gives it to workers."""
    return f"tcp://{scheduler_name(cluster)}.{namespace}.svc.cluster.local:{cs.SCHEDULER_PORT}"


def cluster_selector(cluster: str, component: str | None = None) -> str:
    """Label selector of a cluster's pods and Service (``component``: scheduler/worker)."""
    selector = f"{CLUSTER_LABEL}={cluster}"
    return selector + (f",{COMPONENT_LABEL}={component}" if component else "")


def _metadata(
    resource: Mapping[str, Any], part: Mapping[str, Any], name: str, extra: Mapping[str, str]
) -> dict[str, Any]:
    meta = resource["metadata"]
    labels = {**(meta.get("labels") or {}), **((part.get("metadata") or {}).get("labels") or {})}
    out: dict[str, Any] = {"name": name, "labels": {**labels, **extra}}
    annotations = (part.get("metadata") or {}).get("annotations")
    if annotations:
        out["annotations"] = dict(annotations)
    if meta.get("ownerReferences"):
        out["ownerReferences"] = copy.deepcopy(meta["ownerReferences"])
    return out


IDLE_TIMEOUT_ENV = "DASK_DISTRIBUTED__SCHEDULER__IDLE_TIMEOUT"


def _pod(
    resource: Mapping[str, Any],
    role: str,
    name: str,
    labels: Mapping[str, str],
    env: Mapping[str, str],
    containers: str = "dask",
) -> dict[str, Any]:
    """A Pod from the DaskCluster's ``role`` part: its spec (restarted on failure), its
    metadata plus ``labels``, and ``env`` first in the Dask container (``containers="all"``:
    in every container), so that later entries and the args can refer to it."""
    cluster = resource["metadata"]["name"]
    part = resource["spec"][role]
    spec = copy.deepcopy(part["spec"])
    spec["restartPolicy"] = "OnFailure"
    targets = (
        spec["containers"]
        if containers == "all"
        else [spec["containers"][cs.dask_container_index(spec, role)]]
    )
    for c in targets:
        own = [e for e in c.get("env") or [] if e.get("name") not in env]
        c["env"] = [{"name": k, "value": v} for k, v in env.items()] + own
    extra = {CLUSTER_LABEL: cluster, COMPONENT_LABEL: role, **labels}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(resource, part, name, extra),
        "spec": spec,
    }


def scheduler_pod(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The scheduler ``Pod`` of a ``DaskCluster`` resource (pure).

    The DaskCluster's ``idleTimeout`` becomes the scheduler's own idle timeout (the
    operator enforces it in operator mode).
    """
    idle = int(resource["spec"].get("idleTimeout") or 0)
    env = {IDLE_TIMEOUT_ENV: f"{idle}s"} if idle else {}
    name = scheduler_name(resource["metadata"]["name"])
    return _pod(resource, "scheduler", name, {}, env)


def scheduler_service(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The scheduler ``Service`` of a ``DaskCluster`` resource (pure)."""
    cluster = resource["metadata"]["name"]
    part = resource["spec"]["scheduler"]
    meta = _metadata(
        resource,
        {},
        scheduler_name(cluster),
        {CLUSTER_LABEL: cluster, COMPONENT_LABEL: "scheduler"},
    )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": copy.deepcopy(part["service"]),
    }


def worker_pod(resource: Mapping[str, Any], name: str, namespace: str) -> dict[str, Any]:
    """Worker pod ``name`` of a ``DaskCluster`` resource in ``namespace`` (pure)."""
    env = {
        "DASK_WORKER_NAME": name,
        "DASK_SCHEDULER_ADDRESS": scheduler_address(resource["metadata"]["name"], namespace),
    }
    labels = {GROUP_LABEL: WORKER_GROUP, "dask.org/worker-name": name}
    return _pod(resource, "worker", name, labels, env, containers="all")


#: ``status.reason`` of a pod taken away by the cluster (kubelet eviction, node shutdown)
DISRUPTED_REASONS = frozenset({"Evicted", "Preempted", "Preempting", "Shutdown", "Terminated"})


def disruption(pod: Mapping[str, Any]) -> str | None:
    """Why the cluster took this pod away (eviction, preemption, node drain or reclaim), or
    ``None`` (pure): its ``DisruptionTarget`` condition, which Kubernetes sets before it
    stops such a pod, or a kubelet eviction's ``status.reason``."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            return f"disrupted ({cond.get('reason') or 'DisruptionTarget'})"
    if status.get("reason") in DISRUPTED_REASONS:
        return f"disrupted ({status['reason']})"
    return None


def lost(pod: Mapping[str, Any]) -> str | None:
    """Why a worker pod will never (again) run a Dask worker, or ``None`` if it may (pure).

    Evicted/preempted (:func:`disruption`), deleted or being deleted, or finished.
    """
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    why = disruption(pod)
    if why:
        return why
    if meta.get("deletionTimestamp"):
        return "deleted"
    phase = status.get("phase")
    if phase in ("Failed", "Succeeded"):
        reason = status.get("reason")
        return f"{phase.lower()}" + (f" ({reason})" if reason else "")
    return None
