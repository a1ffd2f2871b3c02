"""Submit, follow, inspect and cancel sweeps through the Kubernetes API (``kubernetes`` client).

A thin class over the official Python client for ``sweep submit|status|logs|cancel``;
the objects themselves come from :mod:`runner.kube.manifests`. It honours the same
configuration as ``kubectl``: ``KUBECONFIG`` or ``~/.kube/config`` (current context,
or ``context=``), else the in-cluster service account (CI jobs running in a pod).

Errors become :class:`~runner.exceptions.InfrastructureError` (exit 3) for API and
cluster problems, :class:`~runner.exceptions.SpecError` (exit 2) for things the
caller must change (an unknown sweep, a name already taken), each on one line.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..exceptions import InfrastructureError, SpecError, SweepError
from . import cluster_spec as cs
from . import manifests as mf
from .pods import CLUSTER_LABEL, COMPONENT_LABEL

DASK_GROUP, DASK_VERSION = "kubernetes.dask.org", "v1"
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
REQUEST_TIMEOUT = 30
#: seconds a runner pod may stay unable to start (image pull, missing Secret) before --wait gives up
START_GRACE = 180.0

Printer = Callable[[str], None]


def _ignore(_: str) -> None:
    pass


class KubeApi:
    """The Kubernetes API for one namespace.

    Parameters
    ----------
    namespace
        Default: the kubeconfig context's namespace, in a pod its own, else ``default``.
    context
        A kubeconfig context other than the current one.

    Raises
    ------
    InfrastructureError
        No kubeconfig and not in a pod, or the kubeconfig is unusable.
    """

    def __init__(self, namespace: str | None = None, context: str | None = None) -> None:
        from kubernetes import client, config

        default_ns = None
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        kubeconfig = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
        has_kubeconfig = any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p)
        try:
            if has_kubeconfig or context or not in_cluster:
                # pass the path: the client reads KUBECONFIG only once, at import
                config.load_kube_config(config_file=kubeconfig, context=context)
                _, active = config.list_kube_config_contexts(config_file=kubeconfig)
                if context:
                    contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
                    active = next((c for c in contexts if c["name"] == context), active)
                default_ns = (active or {}).get("context", {}).get("namespace")
            else:
                config.load_incluster_config()
                if SA_NAMESPACE_FILE.is_file():
                    default_ns = SA_NAMESPACE_FILE.read_text().strip()
        except (config.ConfigException, OSError, TypeError, ValueError) as e:
            raise InfrastructureError(
                f"no usable Kubernetes configuration ({e}); set KUBECONFIG or create"
                " ~/.kube/config (kubectl config view), or run inside a pod"
            ) from e
        self.namespace: str = namespace or default_ns or "default"
        self.core = client.CoreV1Api()
        self.batch = client.BatchV1Api()
        self.rbac = client.RbacAuthorizationV1Api()
        self.networking = client.NetworkingV1Api()
        self.custom = client.CustomObjectsApi()
        self.host = client.Configuration.get_default_copy().host

    # ------------------------------------------------------------------ errors

    def _call(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the API; turn failures into one-line errors that say what to do."""
        from kubernetes.client.exceptions import ApiException

        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            raise api_error(action, e, self.namespace) from e
        except Exception as e:  # urllib3 connection errors and the like
            raise InfrastructureError(
                f"{action}: cannot reach the Kubernetes API at {self.host}"
                f" ({type(e).__name__}: {str(e)[:200]}); check the cluster and KUBECONFIG"
                " (kubectl cluster-info)"
            ) from e

    # ------------------------------------------------------------------ submit

    def cluster_mode(self, requested: bool | str = True, out: Printer = _ignore) -> bool | None:
        """Decide ``cluster.kubernetes.operator`` for a sweep about to be submitted.

        ``True``: the DaskCluster CRD must be installed (else an error with the install
        hint); ``False``: pods, nothing to check; ``"auto"``: ``True`` where the CRD is
        installed, ``False`` where it is not, ``None`` when this account may not look
        (the runner decides in its pod, with a Role for both).
        """
        from kubernetes.client.exceptions import ApiException

        if requested is False:
            return False
        try:
            self.custom.list_namespaced_custom_object(
                DASK_GROUP,
                DASK_VERSION,
                self.namespace,
                "daskclusters",
                limit=1,
                _request_timeout=REQUEST_TIMEOUT,
            )
            return True
        except ApiException as e:
            if e.status == 404:
                if requested == "auto":
                    out(
                        "the Dask operator is not installed here (no DaskCluster resource):"
                        " the runner will run the Dask cluster as plain pods"
                    )
                    return False
                from .diagnose import OPERATOR_HINT

                raise InfrastructureError(
                    f"the DaskCluster custom resource is not installed; {OPERATOR_HINT}, or set"
                    " cluster.kubernetes.operator: false to run the Dask cluster as plain pods"
                ) from e
            if e.status in (401, 403):
                # the runner's own Role may still allow it; let the Job tell
                return True if requested is True else None
            raise api_error("checking for the Dask operator", e, self.namespace) from e
        except Exception as e:
            raise InfrastructureError(
                f"cannot reach the Kubernetes API at {self.host} ({type(e).__name__}); check"
                " the cluster and KUBECONFIG (kubectl cluster-info)"
            ) from e

    def create(self, objects: Iterable[Mapping[str, Any]], out: Printer = _ignore) -> None:
        """Create the sweep's objects; update ConfigMap and RBAC that exist, refuse a Job that does.

        Once the Job exists, the other objects get it as owner, so deleting the Job
        (by hand or by ``ttlSecondsAfterFinished``) removes them too.
        """
        objs = [dict(o) for o in objects]
        for obj in objs:
            obj.setdefault("metadata", {})["namespace"] = self.namespace
        jobs = [o for o in objs if o["kind"] == "Job"]
        for job in jobs:
            name = job["metadata"]["name"]
            if self._get_job(name) is not None:
                raise SpecError(
                    f"a Job {name} already exists in namespace {self.namespace}; see it with"
                    f" `sweep status {job['metadata']['labels'][INSTANCE]}` or remove it with"
                    f" `sweep cancel {job['metadata']['labels'][INSTANCE]}` first"
                )
        created_job = None
        for obj in objs:
            kind, name = obj["kind"], obj["metadata"]["name"]
            create, replace = self._writers(kind)
            from kubernetes.client.exceptions import ApiException

            try:
                result = create(self.namespace, obj, _request_timeout=REQUEST_TIMEOUT)
                out(f"{kind.lower()}/{name} created")
            except ApiException as e:
                if kind == "NetworkPolicy" and e.status in (401, 403):
                    raise InfrastructureError(
                        f"creating NetworkPolicy {name}: HTTP {e.status}: your Kubernetes user"
                        f" may not create NetworkPolicies in namespace {self.namespace}; ask for"
                        " that right, or pass --no-network-policy to submit without them"
                    ) from e
                if e.status != 409 or replace is None:
                    raise api_error(f"creating {kind} {name}", e, self.namespace) from e
                result = self._call(f"updating {kind} {name}", replace, name, self.namespace, obj)
                out(f"{kind.lower()}/{name} configured")
            except Exception as e:
                raise InfrastructureError(
                    f"creating {kind} {name}: cannot reach the Kubernetes API at {self.host}"
                    f" ({type(e).__name__}); check KUBECONFIG (kubectl cluster-info)"
                ) from e
            if kind == "Job":
                created_job = result
        if created_job is not None:
            owner = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": created_job.metadata.name,
                "uid": created_job.metadata.uid,
            }
            for obj in objs:
                if obj["kind"] == "Job":
                    continue
                patch = self._patchers(obj["kind"])
                self._call(
                    f"setting the owner of {obj['kind']} {obj['metadata']['name']}",
                    patch,
                    obj["metadata"]["name"],
                    self.namespace,
                    {"metadata": {"ownerReferences": [owner]}},
                )

    def _writers(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any] | None]:
        table: dict[str, tuple[Callable[..., Any], Callable[..., Any] | None]] = {
            "ServiceAccount": (
                self.core.create_namespaced_service_account,
                self.core.replace_namespaced_service_account,
            ),
            "ConfigMap": (
                self.core.create_namespaced_config_map,
                self.core.replace_namespaced_config_map,
            ),
            "Role": (self.rbac.create_namespaced_role, self.rbac.replace_namespaced_role),
            "RoleBinding": (
                self.rbac.create_namespaced_role_binding,
                self.rbac.replace_namespaced_role_binding,
            ),
            "NetworkPolicy": (
                self.networking.create_namespaced_network_policy,
                self.networking.replace_namespaced_network_policy,
            ),
            "Job": (self.batch.create_namespaced_job, None),
        }
        if kind not in table:
            raise SpecError(f"cannot create a {kind} (only {', '.join(table)})")
        return table[kind]

    def _patchers(self, kind: str) -> Callable[..., Any]:
        return {
            "ServiceAccount": self.core.patch_namespaced_service_account,
            "ConfigMap": self.core.patch_namespaced_config_map,
            "Role": self.rbac.patch_namespaced_role,
            "RoleBinding": self.rbac.patch_namespaced_role_binding,
            "NetworkPolicy": self.networking.patch_namespaced_network_policy,
        }[kind]

    # ------------------------------------------------------------------ find

    def _get_job(self, name: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.batch.read_namespaced_job(
                name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise api_error(f"reading Job {name}", e, self.namespace) from e

    def find_job(self, instance: str) -> Any:
        """The newest runner Job of a sweep (by ``app.kubernetes.io/instance``)."""
        jobs = self._call(
            f"listing the Jobs of {instance}",
            self.batch.list_namespaced_job,
            self.namespace,
            label_selector=f"{INSTANCE}={instance},app.kubernetes.io/name={cs.PART_OF}",
        ).items
        if not jobs:
            raise SpecError(
                f"no sweep {instance!r} in namespace {self.namespace}; list them with"
                f" kubectl get jobs -n {self.namespace} -l app.kubernetes.io/name=sweep"
                " (or pass --namespace)"
            )
        return max(jobs, key=lambda j: j.metadata.creation_timestamp or _EPOCH)

    def runner_pods(self, instance: str, job_name: str | None = None) -> list[Any]:
        """Runner pods of a sweep, oldest first."""
        selector = f"{INSTANCE}={instance},app.kubernetes.io/component=runner"
        if job_name:
            selector += f",job-name={job_name}"
        pods = self._call(
            f"listing the runner pods of {instance}",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=selector,
        ).items
        return sorted(pods, key=lambda p: p.metadata.creation_timestamp or _EPOCH)

    def dask_clusters(self, instance: str) -> list[dict[str, Any]]:
        """DaskClusters the sweep's runner created (empty when the operator is absent)."""
        from kubernetes.client.exceptions import ApiException

        try:
            res = self.custom.list_namespaced_custom_object(
                DASK_GROUP,
                DASK_VERSION,
                self.namespace,
                "daskclusters",
                label_selector=f"{INSTANCE}={instance}",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as e:
            if e.status in (403, 404):
                return []
            raise api_error("listing DaskClusters", e, self.namespace) from e
        return list(res.get("items", []))

    def dask_pods(self, instance: str) -> list[tuple[str, Any]]:
        """The pods and Services of the sweep's Dask clusters in pod mode (no operator owns them)."""
        selector = f"{INSTANCE}={instance},{CLUSTER_LABEL}"
        found: list[tuple[str, Any]] = []
        for kind, lister in (
            ("pod", self.core.list_namespaced_pod),
            ("service", self.core.list_namespaced_service),
        ):
            items = self._call(
                f"listing the Dask {kind}s of {instance}",
                lister,
                self.namespace,
                label_selector=selector,
            ).items
            found += [(kind, o) for o in items if not _operator_owned(o)]
        return found

    def spec_of(self, job: Any) -> dict[str, Any] | None:
        """The sweep spec in the Job's ConfigMap (``None`` when unreadable)."""
        from kubernetes.client.exceptions import ApiException

        for vol in job.spec.template.spec.volumes or []:
            if vol.config_map is None:
                continue
            try:
                cm = self.core.read_namespaced_config_map(
                    vol.config_map.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException:
                return None
            text = (cm.data or {}).get(mf.SPEC_KEY)
            if text:
                try:
                    data = yaml.safe_load(text)
                except yaml.YAMLError:
                    return None
                return data if isinstance(data, dict) else None
        return None

    # ------------------------------------------------------------------ status

    def status(self, instance: str) -> dict[str, Any]:
        """A JSON-able summary: Job state, runner pods, Dask clusters, output."""
        job = self.find_job(instance)
        pods = self.runner_pods(instance, job.metadata.name)
        spec = self.spec_of(job) or {}
        clusters = self.dask_clusters(instance)
        return {
            "name": instance,
            "namespace": self.namespace,
            "job": job.metadata.name,
            "state": job_state(job),
            "queue": job_queue(job),
            "waiting": admission_note(job, self.namespace),
            "started": _iso(job.status.start_time),
            "finished": _iso(job.status.completion_time),
            "attempts": (job.status.failed or 0)
            + (job.status.succeeded or 0)
            + (job.status.active or 0),
            "conditions": [
                {"type": c.type, "reason": c.reason, "message": c.message}
                for c in job.status.conditions or []
                if c.status == "True"
            ],
            "pods": [
                {
                    "name": p.metadata.name,
                    "phase": p.status.phase,
                    "exit_code": runner_exit_code(p),
                    "waiting": _waiting_reason(p),
                }
                for p in pods
            ],
            "dask_clusters": [
                {
                    "name": c["metadata"]["name"],
                    "phase": (c.get("status") or {}).get("phase"),
                    "workers": ((c.get("spec") or {}).get("worker") or {}).get("replicas"),
                    "dashboard": f"kubectl port-forward -n {self.namespace}"
                    f" svc/{c['metadata']['name']}-scheduler 8787",
                }
                for c in clusters
            ]
            + _pod_clusters(self.dask_pods(instance), self.namespace),
            "output": spec.get("output"),
            "progress": sweep_progress(spec),
            "exit_code": job_exit_code(job, pods),
        }

    # ------------------------------------------------------------------ logs

    def stream_logs(
        self, pod_name: str, out: Printer, follow: bool = True, tail: int | None = None
    ) -> None:
        """Print the runner container's log lines (following until it exits)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        kwargs: dict[str, Any] = {"container": mf.RUNNER_CONTAINER}
        if tail is not None:
            kwargs["tail_lines"] = tail
        try:
            if follow:
                w = watch.Watch()
                for line in w.stream(
                    self.core.read_namespaced_pod_log,
                    name=pod_name,
                    namespace=self.namespace,
                    follow=True,
                    **kwargs,
                ):
                    out(line)
            else:
                text = self.core.read_namespaced_pod_log(
                    pod_name, self.namespace, _request_timeout=REQUEST_TIMEOUT, **kwargs
                )
                for line in (text or "").splitlines():
                    out(line)
        except ApiException as e:
            if e.status == 400:  # container not started yet / already gone
                return
            raise api_error(f"reading the log of {pod_name}", e, self.namespace) from e

    def logs(self, instance: str, out: Printer, follow: bool = False) -> None:
        """Print the newest runner pod's log; with ``follow``, keep following until it exits."""
        job = self.find_job(instance)
        pods = self.runner_pods(instance, job.metadata.name)
        if not pods:
            raise InfrastructureError(
                f"sweep {instance} has no runner pod yet ({job_state(job)}); retry, or see"
                f" `sweep status {instance}`"
            )
        self.stream_logs(pods[-1].metadata.name, out, follow=follow)

    # ------------------------------------------------------------------ wait

    def wait(
        self,
        instance: str,
        out: Printer,
        err: Printer = _ignore,
        poll: float = 2.0,
        start_grace: float = START_GRACE,
    ) -> int:
        """Follow a submitted sweep until its Job ends; return the runner's exit code.

        Streams each runner pod's log (a retried Job has several). A runner pod that
        cannot start (image pull error, missing Secret) for ``start_grace`` seconds ends
        the wait with exit code 3 and the reason.
        """
        from .diagnose import diagnose

        streamed: set[str] = set()
        stuck_since: dict[str, float] = {}
        said = None
        while True:
            job = self.find_job(instance)
            pods = self.runner_pods(instance, job.metadata.name)
            state = job_state(job)
            note = admission_note(job, self.namespace)
            if note != said:
                if note:
                    err(f"{instance}: {note}")
                elif said:
                    err(f"{instance}: admitted; the runner starts")
                said = note
            pending = [p for p in pods if p.metadata.name not in streamed]
            for pod in pending:
                name = pod.metadata.name
                if pod.status.phase in ("Running", "Succeeded", "Failed"):
                    if len(streamed) > 0:
                        err(f"{instance}: retrying in pod {name}")
                    self.stream_logs(name, out, follow=True)
                    streamed.add(name)
                    self._await_termination(name, poll)
                    continue
                problems = [p for p in diagnose([_raw(pod)]) if p.fatal]
                if problems:
                    first = stuck_since.setdefault(name, time.monotonic())
                    if time.monotonic() - first > start_grace:
                        err(f"error: {problems[0].message}")
                        return 3
                else:
                    stuck_since.pop(name, None)
            if state in ("succeeded", "failed"):
                pods = self.runner_pods(instance, job.metadata.name)
                code = job_exit_code(job, pods)
                if state == "failed":
                    reasons = "; ".join(
                        f"{c.reason}: {c.message}"
                        for c in job.status.conditions or []
                        if c.status == "True" and c.type == "Failed"
                    )
                    err(
                        f"{instance}: Job {job.metadata.name} failed"
                        f" ({reasons or 'no reason given'})"
                    )
                return code
            time.sleep(poll)

    def _await_termination(self, pod_name: str, poll: float, timeout: float = 60.0) -> None:
        from kubernetes.client.exceptions import ApiException

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                pod = self.core.read_namespaced_pod(
                    pod_name, self.namespace, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException:
                return
            if pod.status.phase in ("Succeeded", "Failed") or runner_exit_code(pod) is not None:
                return
            time.sleep(poll)

    # ------------------------------------------------------------------ cancel

    def cancel(self, instance: str, out: Printer = _ignore, wait: float = 120.0) -> list[str]:
        """Delete the sweep's Job (foreground: its pods first), Dask cluster, ConfigMap,
        NetworkPolicies and RBAC.

        Deleting the runner pod sends it SIGTERM: it deletes its own Dask cluster while
        its Role still exists; leftovers are deleted here afterwards. Objects a Helm
        release manages are left to ``helm uninstall``.
        """
        from kubernetes import client

        selector = f"{INSTANCE}={instance}"
        own = selector + f",app.kubernetes.io/name={cs.PART_OF}"
        deleted: list[str] = []
        jobs = self._call(
            f"listing the Jobs of {instance}",
            self.batch.list_namespaced_job,
            self.namespace,
            label_selector=own,
        ).items
        clusters = self.dask_clusters(instance)
        if not jobs and not clusters and not self.dask_pods(instance):
            raise SpecError(
                f"no sweep {instance!r} in namespace {self.namespace} (pass --namespace?)"
            )
        body = client.V1DeleteOptions(propagation_policy="Foreground")
        for job in jobs:
            self._delete_one(
                "job", job.metadata.name, self.batch.delete_namespaced_job, deleted, out,
                note=" (its pods first)", body=body,
            )  # fmt: skip
        end = time.monotonic() + wait
        while jobs and time.monotonic() < end:
            if all(self._get_job(j.metadata.name) is None for j in jobs):
                break
            time.sleep(2)
        for c in self.dask_clusters(instance):
            self._delete_one(
                "daskcluster", c["metadata"]["name"],
                lambda name, ns, **kw: self.custom.delete_namespaced_custom_object(
                    DASK_GROUP, DASK_VERSION, ns, "daskclusters", name, **kw
                ),
                deleted, out,
            )  # fmt: skip
        for kind, obj in self.dask_pods(instance):  # pod mode: the runner's own pods
            deleter = (
                self.core.delete_namespaced_pod
                if kind == "pod"
                else self.core.delete_namespaced_service
            )
            self._delete_one(kind, obj.metadata.name, deleter, deleted, out)
        helm_managed = False
        for kind, lister, deleter in (
            (
                "configmap",
                self.core.list_namespaced_config_map,
                self.core.delete_namespaced_config_map,
            ),
            (
                "networkpolicy",
                self.networking.list_namespaced_network_policy,
                self.networking.delete_namespaced_network_policy,
            ),
            (
                "rolebinding",
                self.rbac.list_namespaced_role_binding,
                self.rbac.delete_namespaced_role_binding,
            ),
            ("role", self.rbac.list_namespaced_role, self.rbac.delete_namespaced_role),
            (
                "serviceaccount",
                self.core.list_namespaced_service_account,
                self.core.delete_namespaced_service_account,
            ),
        ):
            for obj in self._call(
                f"listing {kind}s", lister, self.namespace, label_selector=own
            ).items:
                if (obj.metadata.labels or {}).get("app.kubernetes.io/managed-by") == "Helm":
                    helm_managed = True
                    continue
                self._delete_one(kind, obj.metadata.name, deleter, deleted, out)
        if helm_managed:
            out(
                f"the rest belongs to a Helm release: helm uninstall {instance} -n {self.namespace}"
            )
        return deleted

    def _delete_one(
        self,
        kind: str,
        name: str,
        deleter: Callable[..., Any],
        deleted: list[str],
        out: Printer,
        note: str = "",
        **kwargs: Any,
    ) -> None:
        """Delete one object and say so; one already gone is fine."""
        from kubernetes.client.exceptions import ApiException

        try:
            deleter(name, self.namespace, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as e:
            if e.status == 404:
                return
            raise api_error(f"deleting {kind} {name}", e, self.namespace) from e
        deleted.append(f"{kind}/{name}")
        out(f"{kind}/{name} deleted{note}")


# --------------------------------------------------------------------------- pure helpers

INSTANCE = "app.kubernetes.io/instance"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _pod_clusters(objs: list[tuple[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """``status``'s view of pod-mode Dask clusters: the scheduler's phase, live workers."""
    out: dict[str, dict[str, Any]] = {}
    for kind, obj in objs:
        if kind != "pod":
            continue
        labels = obj.metadata.labels or {}
        name = labels.get(CLUSTER_LABEL, "?")
        c = out.setdefault(
            name,
            {
                "name": name,
                "phase": None,
                "workers": 0,
                "mode": "pods",
                "dashboard": f"kubectl port-forward -n {namespace} svc/{name}-scheduler 8787",
            },
        )
        if labels.get(COMPONENT_LABEL) == "scheduler":
            c["phase"] = obj.status.phase if obj.status else None
        elif obj.status and obj.status.phase in ("Pending", "Running"):
            c["workers"] += 1
    return list(out.values())


def _operator_owned(obj: Any) -> bool:
    owners = obj.metadata.owner_references or []
    return any(o.kind in ("Deployment", "ReplicaSet", "DaskCluster") for o in owners)


def api_error(action: str, e: Any, namespace: str) -> InfrastructureError:
    """One line from an ``ApiException``: what failed, the API's reason, what to do."""
    status = getattr(e, "status", None)
    message = ""
    body = getattr(e, "body", None)
    if body:
        try:
            message = (yaml.safe_load(body) or {}).get("message", "")
        except (yaml.YAMLError, AttributeError):
            message = str(body)[:200]
    message = message or getattr(e, "reason", "") or str(e)
    if status in (401, 403):
        hint = (
            f"your Kubernetes user may not do this in namespace {namespace}; ask for a Role"
            " with these rights or use another --namespace"
        )
    elif status == 404 and "namespaces" in message and "not found" in message:
        hint = f"create it: kubectl create namespace {namespace}"
    elif status == 422:
        hint = "the object was rejected as invalid; check the image name and the spec"
    else:
        hint = "check the cluster (kubectl cluster-info) and retry"
    return InfrastructureError(f"{action}: HTTP {status}: {message}; {hint}")


def job_state(job: Any) -> str:
    """``succeeded``, ``failed``, ``running``, ``queued`` (suspended, waiting for Kueue
    to admit it), ``suspended`` (by someone else) or ``pending`` from a Job."""
    for c in job.status.conditions or []:
        if c.status != "True":
            continue
        if c.type in ("Complete", "SuccessCriteriaMet"):
            return "succeeded"
        if c.type in ("Failed", "FailureTarget"):
            return "failed"
    if job.spec is not None and job.spec.suspend:
        return "queued" if job_queue(job) else "suspended"
    if job.status.active:
        return "running"
    return "pending"


def job_queue(job: Any) -> str | None:
    """The Kueue LocalQueue a Job is queued in (its queue-name label), if any."""
    return (job.metadata.labels or {}).get(cs.QUEUE_LABEL)


def admission_note(job: Any, namespace: str) -> str | None:
    """What a ``queued`` or ``suspended`` Job waits for, and how to see why."""
    state = job_state(job)
    if state == "queued":
        queue = job_queue(job)
        return (
            f"waiting for admission by Kueue (LocalQueue {queue}); see"
            f" `kubectl get workloads -n {namespace}` and"
            f" `kubectl describe localqueue {queue} -n {namespace}`"
        )
    if state == "suspended":
        return (
            f"suspended (spec.suspend); resume it with `kubectl patch job"
            f' {job.metadata.name} -n {namespace} -p \'{{"spec":{{"suspend":false}}}}\'`'
        )
    return None


def runner_exit_code(pod: Any) -> int | None:
    """Exit code of the runner container of a pod, when it has terminated."""
    for cst in (pod.status.container_statuses or []) if pod.status else []:
        if cst.name != mf.RUNNER_CONTAINER:
            continue
        term = cst.state.terminated if cst.state else None
        if term is not None:
            return int(term.exit_code)
    return None


def job_exit_code(job: Any, pods: list[Any]) -> int | None:
    """The sweep's exit code: 0 for a complete Job, else the last runner's (3 if unknown)."""
    state = job_state(job)
    if state == "succeeded":
        return 0
    if state != "failed":
        return None
    for pod in reversed(pods):
        code = runner_exit_code(pod)
        if code is not None:
            return code if code != 0 else 3
    return 3


def _waiting_reason(pod: Any) -> str | None:
    for cst in (pod.status.container_statuses or []) if pod.status else []:
        waiting = cst.state.waiting if cst.state else None
        if waiting is not None:
            return f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason
    return None


def _raw(pod: Any) -> dict[str, Any]:
    """A client model as the plain camelCase dict the API returns."""
    from kubernetes import client

    return client.ApiClient().sanitize_for_serialization(pod)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def sweep_progress(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The sweep's own progress, read from its output; ``{"error": ...}`` when that is
    not readable from here (no credentials for it on this machine, say)."""
    from ..results import progress  # lazy: pyarrow and fsspec, only for `sweep status`

    output = spec.get("output")
    if not output:
        return None
    try:
        return progress(output, spec.get("storage_options"))
    except SweepError as e:
        return {"error": str(e)}
    except Exception as e:  # whatever the filesystem raises: status still shows the Job
        return {"error": f"{output}: {type(e).__name__}: {e}"}
