"""In-memory object store with Kubernetes API-server semantics.

Everything here is synchronous and single-threaded (it runs on the API
server's asyncio loop), so every mutation together with its watch event is
atomic: a client that lists at resourceVersion R and then watches from R
never misses an event.

Stored objects are treated as immutable: every change stores a *new* dict, so
events and list results can share references safely.  Callers (the kubelet)
must deep-copy before modifying anything they got from the store.
"""

from __future__ import annotations

import base64
import collections
import copy
import dataclasses
import datetime
import json
import random
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import jsonpatch
import yaml

# ----------------------------------------------------------------------------
# Errors


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> dict:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def not_found(rt: ResourceType | None, name: str | None) -> ApiError:
    if rt is None:
        return ApiError(404, "NotFound", "the server could not find the requested resource")
    res = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
    return ApiError(
        404,
        "NotFound",
        f'{res} "{name}" not found',
        {"name": name, "group": rt.group, "kind": rt.plural},
    )


def invalid(rt: ResourceType, name: str | None, msg: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'{rt.kind} "{name}" is invalid: {msg}',
        {"name": name, "group": rt.group, "kind": rt.kind},
    )


# ----------------------------------------------------------------------------
# Resource types


@dataclasses.dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    subresources: set[str] = dataclasses.field(default_factory=set)
    verbs: set[str] = dataclasses.field(
        default_factory=lambda: {
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        }
    )
    shortnames: set[str] = dataclasses.field(default_factory=set)
    categories: set[str] = dataclasses.field(default_factory=set)
    # For the scale subresource: (specReplicasPath, statusReplicasPath, labelSelectorPath)
    scale_paths: tuple[str, str, str | None] | None = None
    # openAPIV3Schema of a CRD version: used for structural defaulting.
    schema: dict | None = dataclasses.field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BUILTIN_SCALE = {
    ("apps", "deployments"): (".spec.replicas", ".status.replicas", None),
    ("apps", "statefulsets"): (".spec.replicas", ".status.replicas", None),
    ("apps", "replicasets"): (".spec.replicas", ".status.replicas", None),
}

# Resources whose objects are noise for GC scans and may be capped in number.
EVENT_KEYS = {("", "events"), ("events.k8s.io", "events")}
MAX_EVENTS = 2000

# Default deletion propagation when the client does not say (as in the real API server).
DEFAULT_ORPHAN = {("batch", "jobs"), ("", "replicationcontrollers")}


# ----------------------------------------------------------------------------
# Helpers


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def rand_suffix(n: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # like k8s: no vowels, no confusing digits
    return "".join(random.choice(alphabet) for _ in range(n))


def get_path(obj: Any, dotted: str) -> Any:
    cur = obj
    for part in dotted.strip(".").split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def set_path(obj: dict, dotted: str, value: Any) -> None:
    parts = dotted.strip(".").split(".")
    cur = obj
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


# --- selectors


_LABEL_TERM = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|!=|=|\s+in\s+|\s+notin\s+)\s*(?P<val>\([^)]*\)|[A-Za-z0-9_.-]*))?\s*$"
)


def _split_terms(selector: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur)
    return [t for t in terms if t.strip()]


def parse_label_selector(selector: str | None) -> Callable[[dict], bool]:
    if not selector:
        return lambda labels: True
    reqs = []
    for term in _split_terms(selector):
        m = _LABEL_TERM.match(term)
        if not m:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
        key, op, val, neg = m["key"], (m["op"] or "").strip(), m["val"], bool(m["neg"])
        if neg:
            reqs.append(lambda lab, k=key: k not in lab)
        elif not op:
            reqs.append(lambda lab, k=key: k in lab)
        elif op in ("=", "=="):
            reqs.append(lambda lab, k=key, v=val: lab.get(k) == v)
        elif op == "!=":
            reqs.append(lambda lab, k=key, v=val: lab.get(k) != v)
        else:
            values = {v.strip() for v in val.strip("()").split(",") if v.strip()}
            if op == "in":
                reqs.append(lambda lab, k=key, vs=values: lab.get(k) in vs)
            else:
                reqs.append(lambda lab, k=key, vs=values: lab.get(k) not in vs)
    return lambda labels: all(r(labels or {}) for r in reqs)


