"""A Kubernetes-in-a-process test cluster (see tests/kube/README.md).

Usage::

    from tests.kube.cluster import EmulatedCluster

    with EmulatedCluster() as cluster:  # API server + process kubelet + real Dask operator
        print(cluster.kubeconfig)
"""

from .handle import EmulatedCluster, RealCluster, wait_for

__all__ = ["EmulatedCluster", "RealCluster", "wait_for"]


def _enter(self):
    return self.start()


def _exit(self, *exc):
    self.stop()


for _cls in (EmulatedCluster, RealCluster):
    _cls.__enter__ = _enter
    _cls.__exit__ = _exit
