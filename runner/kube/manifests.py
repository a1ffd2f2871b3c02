"""The plain Kubernetes objects that run one sweep as a batch Job (pure builders).

``sweep manifest`` prints them for ``kubectl apply -f -``, ``sweep submit`` creates
them through the API, and the Helm chart ``helm/sweep`` renders the same objects:

- ``ConfigMap`` ``<name>``: ``spec.yaml`` (the sweep, with ``cluster.kind: kubernetes``
  and the templates below), ``worker-template.yaml``, ``scheduler-template.yaml``;
- ``ServiceAccount``, ``Role`` and ``RoleBinding`` ``<name>``: what the runner needs to
  run its Dask cluster (through the operator, or as its own pods: :func:`rbac_rules`), in
  its namespace only;
- ``NetworkPolicy`` ``<name>-scheduler`` and ``<name>-runner``: only the sweep's own pods
  (and, with the operator, its namespace) reach the scheduler's comm port; the runner
  takes no connections (:func:`network_policies`);
- ``Job`` ``<name>``: ``sweep run /etc/sweep/spec.yaml --cluster kubernetes`` in a
  locked-down container; its exit code is the CLI's (0 ok, 1 failure budget exceeded,
  2 bad input, 3 infrastructure).

``<name>`` is ``<instance>-sweep`` (or the instance itself when it already contains
"sweep"), the same rule as the chart's ``sweep.fullname`` helper. Every object carries
``app.kubernetes.io/instance: <instance>``: ``sweep status|logs|cancel <instance>``
find them by it. Credentials never appear: the S3 Secret is referenced by name.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from .. import __version__, config
from ..exceptions import SpecError
from ..secrets import literal_secrets
from ..spec import SweepSpec
from . import cluster_spec as cs
from . import pods

CONFIG_DIR = "/etc/sweep"
SPEC_KEY = "spec.yaml"
WORKER_KEY = "worker-template.yaml"
SCHEDULER_KEY = "scheduler-template.yaml"
RUNNER_CONTAINER = "runner"
# After SIGTERM the runner drains for grace-seconds, then writes the manifest and deletes
# its Dask cluster: Kubernetes waits this much longer before it kills the pod.
SHUTDOWN_SECONDS = 60


def termination_grace_period(grace_seconds: float) -> int:
    """``terminationGracePeriodSeconds`` of the runner pod for a drain of ``grace_seconds``."""
    return int(-(-grace_seconds // 1)) + SHUTDOWN_SECONDS


RUNNER_UID = 10001
#: where the Dask operator's Helm chart installs it (it calls schedulers to retire workers)
DEFAULT_OPERATOR_NAMESPACE = "dask-operator"
LOCAL_PROTOCOLS = ("file", "local", "memory")

DEFAULT_RUNNER_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "250m", "memory": "512Mi"},
    "limits": {"cpu": "1", "memory": "2Gi"},
}

#: What ``dask_kubernetes.operator.KubeCluster`` does, verb by verb (read from its code):
#: DaskCluster get/list (exists, get by name via a field selector), create, patch,
#: delete and watch; DaskWorkerGroup get/list and patch (``scale``); DaskAutoscaler
#: create/patch (``adapt``) and delete (``scale`` turns adaptivity off); pods list/get
#: (waiting for the scheduler, diagnosing failures) and their logs; the scheduler
#: Service get/list. Nothing cluster-wide, no Secrets, no pod creation (the operator
#: creates the pods with its own account).
DASK_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["kubernetes.dask.org"],
        "resources": ["daskclusters", "daskautoscalers"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["kubernetes.dask.org"],
        "resources": ["daskworkergroups"],
        "verbs": ["get", "list", "watch", "patch"],
    },
]
RBAC_RULES: list[dict[str, Any]] = [
    *DASK_RULES,
    {
        "apiGroups": [""],
        "resources": ["pods", "services"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": [""],
        "resources": ["pods/log"],
        "verbs": ["get"],
    },
]


def rbac_rules(operator: bool | str) -> list[dict[str, Any]]:
    """The runner's Role for ``cluster.kubernetes.operator``: the operator's resources
    (``True``), its own pods (``False``, :data:`runner.kube.pods.RBAC_RULES`), or both
    (``"auto"``: the runner decides when it starts)."""
    if operator is True:
        return copy.deepcopy(RBAC_RULES)
    if operator is False:
        return copy.deepcopy(pods.RBAC_RULES)
    return copy.deepcopy([*DASK_RULES, *pods.RBAC_RULES])


@dataclass(frozen=True)
class ManifestOptions:
    """How to run the sweep on Kubernetes (what ``sweep manifest`` options map to).

    Attributes
    ----------
    namespace
        Namespace of every object; ``None`` leaves it out (``kubectl`` uses the current one).
    image
        Runner image, also the default image of the scheduler and workers. Default: the
        spec's ``cluster.kubernetes.image``, else the package's ``sweep-runner`` image.
    secret
        Name of an existing Secret with the storage credentials (e.g. ``AWS_ACCESS_KEY_ID``,
        ``AWS_SECRET_ACCESS_KEY``), injected with ``envFrom`` into the runner and the
        workers. Default: the spec's ``cluster.kubernetes.env_from_secret``.
    instance
        The name of this sweep on the cluster (label ``app.kubernetes.io/instance``).
        Default: the spec's ``name``.
    operator
        Run the Dask cluster through the operator (``True``) or as the runner's own pods
        (``False``), overriding the spec's ``cluster.kubernetes.operator``; the Role
        follows. ``None``: the spec's (``auto``: a Role for both).
    """

    namespace: str | None = None
    image: str | None = None
    secret: str | None = None
    instance: str | None = None
    backoff_limit: int = 2
    active_deadline_seconds: int | None = 86400
    ttl_seconds_after_finished: int | None = 86400
    image_pull_policy: str = "IfNotPresent"
    grace_seconds: float = field(default_factory=lambda: float(config.get("grace-seconds")))
    image_pull_secrets: tuple[str, ...] = ()
    runner_resources: Mapping[str, Any] = field(
        default_factory=lambda: copy.deepcopy(DEFAULT_RUNNER_RESOURCES)
    )
    service_account_annotations: Mapping[str, str] = field(default_factory=dict)
    #: overrides ``cluster.kubernetes.operator`` (``sweep submit`` resolves ``auto``)
    operator: bool | None = None
    #: the two NetworkPolicies of :func:`network_policies` (the chart's networkPolicy.*)
    network_policy: bool = True
    operator_namespace: str | None = DEFAULT_OPERATOR_NAMESPACE


def fullname(instance: str) -> str:
    """Object name for an instance: ``<instance>-sweep`` unless it already says sweep."""
    name = instance if "sweep" in instance else f"{instance}-sweep"
    return name[:63].rstrip("-")


def check_instance(instance: str) -> None:
    """Raise :class:`SpecError` unless ``instance`` can name Kubernetes objects."""
    if len(instance) > 53 or not cs.NAME_RE.match(instance):
        raise SpecError(
            f"sweep name {instance!r}: use lowercase letters, digits and '-', at most 53"
            " characters (it names Kubernetes objects)"
        )


def check_remote_output(output: str) -> None:
    """The runner and every worker write the output: it must be shared object storage."""
    proto = output.split("://", 1)[0] if "://" in output else "file"
    if proto in LOCAL_PROTOCOLS:
        raise SpecError(
            f"output {output!r} is a local path; on Kubernetes the runner and the workers"
            " need shared storage: use s3://bucket/prefix (or gs://, abfs://), e.g. with"
            " --output"
        )


def check_no_literal_secrets(spec_data: Mapping[str, Any], templates: Sequence[Any]) -> None:
    """Refuse literal credentials in ``storage_options`` or in a template's env."""
    bad = [
        f"spec {p}"
        for p in literal_secrets(spec_data.get("storage_options") or {}, "storage_options")
    ]
    webhook = (spec_data.get("notify") or {}).get("webhook")
    if webhook and not str(webhook).startswith("${"):
        bad.append("spec notify.webhook (write it as ${VAR}, VAR a key of that Secret)")
    for name, template in templates:
        bad += cs.template_literal_secrets(template, name)
    if bad:
        raise SpecError(
            f"literal credentials in {', '.join(bad)}: they would be written into the"
            " ConfigMap; put them in a Secret and pass its name with --secret"
            " (cluster.kubernetes.env_from_secret), or use env valueFrom.secretKeyRef"
        )


