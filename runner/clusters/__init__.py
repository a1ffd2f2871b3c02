"""Cluster providers: where the Dask client comes from. They know nothing of sweeps."""

from __future__ import annotations

from typing import Any

from ..spec import ClusterSpec
from .base import ClientProvider, ClusterProvider


def make_provider(cluster: ClusterSpec, client: Any = None, **options: Any) -> ClusterProvider:
    """The provider for a spec's ``cluster`` section (or an existing ``distributed.Client``)."""
    if client is not None:
        return ClientProvider(client)
    if cluster.kind == "address":
        from .address import AddressProvider

        return AddressProvider(cluster.address or "")
    if cluster.kind == "kubernetes":
        from .kubernetes import KubernetesProvider

        return KubernetesProvider(cluster, **options)
    from .local import LocalProvider

    return LocalProvider(cluster.workers, cluster.threads_per_worker)


__all__ = ["ClientProvider", "ClusterProvider", "make_provider"]
