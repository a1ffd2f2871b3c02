"""A Dask cluster on Kubernetes, sized to the sweep: through the Dask operator or as plain pods.

The provider builds a ``DaskCluster`` from pod templates (:mod:`runner.kube.cluster_spec`)
and starts it in one of two modes (``cluster.kubernetes.operator``):

- **operator**: ``dask_kubernetes.operator.KubeCluster(custom_cluster_spec=...)``; the
  operator creates the pods;
- **pods**: :class:`runner.clusters.kubepods.PodCluster`; the runner creates the same
  pods itself, for clusters where the operator's CRDs are not installed (installing
  them needs cluster-admin). ``auto`` (the default) picks the operator when its
  ``DaskCluster`` resource is served and pods otherwise.

Either way it then follows the sweep: each time partitions finish, the most workers the rest of
the sweep can use, ``ScalingPolicy.workers(remaining)``, becomes the autoscaler's
maximum (``cluster.adapt``), so the tail does not hold idle workers. :meth:`stop`
scales to zero and deletes the cluster whatever happened.

It talks to whatever Kubernetes API the environment points at (``KUBECONFIG``, the
current kubeconfig context, or the in-cluster service account), like ``kubectl``.

Inside the runner Job these environment variables refine it (the manifests set them):
``SWEEP_INSTANCE`` (label of the sweep's objects), ``SWEEP_IMAGE`` (default image of
the scheduler and workers), ``SWEEP_POD_NAME``/``SWEEP_POD_UID`` (the runner pod, made
owner of the DaskCluster so Kubernetes deletes it even if the runner is killed).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import secrets
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import InfrastructureError, SpecError
from ..kube import cluster_spec as cs
from ..kube.diagnose import OPERATOR_HINT, Problem, diagnose, one_line
from ..policy import ScalingPolicy
from ..spec import ClusterSpec
from .base import ClusterProvider

log = logging.getLogger("runner.kubernetes")

# --------------------------------------------------------------------------- pure parts


@dataclass
class Autoscale:
    """When to call ``cluster.adapt``: the policy's bounds, debounced (pure).

    ``next(remaining)`` returns the ``(minimum, maximum)`` to apply, or ``None`` when
    it equals what was applied last; ``applied(target)`` records a successful call.
    """

    policy: ScalingPolicy
    last: tuple[int, int] | None = None

    def next(self, remaining_partitions: int) -> tuple[int, int] | None:
        target = (self.policy.minimum, self.policy.workers(remaining_partitions))
        return None if target == self.last else target

    def applied(self, target: tuple[int, int]) -> None:
        self.last = target


def owner_reference(env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The runner pod as owner of the DaskCluster, from ``SWEEP_POD_NAME``/``SWEEP_POD_UID``."""
    env = os.environ if env is None else env
    name, uid = env.get("SWEEP_POD_NAME"), env.get("SWEEP_POD_UID")
    if not name or not uid:
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}


# --------------------------------------------------------------------------- provider


@dataclass
class _State:
    kube_cluster: Any = None
    loop_runner: Any = None
    cluster_name: str | None = None
    namespace: str | None = None
    mode: str | None = None  # "operator" or "pods", once the preflight chose
    last_status: dict[str, str] = field(default_factory=dict)
    last_problems: list[Problem] = field(default_factory=list)
    started: bool = False  # the scheduler and a first worker came up
    # worker pods the cluster took away (pod name -> why), from a watch on them
    disruptions: dict[str, str] = field(default_factory=dict)
    watcher: Any = None  # the asyncio task of that watch


