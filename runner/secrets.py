"""Placeholder until the secrets branch lands (replaced by it)."""

from __future__ import annotations

from typing import Any

from .kube.cluster_spec import is_secret_name


def redact(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: ("***" if is_secret_name(str(k)) and v not in (None, "") else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj
