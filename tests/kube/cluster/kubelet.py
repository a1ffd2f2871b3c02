"""The kubelet: Deployment/Job controllers, service endpoints/DNS, and the pods'
lifecycle (phases, restarts, probes, statuses, grace periods, logs).

It runs on the API server's event loop and talks to the store directly. How a
container is started is the container runtime's business (``runtimes.py``): a local
process by default (its own 127.B.x.y address, mount+UTS namespace, volumes and
/etc/hosts bind-mounted in, ``podshim/sitecustomize.py`` for wildcard binds), or a
podman container of its image (``podman.py``, ``SWEEP_TEST_POD_RUNTIME=podman``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time
from typing import Any

import aiohttp.web

from .runtimes import ConfigError, killpg, make_runtime
from .store import (
    ApiError,
    Store,
    decode_secret_value,
    label_selector_matches,
    now_iso,
    rand_suffix,
)

log = logging.getLogger("kube-emu.kubelet")

HERE = pathlib.Path(__file__).parent
NODE_NAME = "kube-emu-node"
# Job pods carry it until the Job controller has counted them (as in k8s >= 1.26).
JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
TERMINAL_PHASES = ("Succeeded", "Failed")
VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return VAR_REF.sub(sub, text)


@dataclasses.dataclass
class Container:
    spec: dict
    init: bool = False
    proc: subprocess.Popen | None = None
    restart_count: int = 0
    started_at: str | None = None
    started_mono: float = 0.0
    state: dict = dataclasses.field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict = dataclasses.field(default_factory=dict)
    exit_code: int | None = None
    next_start: float = 0.0
    backoff: float = 0.0
    ready: bool = False
    probe_ok: int = 0
    probe_fail: int = 0
    next_probe: float = 0.0
    log_path: pathlib.Path | None = None
    last_terminated: dict | None = None

    @property
    def name(self) -> str:
        return self.spec["name"]


@dataclasses.dataclass
class PodRuntime:
    ns: str
    name: str
    uid: str
    ip: str
    dir: pathlib.Path
    init: list[Container]
    containers: list[Container]
    task: asyncio.Task | None = None
    terminating: bool = False
    gone: bool = False  # removed from the store
    phase: str = "Pending"
    launch: dict | None = None  # {container name: launch spec}
    host_paths: set[str] = dataclasses.field(default_factory=set)


class Kubelet:
    def __init__(
        self, store: Store, state_dir: pathlib.Path, kubeconfig: str, api_host: str, api_port: int
    ):
        self.store = store
        self.dir = state_dir
        self.kubeconfig = kubeconfig
        self.api_host, self.api_port = api_host, api_port
        self.pods: dict[tuple[str, str], PodRuntime] = {}
        self.dirty = asyncio.Event()
        self.ip_next = 0
        self.free_ips: list[str] = []
        self.dns_dir = state_dir / "dns"
        self.dns_dir.mkdir(parents=True, exist_ok=True)
        self._hosts_written: dict[str, str] = {}
        self._base_hosts = self._read_base_hosts()
        self._job_backoff: dict[str, float] = {}
        self.runtime = make_runtime(self)
        self._sub = store.subscribe(None, lambda ev: self.dirty.set())
        self._stopping = False
        self.global_hosts = self.dns_dir / "hosts"
        self._write_hosts({})

    # ------------------------------------------------------------------ setup

    def _read_base_hosts(self) -> str:
        try:
            text = pathlib.Path("/etc/hosts").read_text()
        except OSError:
            text = "127.0.0.1 localhost\n"
        return text.rstrip("\n") + "\n# --- kube-emu ---\n"

    def alloc_ip(self) -> str:
        if self.free_ips:
            return self.free_ips.pop(0)
        n = self.ip_next
        self.ip_next += 1
        return self.runtime.pod_ip(n)

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dirty.wait(), 0.5)
            self.dirty.clear()
            try:
                self.reconcile()
            except Exception:
                log.exception("kubelet reconcile failed")

    def reconcile(self) -> None:
        self.store.gc_sweep()
        self._deployments()
        self._jobs()
        self._pods()
        self._services()

    async def shutdown(self) -> None:
        self._stopping = True
        self.store.unsubscribe(self._sub)
        for pr in list(self.pods.values()):
            pr.terminating = True
            pr.gone = True
            if pr.task:
                pr.task.cancel()
        running = [(pr, c) for pr in self.pods.values() for c in pr.init + pr.containers if c.proc]
        for pr, c in running:
            self.runtime.signal(pr, c, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(c.proc.poll() is None for _, c in running):
            await asyncio.sleep(0.1)
        for pr, c in running:
            self.runtime.signal(pr, c, signal.SIGKILL)
            with contextlib.suppress(Exception):
                c.proc.wait(2)
        await self.runtime.shutdown()

    # ------------------------------------------------------------------ helpers

    def _owned(self, kind_key: str, owner_uid: str, ns: str) -> list[dict]:
        rt = self.store.rt(kind_key)
        return [
            o
            for o in self.store.list(rt, ns)
            if any(r.get("uid") == owner_uid for r in o["metadata"].get("ownerReferences") or [])
        ]

    @staticmethod
    def _owner_ref(obj: dict) -> dict:
        return {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }

    @staticmethod
    def pod_ready(pod: dict) -> bool:
        if pod["metadata"].get("deletionTimestamp"):
            return False
        for c in pod.get("status", {}).get("conditions") or []:
            if c.get("type") == "Ready":
                return c.get("status") == "True"
        return False

    def _create_pod(
        self,
        ns: str,
        owner: dict,
        template: dict,
        name: str,
        extra_labels: dict,
        finalizers: list[str] | None = None,
    ) -> None:
        meta = dict(template.get("metadata") or {})
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {**(meta.get("labels") or {}), **extra_labels},
                "annotations": dict(meta.get("annotations") or {}),
                "ownerReferences": [self._owner_ref(owner)],
            },
            "spec": json.loads(json.dumps(template.get("spec") or {})),
        }
        if finalizers:
            pod["metadata"]["finalizers"] = list(finalizers)
        try:
            self.store.create(self.store.rt("pods"), ns, pod)
        except ApiError as e:
            log.warning("cannot create pod %s/%s: %s", ns, name, e.message)

    def _delete(self, kind_key: str, obj: dict) -> None:
        with contextlib.suppress(ApiError):
            self.store.delete(
                self.store.rt(kind_key), obj["metadata"].get("namespace"), obj["metadata"]["name"]
            )

    # ------------------------------------------------------------------ deployments

    def _deployments(self) -> None:
        rt = self.store.rt("deployments.apps")
        for d in self.store.list(rt):
            meta, spec = d["metadata"], d.get("spec", {})
            if meta.get("deletionTimestamp"):
                continue
            ns = meta["namespace"]
            template = spec.get("template") or {}
            thash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
            pods = [
                p
                for p in self._owned("pods", meta["uid"], ns)
                if not p["metadata"].get("deletionTimestamp")
            ]
            current = [
                p for p in pods if p["metadata"].get("labels", {}).get("pod-template-hash") == thash
            ]
            outdated = [p for p in pods if p not in current]
            for p in outdated:  # Recreate-style rollout
                self._delete("pods", p)
            replicas = int(spec.get("replicas", 1))
            for _ in range(replicas - len(current)):
                self._create_pod(
                    ns,
                    d,
                    template,
                    f"{meta['name']}-{thash}-{rand_suffix()}",
                    {"pod-template-hash": thash},
                )
            if len(current) > replicas:
                extra = sorted(
                    current, key=lambda p: (self.pod_ready(p), p["metadata"]["creationTimestamp"])
                )
                for p in extra[: len(current) - replicas]:
                    self._delete("pods", p)
            live = [
                p
                for p in self._owned("pods", meta["uid"], ns)
                if not p["metadata"].get("deletionTimestamp")
            ]
            ready = sum(1 for p in live if self.pod_ready(p))
            updated = sum(
                1 for p in live if p["metadata"].get("labels", {}).get("pod-template-hash") == thash
            )
            available = ready >= replicas

            def upd(o: dict, live=live, ready=ready, updated=updated, available=available) -> None:
                st = o.setdefault("status", {})
                st["observedGeneration"] = o["metadata"].get("generation", 1)
                st["replicas"] = len(live)
                st["updatedReplicas"] = updated
                st["readyReplicas"] = ready
                st["availableReplicas"] = ready
                if len(live) - ready:
                    st["unavailableReplicas"] = len(live) - ready
                else:
                    st.pop("unavailableReplicas", None)
                if not ready:
                    st.pop("readyReplicas", None)
                    st.pop("availableReplicas", None)
                old = {c["type"]: c for c in st.get("conditions") or []}
                conds = []
                for ctype, ok, reason in (
                    (
                        "Available",
                        available,
                        "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                    ),
                    ("Progressing", True, "NewReplicaSetAvailable"),
                ):
                    status = "True" if ok else "False"
                    prev = old.get(ctype)
                    ts = (
                        prev["lastTransitionTime"]
                        if prev and prev.get("status") == status
                        else now_iso()
                    )
                    conds.append(
                        {
                            "type": ctype,
                            "status": status,
                            "reason": reason,
                            "lastTransitionTime": ts,
                            "lastUpdateTime": ts,
                        }
                    )
                st["conditions"] = conds

            self.store.update_internal(rt, ns, meta["name"], upd)

    # ------------------------------------------------------------------ jobs

    def _jobs(self) -> None:
        rt = self.store.rt("jobs.batch")
        now = time.time()
        tracking: set[str] = set()  # unfinished Jobs: their pods keep the tracking finalizer
        for j in self.store.list(rt):
            meta, spec = j["metadata"], j.get("spec", {})
            ns, uid = meta["namespace"], meta["uid"]
            if meta.get("deletionTimestamp"):
                continue
            status = j.get("status", {})
            conds = {c["type"]: c for c in status.get("conditions") or []}
            finished = any(conds.get(t, {}).get("status") == "True" for t in ("Complete", "Failed"))
            if finished:
                ttl = spec.get("ttlSecondsAfterFinished")
                done_at = status.get("completionTime") or (conds.get("Failed") or {}).get(
                    "lastTransitionTime"
                )
                if ttl is not None and done_at and now - _parse_ts(done_at) >= int(ttl):
                    with contextlib.suppress(ApiError):
                        self.store.delete(rt, ns, meta["name"], {"propagationPolicy": "Background"})
                continue
            tracking.add(uid)
            suspended = conds.get("Suspended", {}).get("status") == "True"
            if bool(spec.get("suspend")) != suspended:
                self._mark_suspended(rt, j, bool(spec.get("suspend")))
            if spec.get("suspend"):
                continue  # (a Job suspended while it runs keeps its pods here; k8s deletes them)
            pods = self._owned("pods", uid, ns)
            policy = (spec.get("template", {}).get("spec", {}) or {}).get("restartPolicy", "Never")
            active = [
                p
                for p in pods
                if p.get("status", {}).get("phase") in ("Pending", "Running", None)
                and not p["metadata"].get("deletionTimestamp")
            ]
            terminating = [
                p
                for p in pods
                if p["metadata"].get("deletionTimestamp")
                and p.get("status", {}).get("phase") not in TERMINAL_PHASES
            ]
            succeeded, failed, counted, fail_message = self._count_job_pods(j, pods)
            failures = failed  # towards backoffLimit
            if policy == "OnFailure":
                failures += sum(
                    cs.get("restartCount", 0)
                    for p in pods
                    for cs in p.get("status", {}).get("containerStatuses") or []
                )
            start = (None if suspended else status.get("startTime")) or now_iso()
            completions = int(spec.get("completions") or 1)
            parallelism = int(spec.get("parallelism") if spec.get("parallelism") is not None else 1)
            backoff_limit = int(
                spec.get("backoffLimit") if spec.get("backoffLimit") is not None else 6
            )
            ads = spec.get("activeDeadlineSeconds")
            verdict: tuple[str, str, str] | None = None
            if fail_message:
                verdict = ("Failed", "PodFailurePolicy", fail_message)
            elif ads is not None and now - _parse_ts(start) >= int(ads):
                verdict = (
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )
            elif failures > backoff_limit:
                verdict = (
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                )
            elif succeeded >= completions:
                verdict = ("Complete", "", "")
            if verdict and verdict[0] == "Failed":
                for p in active:
                    self._delete("pods", p)
                # Pods still running or terminating when the Job fails count as failed (k8s).
                done = {p["metadata"]["uid"] for p in counted}
                rest = [p for p in pods if _job_tracked(p) and p["metadata"]["uid"] not in done]
                failed += len(rest)  # finished pods were all counted above
                counted += rest
                active = []
            elif verdict is None:
                want = min(parallelism, completions - succeeded) - len(active)
                if _only_replace_failed(spec):
                    want -= len(terminating)
                key = f"{ns}/{meta['name']}"
                if want > 0 and now >= self._job_backoff.get(key, 0):
                    for _ in range(want):
                        self._create_pod(
                            ns,
                            j,
                            spec.get("template") or {},
                            f"{meta['name']}-{rand_suffix()}",
                            {
                                "batch.kubernetes.io/job-name": meta["name"],
                                "job-name": meta["name"],
                                "batch.kubernetes.io/controller-uid": uid,
                                "controller-uid": uid,
                            },
                            [JOB_TRACKING_FINALIZER],
                        )
                    # Ignored failures back off too (k8s), or a pod failing at once would spin.
                    retries = max(
                        failures,
                        sum(1 for p in pods if p.get("status", {}).get("phase") == "Failed"),
                    )
                    if retries:
                        self._job_backoff[key] = now + min(0.5 * 2 ** (retries - 1), 5.0)
                    active = [
                        p
                        for p in self._owned("pods", uid, ns)
                        if p.get("status", {}).get("phase") in ("Pending", "Running", None)
                        and not p["metadata"].get("deletionTimestamp")
                    ]
            ready = sum(1 for p in active if self.pod_ready(p))

            def upd(
                o: dict,
                active=active,
                succeeded=succeeded,
                failed=failed,
                verdict=verdict,
                start=start,
                ready=ready,
            ) -> None:
                st = o.setdefault("status", {})
                st["startTime"] = start
                for k, v in (("active", len(active)), ("succeeded", succeeded), ("failed", failed)):
                    if v:
                        st[k] = v
                    else:
                        st.pop(k, None)
                st["ready"] = ready
                st["uncountedTerminatedPods"] = {}
                if verdict:
                    ts = now_iso()
                    kind, reason, message = verdict
                    conds = list(st.get("conditions") or [])
                    if kind == "Complete":
                        st["completionTime"] = ts
                        conds.append(
                            {
                                "type": "SuccessCriteriaMet",
                                "status": "True",
                                "reason": "CompletionsReached",
                                "message": "Reached expected number of succeeded pods",
                                "lastProbeTime": ts,
                                "lastTransitionTime": ts,
                            }
                        )
                        conds.append(
                            {
                                "type": "Complete",
                                "status": "True",
                                "reason": "CompletionsReached",
                                "message": "Reached expected number of succeeded pods",
                                "lastProbeTime": ts,
                                "lastTransitionTime": ts,
                            }
                        )
                    else:
                        conds.append(
                            {
                                "type": "FailureTarget",
                                "status": "True",
                                "reason": reason,
                                "message": message,
                                "lastProbeTime": ts,
                                "lastTransitionTime": ts,
                            }
                        )
                        conds.append(
                            {
                                "type": "Failed",
                                "status": "True",
                                "reason": reason,
                                "message": message,
                                "lastProbeTime": ts,
                                "lastTransitionTime": ts,
                            }
                        )
                    st["conditions"] = conds

            self.store.update_internal(rt, ns, meta["name"], upd)
            for p in counted:  # after the status update, so that no pod goes uncounted
                self._drop_job_finalizer(p)
        self._release_job_pods(tracking)

    def _mark_suspended(self, rt: Any, job: dict, suspended: bool) -> None:
        """The Job's ``Suspended`` condition, as the Job controller keeps it (Kueue's
        admission is ``spec.suspend`` turned false; resuming restarts ``startTime``)."""
        ts = now_iso()
        cond = {
            "type": "Suspended",
            "status": "True" if suspended else "False",
            "reason": "JobSuspended" if suspended else "JobResumed",
            "message": "Job suspended" if suspended else "Job resumed",
            "lastProbeTime": ts,
            "lastTransitionTime": ts,
        }

        def upd(o: dict) -> None:
            st = o.setdefault("status", {})
            conds = [c for c in st.get("conditions") or [] if c["type"] != "Suspended"]
            st["conditions"] = [*conds, cond]
            if suspended:
                st.pop("startTime", None)

        meta = job["metadata"]
        self.store.update_internal(rt, meta["namespace"], meta["name"], upd)

    def _count_job_pods(
        self, job: dict, pods: list[dict]
    ) -> tuple[int, int, list[dict], str | None]:
        """Fold the Job's finished, not yet counted pods into its status counts.

        Returns (succeeded, failed, the pods counted now, FailJob message or None).
        Failures an ``Ignore`` rule of the podFailurePolicy matches are not counted."""
        spec, status = job.get("spec", {}), job.get("status", {})
        succeeded, failed = int(status.get("succeeded") or 0), int(status.get("failed") or 0)
        counted: list[dict] = []
        fail_message: str | None = None
        for p in pods:
            if not _job_tracked(p):
                continue
            if p.get("status", {}).get("phase") == "Succeeded":
                succeeded += 1
            elif _pod_failed(p, spec):
                message, count = match_pod_failure_policy(_pod_failure_policy(spec), p)
                failed += count
                fail_message = fail_message or message
            else:
                continue
            counted.append(p)
        return succeeded, failed, counted, fail_message

    def _drop_job_finalizer(self, pod: dict) -> None:
        meta = pod["metadata"]

        def upd(o: dict) -> None:
            if o["metadata"]["uid"] != meta["uid"]:
                return
            fins = [f for f in o["metadata"].get("finalizers") or [] if f != JOB_TRACKING_FINALIZER]
            if fins:
                o["metadata"]["finalizers"] = fins
            else:
                o["metadata"].pop("finalizers", None)

        self.store.update_internal(self.store.rt("pods"), meta["namespace"], meta["name"], upd)

    def _release_job_pods(self, tracking: set[str]) -> None:
        """Pods whose Job is gone, being deleted or finished will not be counted: drop
        their tracking finalizer (k8s's orphan-pod cleanup), or they would never go."""
        for p in self.store.list(self.store.rt("pods")):
            if not _job_tracked(p):
                continue
            refs = p["metadata"].get("ownerReferences") or []
            owner = next((r for r in refs if r.get("controller")), None)
            if owner is not None and owner.get("kind") != "Job":
                continue  # not ours to clean up
            if owner is None or owner.get("uid") not in tracking:
                self._drop_job_finalizer(p)

    # ------------------------------------------------------------------ services & DNS

    def _services(self) -> None:
        rt_pods = self.store.rt("pods")
        rt_svc = self.store.rt("services")
        pods = [p for p in self.store.list(rt_pods) if p.get("status", {}).get("podIP")]
        names: dict[str, dict[str, str]] = {}  # ns -> {svc: ip}
        for svc in self.store.list(rt_svc):
            meta, spec = svc["metadata"], svc.get("spec", {})
            ns = meta["namespace"]
            selector = spec.get("selector")
            if not selector:
                continue
            ready = sorted(
                (
                    p
                    for p in pods
                    if p["metadata"]["namespace"] == ns
                    and self.pod_ready(p)
                    and label_selector_matches(
                        {"matchLabels": selector}, p["metadata"].get("labels")
                    )
                ),
                key=lambda p: p["metadata"]["creationTimestamp"],
            )
            if not ready:
                # Real DNS answers as soon as the Service exists, and connecting fails at
                # once: so does the placeholder ClusterIP, where nothing listens. A name
                # that does not resolve sends dask-kubernetes to port-forwarding instead,
                # which the emulator lacks and which blocks the operator's event loop.
                cluster_ip = spec.get("clusterIP")
                if cluster_ip and cluster_ip != "None":
                    names.setdefault(ns, {})[meta["name"]] = cluster_ip
                continue
            ip = ready[0]["status"]["podIP"]
            names.setdefault(ns, {})[meta["name"]] = ip
            if "loadBalancer" not in svc.get("status", {}) or (
                spec.get("type") == "LoadBalancer"
                and not svc["status"]["loadBalancer"].get("ingress")
            ):

                def upd(o: dict, ip=ip) -> None:
                    lb: dict = {}
                    if o["spec"].get("type") == "LoadBalancer":
                        lb["ingress"] = [{"ip": ip, "ipMode": "VIP"}]
                    o["status"] = {"loadBalancer": lb}

                self.store.update_internal(rt_svc, ns, meta["name"], upd)
        pod_names: dict[str, list[tuple[str, str]]] = {}
        for p in pods:
            if p["metadata"].get("deletionTimestamp"):
                continue
            pod_names.setdefault(p["metadata"]["namespace"], []).append(
                (p["status"]["podIP"], p["metadata"]["name"])
            )
        self._write_hosts(names, pod_names)

    def hosts_file(self, ns: str) -> pathlib.Path:
        return self.dns_dir / f"hosts.{ns}"

    def _write_hosts(self, names: dict[str, dict[str, str]], pod_names: dict | None = None) -> None:
        pod_names = pod_names or {}
        fq = []
        for ns, svcs in sorted(names.items()):
            for svc, ip in sorted(svcs.items()):
                fq.append(f"{ip}\t{svc}.{ns} {svc}.{ns}.svc {svc}.{ns}.svc.cluster.local")
        files = {"": self._base_hosts + "\n".join(fq) + "\n"}
        namespaces = (
            set(names)
            | set(pod_names)
            | {p.name[len("hosts.") :] for p in self.dns_dir.glob("hosts.*")}
        )
        for ns in namespaces:
            short = [f"{ip}\t{svc}" for svc, ip in sorted(names.get(ns, {}).items())]
            own = [f"{ip}\t{name}" for ip, name in sorted(pod_names.get(ns, []))]
            files[ns] = self._base_hosts + "\n".join(own + short + fq) + "\n"
        for ns, content in files.items():
            path = self.global_hosts if ns == "" else self.hosts_file(ns)
            if self._hosts_written.get(ns) == content:
                continue
            # Rewrite in place: the file is bind-mounted into pods by inode.
            mode = "r+" if path.exists() else "w"
            with open(path, mode) as f:
                f.write(content)
                f.truncate()
            self._hosts_written[ns] = content

    # ------------------------------------------------------------------ pods

    def _pods(self) -> None:
        rt = self.store.rt("pods")
        seen = set()
        for pod in self.store.list(rt):
            meta = pod["metadata"]
            key = (meta["namespace"], meta["name"])
            seen.add(key)
            pr = self.pods.get(key)
            if pr is not None and pr.uid != meta["uid"]:
                pr.gone = True
                pr.terminating = True
                pr = None
            if meta.get("deletionTimestamp"):
                if pr is None:
                    if pod.get("status", {}).get("phase") not in TERMINAL_PHASES:
                        # Never started, so nothing else will end it: k8s's PodGC marks such
                        # pods Failed (a finalizer, e.g. the Job's, may keep them a while).
                        self.store.update_internal(
                            rt, *key, lambda o: o.setdefault("status", {}).update(phase="Failed")
                        )
                    with contextlib.suppress(ApiError):
                        self.store.delete(rt, key[0], key[1], force=True)
                else:
                    pr.terminating = True
                continue
            if (
                pr is None
                and pod.get("spec", {}).get("nodeName") in (None, NODE_NAME)
                and pod.get("status", {}).get("phase") in ("Pending", None)
            ):
                self._start_pod(pod)
        for key, pr in list(self.pods.items()):
            if (
                key not in seen
                or self.store.try_get(rt, *key) is None
                or self.store.get(rt, *key)["metadata"]["uid"] != pr.uid
            ):
                pr.gone = True
                pr.terminating = True

    def _start_pod(self, pod: dict) -> None:
        meta, spec = pod["metadata"], pod.get("spec", {})
        ns, name = meta["namespace"], meta["name"]
        ip = self.alloc_ip()
        pdir = self.dir / "pods" / f"{ns}_{name}_{meta['uid'][:8]}"
        (pdir / "logs").mkdir(parents=True, exist_ok=True)
        pr = PodRuntime(
            ns=ns,
            name=name,
            uid=meta["uid"],
            ip=ip,
            dir=pdir,
            init=[Container(c, init=True) for c in spec.get("initContainers") or []],
            containers=[Container(c) for c in spec.get("containers") or []],
        )
        self.pods[(ns, name)] = pr
        if not self.hosts_file(ns).exists():
            self._hosts_written.pop(ns, None)
            self.hosts_file(ns).write_text(self._base_hosts)
        ts = now_iso()

        def upd(o: dict) -> None:
            o["spec"]["nodeName"] = NODE_NAME
            st = o.setdefault("status", {})
            st.update(
                phase="Pending",
                podIP=ip,
                podIPs=[{"ip": ip}],
                hostIP=self.runtime.host_ip,
                hostIPs=[{"ip": self.runtime.host_ip}],
                startTime=ts,
            )
            st["conditions"] = [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": ts},
                {
                    "type": "Initialized",
                    "status": "False" if pr.init else "True",
                    "lastTransitionTime": ts,
                },
                {
                    "type": "Ready",
                    "status": "False",
                    "lastTransitionTime": ts,
                    "reason": "ContainersNotReady",
                },
                {
                    "type": "ContainersReady",
                    "status": "False",
                    "lastTransitionTime": ts,
                    "reason": "ContainersNotReady",
                },
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts},
            ]

        self.store.update_internal(self.store.rt("pods"), ns, name, upd)
        pr.task = asyncio.get_running_loop().create_task(self._pod_main(pr))

    # --- pod runtime

    async def _pod_main(self, pr: PodRuntime) -> None:
        rt = self.store.rt("pods")
        try:
            pod = self.store.try_get(rt, pr.ns, pr.name)
            policy = (pod or {}).get("spec", {}).get("restartPolicy", "Always")
            await self.runtime.start_pod(pr)
            # Init containers, one after another.
            for c in pr.init:
                while not pr.terminating:
                    if c.proc is None and time.monotonic() >= c.next_start:
                        self._launch(pr, c)
                        self._write_status(pr)
                    if c.proc is not None and c.proc.poll() is not None:
                        self._on_exit(pr, c)
                        if c.exit_code == 0:
                            break
                        if policy == "Never":
                            pr.phase = "Failed"
                            break
                        self._schedule_restart(c)
                        self._write_status(pr)
                    await asyncio.sleep(0.1)
                if pr.phase == "Failed" or pr.terminating:
                    break
            # Main containers.
            if pr.phase != "Failed":
                while not pr.terminating:
                    changed = False
                    for c in pr.containers:
                        if (
                            c.proc is None
                            and c.exit_code is None
                            and time.monotonic() >= c.next_start
                        ) or (
                            c.proc is None
                            and c.exit_code is not None
                            and c.next_start
                            and time.monotonic() >= c.next_start
                        ):
                            self._launch(pr, c)
                            changed = True
                        elif c.proc is not None and c.proc.poll() is not None:
                            self._on_exit(pr, c)
                            if policy == "Always" or (policy == "OnFailure" and c.exit_code != 0):
                                self._schedule_restart(c)
                            changed = True
                        elif c.proc is not None:
                            if time.monotonic() - c.started_mono > 10:
                                c.backoff = 0.0
                            changed |= await self._probe(pr, c)
                    if all(
                        c.proc is None and c.exit_code is not None and not c.next_start
                        for c in pr.containers
                    ):
                        pr.phase = (
                            "Succeeded"
                            if all(c.exit_code == 0 for c in pr.containers)
                            else "Failed"
                        )
                        self._write_status(pr)
                        break
                    if changed:
                        self._write_status(pr)
                    await asyncio.sleep(0.2)
            if pr.phase in ("Succeeded", "Failed") and not pr.terminating:
                self._write_status(pr)
                while not pr.terminating:
                    await asyncio.sleep(0.3)
            await self._terminate(pr)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pod runtime %s/%s crashed", pr.ns, pr.name)
            await self._terminate(pr)

    def _schedule_restart(self, c: Container) -> None:
        c.backoff = min(max(c.backoff * 2, 1.0), 10.0)
        c.next_start = time.monotonic() + c.backoff
        c.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {c.backoff:.0f}s restarting failed container={c.name}",
            }
        }

    def _on_exit(self, pr: PodRuntime, c: Container) -> None:
        assert c.proc is not None
        rc = c.proc.returncode
        code = rc if rc >= 0 else 128 - rc
        c.exit_code = code
        term = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": now_iso(),
            "containerID": f"emu://{c.proc.pid}",
        }
        if rc < 0:
            term["signal"] = -rc
        c.state = {"terminated": term}
        c.last_terminated = term
        c.ready = False
        c.proc = None
        c.next_start = 0.0
        log.info("pod %s/%s container %s exited with %s", pr.ns, pr.name, c.name, code)

    async def _probe(self, pr: PodRuntime, c: Container) -> bool:
        """Run the readiness probe if due; return True if readiness changed."""
        probe = c.spec.get("readinessProbe")
        before = c.ready
        if not probe:
            c.ready = True
            return before != c.ready
        now = time.monotonic()
        if now < c.next_probe:
            return False
        period = max(float(probe.get("periodSeconds", 10)), 0.5)
        c.next_probe = now + min(period, 2.0)  # probe faster than k8s: tests want speed
        if now - c.started_mono < float(probe.get("initialDelaySeconds", 0)):
            return False
        ok = await self._run_probe(pr, c, probe)
        if ok:
            c.probe_fail = 0
            c.probe_ok += 1
            if c.probe_ok >= int(probe.get("successThreshold", 1)):
                c.ready = True
        else:
            c.probe_ok = 0
            c.probe_fail += 1
            if c.probe_fail >= int(probe.get("failureThreshold", 3)) or not c.ready:
                c.ready = False
        return before != c.ready

    def _port(self, c: Container, port: Any) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"unknown named port {port!r}")

    async def _run_probe(self, pr: PodRuntime, c: Container, probe: dict) -> bool:
        timeout = min(float(probe.get("timeoutSeconds", 1)), 2.0)
        try:
            if "httpGet" in probe:
                hg = probe["httpGet"]
                port = self._port(c, hg.get("port"))
                host = hg.get("host") or pr.ip
                path = hg.get("path", "/")
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout
                )
                try:
                    headers = "".join(
                        f"{h['name']}: {h['value']}\r\n" for h in hg.get("httpHeaders") or []
                    )
                    writer.write(
                        f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.31\r\n"
                        f"{headers}\r\n".encode()
                    )
                    await writer.drain()
                    line = await asyncio.wait_for(reader.readline(), timeout)
                finally:
                    writer.close()
                parts = line.split()
                return len(parts) >= 2 and 200 <= int(parts[1]) < 400
            if "tcpSocket" in probe:
                port = self._port(c, probe["tcpSocket"].get("port"))
                _, writer = await asyncio.wait_for(asyncio.open_connection(pr.ip, port), timeout)
                writer.close()
                return True
            if "exec" in probe:
                how = self.runtime.exec_argv(pr, c, probe["exec"].get("command", []))
                if not how:
                    return False
                argv, env, cwd = how
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    env=env,
                    cwd=cwd,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                try:
                    return await asyncio.wait_for(proc.wait(), timeout + 5) == 0
                except TimeoutError:
                    proc.kill()
                    return False
            return True
        except Exception:
            return False

    def _launch(self, pr: PodRuntime, c: Container) -> None:
        pod = self.store.try_get(self.store.rt("pods"), pr.ns, pr.name)
        if pod is None:
            pr.terminating = True
            return
        try:
            spec = self.runtime.prepare(pr, c, self._container_config(pr, pod, c))
        except ConfigError as e:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            c.next_start = time.monotonic() + 1.0
            return
        pr.launch = pr.launch or {}
        pr.launch[c.name] = spec
        if c.started_at is not None:  # a restart
            c.restart_count += 1
            if c.last_terminated:
                c.last_state = {"terminated": c.last_terminated}
        c.log_path = pr.dir / "logs" / f"{c.name}-{c.restart_count}.log"
        logf = open(c.log_path, "ab")  # noqa: SIM115 (handed to Popen)
        try:
            c.proc = self.runtime.start(pr, c, spec, logf)
        finally:
            logf.close()
        c.exit_code = None
        c.next_start = 0.0
        c.started_at = now_iso()
        c.started_mono = time.monotonic()
        c.state = {"running": {"startedAt": c.started_at}}
        c.ready = False
        c.probe_ok = c.probe_fail = 0
        c.next_probe = 0.0
        log.info(
            "pod %s/%s container %s started: pid %s %s",
            pr.ns,
            pr.name,
            c.name,
            c.proc.pid,
            spec.get("shown", spec["argv"]),
        )

    def _container_config(self, pr: PodRuntime, pod: dict, c: Container) -> dict:
        """What the runtime needs to start the container (see runtimes.py)."""
        cspec = c.spec
        env = self._env(pr, pod, cspec)
        mounts = self._volume_mounts(pr, pod, cspec)
        mounts.append({"src": str(self.hosts_file(pr.ns)), "dst": "/etc/hosts", "readOnly": False})
        return {
            "image": cspec.get("image", ""),
            "command": [expand(x, env) for x in cspec.get("command") or []],
            "args": [expand(x, env) for x in cspec.get("args") or []],
            "env": env,
            "mounts": mounts,
            "working_dir": cspec.get("workingDir") or "",
            "security": {
                **(pod["spec"].get("securityContext") or {}),
                **(cspec.get("securityContext") or {}),
            },
            "hostname": pr.name,
        }

    # --- env

    def _get_obj(self, kind: str, ns: str, name: str) -> dict | None:
        return self.store.try_get(self.store.rt(kind), ns, name)

    def _field_ref(self, pr: PodRuntime, pod: dict, path: str) -> str:
        meta = pod["metadata"]
        m = re.match(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        return {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": NODE_NAME,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
            "status.podIP": pr.ip,
            "status.podIPs": pr.ip,
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
        }.get(path, "")

    def _env(self, pr: PodRuntime, pod: dict, cspec: dict) -> dict[str, str]:
        ns = pr.ns
        env: dict[str, str] = self.runtime.base_env(pr)
        for ef in cspec.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            if "configMapRef" in ef:
                ref = ef["configMapRef"]
                cm = self._get_obj("configmaps", ns, ref["name"])
                if cm is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'configmap "{ref["name"]}" not found')
                for k, v in (cm.get("data") or {}).items():
                    env[prefix + k] = v
            if "secretRef" in ef:
                ref = ef["secretRef"]
                sec = self._get_obj("secrets", ns, ref["name"])
                if sec is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'secret "{ref["name"]}" not found')
                for k in set(sec.get("data") or {}) | set(sec.get("stringData") or {}):
                    env[prefix + k] = decode_secret_value(sec, k) or ""
        for item in cspec.get("env") or []:
            name = item["name"]
            if "value" in item or "valueFrom" not in item:
                env[name] = expand(str(item.get("value", "")), env)
                continue
            vf = item["valueFrom"]
            if "fieldRef" in vf:
                env[name] = self._field_ref(pr, pod, vf["fieldRef"].get("fieldPath", ""))
            elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
                is_secret = "secretKeyRef" in vf
                ref = vf["secretKeyRef" if is_secret else "configMapKeyRef"]
                obj = self._get_obj(
                    "secrets" if is_secret else "configmaps", ns, ref.get("name", "")
                )
                value = None
                if obj is not None:
                    value = (
                        decode_secret_value(obj, ref["key"])
                        if is_secret
                        else (obj.get("data") or {}).get(ref["key"])
                    )
                if value is None:
                    if ref.get("optional"):
                        continue
                    kind = "secret" if is_secret else "configmap"
                    raise ConfigError(
                        f"couldn't find key {ref['key']} in {kind} {ns}/{ref.get('name')}"
                    )
                env[name] = value
            elif "resourceFieldRef" in vf:
                env[name] = (
                    str(os.cpu_count() or 1)
                    if "cpu" in vf["resourceFieldRef"].get("resource", "")
                    else str(16 * 2**30)
                )
        self.runtime.finish_env(pr, env)
        return env

    # --- volumes

    def _volume_mounts(self, pr: PodRuntime, pod: dict, cspec: dict) -> list[dict]:
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts = []
        for vm in cspec.get("volumeMounts") or []:
            vol = volumes.get(vm["name"])
            if vol is None:
                raise ConfigError(f"volume {vm['name']!r} not found")
            src = self._materialize(pr, pod, vol)
            if vm.get("subPath"):
                src = src / expand(vm["subPath"], {})
                if not src.exists():
                    src.mkdir(parents=True, exist_ok=True)
            mounts.append(
                {"src": str(src), "dst": vm["mountPath"], "readOnly": bool(vm.get("readOnly"))}
            )
        return mounts

    def _write_items(
        self, target: pathlib.Path, data: dict[str, bytes], items: list | None, mode: int
    ) -> None:
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        if items:
            chosen = [
                (it["key"], it.get("path", it["key"]), it.get("mode", mode))
                for it in items
                if it["key"] in data
            ]
        else:
            chosen = [(k, k, mode) for k in data]
        for key, path, m in chosen:
            p = target / path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data[key])
            p.chmod(m)

    def _source_data(self, pr: PodRuntime, kind: str, src: dict) -> dict[str, bytes] | None:
        name = src.get("name") or src.get("secretName", "")
        obj = self._get_obj(kind, pr.ns, name)
        if obj is None:
            if src.get("optional"):
                return {}
            return None
        if kind == "secrets":
            return {
                k: (decode_secret_value(obj, k) or "").encode()
                if k in (obj.get("stringData") or {})
                else base64.b64decode(v)
                for k, v in {**(obj.get("data") or {}), **(obj.get("stringData") or {})}.items()
            }
        out = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return out

    def _materialize(self, pr: PodRuntime, pod: dict, vol: dict) -> pathlib.Path:
        target = pr.dir / "volumes" / vol["name"]
        if "emptyDir" in vol:
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777)  # as the kubelet makes it: writable for any runAsUser
            return target
        if "hostPath" in vol:
            p = pathlib.Path(vol["hostPath"]["path"])
            if not p.exists() and vol["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
                p.mkdir(parents=True, exist_ok=True)
            return p
        if "configMap" in vol or "secret" in vol:
            kind, src = (
                ("configmaps", vol["configMap"])
                if "configMap" in vol
                else ("secrets", vol["secret"])
            )
            data = self._source_data(pr, kind, src)
            if data is None:
                raise ConfigError(
                    f'{kind[:-1]} "{src.get("name") or src.get("secretName")}" not found'
                )
            self._write_items(target, data, src.get("items"), src.get("defaultMode", 0o644))
            return target
        if "downwardAPI" in vol or "projected" in vol:
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            sources = (
                vol["projected"].get("sources", [])
                if "projected" in vol
                else [{"downwardAPI": vol["downwardAPI"]}]
            )
            for s in sources:
                if "configMap" in s or "secret" in s:
                    kind, src = (
                        ("configmaps", s["configMap"])
                        if "configMap" in s
                        else ("secrets", s["secret"])
                    )
                    data = self._source_data(pr, kind, src)
                    if data is None:
                        raise ConfigError(f'{kind[:-1]} "{src.get("name")}" not found')
                    tmp = target.parent / (target.name + ".tmp")
                    self._write_items(tmp, data, src.get("items"), 0o644)
                    shutil.copytree(tmp, target, dirs_exist_ok=True)
                    shutil.rmtree(tmp)
                elif "downwardAPI" in s:
                    for it in s["downwardAPI"].get("items", []):
                        path = it.get("fieldRef", {}).get("fieldPath", "")
                        meta = pod["metadata"]
                        if path in ("metadata.labels", "metadata.annotations"):
                            d = meta.get(path.split(".")[1]) or {}
                            value = "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
                        else:
                            value = self._field_ref(pr, pod, path)
                        (target / it["path"]).parent.mkdir(parents=True, exist_ok=True)
                        (target / it["path"]).write_text(value)
                elif "serviceAccountToken" in s:
                    (target / s["serviceAccountToken"].get("path", "token")).write_text(
                        "kube-emu-token"
                    )
            return target
        # PVCs and anything else: a scratch directory (not persistent across pods).
        target.mkdir(parents=True, exist_ok=True)
        return target

    # --- status

    def _container_status(self, c: Container, pod_spec: dict) -> dict:
        st = {
            "name": c.name,
            "image": c.spec.get("image", ""),
            "imageID": "",
            "ready": c.ready,
            "restartCount": c.restart_count,
            "started": c.proc is not None,
            "state": c.state,
            "lastState": c.last_state,
        }
        if c.proc is not None:
            st["containerID"] = f"emu://{c.proc.pid}"
        return st

    def _write_status(self, pr: PodRuntime) -> None:
        if pr.gone:
            return
        rt = self.store.rt("pods")
        ts = now_iso()
        all_ready = bool(pr.containers) and all(c.ready for c in pr.containers)
        started = any(c.started_at for c in pr.containers)
        if pr.phase not in ("Succeeded", "Failed"):
            pr.phase = "Running" if started else "Pending"
        init_done = all(c.exit_code == 0 for c in pr.init)

        def upd(o: dict) -> None:
            st = o.setdefault("status", {})
            st["phase"] = pr.phase
            st["containerStatuses"] = [self._container_status(c, o["spec"]) for c in pr.containers]
            if pr.init:
                st["initContainerStatuses"] = [
                    self._container_status(c, o["spec"]) for c in pr.init
                ]
            conds = {c["type"]: c for c in st.get("conditions") or []}
            for ctype, ok in (
                ("Initialized", init_done),
                ("Ready", all_ready and pr.phase == "Running"),
                ("ContainersReady", all_ready and pr.phase == "Running"),
            ):
                status = "True" if ok else "False"
                prev = conds.get(ctype)
                if prev is None or prev.get("status") != status:
                    new = {"type": ctype, "status": status, "lastTransitionTime": ts}
                    if not ok and ctype != "Initialized":
                        new["reason"] = (
                            "PodCompleted"
                            if pr.phase in ("Succeeded", "Failed")
                            else "ContainersNotReady"
                        )
                    conds[ctype] = new
            st["conditions"] = list(conds.values())

        self.store.update_internal(rt, pr.ns, pr.name, upd)

    async def _terminate(self, pr: PodRuntime) -> None:
        rt = self.store.rt("pods")
        pod = self.store.try_get(rt, pr.ns, pr.name)
        grace = 30
        if pod is not None and pod["metadata"].get("uid") == pr.uid:
            grace = pod["metadata"].get(
                "deletionGracePeriodSeconds", pod["spec"].get("terminationGracePeriodSeconds", 30)
            )
        running = [c for c in pr.init + pr.containers if c.proc is not None]
        for c in running:
            self.runtime.signal(pr, c, signal.SIGTERM)
        deadline = time.monotonic() + float(grace)
        while (
            running and time.monotonic() < deadline and any(c.proc.poll() is None for c in running)
        ):
            await asyncio.sleep(0.1)
        for c in running:
            if c.proc.poll() is None:
                self.runtime.signal(pr, c, signal.SIGKILL)
                await asyncio.sleep(0.05)
            # Kill whatever is left (e.g. nanny children).
            self.runtime.signal(pr, c, signal.SIGKILL)
            until = time.monotonic() + 5
            while c.proc.poll() is None and time.monotonic() < until:
                await asyncio.sleep(0.05)
            if c.proc.poll() is None:  # e.g. a container that podman never started
                killpg(c.proc, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    c.proc.wait(2)
            self._on_exit(pr, c)
        if not pr.gone and pod is not None and pod["metadata"].get("uid") == pr.uid:
            if pr.phase not in ("Succeeded", "Failed"):
                codes = [c.exit_code for c in pr.containers if c.exit_code is not None]
                pr.phase = "Succeeded" if codes and all(x == 0 for x in codes) else "Failed"
            for c in pr.containers:
                c.ready = False
            self._write_status(pr)
            with contextlib.suppress(ApiError):
                self.store.delete(rt, pr.ns, pr.name, force=True)
        if self.pods.get((pr.ns, pr.name)) is pr:
            del self.pods[(pr.ns, pr.name)]
        await self.runtime.stop_pod(pr)
        self.free_ips.append(pr.ip)
        self.dirty.set()

    # ------------------------------------------------------------------ logs

    async def serve_logs(
        self, ns: str, name: str, q: dict, raw: aiohttp.web.BaseRequest
    ) -> aiohttp.web.StreamResponse:
        pod = self.store.get(self.store.rt("pods"), ns, name)
        names = [
            c["name"]
            for c in pod["spec"].get("containers", []) + pod["spec"].get("initContainers", [])
        ]
        cname = q.get("container")
        if not cname:
            if len(pod["spec"].get("containers", [])) != 1:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, choose one of: {names}",
                )
            cname = pod["spec"]["containers"][0]["name"]
        if cname not in names:
            raise ApiError(400, "BadRequest", f"container {cname} is not valid for pod {name}")
        pr = self.pods.get((ns, name))
        pdir = (
            pr.dir
            if pr
            else next(
                iter(sorted((self.dir / "pods").glob(f"{ns}_{name}_{pod['metadata']['uid'][:8]}"))),
                None,
            )
        )
        logs = (
            sorted(
                (pdir / "logs").glob(f"{cname}-*.log"), key=lambda p: int(p.stem.rsplit("-", 1)[1])
            )
            if pdir
            else []
        )
        if q.get("previous") in ("true", "1"):
            logs = logs[-2:-1]
            if not logs:
                raise ApiError(
                    400,
                    "BadRequest",
                    f'previous terminated container "{cname}" in pod "{name}" not found',
                )
        else:
            logs = logs[-1:]
        if not logs:
            raise ApiError(
                400,
                "BadRequest",
                f'container "{cname}" in pod "{name}" is waiting to start: ContainerCreating',
            )
        path = logs[0]
        data = path.read_bytes()
        if q.get("tailLines"):
            n = int(q["tailLines"])
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-n:]) if n > 0 else b""
        if q.get("limitBytes"):
            data = data[: int(q["limitBytes"])]
        if q.get("follow") not in ("true", "1"):
            return aiohttp.web.Response(body=data, content_type="text/plain")
        resp = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(raw)
        await resp.write(data)
        pos = path.stat().st_size
        try:
            while True:
                await asyncio.sleep(0.2)
                size = path.stat().st_size
                if size > pos:
                    with open(path, "rb") as f:
                        f.seek(pos)
                        chunk = f.read(size - pos)
                    pos = size
                    await resp.write(chunk)
                cur = self.pods.get((ns, name))
                alive = cur is not None and any(
                    c.name == cname and c.proc is not None for c in cur.containers + cur.init
                )
                if not alive and path.stat().st_size == pos:
                    break
        except ConnectionError:
            pass
        await resp.write_eof()
        return resp


def _job_tracked(pod: dict) -> bool:
    return JOB_TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or [])


def _pod_failure_policy(job_spec: dict) -> dict | None:
    """The Job's podFailurePolicy; k8s allows one only with restartPolicy Never."""
    restart = ((job_spec.get("template") or {}).get("spec") or {}).get("restartPolicy", "Never")
    return job_spec.get("podFailurePolicy") if restart == "Never" else None


def _only_replace_failed(job_spec: dict) -> bool:
    """k8s waits for a terminating pod to fail before replacing it in these cases."""
    return bool(_pod_failure_policy(job_spec)) or job_spec.get("podReplacementPolicy") == "Failed"


def _pod_failed(pod: dict, job_spec: dict) -> bool:
    """k8s's isPodFailed: a deleted pod counts as failed at once unless the Job
    waits for terminating pods to reach a phase (the policy then needs their exit codes)."""
    phase = pod.get("status", {}).get("phase")
    if phase == "Failed":
        return True
    if _only_replace_failed(job_spec):
        return False
    return bool(pod["metadata"].get("deletionTimestamp")) and phase != "Succeeded"


def match_pod_failure_policy(policy: dict | None, pod: dict) -> tuple[str | None, bool]:
    """(FailJob message or None, whether the failure counts towards backoffLimit) for a
    failed pod, as k8s's matchPodFailurePolicy: the first matching rule wins, rules with
    an unknown action are skipped, no match means Count."""
    if not policy:
        return None, True
    meta, status = pod["metadata"], pod.get("status", {})
    where = f"{meta.get('namespace')}/{meta['name']}"
    for index, rule in enumerate(policy.get("rules") or []):
        action = rule.get("action")
        if action not in ("FailJob", "FailIndex", "Ignore", "Count"):
            continue
        if rule.get("onExitCodes") is not None:
            cs = _match_exit_codes(status, rule["onExitCodes"])
            if cs is None:
                continue
            code = cs["state"]["terminated"].get("exitCode")
            what = f"Container {cs['name']} for pod {where} failed with exit code {code}"
        elif rule.get("onPodConditions") is not None:
            cond = _match_pod_conditions(status, rule["onPodConditions"])
            if cond is None:
                continue
            what = f"Pod {where} has condition {cond['type']}"
        else:
            continue
        if action == "Ignore":
            return None, False
        if action == "Count":
            return None, True
        # FailIndex needs an Indexed Job (not emulated; k8s rejects it for NonIndexed ones).
        return f"{what} matching {action} rule at index {index}", True
    return None, True


def _match_exit_codes(status: dict, req: dict) -> dict | None:
    """The first terminated (app, then init) container status whose non-zero exit code
    satisfies the requirement; exit code 0 never matches, not even ``NotIn``."""
    op, name = req.get("operator"), req.get("containerName")
    values = {int(v) for v in req.get("values") or []}
    for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        term = (cs.get("state") or {}).get("terminated")
        if term is None or (name and cs.get("name") != name):
            continue
        code = int(term.get("exitCode") or 0)
        if code and ((op == "In" and code in values) or (op == "NotIn" and code not in values)):
            return cs
    return None


def _match_pod_conditions(status: dict, patterns: list[dict]) -> dict | None:
    for cond in status.get("conditions") or []:
        for pat in patterns:
            if cond.get("type") == pat.get("type") and cond.get("status") == pat.get(
                "status", "True"
            ):
                return cond
    return None


def _parse_ts(ts: str) -> float:
    import datetime

    return (
        datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")
        .replace(tzinfo=datetime.UTC)
        .timestamp()
    )