class KubernetesProvider(ClusterProvider):
    """Dask on Kubernetes via the Dask operator, autoscaled to the sweep.

    Parameters
    ----------
    cluster
        The spec's ``cluster`` section (``kind: kubernetes``); its ``kubernetes`` part
        gives templates, image, bounds and secrets.
    name
        The sweep's name (names and labels the DaskCluster). Default: ``SWEEP_INSTANCE``
        or ``"sweep"``.
    base_dir
        Folder relative template paths start in (the spec's folder).
    namespace
        Overrides ``cluster.kubernetes.namespace``; default: ``SWEEP_NAMESPACE`` (the runner
        pod's own, set by the Job), else the kubeconfig context's namespace or, in a pod
        without it, the pod's own.
    idle_timeout
        Seconds after which the operator deletes the cluster if its scheduler is idle
        (a safety net against leaks; default 1800).
    resource_timeout
        Seconds the operator may take to action the DaskCluster (default 60).
    """

    name = "kubernetes"
    starts_cluster = True

    def __init__(self, cluster: ClusterSpec, **options: Any) -> None:
        self.spec = cluster
        self.kube = cluster.kubernetes
        self.sweep_name: str = options.get("name") or os.environ.get("SWEEP_INSTANCE") or "sweep"
        self.instance: str = os.environ.get("SWEEP_INSTANCE") or self.sweep_name
        self.base_dir: str | None = options.get("base_dir")
        # In the runner pod, its own namespace (downward API): the DaskCluster is owned by
        # the pod, and owners cannot live in another namespace.
        self.namespace: str | None = (
            options.get("namespace") or self.kube.namespace or os.environ.get("SWEEP_NAMESPACE")
        )
        self.idle_timeout = int(options.get("idle_timeout", 1800))
        self.resource_timeout = int(options.get("resource_timeout", 60))
        self.startup_timeout = float(options.get("startup_timeout", self.kube.startup_timeout))
        self.default_image = os.environ.get("SWEEP_IMAGE") or cs.DEFAULT_IMAGE
        self.policy = ScalingPolicy(
            self.kube.min_workers, self.kube.max_workers, self.kube.partitions_per_worker
        )
        self.autoscale = Autoscale(self.policy)
        self.client = None
        self._state = _State()

    # ------------------------------------------------------------------ pure parts

    def cluster_resource(self, token: str | None = None) -> dict[str, Any]:
        """The DaskCluster this provider would create (reads the templates, contacts nothing)."""
        worker = cs.load_pod_template(self.kube.worker_template, "worker", self.base_dir)
        scheduler = cs.load_pod_template(self.kube.scheduler_template, "scheduler", self.base_dir)
        bad = cs.template_literal_secrets(worker, "worker_template")
        bad += cs.template_literal_secrets(scheduler, "scheduler_template")
        if bad:
            raise SpecError(
                f"cluster.kubernetes: literal credentials in {', '.join(bad)}; put them in a"
                " Secret and use env valueFrom.secretKeyRef or cluster.kubernetes.env_from_secret"
            )
        name = cs.cluster_name(self.sweep_name, token or secrets.token_hex(3))
        return cs.build_cluster_spec(
            name,
            self.kube,
            worker_template=worker,
            scheduler_template=scheduler,
            default_image=self.default_image,
            labels=cs.sweep_labels(self.instance, "dask-cluster"),
            owner=owner_reference(),
            idle_timeout=self.idle_timeout,
        )

    def slots_hint(self) -> int:
        """The sweep is sized for ``max_workers``: the autoscaler provides them as needed."""
        return self.kube.max_workers * self.kube.worker_threads

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Any:
        try:
            import dask_kubernetes.operator  # noqa: F401
            from distributed import Client
            from distributed.utils import LoopRunner
        except ImportError as e:
            raise InfrastructureError(
                f"Kubernetes support is not installed ({e}); pip install 'sweep-runner[kubernetes]'"
            ) from e
        resource = self.cluster_resource()
        st = self._state
        st.cluster_name = resource["metadata"]["name"]
        st.loop_runner = LoopRunner(asynchronous=False)
        st.loop_runner.start()
        self._sync(self._astart, resource, timeout=self.startup_timeout + 120)
        kc = st.kube_cluster
        try:
            return Client(kc.scheduler_address, timeout=60)
        except (OSError, TimeoutError) as e:
            raise InfrastructureError(
                f"cannot connect to the Dask scheduler of {st.cluster_name} at"
                f" {kc.scheduler_address} ({e}); check network policies between the runner"
                " and the scheduler Service"
            ) from e

    def on_remaining(self, remaining_partitions: int) -> None:
        """Re-bound the operator's autoscaler to what the rest of the sweep can use."""
        kc = self._state.kube_cluster
        target = self.autoscale.next(remaining_partitions)
        if kc is None or target is None:
            return
        lo, hi = target

        async def adapt() -> None:
            adaptive = kc.adapt(minimum=lo, maximum=hi)
            if inspect.isawaitable(adaptive):  # the operator's KubeCluster; SpecCluster's is not
                await adaptive

        try:
            self._sync(adapt, timeout=60)
        except Exception as e:  # keep running: the next change retries
            log.warning("could not set the autoscaler to %s..%s workers: %s", lo, hi, e)
            return
        self.autoscale.applied(target)
        self._say(f"autoscaler: {lo}..{hi} workers for {remaining_partitions} partitions left")

    def stop(self) -> None:
        """Close the client, scale to zero, delete the DaskCluster; never raises for cleanup."""
        st = self._state
        interrupted: BaseException | None = None
        try:
            if self.client is not None:
                try:
                    self.client.close(timeout=10)
                except Exception as e:
                    log.debug("closing the client: %s", e)
                self.client = None
            if st.loop_runner is not None and st.kube_cluster is not None:
                if not st.started:
                    # It never came up: nothing to drain. Ask for the deletion and let the
                    # operator and the garbage collector finish it, instead of waiting on a
                    # cluster that may not answer (a crash-looping scheduler held its
                    # DaskCluster for a minute in the e2e tests).
                    if self._sync_quiet(self._adelete, timeout=30) and st.mode == "operator":
                        self._say(
                            f"deleting DaskCluster {st.cluster_name} (Kubernetes removes its"
                            f" pods); check: kubectl get daskcluster {st.cluster_name}"
                            f" -n {st.namespace or '<namespace>'}"
                        )
                else:
                    try:
                        self._sync(self._ateardown, timeout=180)
                    except KeyboardInterrupt as e:  # a second signal: delete without waiting
                        interrupted = e
                        self._sync_quiet(self._adelete, timeout=30)
                    except Exception as e:
                        log.debug("cleanup of DaskCluster %s: %s", st.cluster_name, e)
                        self._sync_quiet(self._adelete, timeout=30)
        finally:
            if st.loop_runner is not None:
                try:
                    st.loop_runner.stop()
                except Exception as e:
                    log.debug("stopping the event loop: %s", e)
                st.loop_runner = None
            st.kube_cluster = None
        if interrupted is not None:
            raise interrupted

    @property
    def dashboard_link(self) -> str | None:
        kc = self._state.kube_cluster
        try:
            return kc.dashboard_link if kc is not None else None
        except Exception:
            return None

    # ------------------------------------------------------------------ async internals

    def _sync(self, fn: Any, *args: Any, timeout: float | None = None) -> Any:
        from distributed.utils import sync

        return sync(self._state.loop_runner.loop, fn, *args, callback_timeout=timeout)

    def _sync_quiet(self, fn: Any, timeout: float) -> bool:
        """Run a deletion; on failure say how to delete by hand and return False."""
        try:
            self._sync(fn, timeout=timeout)
            return True
        except BaseException as e:  # cleanup must not raise
            st = self._state
            reason = " ".join(str(e).split())[:300]
            self._say(
                f"warning: could not delete {self._what()} {st.cluster_name} ({reason});"
                f" delete it with: {self._delete_command()}"
            )
            return False

    async def _astart(self, resource: dict[str, Any]) -> None:
        import kr8s
        from tornado.ioloop import IOLoop

        st = self._state
        try:
            api = await kr8s.asyncio.api()
        except Exception as e:
            raise InfrastructureError(
                f"no Kubernetes API configuration ({type(e).__name__}: {e}); set KUBECONFIG,"
                " choose a context with `kubectl config use-context`, or run inside a pod"
            ) from e
        st.namespace = self.namespace or api.namespace
        st.mode = await self._preflight(st.namespace)
        worker_pod = resource["spec"]["worker"]["spec"]
        image = worker_pod["containers"][cs.dask_container_index(worker_pod, "worker")]["image"]
        what = "DaskCluster" if st.mode == "operator" else "Dask cluster pods"
        self._say(
            f"creating {what} {st.cluster_name} in namespace {st.namespace} (workers"
            f" {self.kube.min_workers}..{self.kube.max_workers}, image {image})"
        )
        deadline = time.monotonic() + self.startup_timeout
        if st.mode == "operator":
            from dask_kubernetes.operator import KubeCluster

            kc = KubeCluster(
                custom_cluster_spec=resource,
                namespace=st.namespace,
                shutdown_on_close=True,
                resource_timeout=self.resource_timeout,
                quiet=True,
                asynchronous=True,
                loop=IOLoop.current(),
            )
        else:
            from .kubepods import PodCluster

            kc = PodCluster(resource, st.namespace, say=self._say)
        st.kube_cluster = kc

        async def create() -> None:
            await kc
            if st.mode == "pods":
                kc.scale(resource["spec"]["worker"]["replicas"])
            self._say(f"scheduler of {st.cluster_name} ready; waiting for a first worker")
            while not await self._worker_count(kc):
                await asyncio.sleep(1)

        starting = asyncio.ensure_future(create())
        watching = asyncio.ensure_future(self._watch(st.cluster_name or "", st.namespace, deadline))
        try:
            done, _ = await asyncio.wait(
                {starting, watching},
                timeout=max(1.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if starting in done:
                starting.result()
                st.started = True
                st.watcher = asyncio.ensure_future(self._watch_disruptions())
                return
            if watching in done:
                watching.result()  # raises the diagnosed problem
            raise InfrastructureError(self._timeout_message())
        except InfrastructureError:
            raise
        except Exception as e:
            raise self._map_start_error(e) from e
        finally:
            for task in (starting, watching):
                task.cancel()
            await asyncio.gather(starting, watching, return_exceptions=True)

    async def _preflight(self, namespace: str) -> str:
        """Choose the mode and check access: ``"operator"`` or ``"pods"``.

        Listing DaskClusters answers 404 when the CRD is not installed and 403 when the
        runner may not use them; in ``auto`` mode either means pods. Pod mode lists pods
        first, so a missing Role fails here and not halfway through the start.
        """
        want = self.kube.operator
        if want is not False:
            try:
                async for _ in _dask_class("DaskCluster").list(namespace=namespace):
                    break
                return "operator"
            except Exception as e:
                code = _status_code(e)
                if want is True or code not in (401, 403, 404):
                    raise self._access_error(e, namespace, "DaskClusters") from e
                reason = "not installed" if code == 404 else f"not allowed here (HTTP {code})"
                self._say(
                    f"the DaskCluster resource is {reason}: the runner runs the Dask cluster"
                    " as plain pods (cluster.kubernetes.operator: auto)"
                )
        from kr8s.asyncio.objects import Pod

        try:
            async for _ in Pod.list(namespace=namespace, label_selector="dask.org/cluster-name"):
                break
        except Exception as e:
            raise self._access_error(e, namespace, "pods") from e
        return "pods"

    def _access_error(self, e: BaseException, namespace: str, what: str) -> InfrastructureError:
        code = _status_code(e)
        if code == 404 and what == "DaskClusters":
            return InfrastructureError(
                "the DaskCluster custom resource is not installed in this Kubernetes"
                f" cluster; {OPERATOR_HINT}, or set cluster.kubernetes.operator: false to run"
                " the Dask cluster as plain pods"
            )
        if code in (401, 403):
            return InfrastructureError(
                f"not allowed to manage {what} in namespace {namespace!r} (HTTP {code});"
                " run with the service account and Role from `sweep manifest` / the Helm chart"
            )
        return InfrastructureError(
            f"cannot reach the Kubernetes API ({type(e).__name__}: {e}); check KUBECONFIG"
            " and the current context (kubectl cluster-info)"
        )

    async def _watch(self, name: str, namespace: str, deadline: float) -> None:
        """Poll the cluster's pods; raise on image pull errors, bad config, crash loops."""
        from kr8s.asyncio.objects import Pod

        selector = f"dask.org/cluster-name={name}"
        while time.monotonic() < deadline:
            await asyncio.sleep(2)
            try:
                pods = [p async for p in Pod.list(namespace=namespace, label_selector=selector)]
            except Exception as e:
                log.debug("listing pods of %s: %s", name, e)
                continue
            raws = [dict(p.raw) for p in pods]
            self._state.last_status = {
                r["metadata"]["name"]: (r.get("status") or {}).get("phase", "?") for r in raws
            }
            problems = diagnose(raws)
            self._state.last_problems = problems
            fatal = [p for p in problems if p.fatal]
            if not fatal:
                continue
            problem = fatal[0]
            message = problem.message
            if problem.kind == "crashloop":
                pod = next(p for p in pods if p.name == problem.pod)
                tail = await _log_tail(pod)
                role = "scheduler" if "scheduler" in problem.pod else "worker"
                message = f"the Dask {role} {message}; last log lines: {tail or '(none)'}"
            raise InfrastructureError(message)

    def disrupted(self, worker: str, wait: float = 1.0) -> str | None:
        """Why the cluster took worker ``worker``'s pod away (evicted, preempted, drained), if
        it did. Kubernetes marks such a pod before stopping it, so the watch has usually seen
        it by the time the scheduler reports the worker lost; ``wait`` covers the rest."""
        deadline = time.monotonic() + wait
        while True:
            found = dict(self._state.disruptions)
            # pod mode: the pod is the worker's name; operator: <worker>-<hash>-<suffix>
            why = found.get(worker) or next(
                (w for pod, w in found.items() if pod.startswith(worker + "-")), None
            )
            if why or time.monotonic() >= deadline or self._state.watcher is None:
                return why
            time.sleep(0.1)

    async def _watch_disruptions(self) -> None:
        """Record the worker pods the cluster takes away, for :meth:`disrupted`."""
        import kr8s

        from ..kube import pods

        st = self._state
        selector = pods.cluster_selector(st.cluster_name or "", "worker")
        while True:
            try:
                api = await kr8s.asyncio.api()
                async for _, pod in api.watch(
                    "pods", namespace=st.namespace, label_selector=selector
                ):
                    why = pods.disruption(dict(pod.raw))
                    if why and pod.name not in st.disruptions:
                        st.disruptions[pod.name] = why
                        log.info("worker pod %s: %s", pod.name, why)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the watch ends or blips: watch again
                log.debug("watching the worker pods of %s: %s", st.cluster_name, e)
                await asyncio.sleep(1)

    def _timeout_message(self) -> str:
        st = self._state
        problems = st.last_problems
        pods = ", ".join(f"{k}: {v}" for k, v in st.last_status.items()) or "no pods yet"
        if problems:
            hint = problems[0].message
        elif st.mode == "pods":
            hint = f"see kubectl describe pods -l dask.org/cluster-name={st.cluster_name}"
        else:
            hint = (
                "is the Dask operator running? (kubectl get pods -A -l app.kubernetes.io/name="
                "dask-kubernetes-operator)"
            )
        return (
            f"the Dask cluster {st.cluster_name} did not start within {self.startup_timeout:.0f}s"
            f" ({pods}); {hint}; raise cluster.kubernetes.startup_timeout if nodes are slow to come"
        )

    def _map_start_error(self, e: BaseException) -> InfrastructureError:
        from dask_kubernetes.exceptions import SchedulerStartupError

        text = str(e)
        if isinstance(e, SchedulerStartupError):
            lines = [str(a) for a in e.args[2:]] if len(e.args) > 2 else []
            return InfrastructureError(
                f"the Dask scheduler pod of {self._state.cluster_name} is crash-looping;"
                f" last log lines: {one_line(' '.join(lines).splitlines()) or '(none)'}"
            )
        if _status_code(e) in (401, 403):
            return self._access_error(e, self._state.namespace or "default", "pods and services")
        if "Custom Resource Definitions" in text or _status_code(e) == 404:
            return InfrastructureError(
                f"the DaskCluster custom resource is missing; {OPERATOR_HINT}"
            )
        if "not actioned" in text or "Dask Operator running" in text:
            return InfrastructureError(
                f"the Dask operator did not action DaskCluster {self._state.cluster_name} within"
                f" {self.resource_timeout}s; check that it runs: kubectl get pods -A -l"
                f" app.kubernetes.io/name=dask-kubernetes-operator (or {OPERATOR_HINT})"
            )
        return InfrastructureError(
            f"starting the Dask cluster {self._state.cluster_name} failed: {type(e).__name__}: {e}"
        )

    @staticmethod
    async def _worker_count(kc: Any) -> int:
        try:
            info = await kc.scheduler_comm.identity()
        except Exception:
            return 0
        return len(info.get("workers", {}))

    async def _ateardown(self) -> None:
        """Scale the workers to zero (graceful), then delete the cluster and wait for it."""
        st = self._state
        if st.watcher is not None:
            st.watcher.cancel()
            await asyncio.gather(st.watcher, return_exceptions=True)
            st.watcher = None
        kc = st.kube_cluster
        if kc is None:  # never got as far as creating it
            return
        if st.mode == "operator":
            try:
                await asyncio.wait_for(kc.scale(0), 30)  # also deletes the DaskAutoscaler
                await self._await_autoscaler_gone(timeout=30)
            except Exception as e:
                log.debug("scaling %s to zero: %s", st.cluster_name, e)
        try:
            # pods: SpecCluster retires the workers, then deletes their pods and the scheduler's
            await asyncio.wait_for(kc.close(timeout=120), 150)
        finally:
            await self._adelete()
        self._say(f"deleted {self._what()} {st.cluster_name}")

    async def _await_autoscaler_gone(self, timeout: float) -> None:
        """Wait until the DaskAutoscaler is gone, before the scheduler goes.

        The operator's autoscaler timer holds a kopf finalizer, removed only once the
        timer's current call returns; that call asks the scheduler for its adaptive target.
        Deleting the cluster first can leave it waiting on a scheduler that is shutting
        down, and the autoscaler outlives its sweep.
        """
        import kr8s

        st = self._state
        kind = _dask_class("DaskAutoscaler")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await kind.get(st.cluster_name, namespace=st.namespace)
            except kr8s.NotFoundError:
                return
            except Exception as e:  # cleanup goes on; the cluster's deletion cascades to it
                log.debug("looking up DaskAutoscaler %s: %s", st.cluster_name, e)
                return
            await asyncio.sleep(0.5)
        log.debug("DaskAutoscaler %s still there after %ss", st.cluster_name, timeout)

    async def _adelete(self) -> None:
        """Delete the DaskCluster, or in pod mode every pod and Service of it (idempotent)."""
        import kr8s

        st = self._state
        if not st.cluster_name or st.mode is None:  # the preflight stopped it: nothing made
            return
        if st.mode == "pods":
            from .kubepods import delete_cluster_objects

            await delete_cluster_objects(st.cluster_name, st.namespace or "default")
            return
        try:
            cluster = await _dask_class("DaskCluster")(
                {
                    "apiVersion": cs.API_VERSION,
                    "kind": "DaskCluster",
                    "metadata": {"name": st.cluster_name},
                },
                namespace=st.namespace,
            )
            await cluster.delete()
        except kr8s.NotFoundError:
            return
        except Exception as e:
            if _status_code(e) == 404:
                return
            raise

    def _what(self) -> str:
        return "DaskCluster" if self._state.mode != "pods" else "the pods of Dask cluster"

    def _delete_command(self) -> str:
        st = self._state
        ns = st.namespace or "<namespace>"
        if st.mode == "pods":
            return (
                f"kubectl delete pods,services -l dask.org/cluster-name={st.cluster_name} -n {ns}"
            )
        return f"kubectl delete daskcluster {st.cluster_name} -n {ns}"

    def _say(self, text: str) -> None:
        print(f"{self.sweep_name}: {text}", file=sys.stderr, flush=True)


def _status_code(e: BaseException) -> int | None:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        response = getattr(cur, "response", None)
        code = getattr(response, "status_code", None)
        if isinstance(code, int):
            return code
        cur = cur.__cause__ or cur.__context__
    return None


async def _log_tail(pod: Any, lines: int = 20) -> str:
    for previous in (True, False):
        try:
            out = [line async for line in pod.logs(previous=previous, tail_lines=lines)]
        except Exception:
            continue
        if out:
            return one_line(out)
    return ""


def _dask_class(kind: str) -> Any:
    """kr8s's class of one of the operator's resources (``DaskCluster``, ``DaskAutoscaler``)."""
    from kr8s.asyncio.objects import new_class  # lazy: kr8s is the kubernetes extra

    return new_class(kind, version=cs.API_VERSION, namespaced=True)