def runner_spec_data(spec_data: Mapping[str, Any], secret: str | None) -> dict[str, Any]:
    """The spec as the runner reads it in the pod: kubernetes cluster, templates from the ConfigMap.

    ``cluster.kubernetes.namespace`` is dropped so the Dask cluster lands in the runner's
    own namespace (where its Role applies); ``image`` stays only if the spec set it.
    """
    data = copy.deepcopy(dict(spec_data))
    data.pop("base_dir", None)
    cluster = dict(data.get("cluster") or {})
    kube = dict(cluster.get("kubernetes") or {})
    kube.pop("namespace", None)
    kube["worker_template"] = f"{CONFIG_DIR}/{WORKER_KEY}"
    kube["scheduler_template"] = f"{CONFIG_DIR}/{SCHEDULER_KEY}"
    if secret:
        kube["env_from_secret"] = secret
    cluster = {k: v for k, v in cluster.items() if k not in ("address", "workers")}
    cluster["kind"] = "kubernetes"
    cluster["kubernetes"] = kube
    data["cluster"] = cluster
    return data


def _with_operator(spec_data: Mapping[str, Any], operator: bool) -> dict[str, Any]:
    data = copy.deepcopy(dict(spec_data))
    cluster = dict(data.get("cluster") or {})
    cluster["kubernetes"] = {**dict(cluster.get("kubernetes") or {}), "operator": operator}
    data["cluster"] = cluster
    return data


