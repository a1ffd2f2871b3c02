"""Build the ``DaskCluster`` custom resource of a sweep from pod templates (pure functions).

The Dask operator's own builder, ``dask_kubernetes.operator.make_cluster_spec``, takes
a handful of keyword arguments. A sweep needs more of the pod (resources, GPUs,
nodeSelector, tolerations, affinity, volumes, service account), so here the scheduler
and worker pods come from plain Pod YAML templates (:func:`load_pod_template`), the
spec's few overrides are applied (:func:`apply_overrides`), and the result is laid
out exactly as the operator expects (:func:`make_dask_cluster`):

- ``spec.scheduler``: ``{metadata, spec: PodSpec, service: {ports tcp-comm 8786,
  http-dashboard 8787}}``
- ``spec.worker``: ``{metadata, replicas, spec: PodSpec}`` whose Dask container runs
  ``dask worker --name $(DASK_WORKER_NAME) --dashboard --dashboard-address 8788``
  (the operator injects ``DASK_WORKER_NAME`` and ``DASK_SCHEDULER_ADDRESS``).

Everything except :func:`load_pod_template` (which reads a file) is pure: plain dicts
in, new plain dicts out, nothing contacted.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from .. import __version__
from ..clusters.base import SCHEDULER_CONFIG, config_env
from ..exceptions import SpecError
from ..secrets import is_secret_name

Role = Literal["worker", "scheduler"]

API_VERSION = "kubernetes.dask.org/v1"
DEFAULT_IMAGE = f"sweep-runner:{__version__.split('+')[0]}"
WORKER_COMMAND = ("dask", "worker")
SCHEDULER_COMMAND = ("dask", "scheduler")
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
WORKER_DASHBOARD_PORT = 8788
MAX_CLUSTER_NAME = 53  # the operator appends "-scheduler" and names must fit in 63
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

#: labels every object a sweep creates carries (``app.kubernetes.io/instance`` is the sweep)
PART_OF = "sweep"
MANAGED_BY = "sweep-runner"
#: Kueue's label naming the LocalQueue that admits a Job or a pod
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


# --------------------------------------------------------------------------- templates


def default_template_path(role: Role) -> Path:
    """Path of the pod template shipped with the package for ``role``."""
    ref = resources.files("runner.kube") / "templates" / f"{role}-pod.yaml"
    return Path(str(ref))


def load_pod_template(
    source: str | Mapping[str, Any] | None, role: Role, base_dir: str | None = None
) -> dict[str, Any]:
    """Read a pod template into ``{"metadata": {...}, "spec": PodSpec}``.

    Parameters
    ----------
    source
        ``None`` for the packaged default, a path to a YAML file (relative paths start
        in ``base_dir``), or an inline mapping. A full ``Pod``, a pod template
        (``{metadata, spec}``) and a bare ``PodSpec`` (``{containers: ...}``) are all
        accepted.
    role
        ``"worker"`` or ``"scheduler"`` (only used for the default and for messages).
    base_dir
        Folder of the sweep spec, for relative paths.

    Returns
    -------
    dict
        A new ``{"metadata": {"labels", "annotations"}, "spec": PodSpec}`` dict.

    Raises
    ------
    SpecError
        The file is missing or not YAML, or it holds no pod spec with containers.
    """
    where = f"cluster.kubernetes.{role}_template"
    if source is None:
        path = default_template_path(role)
        data: Any = yaml.safe_load(path.read_text())
        where = str(path)
    elif not isinstance(source, str | Path):
        data = source  # a mapping, or something normalise_pod_template rejects
    else:
        path = Path(source).expanduser()
        if not path.is_absolute() and base_dir:
            path = Path(base_dir) / path
        try:
            text = path.read_text()
        except OSError as e:
            raise SpecError(
                f"{where}: cannot read {str(path)!r} ({e.strerror}); give a path to a Pod YAML"
                " (relative paths start in the spec's folder)"
            ) from e
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SpecError(f"{where}: {path} is not valid YAML: {e}") from e
        where = str(path)
    return normalise_pod_template(data, where)


def normalise_pod_template(data: Any, where: str = "pod template") -> dict[str, Any]:
    """Turn a Pod, a pod template or a bare PodSpec into ``{"metadata", "spec"}`` (pure).

    Raises
    ------
    SpecError
        ``data`` is not a mapping or has no non-empty ``containers`` list.
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: a pod template must be a mapping (a Pod YAML), got {data!r}")
    data = copy.deepcopy(dict(data))
    kind = data.get("kind")
    if kind not in (None, "Pod", "PodTemplate"):
        raise SpecError(f"{where}: expected a Pod (kind: Pod), got kind {kind!r}")
    if kind == "PodTemplate":
        data = data.get("template") or {}
    if "containers" in data:  # a bare PodSpec
        meta: dict[str, Any] = {}
        spec = data
    else:
        meta = dict(data.get("metadata") or {})
        spec = data.get("spec")
    if not isinstance(spec, Mapping):
        raise SpecError(f"{where}: no pod spec found; give a Pod with spec.containers")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise SpecError(f"{where}: spec.containers must list at least one container")
    if not all(isinstance(c, Mapping) for c in containers):
        raise SpecError(f"{where}: every entry of spec.containers must be a mapping")
    metadata = {k: dict(meta[k]) for k in ("labels", "annotations") if meta.get(k)}
    return {"metadata": metadata, "spec": dict(spec)}


