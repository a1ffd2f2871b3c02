"""Offline validation helpers for Kubernetes objects (used by the chart and manifest tests).

- built-in kinds: the real Kubernetes OpenAPI schemas shipped in ``kubernetes-validate``
  (strict: unknown fields are errors);
- Dask custom resources: the ``openAPIV3Schema`` of the CRDs shipped in dask-kubernetes,
  made strict the way the API server prunes (an object schema with ``properties`` and
  without ``x-kubernetes-preserve-unknown-fields`` accepts no other field).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

KUBE_VERSION = "1.33"


def crd_dir() -> Path:
    import dask_kubernetes

    return (
        Path(dask_kubernetes.__file__).parent
        / "operator/deployment/helm/dask-kubernetes-operator/crds"
    )


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in out
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``{(apiVersion, kind): strict JSON schema}`` for every Dask CRD version."""
    out = {}
    for path in sorted(crd_dir().glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            props = schema.setdefault("properties", {})
            props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
            props["kind"] = {"type": "string", "enum": [kind]}
            props["metadata"] = {"type": "object"}
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
            out[(f"{group}/{version['name']}", kind)] = schema
    return out


def validate(obj: dict[str, Any]) -> None:
    """Validate one object; raise a jsonschema or kubernetes-validate ``ValidationError``."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    schemas = crd_schemas()
    if key in schemas:
        jsonschema.Draft7Validator(schemas[key]).validate(obj)
        _check_metadata(obj)
        return
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def _check_metadata(obj: dict[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    for k in ("labels", "annotations"):
        for key, value in (meta.get(k) or {}).items():
            assert isinstance(key, str) and isinstance(value, str), (k, key, value)


def validate_all(objs: list[dict[str, Any]]) -> None:
    for obj in objs:
        try:
            validate(obj)
        except Exception as e:
            name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
            raise AssertionError(f"{name} is invalid: {getattr(e, 'message', e)}") from e


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]
