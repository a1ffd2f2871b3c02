"""Container runtimes of the kubelet: how a container of a pod is started, signalled and
probed. The kubelet (policy: phases, restarts, probes, statuses, grace periods) is the
same for all of them; ``SWEEP_TEST_POD_RUNTIME`` picks one:

- ``process`` (default): each container is a local process in its own mount + UTS
  namespace (``unshare`` + ``podrun.py``); images are ignored; pod addresses 127.B.x.y.
- ``podman``: each pod is a ``podman pod`` on one bridge network per cluster, each
  container a container of its image (``podman.py``).

A runtime gets, per container, a *config* from the kubelet (``Kubelet._container_config``):
``image``, ``command``, ``args`` (``$(VAR)``-expanded), ``env``, ``mounts``
(``{src, dst, readOnly}``, volumes already materialised on the host, plus /etc/hosts),
``working_dir``, ``security`` (the pod's securityContext overlaid by the container's)
and ``hostname``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .kubelet import Container, Kubelet, PodRuntime

HERE = pathlib.Path(__file__).parent
PODRUN = HERE / "podrun.py"
PODSHIM = HERE / "podshim"
RUNTIME_ENV = "SWEEP_TEST_POD_RUNTIME"


class ConfigError(Exception):
    """Referenced ConfigMap/Secret missing (or the like): the container cannot be created yet."""


def runtime_name() -> str:
    name = os.environ.get(RUNTIME_ENV) or "process"
    if name not in ("process", "podman"):
        raise SystemExit(f"{RUNTIME_ENV}={name!r}: expected 'process' or 'podman'")
    return name


def api_listen_host() -> str:
    """Where the API server listens: pods in containers reach it over their bridge."""
    return "0.0.0.0" if runtime_name() == "podman" else "127.0.0.1"


def make_runtime(kubelet: Kubelet) -> Any:
    if runtime_name() == "podman":
        from .podman import PodmanRuntime

        return PodmanRuntime(kubelet)
    return ProcessRuntime(kubelet)


def pdeathsig() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def launch(argv: list[str], logf: Any, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A container's process: its own session, output into ``logf``, dies with the cluster."""
    return subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=logf,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=pdeathsig,
        close_fds=True,
    )


def killpg(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


class ProcessRuntime:
    """Containers as local processes: ``unshare --mount --uts -- python podrun.py SPEC``."""

    name = "process"
    host_ip = "127.0.0.1"

    def __init__(self, kubelet: Kubelet):
        self.k = kubelet
        self.bin_dir = kubelet.dir / "bin"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.venv_bin = pathlib.Path(sys.executable).parent
        # Pod IPs are 127.<B>.x.y with <B> random per cluster, so that two emulated clusters
        # on one machine (parallel test runs) do not hand out the same addresses.
        # (127.0.x.y is left to the host, 127.1.x.y is used for placeholder ClusterIPs.)
        import random

        self.ip_block = random.randint(2, 254)
        self.host_paths: dict[str, set[str]] = {}  # created on the host -> pod uids using them
        self._make_shims()

    def _make_shims(self) -> None:
        # Old console scripts that dask images have but modern distributed dropped.
        for name, sub in (("dask-scheduler", "scheduler"), ("dask-worker", "worker")):
            if not (self.venv_bin / name).exists():
                p = self.bin_dir / name
                p.write_text(f'#!/bin/sh\nexec "{self.venv_bin}/dask" {sub} "$@"\n')
                p.chmod(0o755)

    def pod_ip(self, n: int) -> str:
        return f"127.{self.ip_block}.{n // 250}.{2 + n % 250}"

    # --- env

    def base_env(self, pr: PodRuntime) -> dict[str, str]:
        (pr.dir / "tmp").mkdir(exist_ok=True)
        return {
            "PATH": f"{self.bin_dir}:{self.venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "HOSTNAME": pr.name,
            "LANG": "C.UTF-8",
            "TMPDIR": str(pr.dir / "tmp"),
            "KUBERNETES_SERVICE_HOST": self.k.api_host,
            "KUBERNETES_SERVICE_PORT": str(self.k.api_port),
            "KUBECONFIG": self.k.kubeconfig,
            "PYTHONUNBUFFERED": "1",
        }

    def finish_env(self, pr: PodRuntime, env: dict[str, str]) -> None:
        # Our pod shim goes first on PYTHONPATH (chains to any other sitecustomize).
        env["PYTHONPATH"] = str(PODSHIM) + (
            ":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        env["KUBE_EMU_POD_IP"] = pr.ip
        env["KUBE_EMU_POD"] = f"{pr.ns}/{pr.name}"
        env["KUBE_EMU_STATE"] = str(self.k.dir)

    # --- pods and containers

    async def start_pod(self, pr: PodRuntime) -> None:
        pass

    async def stop_pod(self, pr: PodRuntime) -> None:
        self._release_host_paths(pr)

    def prepare(self, pr: PodRuntime, c: Container, cfg: dict) -> dict:
        command, args = cfg["command"], cfg["args"]
        argv = command + args if command else args
        if not argv:
            raise ConfigError(
                f"container {c.name!r} has neither command nor args (images are not emulated)"
            )
        mounts = cfg["mounts"]
        cwd = cfg["working_dir"]
        if not cwd:
            cwd = str(pr.dir / "work" / c.name)
            os.makedirs(cwd, exist_ok=True)
        for path, is_dir in [(m["dst"], os.path.isdir(m["src"])) for m in mounts] + [(cwd, True)]:
            self._claim_host_path(pr, path, is_dir)
        return {
            "argv": argv,
            "env": cfg["env"],
            "cwd": cwd,
            "mounts": mounts,
            "hostname": cfg["hostname"],
            "overlay_dir": str(pr.dir / "overlay" / c.name),
            # what the emulated pod needs from the host, kept visible under any volume
            "keep_visible": sorted(
                {str(self.k.dir), str(HERE.parents[2]), sys.prefix, sys.base_prefix}
            ),
        }

    def start(self, pr: PodRuntime, c: Container, spec: dict, logf: Any) -> subprocess.Popen:
        spec_path = pr.dir / f"launch-{c.name}.json"
        spec_path.write_text(json.dumps(spec))
        argv = ["unshare", "--mount", "--uts", "--propagation", "private", "--"]
        argv += [sys.executable, "-I", "-S", str(PODRUN), str(spec_path)]
        return launch(argv, logf)

    def signal(self, pr: PodRuntime, c: Container, sig: int) -> None:
        """Signal the container's processes (the whole process group: nanny children too)."""
        if c.proc is not None:
            killpg(c.proc, sig)

    def exec_argv(
        self, pr: PodRuntime, c: Container, command: list[str]
    ) -> tuple[list[str], dict | None, str | None] | None:
        launch = (pr.launch or {}).get(c.name)
        if not launch:
            return None
        return list(command), launch["env"], launch["cwd"]

    async def shutdown(self) -> None:
        pass

    # --- host paths

    def _claim_host_path(self, pr: PodRuntime, path: str, is_dir: bool) -> None:
        """Mount points / working dirs that do not exist: podrun creates them inside an
        overlay of their nearest existing parent, except directly under '/', which cannot
        be overlaid; those are created on the host here and removed when no pod uses them."""
        if os.path.lexists(path):
            if path in self.host_paths:
                self.host_paths[path].add(pr.uid)
                pr.host_paths.add(path)
            return
        top, parent = path.rstrip("/"), os.path.dirname(path.rstrip("/"))
        while not os.path.lexists(parent):
            top, parent = parent, os.path.dirname(parent)
        if parent != "/":
            return
        if is_dir:
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "a").close()
        self.host_paths.setdefault(top, set()).add(pr.uid)
        pr.host_paths.add(top)

    def _release_host_paths(self, pr: PodRuntime) -> None:
        for top in pr.host_paths:
            users = self.host_paths.get(top, set())
            users.discard(pr.uid)
            if users:
                continue
            self.host_paths.pop(top, None)
            with contextlib.suppress(OSError):
                if os.path.isdir(top) and not any(f for _, _, f in os.walk(top)):
                    shutil.rmtree(top)
                elif os.path.isfile(top) and os.path.getsize(top) == 0:
                    os.unlink(top)
        pr.host_paths.clear()