def _meta(name: str, instance: str, component: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": cs.sweep_labels(instance, component)}
    if namespace:
        meta["namespace"] = namespace
    return meta


def build_manifests(
    spec: SweepSpec,
    *,
    worker_template: Mapping[str, Any],
    scheduler_template: Mapping[str, Any],
    spec_data: Mapping[str, Any] | None = None,
    files: Mapping[str, str] | None = None,
    options: ManifestOptions | None = None,
) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBinding, ConfigMap, NetworkPolicies and Job of one sweep (pure).

    Parameters
    ----------
    spec
        The validated sweep.
    worker_template, scheduler_template
        Pod templates (``{"metadata", "spec"}``, see
        :func:`runner.kube.cluster_spec.load_pod_template`), written into the ConfigMap
        as they are; the runner applies the spec's overrides in the pod.
    spec_data
        The spec as the user wrote it (the YAML mapping), to keep their fields as they
        are. Default: ``spec.to_dict()``.
    files
        Extra ConfigMap entries mounted next to the spec (e.g. a function's ``.py`` file).
    options
        Namespace, image, secret, Job limits; see :class:`ManifestOptions`.

    Returns
    -------
    list of dict
        Objects in the order to create them.

    Raises
    ------
    SpecError
        The output is local, the name cannot name objects, or credentials are literal.
    """
    opts = options or ManifestOptions()
    kube = spec.cluster.kubernetes
    instance = opts.instance or spec.name
    check_instance(instance)
    check_remote_output(spec.output)
    data = dict(spec_data) if spec_data is not None else spec.to_dict()
    check_no_literal_secrets(
        data, [("worker template", worker_template), ("scheduler template", scheduler_template)]
    )
    secret = opts.secret or kube.env_from_secret
    namespace = opts.namespace or kube.namespace
    image = opts.image or kube.image or cs.DEFAULT_IMAGE
    name = fullname(instance)
    operator = kube.operator if opts.operator is None else opts.operator
    if opts.operator is not None:  # decided at submit time: the runner does the same
        data = _with_operator(data, opts.operator)

    config_data = {
        SPEC_KEY: to_yaml_doc(runner_spec_data(data, secret)),
        WORKER_KEY: to_yaml_doc(_as_pod(worker_template)),
        SCHEDULER_KEY: to_yaml_doc(_as_pod(scheduler_template)),
    }
    for key, text in (files or {}).items():
        if not re.match(r"^[-._a-zA-Z0-9]+$", key) or key in config_data:
            raise SpecError(f"cannot add file {key!r} to the ConfigMap: rename it")
        config_data[key] = text

    sa_meta = _meta(name, instance, "runner", namespace)
    if opts.service_account_annotations:
        sa_meta["annotations"] = dict(opts.service_account_annotations)
    service_account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": sa_meta}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(name, instance, "runner", namespace),
        "rules": rbac_rules(operator),
    }
    subject: dict[str, Any] = {"kind": "ServiceAccount", "name": name}
    if namespace:
        subject["namespace"] = namespace
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(name, instance, "runner", namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [subject],
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(name, instance, "config", namespace),
        "data": config_data,
    }
    job = build_job(
        name=name,
        instance=instance,
        namespace=namespace,
        image=image,
        secret=secret,
        opts=opts,
        queue=kube.queue,
    )
    policies = (
        network_policies(
            name,
            instance,
            namespace,
            # auto, undecided here: the runner may use the operator (as the Role allows)
            operator_namespace=opts.operator_namespace if operator is not False else None,
        )
        if opts.network_policy
        else []
    )
    # the policies first: a user who may not create them is told before anything exists
    return [*policies, service_account, role, binding, config_map, job]


def network_policies(
    name: str, instance: str, namespace: str | None, operator_namespace: str | None = None
) -> list[dict[str, Any]]:
    """Who may reach the sweep's pods (pure; the chart's ``networkpolicy.yaml``).

    The scheduler's comm port (and dashboard) only the sweep's own pods (the runner and
    the workers: they carry its instance label) and, when given, pods of the Dask
    operator's namespace (it asks the scheduler which workers to retire); the dashboard
    also any pod of the namespace. The runner only connects out: it takes no connections.
    Workers are left open: the scheduler and their peers connect to them.
    """
    peers: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": instance}}}
    ]
    if operator_namespace:
        peers.append(
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": operator_namespace}
                }
            }
        )
    scheduler = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(f"{name}-scheduler", instance, "network-policy", namespace),
        "spec": {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/instance": instance,
                    pods.COMPONENT_LABEL: "scheduler",
                }
            },
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": peers,
                    "ports": [
                        {"port": cs.SCHEDULER_PORT, "protocol": "TCP"},
                        {"port": cs.DASHBOARD_PORT, "protocol": "TCP"},
                    ],
                },
                {
                    "from": [{"podSelector": {}}],
                    "ports": [{"port": cs.DASHBOARD_PORT, "protocol": "TCP"}],
                },
            ],
        },
    }
    runner_labels = cs.sweep_labels(instance, "runner")
    runner = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(f"{name}-runner", instance, "network-policy", namespace),
        "spec": {
            "podSelector": {
                "matchLabels": {
                    k: runner_labels[k]
                    for k in (
                        "app.kubernetes.io/name",
                        "app.kubernetes.io/instance",
                        "app.kubernetes.io/component",
                    )
                }
            },
            "policyTypes": ["Ingress"],
            "ingress": [],
        },
    }
    return [scheduler, runner]


def build_job(
    *,
    name: str,
    instance: str,
    namespace: str | None,
    image: str,
    secret: str | None,
    opts: ManifestOptions,
    queue: str | None = None,
) -> dict[str, Any]:
    """The runner ``batch/v1`` Job (pure).

    With a Kueue ``queue``, the Job carries its queue-name label and is created
    suspended: Kueue unsuspends it when the queue admits it (and may suspend it again
    to preempt it: the runner drains, and the next runner pod resumes).
    """
    labels = cs.sweep_labels(instance, "runner")
    env: list[dict[str, Any]] = [
        {"name": "SWEEP_INSTANCE", "value": instance},
        {"name": "SWEEP_IMAGE", "value": image},
        {"name": "SWEEP_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "SWEEP_POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "SWEEP_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "DASK_SWEEP__GRACE_SECONDS", "value": f"{opts.grace_seconds:g}"},
        {"name": "HOME", "value": "/tmp"},
    ]
    container: dict[str, Any] = {
        "name": RUNNER_CONTAINER,
        "image": image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": ["sweep"],
        "args": ["run", f"{CONFIG_DIR}/{SPEC_KEY}", "--cluster", "kubernetes"],
        "env": env,
        "resources": copy.deepcopy(dict(opts.runner_resources)),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "spec", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if secret:
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    pod_spec: dict[str, Any] = {
        "serviceAccountName": name,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": termination_grace_period(opts.grace_seconds),
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            {"name": "spec", "configMap": {"name": name}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if opts.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in opts.image_pull_secrets]
    job_spec: dict[str, Any] = {
        "backoffLimit": opts.backoff_limit,
        "podFailurePolicy": pod_failure_policy(),
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if opts.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = opts.active_deadline_seconds
    if opts.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = opts.ttl_seconds_after_finished
    metadata = _meta(name, instance, "runner", namespace)
    if queue:
        metadata["labels"][cs.QUEUE_LABEL] = queue
        job_spec["suspend"] = True
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def pod_security_context() -> dict[str, Any]:
    """Non-root, RuntimeDefault seccomp (the image's user is uid 10001)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNNER_UID,
        "runAsGroup": RUNNER_UID,
        "fsGroup": RUNNER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """No privilege escalation, no capabilities, read-only root (``/tmp`` is an emptyDir)."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_failure_policy() -> dict[str, Any]:
    """Do not retry what a retry cannot fix; do not count evictions against backoffLimit.

    Exit 1 (failure budget exceeded), 2 (bad input) and 4 (worker-hour or cost cap
    reached) fail the Job at once; exit 3
    (infrastructure) and signals are retried up to ``backoffLimit`` times, and every
    retry resumes: finished partitions are kept in the output.
    """
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": RUNNER_CONTAINER,
                    "operator": "In",
                    "values": [1, 2, 4],
                },
            },
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
        ]
    }


def _as_pod(template: Mapping[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod"}
    if template.get("metadata"):
        pod["metadata"] = copy.deepcopy(dict(template["metadata"]))
    pod["spec"] = copy.deepcopy(dict(template["spec"]))
    return pod


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the ConfigMap's files) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = (
        "|"
        if "\n" in text and not any(line != line.rstrip() for line in text.splitlines())
        else None
    )
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def to_yaml_doc(obj: Any) -> str:
    """One YAML document, keys in insertion order, files as ``|`` blocks."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def to_yaml(objs: Sequence[Mapping[str, Any]]) -> str:
    """A multi-document YAML stream for ``kubectl apply -f -``."""
    header = f"# sweep runner {__version__}: kubectl apply -f this file; see the README, section Kubernetes\n"
    return header + "".join("---\n" + to_yaml_doc(dict(o)) for o in objs)
