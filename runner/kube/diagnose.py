"""Why a Kubernetes workload does not come up, from its pods' status: pure functions.

Used by the provider while the Dask cluster starts (:mod:`runner.clusters.kubernetes`)
and by ``sweep submit --wait``/``sweep status`` for the runner Job's pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPERATOR_HINT = (
    "install the Dask operator once per cluster: helm repo add dask https://helm.dask.org &&"
    " helm install --create-namespace -n dask-operator dask-operator dask/dask-kubernetes-operator"
    " (the chart also ships inside dask-kubernetes: dask_kubernetes/operator/deployment/helm/"
    "dask-kubernetes-operator)"
)
PULL_ERRORS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
CONFIG_ERRORS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)


@dataclass(frozen=True)
class Problem:
    """A reason the Dask cluster cannot come up, found in its pods' status."""

    kind: str  # image | config | crashloop | unschedulable
    pod: str
    message: str
    fatal: bool = True


def diagnose(pods: list[Mapping[str, Any]], crashloop_restarts: int = 2) -> list[Problem]:
    """Find image pull errors, bad container config, crash loops and unschedulable pods (pure).

    Parameters
    ----------
    pods
        Pod objects as plain dicts (``metadata``, ``spec``, ``status``).
    crashloop_restarts
        Restarts after which a ``CrashLoopBackOff`` counts as fatal.

    Returns
    -------
    list of Problem
        Fatal problems first; ``unschedulable`` ones are not fatal (a node autoscaler
        may still add capacity) but explain a startup timeout.
    """
    found: list[Problem] = []
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        status = pod.get("status") or {}
        images = {
            c.get("name"): c.get("image") for c in (pod.get("spec") or {}).get("containers", [])
        }
        for cst in (status.get("containerStatuses") or []) + (
            status.get("initContainerStatuses") or []
        ):
            waiting = (cst.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason") or ""
            detail = (waiting.get("message") or "").strip().splitlines()
            detail_text = f": {detail[0][:300]}" if detail else ""
            image = cst.get("image") or images.get(cst.get("name")) or "?"
            if reason in PULL_ERRORS:
                found.append(
                    Problem(
                        "image",
                        name,
                        f"cannot pull image {image!r} for pod {name} ({reason}{detail_text});"
                        " check cluster.kubernetes.image / --image, that the image was pushed,"
                        " and imagePullSecrets in the pod template",
                    )
                )
            elif reason in CONFIG_ERRORS:
                found.append(
                    Problem(
                        "config",
                        name,
                        f"pod {name} cannot start its container ({reason}{detail_text});"
                        " check that the Secret/ConfigMap it references exists in the namespace",
                    )
                )
            elif (
                reason == "CrashLoopBackOff"
                and int(cst.get("restartCount") or 0) >= crashloop_restarts
            ):
                found.append(
                    Problem(
                        "crashloop",
                        name,
                        f"pod {name} is crash-looping ({cst.get('restartCount')} restarts)",
                    )
                )
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                found.append(
                    Problem(
                        "unschedulable",
                        name,
                        f"pod {name} cannot be scheduled: {(cond.get('message') or '')[:300]};"
                        " lower the resources in the pod template or add nodes",
                        fatal=False,
                    )
                )
    found.sort(key=lambda p: not p.fatal)
    return found


def one_line(lines: list[str], limit: int = 800) -> str:
    """Join log lines into one ``a | b | c`` line of at most ``limit`` characters."""
    text = " | ".join(line.strip() for line in lines if line.strip())
    return text if len(text) <= limit else "…" + text[-limit:]
