"""Fixtures for tests that need Kubernetes (marked ``@pytest.mark.kube``).

``kube_cluster`` (session scope) is an emulated cluster — in-memory API server,
a kubelet that runs pods as local processes, and the real Dask operator — or,
if SWEEP_TEST_KUBECONFIG is set, a handle on that real cluster (e.g. kind).
See tests/kube/README.md for the handle's API.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

_REPO = pathlib.Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.image.conftest import base_image, engine, image  # noqa: E402, F401 (fixtures)
from tests.image.engines import IMAGE  # noqa: E402
from tests.kube.cluster import EmulatedCluster, RealCluster  # noqa: E402
from tests.kube.cluster.podman import podman_env  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "kube: needs a Kubernetes cluster (emulated unless SWEEP_TEST_KUBECONFIG)"
    )
    if _container_mode():
        # Pods are containers of the real image on a bridge network whose gateway is this
        # machine: they reach the test's S3 server there, as kind's pods do (tests/conftest.py).
        # Set before the test modules import tests/kube/sweeps.py (which reads them).
        import random

        if not os.environ.get("SWEEP_TEST_IMAGE"):
            os.environ["SWEEP_TEST_IMAGE"] = IMAGE  # built by the `image` fixture
            os.environ["KUBE_EMU_BUILD_IMAGE"] = "1"
        subnet = os.environ.setdefault(
            "KUBE_EMU_POD_SUBNET", f"10.90.{random.randint(0, 255)}.0/24"
        )
        os.environ.setdefault("SWEEP_TEST_S3_HOST", subnet.rsplit(".", 1)[0] + ".1")


def _container_mode() -> bool:
    return not os.environ.get("SWEEP_TEST_KUBECONFIG") and (
        os.environ.get("SWEEP_TEST_POD_RUNTIME") == "podman"
    )


def _emulation_unavailable() -> str | None:
    if os.environ.get("SWEEP_TEST_KUBECONFIG"):
        return None
    if not sys.platform.startswith("linux"):
        return "the Kubernetes emulator needs Linux"
    if os.geteuid() != 0:
        return "the Kubernetes emulator needs root (mount namespaces for pods)"
    if shutil.which("unshare") is None:
        return "the Kubernetes emulator needs util-linux 'unshare'"
    if _container_mode() and shutil.which("podman") is None:
        return "SWEEP_TEST_POD_RUNTIME=podman: podman is not installed"
    return None


def _container_image(request: pytest.FixtureRequest) -> None:
    """The pods' image: SWEEP_TEST_IMAGE as given, else built from this checkout by the
    image tests' fixture (`make image` on the Debian-made base; cached, seconds)."""
    wanted = os.environ["SWEEP_TEST_IMAGE"]
    if os.environ.get("KUBE_EMU_BUILD_IMAGE"):
        assert request.getfixturevalue("image") == wanted
        return
    env = podman_env(request.getfixturevalue("tmp_path_factory").mktemp("podman"))
    if subprocess.run(["podman", "image", "exists", wanted], env=env).returncode != 0:
        pytest.fail(f"SWEEP_TEST_POD_RUNTIME=podman: no image {wanted} in podman's store")


@pytest.fixture(scope="session")
def kube_cluster(request):
    """A running cluster handle: .kubeconfig, .api_url, .emulated, .list(), .get(), .pod_logs(),
    .wait_for(), .env(), .pod_processes(); see tests/kube/README.md."""
    real = os.environ.get("SWEEP_TEST_KUBECONFIG")
    keep = bool(os.environ.get("SWEEP_TEST_KEEP_KUBE_STATE"))
    if real:
        cluster = RealCluster(real).start()
    else:
        reason = _emulation_unavailable()
        if reason:
            pytest.skip(reason)
        if _container_mode():
            _container_image(request)
        cluster = EmulatedCluster(keep_state=keep).start()
        cluster.install_resolver()
    # KubeCluster, kr8s and the kubernetes client's default loaders all read KUBECONFIG.
    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = cluster.kubeconfig
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old
        cluster.uninstall_resolver()
        cluster.stop()
        if keep and cluster.emulated:
            print(f"\nkube-emu state kept in {cluster.state_dir}")


@pytest.fixture(scope="session")
def bare_cluster(request):
    """A second emulated cluster with neither the Dask CRDs nor the operator: a shared
    cluster whose users may not install them (pod mode). Skips on a real cluster."""
    if os.environ.get("SWEEP_TEST_KUBECONFIG"):
        pytest.skip("a cluster without the Dask CRDs is emulated only")
    reason = _emulation_unavailable()
    if reason:
        pytest.skip(reason)
    if _container_mode():
        _container_image(request)
    keep = bool(os.environ.get("SWEEP_TEST_KEEP_KUBE_STATE"))
    cluster = EmulatedCluster(operator=False, dask_crds=False, keep_state=keep).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        if keep:
            print(f"\nkube-emu state (no Dask CRDs) kept in {cluster.state_dir}")


@pytest.fixture
def kube_namespace(kube_cluster, request):
    """A fresh namespace per test, deleted afterwards."""
    import re
    import uuid

    name = (
        re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
        + "-"
        + uuid.uuid4().hex[:5]
    )
    from kr8s.objects import Namespace

    ns = Namespace({"metadata": {"name": name}}, api=kube_cluster.api)
    ns.create()
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            ns.delete()