def dask_container_index(pod_spec: Mapping[str, Any], role: Role) -> int:
    """Index of the container running Dask: the one named ``role``, else the first."""
    for i, c in enumerate(pod_spec["containers"]):
        if c.get("name") == role:
            return i
    return 0


# --------------------------------------------------------------------------- overrides


def apply_overrides(
    template: Mapping[str, Any],
    role: Role,
    *,
    image: str | None = None,
    default_image: str = DEFAULT_IMAGE,
    env_from_secret: str | None = None,
    service_account: str | None = None,
    worker_threads: int | None = None,
) -> dict[str, Any]:
    """Apply the spec's overrides and the Dask command line to a pod template (pure).

    Parameters
    ----------
    template
        ``{"metadata", "spec"}`` from :func:`load_pod_template`.
    role
        ``"worker"`` or ``"scheduler"``.
    image
        The spec's image; wins over the template's. Without either, ``default_image``.
    env_from_secret
        Name of a Secret added as ``envFrom: [{secretRef: {name}}]`` to the Dask
        container (workers only: the scheduler never touches the data).
    service_account
        ``serviceAccountName`` of the pods (workers only).
    worker_threads
        ``--nthreads`` of ``dask worker`` (replaces one given in the template's args).

    Returns
    -------
    dict
        A new template; ``template`` is not modified.
    """
    out = copy.deepcopy(dict(template))
    pod = out["spec"]
    # the operator wraps pods in Deployments: restartPolicy can only be Always there
    pod.pop("restartPolicy", None)
    crd_compatible(pod, role)
    idx = dask_container_index(pod, role)
    c = pod["containers"][idx]
    c["name"] = c.get("name") or role
    c["image"] = image or c.get("image") or default_image
    user_args = [str(a) for a in c.get("args") or []]
    if role == "worker":
        c.setdefault("command", list(WORKER_COMMAND))
        flags = [
            "--name",
            "$(DASK_WORKER_NAME)",
            "--dashboard",
            "--dashboard-address",
            str(WORKER_DASHBOARD_PORT),
        ]
        if worker_threads is not None:
            flags += ["--nthreads", str(worker_threads)]
            user_args = _drop_flag(user_args, "--nthreads")
        user_args = _drop_flag(_drop_flag(user_args, "--name"), "--dashboard-address")
        user_args = [a for a in user_args if a not in ("--dashboard", "--no-dashboard")]
        c["args"] = flags + user_args
        _ensure_ports(c, [("http-dashboard", WORKER_DASHBOARD_PORT)])
        if env_from_secret:
            ref = {"secretRef": {"name": env_from_secret}}
            env_from = list(c.get("envFrom") or [])
            if ref not in env_from:
                env_from.append(ref)
            c["envFrom"] = env_from
        if service_account:
            pod["serviceAccountName"] = service_account
            # workload identity needs the service account's token in the pod
            pod.pop("automountServiceAccountToken", None)
    else:
        c.setdefault("command", list(SCHEDULER_COMMAND))
        env = list(c.get("env") or [])
        named = {e.get("name") for e in env}
        env += [
            {"name": k, "value": v}
            for k, v in config_env(SCHEDULER_CONFIG).items()
            if k not in named
        ]
        c["env"] = env
        user_args = _drop_flag(user_args, "--host")
        c["args"] = ["--host", "0.0.0.0", *user_args]
        _ensure_ports(c, [("tcp-comm", SCHEDULER_PORT), ("http-dashboard", DASHBOARD_PORT)])
        probe = {"httpGet": {"port": "http-dashboard", "path": "/health"}}
        c.setdefault("readinessProbe", {**probe, "initialDelaySeconds": 0, "periodSeconds": 1})
        c.setdefault("livenessProbe", {**probe, "initialDelaySeconds": 15, "periodSeconds": 20})
    return out