def selector_from_dict(match_labels: dict | None) -> str:
    return ",".join(f"{k}={v}" for k, v in (match_labels or {}).items())


def label_selector_matches(selector: dict | None, labels: dict | None) -> bool:
    """Match a LabelSelector object (matchLabels + matchExpressions)."""
    if selector is None:
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), set(expr.get("values") or [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def parse_field_selector(selector: str | None) -> Callable[[dict], bool]:
    if not selector:
        return lambda obj: True
    reqs = []
    for term in _split_terms(selector):
        m = re.match(r"^\s*([A-Za-z0-9_.\[\]-]+)\s*(==|!=|=)\s*(.*?)\s*$", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        path, op, val = m.groups()

        def req(obj: dict, p=path, o=op, v=val) -> bool:
            got = get_path(obj, p)
            got = "" if got is None else str(got)
            return (got == v) if o in ("=", "==") else (got != v)

        reqs.append(req)
    return lambda obj: all(r(obj) for r in reqs)


# --- patches

# Lists merged element-wise by strategic-merge-patch, keyed by the given field.
# A key of None means "list of scalars merged as a set union" (e.g. finalizers).
SMP_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "tolerations": None,
    "finalizers": None,
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "containerStatuses": "name",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def strategic_merge_patch(target: Any, patch: Any, field: str | None = None) -> Any:
    """A pragmatic subset of Kubernetes strategic-merge-patch."""
    if isinstance(patch, dict):
        if patch.get("$patch") == "delete":
            return None
        if patch.get("$patch") == "replace":
            return {k: v for k, v in patch.items() if not k.startswith("$")}
        result = dict(target) if isinstance(target, dict) else {}
        for k, v in patch.items():
            if k.startswith("$"):
                continue
            if v is None:
                result.pop(k, None)
            else:
                merged = strategic_merge_patch(result.get(k), v, k)
                if merged is None:
                    result.pop(k, None)
                else:
                    result[k] = merged
        return result
    if isinstance(patch, list) and field in SMP_MERGE_KEYS and isinstance(target, list):
        key = SMP_MERGE_KEYS[field]
        if key is None:
            out = list(target)
            for item in patch:
                if item not in out:
                    out.append(item)
            return out
        out = [copy.deepcopy(t) for t in target]
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                out.append(copy.deepcopy(item))
                continue
            for i, existing in enumerate(out):
                if isinstance(existing, dict) and existing.get(key) == item[key]:
                    merged = strategic_merge_patch(existing, item)
                    if merged is None:
                        out.pop(i)
                    else:
                        out[i] = merged
                    break
            else:
                if item.get("$patch") != "delete":
                    out.append({k: v for k, v in item.items() if not k.startswith("$")})
        return out
    return copy.deepcopy(patch)


# ----------------------------------------------------------------------------
# Store


@dataclasses.dataclass
class Event:
    rv: int
    key: tuple[str, str]
    type: str
    obj: dict
    old: dict | None


class Subscriber:
    def __init__(self, key: tuple[str, str] | None, push: Callable[[Event], None]):
        self.key = key
        self.push = push


class Store:
    EVENT_LOG_SIZE = 20000

    def __init__(self) -> None:
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.by_key: dict[tuple[str, str], ResourceType] = {}
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict]] = collections.defaultdict(
            dict
        )
        self.uids: dict[str, tuple[tuple[str, str], str, str]] = {}
        self.rv = 100
        self.log: collections.deque[Event] = collections.deque(maxlen=self.EVENT_LOG_SIZE)
        self.subscribers: list[Subscriber] = []
        self.ip_counter = 0

    # --- registry

    def register(self, rt: ResourceType) -> None:
        self.types[(rt.group, rt.version, rt.plural)] = rt
        if rt.key not in self.by_key or rt.version == "v1":
            self.by_key[rt.key] = rt

    def unregister(self, group: str, plural: str) -> None:
        for k in [k for k in self.types if (k[0], k[2]) == (group, plural)]:
            del self.types[k]
        self.by_key.pop((group, plural), None)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def type_for(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self.types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        return None

    def rt(self, key: str) -> ResourceType:
        """Look up by 'plural' / 'plural.group' (e.g. 'pods', 'deployments.apps')."""
        plural, _, group = key.partition(".")
        rt = self.by_key.get((group, plural))
        if rt is None:
            raise KeyError(key)
        return rt

    # --- events

    def _emit(self, rt: ResourceType, etype: str, obj: dict, old: dict | None) -> None:
        ev = Event(self.rv, rt.key, etype, obj, old)
        if rt.key not in EVENT_KEYS:
            self.log.append(ev)
        for sub in list(self.subscribers):
            if sub.key is None or sub.key == rt.key:
                sub.push(ev)

    def subscribe(self, key: tuple[str, str] | None, push: Callable[[Event], None]) -> Subscriber:
        sub = Subscriber(key, push)
        self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)

    def events_since(self, key: tuple[str, str], rv: int) -> list[Event] | None:
        """Events after rv, or None if rv is too old (410 Gone)."""
        if self.log and rv < self.log[0].rv - 1 and len(self.log) == self.log.maxlen:
            return None
        return [ev for ev in self.log if ev.rv > rv and ev.key == key]

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    # --- reads

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict:
        obj = self.objects[rt.key].get((namespace or "" if rt.namespaced else "", name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def try_get(self, rt: ResourceType, namespace: str | None, name: str) -> dict | None:
        return self.objects[rt.key].get(((namespace or "") if rt.namespaced else "", name))

    def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict]:
        lsel = parse_label_selector(label_selector)
        fsel = parse_field_selector(field_selector)
        out = []
        for (ns, _name), obj in self.objects[rt.key].items():
            if rt.namespaced and namespace and ns != namespace:
                continue
            meta = obj.get("metadata", {})
            if lsel(meta.get("labels") or {}) and fsel(obj):
                out.append(obj)
        out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return out

    def by_uid(self, uid: str) -> dict | None:
        ref = self.uids.get(uid)
        if ref is None:
            return None
        key, ns, name = ref
        return self.objects[key].get((ns, name))

    # --- writes

    def _store(self, rt: ResourceType, obj: dict, etype: str, old: dict | None) -> dict:
        meta = obj["metadata"]
        meta["resourceVersion"] = self._next_rv()
        ns = meta.get("namespace", "") if rt.namespaced else ""
        self.objects[rt.key][(ns, meta["name"])] = obj
        self.uids[meta["uid"]] = (rt.key, ns, meta["name"])
        self._emit(rt, etype, obj, old)
        if rt.key in EVENT_KEYS and len(self.objects[rt.key]) > MAX_EVENTS:
            items = self.objects[rt.key]
            for k in list(items)[: len(items) - MAX_EVENTS]:
                self.uids.pop(items[k]["metadata"].get("uid", ""), None)
                del items[k]
        return obj

    def _remove(self, rt: ResourceType, obj: dict) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace", "") if rt.namespaced else ""
        if self.objects[rt.key].pop((ns, meta["name"]), None) is None:
            return
        self.uids.pop(meta.get("uid", ""), None)
        final = copy.copy(obj)
        final["metadata"] = dict(meta, resourceVersion=self._next_rv())
        self._emit(rt, "DELETED", final, obj)
        self._after_removal(rt, final)

    def create(
        self, rt: ResourceType, namespace: str | None, body: dict, *, keep_status: bool = False
    ) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
        obj = drop_nulls(copy.deepcopy(body))
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            namespace = namespace or body_ns or "default"
            nsobj = self.objects[("", "namespaces")].get(("", namespace))
            if nsobj is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
            if nsobj["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f"unable to create new content in namespace {namespace} because it is being terminated",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + rand_suffix()
            else:
                raise invalid(
                    rt, None, "metadata.name: Required value: name or generateName is required"
                )
        name = meta["name"]
        if len(name) > 253 or not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", name):
            raise invalid(
                rt,
                name,
                f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain "
                "must consist of lower case alphanumeric characters, '-' or '.'",
            )
        if self.try_get(rt, namespace, name) is not None:
            res = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
            raise ApiError(
                409,
                "AlreadyExists",
                f'{res} "{name}" already exists',
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        meta["generation"] = 1
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "selfLink"):
            meta.pop(k, None)
        if "status" in rt.subresources and not keep_status:
            obj.pop("status", None)
        if rt.schema:
            apply_schema_defaults(obj, rt.schema)
        self._defaults(rt, obj)
        return self._store(rt, obj, "ADDED", None)

    @staticmethod
    def _normalize(rt: ResourceType, obj: dict) -> None:
        if rt.key == ("", "secrets") and obj.get("stringData"):
            data = obj.setdefault("data", {})
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(str(v).encode()).decode()
        if rt.key == ("", "secrets"):
            obj.setdefault("type", "Opaque")

    def _defaults(self, rt: ResourceType, obj: dict) -> None:
        self._normalize(rt, obj)
        spec = (
            obj.setdefault("spec", {})
            if rt.key
            in {("", "pods"), ("", "services"), ("apps", "deployments"), ("batch", "jobs")}
            else None
        )
        if rt.key == ("", "pods"):
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
            spec.setdefault("schedulerName", "default-scheduler")
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("imagePullPolicy", "IfNotPresent")
                for p in c.get("ports", []):
                    p.setdefault("protocol", "TCP")
            obj.setdefault("status", {})
            obj["status"].setdefault("phase", "Pending")
            obj["status"].setdefault("qosClass", "BestEffort")
        elif rt.key == ("", "services"):
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec.get("clusterIP") != "None":
                self.ip_counter += 1
                ip = f"127.1.{self.ip_counter // 250}.{self.ip_counter % 250 + 1}"
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
            for p in spec.get("ports", []):
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
            # No status yet: the kubelet fills it once the selected pods are Ready. (A real
            # API server sets {loadBalancer: {}} at once, which races the Dask operator: its
            # service-status handler can flip the DaskCluster to Running *before* the
            # create handler sets it to Pending, leaving it Pending forever.)
        elif rt.key == ("apps", "deployments"):
            spec.setdefault("replicas", 1)
            spec.setdefault("strategy", {"type": "RollingUpdate"})
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
        elif rt.key == ("batch", "jobs"):
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completions", 1)
            spec.setdefault("parallelism", 1)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("suspend", False)
            uid = obj["metadata"]["uid"]
            tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
            labels = tmeta.setdefault("labels", {})
            labels.setdefault("batch.kubernetes.io/controller-uid", uid)
            labels.setdefault("controller-uid", uid)
            labels.setdefault("batch.kubernetes.io/job-name", obj["metadata"]["name"])
            labels.setdefault("job-name", obj["metadata"]["name"])
            if not spec.get("manualSelector"):
                spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        elif rt.key == ("", "namespaces"):
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {})["phase"] = "Active"
            labels = obj["metadata"].setdefault("labels", {})
            labels.setdefault("kubernetes.io/metadata.name", obj["metadata"]["name"])
        elif rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            obj.setdefault("status", {})["conditions"] = [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
            ]
            obj["status"]["acceptedNames"] = obj.get("spec", {}).get("names", {})
            obj["status"]["storedVersions"] = [
                v["name"] for v in obj.get("spec", {}).get("versions", []) if v.get("storage")
            ]

    def _commit_update(
        self,
        rt: ResourceType,
        old: dict,
        new: dict,
        subresource: str | None,
        *,
        internal: bool = False,
    ) -> dict:
        """Normalise an updated object, store it (unless it is a no-op), maybe finalise deletion."""
        new = drop_nulls(new)
        self._normalize(rt, new)
        if rt.schema:
            apply_schema_defaults(new, rt.schema)
        meta = new.setdefault("metadata", {})
        ometa = old["metadata"]
        if "status" in rt.subresources and not internal:
            if subresource == "status":
                # Only the status may change via /status (and metadata, loosely as in k8s).
                status = new.get("status")
                new = dict(old, metadata=meta)
                if status is None:
                    new.pop("status", None)
                else:
                    new["status"] = status
            else:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
        # Immutable bits.
        for k in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if k in ometa:
                meta[k] = ometa[k]
            else:
                meta.pop(k, None)
        meta["resourceVersion"] = ometa["resourceVersion"]
        meta["generation"] = ometa.get("generation", 1)
        new["apiVersion"] = rt.api_version
        new["kind"] = rt.kind
        if ometa.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(ometa.get("finalizers") or [])
            if added:
                raise ApiError(
                    422,
                    "Forbidden",
                    "no new finalizers can be added if the object is being deleted",
                )
        if new == old:
            return old  # a no-op: no new resourceVersion, no event (as in k8s)
        spec_old = {k: v for k, v in old.items() if k not in ("metadata", "status")}
        spec_new = {k: v for k, v in new.items() if k not in ("metadata", "status")}
        if spec_old != spec_new:
            meta["generation"] = meta["generation"] + 1
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._register_crd(new)
        stored = self._store(rt, new, "MODIFIED", old)
        # A running pod is removed by the kubelet once its processes are gone.
        live_pod = (
            rt.key == ("", "pods")
            and stored.get("spec", {}).get("nodeName")
            and stored.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        )
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not live_pod:
            self._remove(rt, stored)
        return stored

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: dict,
        subresource: str | None = None,
    ) -> dict:
        old = self.get(rt, namespace, name)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise self._conflict(rt, name)
        new = copy.deepcopy(body)
        return self._commit_update(rt, old, new, subresource)

    def _conflict(self, rt: ResourceType, name: str) -> ApiError:
        res = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        return ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {res} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            {"name": name, "group": rt.group, "kind": rt.plural},
        )

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch: Any,
        content_type: str,
        subresource: str | None = None,
        *,
        internal: bool = False,
    ) -> dict:
        old = self.get(rt, namespace, name)
        ct = (content_type or "").split(";")[0].strip().lower()
        if ct == "application/json-patch+json":
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "json patch must be a list of operations")
            try:
                new = jsonpatch.apply_patch(old, patch)
            except jsonpatch.JsonPatchTestFailed as e:
                raise ApiError(
                    422,
                    "Invalid",
                    f"the server rejected our request due to an error in our request: {e}",
                ) from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise ApiError(
                    422,
                    "Invalid",
                    f"the server rejected our request due to an error in our request: {e}",
                ) from None
        else:
            if isinstance(patch, (str, bytes)):
                patch = yaml.safe_load(patch)
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "the patch must be a JSON object")
            rv = (patch.get("metadata") or {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise self._conflict(rt, name)
            if ct in ("application/strategic-merge-patch+json", "application/apply-patch+yaml"):
                new = strategic_merge_patch(old, patch)
            else:
                new = merge_patch(old, patch)
        return self._commit_update(rt, old, new, subresource, internal=internal)

    def update_internal(
        self, rt: ResourceType, namespace: str | None, name: str, fn: Callable[[dict], None]
    ) -> dict | None:
        """For controllers: mutate a deep copy of the object (incl. status) and store it."""
        old = self.try_get(rt, namespace, name)
        if old is None:
            return None
        new = copy.deepcopy(old)
        fn(new)
        return self._commit_update(rt, old, new, None, internal=True)

    # --- deletion & garbage collection

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        opts: dict | None = None,
        *,
        force: bool = False,
    ) -> dict:
        opts = opts or {}
        obj = self.get(rt, namespace, name)
        meta = obj["metadata"]
        pre = opts.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise self._conflict(rt, name)
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise self._conflict(rt, name)
        policy = opts.get("propagationPolicy")
        if policy is None and opts.get("orphanDependents") is not None:
            policy = "Orphan" if opts["orphanDependents"] else "Background"
        if policy is None:
            policy = "Orphan" if rt.key in DEFAULT_ORPHAN else "Background"
        grace = opts.get("gracePeriodSeconds")
        if rt.key == ("", "namespaces"):
            return self._delete_namespace(rt, obj)
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Orphan" and "orphan" not in finalizers and self._has_dependents(meta["uid"]):
            finalizers.append("orphan")
        if policy == "Foreground" and self._has_dependents(meta["uid"]):
            finalizers.append("foregroundDeletion")
        graceful_pod = (
            not force
            and rt.key == ("", "pods")
            and grace != 0
            and obj.get("spec", {}).get("nodeName")
            and obj.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        )
        if finalizers or graceful_pod:
            if meta.get("deletionTimestamp"):
                return obj
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now_iso()
            if graceful_pod:
                g = (
                    grace
                    if grace is not None
                    else obj["spec"].get("terminationGracePeriodSeconds", 30)
                )
                new["metadata"]["deletionGracePeriodSeconds"] = int(g)
            else:
                new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["finalizers"] = finalizers
            if not new["metadata"]["finalizers"]:
                new["metadata"].pop("finalizers")
            stored = self._store(rt, new, "MODIFIED", obj)
            self.gc_sweep()
            return stored
        self._remove(rt, obj)
        return obj

    def _has_dependents(self, uid: str) -> bool:
        return any(True for _ in self._dependents(uid))

    def _dependents(self, uid: str) -> Iterable[tuple[ResourceType, dict]]:
        for key, objs in list(self.objects.items()):
            if key in EVENT_KEYS:
                continue
            rt = self.by_key.get(key)
            if rt is None:
                continue
            for obj in list(objs.values()):
                for ref in obj["metadata"].get("ownerReferences") or []:
                    if ref.get("uid") == uid:
                        yield rt, obj
                        break

    def _after_removal(self, rt: ResourceType, obj: dict) -> None:
        uid = obj["metadata"]["uid"]
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            spec = obj.get("spec", {})
            key = (spec.get("group", ""), spec.get("names", {}).get("plural", ""))
            crt = self.by_key.get(key)
            if crt is not None:
                for o in list(self.objects[key].values()):
                    self._remove(crt, o)
            self.unregister(*key)
            return
        # Background cascading deletion: delete dependents that have no other live owner.
        for drt, dep in list(self._dependents(uid)):
            refs = dep["metadata"].get("ownerReferences") or []
            others = [
                r for r in refs if r.get("uid") != uid and self.by_uid(r.get("uid", "")) is not None
            ]
            if others:
                self._drop_owner_ref(drt, dep, uid)
                continue
            self._try_delete(drt, dep)

    def _try_delete(self, rt: ResourceType, obj: dict, opts: dict | None = None) -> None:
        meta = obj["metadata"]
        with_ignore_missing(lambda: self.delete(rt, meta.get("namespace"), meta["name"], opts))

    def _drop_owner_ref(self, rt: ResourceType, obj: dict, uid: str) -> None:
        def fn(o: dict) -> None:
            refs = o["metadata"].get("ownerReferences") or []
            o["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]

        self.update_internal(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"], fn)

    def gc_sweep(self) -> None:
        """Progress orphan/foreground finalizers and namespace termination."""
        for key, objs in list(self.objects.items()):
            if key in EVENT_KEYS:
                continue
            rt = self.by_key.get(key)
            if rt is None:
                continue
            for obj in list(objs.values()):
                meta = obj["metadata"]
                if not meta.get("deletionTimestamp"):
                    continue
                fins = meta.get("finalizers") or []
                if "orphan" in fins:
                    uid = meta["uid"]
                    for drt, dep in list(self._dependents(uid)):
                        self._drop_owner_ref(drt, dep, uid)
                    self._drop_finalizer(rt, obj, "orphan")
                elif "foregroundDeletion" in fins:
                    deps = list(self._dependents(meta["uid"]))
                    for drt, dep in deps:
                        if not dep["metadata"].get("deletionTimestamp"):
                            self._try_delete(drt, dep, {"propagationPolicy": "Foreground"})
                    if not list(self._dependents(meta["uid"])):
                        self._drop_finalizer(rt, obj, "foregroundDeletion")
        for ns in list(self.objects[("", "namespaces")].values()):
            if ns["metadata"].get("deletionTimestamp"):
                self._progress_namespace(ns)

    def _drop_finalizer(self, rt: ResourceType, obj: dict, fin: str) -> None:
        cur = self.try_get(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if cur is None:
            return
        self.update_internal(
            rt,
            obj["metadata"].get("namespace"),
            obj["metadata"]["name"],
            lambda o: o["metadata"].__setitem__(
                "finalizers", [f for f in o["metadata"].get("finalizers", []) if f != fin]
            ),
        )
        cur = self.try_get(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if (
            cur is not None
            and cur["metadata"].get("deletionTimestamp")
            and not cur["metadata"].get("finalizers")
        ):
            self._remove(rt, cur)

    def _delete_namespace(self, rt: ResourceType, obj: dict) -> dict:
        if obj["metadata"].get("deletionTimestamp"):
            return obj
        new = copy.deepcopy(obj)
        new["metadata"]["deletionTimestamp"] = now_iso()
        new.setdefault("status", {})["phase"] = "Terminating"
        stored = self._store(rt, new, "MODIFIED", obj)
        self._progress_namespace(stored)
        return stored

    def _progress_namespace(self, nsobj: dict) -> None:
        ns = nsobj["metadata"]["name"]
        remaining = 0
        for key, objs in list(self.objects.items()):
            rt = self.by_key.get(key)
            if rt is None or not rt.namespaced:
                continue
            for (ons, _oname), obj in list(objs.items()):
                if ons != ns:
                    continue
                if key in EVENT_KEYS:
                    self._remove(rt, obj)
                    continue
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    self._try_delete(rt, obj)
        if remaining == 0:
            cur = self.objects[("", "namespaces")].get(("", ns))
            if cur is not None:
                self._remove(self.by_key[("", "namespaces")], cur)

    # --- CRDs

    def _register_crd(self, crd: dict) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for v in spec.get("versions", []):
            if not v.get("served", True):
                continue
            subs = v.get("subresources") or spec.get("subresources") or {}
            scale = subs.get("scale")
            self.register(
                ResourceType(
                    group=spec["group"],
                    version=v["name"],
                    plural=names["plural"],
                    kind=names["kind"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    singular=names.get("singular", names["kind"].lower()),
                    subresources=set(subs),
                    shortnames=set(names.get("shortNames", [])),
                    categories=set(names.get("categories", [])),
                    scale_paths=(
                        scale["specReplicasPath"],
                        scale["statusReplicasPath"],
                        scale.get("labelSelectorPath"),
                    )
                    if scale
                    else None,
                    schema=(v.get("schema") or spec.get("validation") or {}).get("openAPIV3Schema"),
                )
            )

    def create_crd(self, crd: dict) -> dict:
        rt = self.by_key[("apiextensions.k8s.io", "customresourcedefinitions")]
        obj = self.create(rt, None, crd)
        self._register_crd(obj)
        return obj

    # --- scale subresource

    def scale_paths(self, rt: ResourceType) -> tuple[str, str, str | None] | None:
        return rt.scale_paths or BUILTIN_SCALE.get(rt.key)

    def get_scale(self, rt: ResourceType, namespace: str | None, name: str) -> dict:
        paths = self.scale_paths(rt)
        if paths is None:
            raise not_found(None, None)
        obj = self.get(rt, namespace, name)
        spec_p, status_p, sel_p = paths
        selector = get_path(obj, sel_p) if sel_p else None
        if selector is None and rt.key[0] == "apps":
            selector = selector_from_dict(get_path(obj, "spec.selector.matchLabels"))
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": get_path(obj, spec_p) or 0},
            "status": {"replicas": get_path(obj, status_p) or 0, "selector": selector or ""},
        }

    def set_scale(self, rt: ResourceType, namespace: str | None, name: str, replicas: int) -> dict:
        paths = self.scale_paths(rt)
        assert paths is not None
        old = self.get(rt, namespace, name)
        new = copy.deepcopy(old)
        set_path(new, paths[0], int(replicas))
        self._commit_update(rt, old, new, None)
        return self.get_scale(rt, namespace, name)


def apply_schema_defaults(obj: Any, schema: dict) -> None:
    """CRD structural defaulting: fill `default:` values of absent fields, recursively
    (as the API server does on create/update; e.g. DaskJob's job restartPolicy: OnFailure)."""
    if isinstance(obj, dict):
        for prop, sub in (schema.get("properties") or {}).items():
            if not isinstance(sub, dict):
                continue
            if prop not in obj and "default" in sub:
                obj[prop] = copy.deepcopy(sub["default"])
            if prop in obj:
                apply_schema_defaults(obj[prop], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in obj.items():
                if key not in (schema.get("properties") or {}):
                    apply_schema_defaults(value, extra)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_schema_defaults(item, schema["items"])


def with_ignore_missing(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except ApiError as e:
        if e.code != 404:
            raise


def decode_secret_value(secret: dict, key: str) -> str | None:
    if key in (secret.get("stringData") or {}):
        return secret["stringData"][key]
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return None
    return base64.b64decode(raw).decode("utf-8", "replace")


def load_yaml_docs(text: str) -> list[dict]:
    return [
        d for d in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d
    ]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
