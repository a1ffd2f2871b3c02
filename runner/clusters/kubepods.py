"""A Dask cluster of plain Kubernetes pods, run by the runner itself (no Dask operator).

The mechanism is distributed's own: :class:`PodCluster` is a ``SpecCluster`` whose
scheduler and workers are :class:`SchedulerPod` and :class:`WorkerPod` process
interfaces, the way dask-jobqueue turns batch jobs into a cluster. ``SpecCluster``
does the scaling bookkeeping and ``adapt`` (distributed's ``Adaptive``) the sizing;
what it cannot see, a pod that goes away under it (deleted, evicted, preempted,
failed), :meth:`PodCluster.replace_lost` notices and replaces with a new worker.
The objects come from the pure builders in :mod:`runner.kube.pods`.

Needs only a namespace Role on pods, pods/log and services
(:data:`runner.kube.pods.RBAC_RULES`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any

import kr8s
from dask_kubernetes.operator.networking import get_scheduler_address
from distributed.deploy.spec import ProcessInterface, SpecCluster
from kr8s.asyncio.objects import Pod, Service

from ..kube import pods

log = logging.getLogger("runner.kubernetes")
# the provider reports the bounds it sets; Adaptive's own start/stop lines are noise there
logging.getLogger("distributed.deploy.adaptive").setLevel(logging.WARNING)

POLL_SECONDS = 2.0


async def _delete(obj: Any, grace_period: int | None = None) -> None:
    """Delete a kr8s object; gone already is fine."""
    with contextlib.suppress(kr8s.NotFoundError):
        await obj.delete(grace_period=grace_period)


class SchedulerPod(ProcessInterface):
    """The scheduler pod and its Service; ``start`` returns once the pod is Ready.

    ``address`` is where the runner reaches it (the Service name inside the cluster, a
    port-forward outside); ``contact_address`` is what the workers are given.
    """

    def __init__(self, resource: dict[str, Any], namespace: str) -> None:
        super().__init__()
        self.resource = resource
        self.namespace = namespace
        self.cluster = resource["metadata"]["name"]
        self.name = pods.scheduler_name(self.cluster)
        self.contact_address = pods.scheduler_address(self.cluster, namespace)
        self._objects: list[Any] = []

    async def start(self) -> None:
        for manifest, cls in (
            (pods.scheduler_service(self.resource), Service),
            (pods.scheduler_pod(self.resource), Pod),
        ):
            obj = await cls(manifest, namespace=self.namespace)
            await obj.create()
            self._objects.append(obj)
        pod = self._objects[-1]
        while not await pod.ready():
            await asyncio.sleep(0.5)
        self.address = await get_scheduler_address(
            self.name, self.namespace, port_name="tcp-comm", allow_external=False
        )
        await super().start()

    async def close(self) -> None:
        for obj in reversed(self._objects):
            await _delete(obj)
        self._objects.clear()
        await super().close()


class WorkerPod(ProcessInterface):
    """One worker pod; ``start`` returns once the API server has it (as a batch job)."""

    def __init__(
        self, scheduler: str | None = None, name: str | None = None, **options: Any
    ) -> None:
        super().__init__(scheduler=scheduler, name=name)
        self.name = str(name)
        self.manifest = pods.worker_pod(options["resource"], self.name, options["namespace"])
        self.namespace: str = options["namespace"]
        self.pod: Any = None

    async def start(self) -> None:
        self.pod = await Pod(self.manifest, namespace=self.namespace)
        await self.pod.create()
        await super().start()

    async def close(self) -> None:
        if self.pod is not None:
            await _delete(self.pod)
        await super().close()


class PodCluster(SpecCluster):
    """A ``SpecCluster`` of pods built from a ``DaskCluster`` resource, in ``namespace``.

    Parameters
    ----------
    resource
        The ``DaskCluster`` the operator would get (:func:`runner.kube.cluster_spec.build_cluster_spec`).
    namespace
        Where the pods go.
    say
        Reports what happens to pods (the runner's progress lines).
    """

    def __init__(
        self,
        resource: dict[str, Any],
        namespace: str,
        say: Callable[[str], None] = log.info,
        **kwargs: Any,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.cluster_name: str = resource["metadata"]["name"]
        self._say = say
        self._watcher: asyncio.Task | None = None
        # a lost worker's name is never reused: its pod may still be terminating, and the
        # scheduler may still know a worker by it
        self._numbers = itertools.count()
        super().__init__(
            scheduler={
                "cls": SchedulerPod,
                "options": {"resource": resource, "namespace": namespace},
            },
            worker={"cls": WorkerPod, "options": {"resource": resource, "namespace": namespace}},
            name=self.cluster_name,
            asynchronous=True,
            **kwargs,
        )

    def new_worker_spec(self) -> dict[str, Any]:
        return {pods.worker_name(self.cluster_name, next(self._numbers)): self.new_spec}

    async def _start(self) -> None:
        await super()._start()
        self._watcher = asyncio.ensure_future(self._watch_pods())

    async def _watch_pods(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                await self.replace_lost()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the API may blip; the next round retries
                log.debug("checking the worker pods of %s: %s", self.cluster_name, e)

    async def replace_lost(self) -> list[str]:
        """Replace the workers whose pods are gone or can no longer run; return their names."""
        started = set(self.workers) & set(self.worker_spec)  # before listing: see below
        if not started:
            return []
        # A worker added after the snapshot may have a pod the listing does not show yet.
        listed = {
            p.name: dict(p.raw)
            async for p in Pod.list(
                namespace=self.namespace,
                label_selector=pods.cluster_selector(self.cluster_name, "worker"),
            )
        }
        lost = {}
        for name in sorted(started):
            pod = listed.get(name)
            why = "deleted" if pod is None else pods.lost(pod)
            if why and name in self.worker_spec:
                lost[name] = why
        for name, why in lost.items():
            spec = self.worker_spec.pop(name)
            new = self.new_worker_spec()
            self._say(f"worker pod {name} is {why}; starting {next(iter(new))} in its place")
            worker = self.workers.pop(name, None)
            if worker is not None:
                await worker.close()  # deletes what is left of the pod
            self.worker_spec.update({k: spec for k in new})
        if lost:
            await self._correct_state()
        return list(lost)

    async def _close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
            self._watcher = None
        await super()._close()


async def delete_cluster_objects(cluster: str, namespace: str) -> int:
    """Delete every pod and Service labelled as ``cluster``'s (idempotent); return how many."""
    n = 0
    selector = pods.cluster_selector(cluster)
    for cls in (Pod, Service):
        async for obj in cls.list(namespace=namespace, label_selector=selector):
            await _delete(obj, grace_period=0 if cls is Pod else None)
            n += 1
    return n