QUANTITY_KEYS = frozenset({"requests", "limits", "overhead"})
PROBE_KEYS = ("livenessProbe", "readinessProbe", "startupProbe")


def crd_compatible(pod_spec: dict[str, Any], role: Role = "worker") -> None:
    """Make a PodSpec acceptable to the DaskCluster CRD, in place.

    The CRD types Kubernetes' int-or-string fields as strings: resource quantities
    (``nvidia.com/gpu: 1``) become ``"1"``, which means the same. A numeric probe port
    cannot be fixed that way (``"8080"`` would be a port *name*): it is refused.
    """

    def quantities(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in QUANTITY_KEYS and isinstance(v, dict):
                    node[k] = {q: str(x) if isinstance(x, int | float) else x for q, x in v.items()}
                elif k == "sizeLimit" and isinstance(v, int | float):
                    node[k] = str(v)
                else:
                    quantities(v)
        elif isinstance(node, list):
            for v in node:
                quantities(v)

    quantities(pod_spec)
    for group in ("initContainers", "containers"):
        for c in pod_spec.get(group) or []:
            for probe in PROBE_KEYS:
                for action in ("httpGet", "tcpSocket"):
                    port = ((c.get(probe) or {}).get(action) or {}).get("port")
                    if isinstance(port, int):
                        raise SpecError(
                            f"{role} template: {c.get('name')} {probe}.{action}.port is a number;"
                            " the DaskCluster resource only takes port names here: name the port"
                            " in the container's ports and use that name"
                        )


def _drop_flag(args: list[str], flag: str) -> list[str]:
    """Remove ``flag value`` and ``flag=value`` from an argument list."""
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = True
            continue
        if a.startswith(flag + "="):
            continue
        out.append(a)
    return out


def _ensure_ports(container: dict[str, Any], ports: list[tuple[str, int]]) -> None:
    have = list(container.get("ports") or [])
    names = {p.get("name") for p in have}
    for name, port in ports:
        if name not in names:
            have.append({"name": name, "containerPort": port, "protocol": "TCP"})
    container["ports"] = have


# --------------------------------------------------------------------------- DaskCluster


def scheduler_service(cluster_name: str, service_type: str = "ClusterIP") -> dict[str, Any]:
    """The scheduler Service spec the operator creates (``<cluster>-scheduler``)."""
    return {
        "type": service_type,
        "selector": {
            "dask.org/cluster-name": cluster_name,
            "dask.org/component": "scheduler",
        },
        "ports": [
            {
                "name": "tcp-comm",
                "protocol": "TCP",
                "port": SCHEDULER_PORT,
                "targetPort": "tcp-comm",
            },
            {
                "name": "http-dashboard",
                "protocol": "TCP",
                "port": DASHBOARD_PORT,
                "targetPort": "http-dashboard",
            },
        ],
    }


def make_dask_cluster(
    name: str,
    worker: Mapping[str, Any],
    scheduler: Mapping[str, Any],
    *,
    replicas: int = 1,
    labels: Mapping[str, str] | None = None,
    owner: Mapping[str, Any] | None = None,
    idle_timeout: int = 0,
    service_type: str = "ClusterIP",
) -> dict[str, Any]:
    """The ``DaskCluster`` resource from two pod templates that already carry overrides (pure).

    Parameters
    ----------
    name
        Cluster name (at most 53 characters: the operator appends ``-scheduler``).
    worker, scheduler
        ``{"metadata", "spec"}`` templates from :func:`apply_overrides`.
    replicas
        Workers of the default worker group at creation.
    labels
        Labels of the ``DaskCluster``; the operator copies them to its pods and Services.
    owner
        An ``ownerReference`` (e.g. the runner pod) so Kubernetes garbage-collects the
        cluster with its owner even if the runner is killed without cleaning up.
    idle_timeout
        Seconds after which the operator deletes an idle cluster (0: never).
    service_type
        The scheduler Service type.

    Returns
    -------
    dict
        ``{"apiVersion", "kind": "DaskCluster", "metadata", "spec"}``, valid against the
        CRD schema shipped with dask-kubernetes.
    """
    check_cluster_name(name)
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    if owner:
        metadata["ownerReferences"] = [dict(owner)]
    worker_part: dict[str, Any] = {"replicas": int(replicas), "spec": copy.deepcopy(worker["spec"])}
    if worker.get("metadata"):
        worker_part["metadata"] = copy.deepcopy(dict(worker["metadata"]))
    scheduler_part: dict[str, Any] = {
        "spec": copy.deepcopy(scheduler["spec"]),
        "service": scheduler_service(name, service_type),
    }
    if scheduler.get("metadata"):
        scheduler_part["metadata"] = copy.deepcopy(dict(scheduler["metadata"]))
    return {
        "apiVersion": API_VERSION,
        "kind": "DaskCluster",
        "metadata": metadata,
        "spec": {
            "idleTimeout": int(idle_timeout),
            "worker": worker_part,
            "scheduler": scheduler_part,
        },
    }


def build_cluster_spec(
    name: str,
    kube: Any,
    *,
    worker_template: Mapping[str, Any],
    scheduler_template: Mapping[str, Any],
    default_image: str = DEFAULT_IMAGE,
    replicas: int | None = None,
    labels: Mapping[str, str] | None = None,
    owner: Mapping[str, Any] | None = None,
    idle_timeout: int = 0,
) -> dict[str, Any]:
    """The ``DaskCluster`` for a :class:`~runner.spec.KubernetesSpec` and its two templates (pure).

    ``replicas`` defaults to ``max(1, kube.min_workers)``: one worker runs the probe
    partition before the sweep-driven autoscaler takes over.
    """
    worker = apply_overrides(
        worker_template,
        "worker",
        image=kube.image,
        default_image=default_image,
        env_from_secret=kube.env_from_secret,
        service_account=kube.service_account,
        worker_threads=kube.worker_threads,
    )
    if kube.queue:  # the workers are admitted by Kueue too; the small scheduler is not
        worker.setdefault("metadata", {}).setdefault("labels", {})[QUEUE_LABEL] = kube.queue
    scheduler = apply_overrides(
        scheduler_template, "scheduler", image=kube.image, default_image=default_image
    )
    return make_dask_cluster(
        name,
        worker,
        scheduler,
        replicas=max(1, kube.min_workers) if replicas is None else replicas,
        labels=labels,
        owner=owner,
        idle_timeout=idle_timeout,
    )


# --------------------------------------------------------------------------- names, labels


def check_cluster_name(name: str) -> None:
    """Raise :class:`SpecError` unless ``name`` is a valid DaskCluster name."""
    if len(name) > MAX_CLUSTER_NAME or not NAME_RE.match(name):
        raise SpecError(
            f"DaskCluster name {name!r}: use lowercase letters, digits and '-',"
            f" at most {MAX_CLUSTER_NAME} characters"
        )


def cluster_name(sweep_name: str, token: str) -> str:
    """``<sweep name, shortened>-<token>``: a fresh, valid DaskCluster name per run."""
    base = re.sub(r"[^a-z0-9-]+", "-", sweep_name.lower()).strip("-")[:30].rstrip("-") or "sweep"
    return f"{base}-{token}"


def sweep_labels(instance: str, component: str, version: str = __version__) -> dict[str, str]:
    """The ``app.kubernetes.io/*`` labels of the objects a sweep creates."""
    return {
        "app.kubernetes.io/name": PART_OF,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/version": label_value(version),
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def label_value(text: str) -> str:
    """``text`` made a valid label value (63 characters of ``[A-Za-z0-9._-]``)."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return value.strip("-._")


# --------------------------------------------------------------------------- secrets


def template_literal_secrets(template: Mapping[str, Any], where: str) -> list[str]:
    """Env entries of a pod template that hold a credential as a literal ``value`` (pure).

    ``env: [{name: AWS_SECRET_ACCESS_KEY, value: ...}]`` is flagged;
    ``valueFrom.secretKeyRef`` and ``envFrom.secretRef`` are the way. What is a
    credential is :func:`runner.secrets.is_secret_name`'s call.
    """
    spec = template.get("spec") or {}
    found = []
    for group in ("initContainers", "containers"):
        for c in spec.get(group) or []:
            for e in c.get("env") or []:
                if e.get("value") not in (None, "") and is_secret_name(str(e.get("name", ""))):
                    found.append(f"{where}: {c.get('name', '?')} env {e['name']}")
    return found
