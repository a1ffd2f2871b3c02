"""Minimal server-side printing (meta.k8s.io/v1 Table) so `kubectl get` shows useful columns."""

from __future__ import annotations

import datetime

from .store import ResourceType, Store, get_path


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    then = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    s = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    if s < 120:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60}m"
    return f"{s // 86400}d"


def _pod(o: dict) -> list:
    st = o.get("status", {})
    cs = st.get("containerStatuses") or []
    total = len(o.get("spec", {}).get("containers") or [])
    ready = sum(1 for c in cs if c.get("ready"))
    status = st.get("phase", "Pending")
    for c in cs:
        w = (c.get("state") or {}).get("waiting")
        t = (c.get("state") or {}).get("terminated")
        if (w and w.get("reason") not in (None, "ContainerCreating")) or (
            w and status == "Pending"
        ):
            status = w.get("reason") or status
        elif t and status not in ("Succeeded", "Failed"):
            status = t.get("reason") or status
    if status == "Succeeded":
        status = "Completed"
    if o["metadata"].get("deletionTimestamp"):
        status = "Terminating"
    restarts = sum(c.get("restartCount", 0) for c in cs)
    return [
        f"{ready}/{total}",
        status,
        restarts,
        _age(o["metadata"].get("creationTimestamp")),
        st.get("podIP", "<none>"),
        o.get("spec", {}).get("nodeName", "<none>"),
    ]


def _deploy(o: dict) -> list:
    st = o.get("status", {})
    return [
        f"{st.get('readyReplicas', 0)}/{o.get('spec', {}).get('replicas', 1)}",
        st.get("updatedReplicas", 0),
        st.get("availableReplicas", 0),
        _age(o["metadata"].get("creationTimestamp")),
    ]


def _job(o: dict) -> list:
    st = o.get("status", {})
    conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
    status = (
        "Complete"
        if conds.get("Complete") == "True"
        else "Failed"
        if conds.get("Failed") == "True"
        else "Suspended"
        if o.get("spec", {}).get("suspend")
        else "Running"
    )
    return [
        status,
        f"{st.get('succeeded', 0)}/{o.get('spec', {}).get('completions', 1)}",
        _age(o["metadata"].get("creationTimestamp")),
    ]


def _svc(o: dict) -> list:
    spec = o.get("spec", {})
    ports = (
        ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
        or "<none>"
    )
    ingress = (o.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
    ext = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress) or (
        "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"
    )
    return [
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP", "<none>"),
        ext,
        ports,
        _age(o["metadata"].get("creationTimestamp")),
    ]


BUILTIN = {
    ("", "pods"): (["Ready", "Status", "Restarts", "Age", "IP", "Node"], _pod, {4, 5}),
    ("apps", "deployments"): (["Ready", "Up-to-date", "Available", "Age"], _deploy, set()),
    ("batch", "jobs"): (["Status", "Completions", "Age"], _job, set()),
    ("", "services"): (["Type", "Cluster-IP", "External-IP", "Port(s)", "Age"], _svc, set()),
}


def table(store: Store, rt: ResourceType, items: list[dict]) -> dict:
    if rt.key in BUILTIN:
        names, fn, wide = BUILTIN[rt.key]
    else:
        cols = _crd_columns(store, rt)
        names = [c["name"] for c in cols] + ["Age"]
        wide = {i for i, c in enumerate(cols) if c.get("priority", 0) > 0}

        def fn(o: dict, cols=cols) -> list:
            vals = []
            for c in cols:
                v = get_path(o, c["jsonPath"].lstrip("."))
                vals.append("" if v is None else v)
            return [*vals, _age(o["metadata"].get("creationTimestamp"))]

    defs = [{"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}]
    defs += [
        {
            "name": n,
            "type": "string",
            "format": "",
            "description": "",
            "priority": 1 if i in wide else 0,
        }
        for i, n in enumerate(names)
    ]
    rows = [
        {
            "cells": [o["metadata"]["name"], *fn(o)],
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            },
        }
        for o in items
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(store.rv)},
        "columnDefinitions": defs,
        "rows": rows,
    }


def _crd_columns(store: Store, rt: ResourceType) -> list[dict]:
    crds = store.objects.get(("apiextensions.k8s.io", "customresourcedefinitions"), {})
    crd = crds.get(("", f"{rt.plural}.{rt.group}"))
    if not crd:
        return []
    for v in crd.get("spec", {}).get("versions", []):
        if v.get("name") == rt.version:
            return [
                c
                for c in v.get("additionalPrinterColumns") or []
                if c.get("jsonPath", "").startswith(".")
                and "[" not in c["jsonPath"]
                and c.get("name", "").lower() != "age"
            ]
    return []
