"""The HTTP face of the emulated Kubernetes API server.

Built on kmock's :class:`KubernetesEmulator` for the HTTP server (aiohttp) and
for the API discovery documents (``/api``, ``/apis``, ``/apis/G/V`` …), fed
with kmock's bundled K3s resource list plus the Dask CRDs.

kmock 0.8's own object storage is bypassed entirely: all resource requests
(``/api/v1/…``, ``/apis/G/V/…``) are routed to :class:`store.Store`, which
implements the API-server semantics that kmock lacks (resourceVersions,
selectors, watch-from-resourceVersion, finalizers, cascading deletion,
status/scale subresources, the three patch flavours, …).  See README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

from . import tables
from .store import (
    ApiError,
    Event,
    ResourceType,
    Store,
    dumps,
    load_yaml_docs,
    not_found,
    now_iso,
)

log = logging.getLogger("kube-emu.api")

CORE_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NODE_NAME = "kube-emu-node"

# (namespace, pod, container, query-params, raw request) -> response
LogProvider = Callable[
    [str, str, dict, aiohttp.web.BaseRequest], Awaitable[aiohttp.web.StreamResponse]
]


def dask_crd_paths() -> list[pathlib.Path]:
    import dask_kubernetes

    root = pathlib.Path(dask_kubernetes.__file__).parent / "operator" / "deployment"
    return sorted(root.glob("helm/dask-kubernetes-operator/crds/*.yaml"))


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with a real(istic) object store behind it."""

    store: Store = attrs.field(factory=Store)
    log_provider: LogProvider | None = None
    # False: a cluster without the Dask operator installed (its CRDs are not served).
    dask_crds: bool = True

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock routes only exact paths; clients also ask with trailing slashes.
        self.fallback["get /version/"] << self._serve_server_version
        self.fallback["get /apis/"] << self._serve_apis
        self.fallback["get /api/"] << self._serve_api
        self._load_builtin_types()

    # ------------------------------------------------------------------ setup

    def _load_builtin_types(self) -> None:
        arr = kmock.ResourcesArray()
        arr.load_bundled()
        for res in arr:
            info = arr[res]
            if res.version is None or res.plural is None:
                continue
            rt = ResourceType(
                group=res.group or "",
                version=res.version,
                plural=res.plural,
                kind=info.kind or res.plural.capitalize(),
                namespaced=bool(info.namespaced),
                singular=info.singular or "",
                subresources=set(info.subresources),
                verbs=set(info.verbs),
                shortnames=set(info.shortnames),
                categories=set(info.categories),
            )
            self.store.register(rt)
            self.resources[res] = info
        for name in CORE_NAMESPACES:
            self.store.create(self.store.rt("namespaces"), None, {"metadata": {"name": name}})
            self._default_sa(name)
        self.store.create(
            self.store.rt("nodes"),
            None,
            {
                "metadata": {
                    "name": NODE_NAME,
                    "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux"},
                },
                "spec": {},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": NODE_NAME},
                    ],
                    "capacity": {"cpu": str(os.cpu_count() or 1), "memory": "16Gi", "pods": "250"},
                    "allocatable": {
                        "cpu": str(os.cpu_count() or 1),
                        "memory": "16Gi",
                        "pods": "250",
                    },
                    "nodeInfo": {
                        "kubeletVersion": "v1.31.0-emu",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                    },
                },
            },
            keep_status=True,
        )
        if self.dask_crds:
            for path in dask_crd_paths():
                for doc in load_yaml_docs(path.read_text()):
                    self.add_crd(doc)

    def _default_sa(self, ns: str) -> None:
        sa = self.store.rt("serviceaccounts")
        if self.store.try_get(sa, ns, "default") is None:
            self.store.create(sa, ns, {"metadata": {"name": "default"}})

    def add_crd(self, crd: dict) -> None:
        obj = self.store.create_crd(crd)
        self._sync_discovery(obj)

    def _sync_discovery(self, crd: dict) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for v in spec.get("versions", []):
            res = kmock.resource(spec["group"], v["name"], names["plural"])
            rt = self.store.lookup(spec["group"], v["name"], names["plural"])
            if rt is None:
                continue
            self.resources[res] = kmock.ResourceInfo(
                namespaced=rt.namespaced,
                kind=rt.kind,
                singular=rt.singular,
                verbs=rt.verbs,
                shortnames=rt.shortnames,
                categories=rt.categories,
                subresources=rt.subresources,
            )

    # ------------------------------------------------------------------ entry

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw.path.rstrip("/") or "/"
        try:
            route = self._route(path)
            if route is not None:
                return await self._serve_resource(raw, *route)
            if path in ("/healthz", "/readyz", "/livez"):
                return aiohttp.web.Response(text="ok")
            if path.startswith("/openapi") or path.startswith("/logs"):
                raise not_found(None, None)
            if raw.method != "GET":
                raise ApiError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
        except ApiError as e:
            return aiohttp.web.json_response(e.status(), status=e.code)
        except Exception as e:  # pragma: no cover - a bug in the emulator
            log.exception("internal error on %s %s", raw.method, raw.path_qs)
            err = ApiError(500, "InternalError", f"emulator bug: {e!r}")
            return aiohttp.web.json_response(err.status(), status=500)
        # Discovery and anything else: kmock's scaffold.
        if path != raw.path:
            raw = raw.clone(rel_url=raw.rel_url.with_path(path))
        try:
            return await super().__call__(raw)
        finally:
            # kmock keeps every request and rescans them on every request: trim.
            del self._requests[:-20]
            for payload in self._payloads:
                del payload._requests[:-20]

    async def _serve_server_version(self, request: Any) -> dict:
        return {
            "major": "1",
            "minor": "31",
            "gitVersion": "v1.31.0-kube-emu",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2024-08-13T00:00:00Z",
            "goVersion": "go1.22.5",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    # ------------------------------------------------------------------ discovery
    # kmock's scaffold routes these paths to these methods; we answer from the
    # store's registry (kmock copies shortNames/kinds onto subresources, which
    # confuses kubectl, and it does not know about CRDs created at runtime).

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for group, version, _plural in self.store.types:
            if group and version not in groups.setdefault(group, []):
                groups[group].append(version)
        for versions in groups.values():
            versions.sort(key=lambda v: (not v.startswith("v1"), v != "v1", v), reverse=False)
        return groups

    async def _serve_api(self, request: Any) -> dict:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
            ],
        }

    def _group_doc(self, group: str, versions: list[str]) -> dict:
        return {
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
        }

    async def _serve_apis(self, request: Any) -> dict:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [self._group_doc(g, vs) for g, vs in sorted(self._groups().items())],
        }

    async def _serve_group(self, request: Any) -> dict:
        group = request.url.path.strip("/").split("/")[1]
        versions = self._groups().get(group)
        if not versions:
            raise kmock.KubernetesResourceNotFoundError()
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(group, versions)}

    async def _serve_version(self, request: Any) -> dict:
        parts = request.url.path.strip("/").split("/")
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        rts = [rt for (g, v, _p), rt in self.store.types.items() if (g, v) == (group, version)]
        if not rts:
            raise kmock.KubernetesResourceNotFoundError()
        resources = []
        for rt in sorted(rts, key=lambda r: r.plural):
            resources.append(
                {
                    "name": rt.plural,
                    "singularName": rt.singular or rt.kind.lower(),
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": sorted(rt.verbs),
                    "shortNames": sorted(rt.shortnames),
                    "categories": sorted(rt.categories),
                }
            )
            subs = set(rt.subresources) | ({"scale"} if self.store.scale_paths(rt) else set())
            for sub in sorted(subs):
                entry = {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
                if sub == "scale":
                    entry.update(group="autoscaling", version="v1", kind="Scale")
                elif sub == "log":
                    entry.update(verbs=["get"])
                elif sub not in ("status",):
                    entry.update(verbs=["create", "get"])
                resources.append(entry)
        for entry in resources:
            if not entry.get("shortNames"):
                entry.pop("shortNames", None)
            if not entry.get("categories"):
                entry.pop("categories", None)
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # ------------------------------------------------------------------ routing

    def _route(
        self, path: str
    ) -> tuple[ResourceType, str | None, str | None, str | None, bool] | None:
        """-> (type, namespace, name, subresource, namespace_in_url) or None for non-resource paths."""
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        plural, name = rest[0], (rest[1] if len(rest) > 1 else None)
        sub = "/".join(rest[2:]) or None
        rt = self.store.lookup(group, version, plural)
        if rt is None:
            raise not_found(None, None)
        if namespace is not None and not rt.namespaced:
            raise not_found(None, None)
        return rt, namespace, name, sub, namespace is not None

    async def _body(self, raw: aiohttp.web.BaseRequest) -> Any:
        text = await raw.text()
        if not text.strip():
            return None
        ctype = raw.headers.get("Content-Type", "")
        try:
            if "yaml" in ctype:
                return yaml.safe_load(text)
            return json.loads(text)
        except Exception as e:
            raise ApiError(400, "BadRequest", f"cannot parse the request body: {e}") from None

    async def _serve_resource(
        self,
        raw: aiohttp.web.BaseRequest,
        rt: ResourceType,
        namespace: str | None,
        name: str | None,
        sub: str | None,
        ns_in_url: bool,
    ) -> aiohttp.web.StreamResponse:
        store = self.store
        q = raw.query
        method = raw.method

        def ok(obj: Any, code: int = 200) -> aiohttp.web.Response:
            return aiohttp.web.Response(
                body=dumps(obj), status=code, content_type="application/json"
            )

        if name is None:
            if method == "GET":
                if q.get("watch") in ("true", "1", "True"):
                    return await self._watch(raw, rt, namespace, None)
                items = store.list(rt, namespace, q.get("labelSelector"), q.get("fieldSelector"))
                if "as=Table" in raw.headers.get("Accept", ""):
                    return ok(tables.table(self.store, rt, items))
                return ok(
                    {
                        "kind": f"{rt.kind}List",
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(store.rv)},
                        "items": items,
                    }
                )
            if method == "POST":
                body = await self._body(raw)
                if rt.namespaced and not ns_in_url:
                    raise ApiError(
                        405, "MethodNotAllowed", "create requires a namespace in the URL"
                    )
                obj = store.create(rt, namespace, body)
                if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
                    store._register_crd(obj)
                    self._sync_discovery(obj)
                if rt.key == ("", "namespaces"):
                    self._default_sa(obj["metadata"]["name"])
                return ok(obj, 201)
            if method == "DELETE":
                body = await self._body(raw) or {}
                items = store.list(rt, namespace, q.get("labelSelector"), q.get("fieldSelector"))
                for item in items:
                    try:
                        store.delete(
                            rt, item["metadata"].get("namespace"), item["metadata"]["name"], body
                        )
                    except ApiError as e:
                        if e.code != 404:
                            raise
                return ok(
                    {
                        "kind": f"{rt.kind}List",
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(store.rv)},
                        "items": items,
                    }
                )
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on collections")

        if rt.namespaced and namespace is None:
            raise not_found(None, None)

        if sub is None:
            if method == "GET":
                if q.get("watch") in ("true", "1", "True"):
                    return await self._watch(raw, rt, namespace, name)
                if "as=Table" in raw.headers.get("Accept", ""):
                    return ok(tables.table(self.store, rt, [store.get(rt, namespace, name)]))
                return ok(store.get(rt, namespace, name))
            if method == "PUT":
                return ok(store.replace(rt, namespace, name, await self._body(raw)))
            if method == "PATCH":
                ctype = raw.headers.get("Content-Type", "application/merge-patch+json")
                body = await self._body(raw)
                if "apply-patch" in ctype and store.try_get(rt, namespace, name) is None:
                    body = dict(body or {})
                    body.setdefault("metadata", {})["name"] = name
                    return ok(store.create(rt, namespace, body), 201)
                return ok(store.patch(rt, namespace, name, body, ctype))
            if method == "DELETE":
                body = await self._body(raw) or {}
                if q.get("gracePeriodSeconds") is not None:
                    body.setdefault("gracePeriodSeconds", int(q["gracePeriodSeconds"]))
                if q.get("propagationPolicy"):
                    body.setdefault("propagationPolicy", q["propagationPolicy"])
                obj = store.delete(rt, namespace, name, body)
                if store.try_get(rt, namespace, name) is None:
                    return ok(
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Success",
                            "details": {
                                "name": name,
                                "group": rt.group,
                                "kind": rt.plural,
                                "uid": obj["metadata"]["uid"],
                            },
                        }
                    )
                return ok(
                    store.get(rt, namespace, name),
                    202
                    if "foregroundDeletion"
                    in (store.get(rt, namespace, name)["metadata"].get("finalizers") or [])
                    else 200,
                )
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

        if sub not in rt.subresources and not (sub == "scale" and store.scale_paths(rt)):
            raise not_found(None, None)
        if sub == "status":
            if method == "GET":
                return ok(store.get(rt, namespace, name))
            if method == "PUT":
                return ok(store.replace(rt, namespace, name, await self._body(raw), "status"))
            if method == "PATCH":
                ctype = raw.headers.get("Content-Type", "application/merge-patch+json")
                return ok(store.patch(rt, namespace, name, await self._body(raw), ctype, "status"))
        if sub == "scale":
            if method == "GET":
                return ok(store.get_scale(rt, namespace, name))
            if method in ("PUT", "PATCH"):
                body = await self._body(raw) or {}
                if method == "PATCH":
                    ctype = raw.headers.get("Content-Type", "application/merge-patch+json")
                    import jsonpatch

                    from .store import merge_patch

                    cur = store.get_scale(rt, namespace, name)
                    body = (
                        jsonpatch.apply_patch(cur, body)
                        if "json-patch" in ctype
                        else merge_patch(cur, body)
                    )
                return ok(
                    store.set_scale(
                        rt, namespace, name, int(body.get("spec", {}).get("replicas", 0))
                    )
                )
        if sub == "log" and rt.key == ("", "pods") and method == "GET":
            store.get(rt, namespace, name)
            if self.log_provider is None:
                raise ApiError(400, "BadRequest", "no kubelet is running: logs are unavailable")
            return await self.log_provider(namespace, name, dict(q), raw)
        if sub == "eviction" and rt.key == ("", "pods") and method == "POST":
            store.get(rt, namespace, name)  # 404 before any change

            def disrupted(o: dict) -> None:  # as the eviction API does, for podFailurePolicy
                conds = o.setdefault("status", {}).setdefault("conditions", [])
                conds[:] = [c for c in conds if c.get("type") != "DisruptionTarget"]
                conds.append(
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "EvictionByEvictionAPI",
                        "message": "Eviction API: evicting",
                        "lastTransitionTime": now_iso(),
                    }
                )

            store.update_internal(rt, namespace, name, disrupted)
            store.delete(
                rt, namespace, name, (await self._body(raw) or {}).get("deleteOptions") or {}
            )
            return ok(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}, 201
            )
        if sub == "binding" and rt.key == ("", "pods") and method == "POST":
            body = await self._body(raw) or {}
            node = (body.get("target") or {}).get("name", NODE_NAME)
            store.update_internal(
                rt, namespace, name, lambda o: o["spec"].__setitem__("nodeName", node)
            )
            return ok(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}, 201
            )
        raise ApiError(
            400,
            "BadRequest",
            f"the emulator does not support {method} on subresource {sub!r} "
            "(exec/attach/portforward/proxy need a real cluster)",
        )

    # ------------------------------------------------------------------ watch

    async def _watch(
        self,
        raw: aiohttp.web.BaseRequest,
        rt: ResourceType,
        namespace: str | None,
        name: str | None,
    ) -> aiohttp.web.StreamResponse:
        from .store import parse_field_selector, parse_label_selector

        store = self.store
        q = raw.query
        lsel = parse_label_selector(q.get("labelSelector"))
        fsel = parse_field_selector(q.get("fieldSelector"))

        def matches(obj: dict | None) -> bool:
            if obj is None:
                return False
            meta = obj.get("metadata", {})
            if rt.namespaced and namespace and meta.get("namespace") != namespace:
                return False
            if name is not None and meta.get("name") != name:
                return False
            return lsel(meta.get("labels") or {}) and fsel(obj)

        def translate(ev: Event) -> tuple[str, dict] | None:
            if ev.type == "MODIFIED":
                was, now = matches(ev.old), matches(ev.obj)
                if was and now:
                    return "MODIFIED", ev.obj
                if was:
                    return "DELETED", ev.obj
                if now:
                    return "ADDED", ev.obj
                return None
            return (ev.type, ev.obj) if matches(ev.obj) else None

        queue: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
        rv_param = q.get("resourceVersion")
        initial: list[tuple[str, dict]] = []
        # --- atomically (no awaits): replay/list + subscribe
        if rv_param and rv_param != "0":
            try:
                since = int(rv_param)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resourceVersion {rv_param!r}") from None
            evs = store.events_since(rt.key, since)
            if evs is None:
                initial = [
                    (
                        "ERROR",
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Failure",
                            "message": f"too old resource version: {since}",
                            "reason": "Expired",
                            "code": 410,
                        },
                    )
                ]
            else:
                initial = [t for t in (translate(ev) for ev in evs) if t]
        else:
            initial = [("ADDED", obj) for obj in store.list(rt, namespace) if matches(obj)]

        def push(ev: Event) -> None:
            t = translate(ev)
            if t is not None:
                queue.put_nowait(t)

        sub = store.subscribe(rt.key, push) if not (initial and initial[0][0] == "ERROR") else None
        # --- end of the atomic part
        resp = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        try:
            await resp.prepare(raw)
            for etype, obj in initial:
                await resp.write(dumps({"type": etype, "object": obj}) + b"\n")
            if sub is None:
                return resp
            while True:
                wait = 2.0 if deadline is None else min(2.0, deadline - loop.time())
                if wait <= 0:
                    break
                try:
                    etype, obj = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    if raw.transport is None or raw.transport.is_closing():
                        break
                    continue
                await resp.write(dumps({"type": etype, "object": obj}) + b"\n")
        except ConnectionError:
            pass
        finally:
            if sub is not None:
                store.unsubscribe(sub)
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp
