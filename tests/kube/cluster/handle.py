"""Client-side handles used by the pytest fixture.

``EmulatedCluster`` starts ``python -m tests.kube.cluster`` as a subprocess
and tears it down again; ``RealCluster`` wraps an existing kubeconfig (kind).
Both expose the same small API (see README.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import yaml

HERE = pathlib.Path(__file__).parent
REPO_ROOT = HERE.parents[2]


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 60,
    interval: float = 0.25,
    message: str | Callable[[], str] = "condition",
) -> Any:
    """Poll until predicate() is truthy; return its value or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_exc = None
        except Exception as e:  # keep polling through transient errors
            last_exc = e
        if time.monotonic() >= deadline:
            msg = message() if callable(message) else message
            raise TimeoutError(
                f"timed out after {timeout}s waiting for {msg}"
                + (f" (last error: {last_exc!r})" if last_exc else "")
            )
        time.sleep(interval)


class _Base:
    kubeconfig: str
    api_url: str
    emulated: bool

    def __init__(self) -> None:
        self._api = None

    @property
    def api(self):
        """A sync kr8s API bound to this cluster's kubeconfig."""
        if self._api is None:
            import kr8s

            self._api = kr8s.api(kubeconfig=self.kubeconfig)
        return self._api

    def list(
        self,
        kind: str,
        namespace: str | None = "default",
        label_selector: str | dict | None = None,
        field_selector: str | dict | None = None,
    ) -> list[dict]:
        """Raw dicts of all objects of a kind ('pods', 'deployments', 'daskclusters', 'jobs.batch', …).
        namespace=None lists all namespaces."""
        import kr8s

        objs = self.api.get(
            kind,
            namespace=kr8s.ALL if namespace is None else namespace,
            label_selector=label_selector or None,
            field_selector=field_selector or None,
        )
        return [o.raw for o in objs]

    def get(self, kind: str, name: str, namespace: str | None = "default") -> dict | None:
        found = self.list(kind, namespace, field_selector=f"metadata.name={name}")
        return found[0] if found else None

    def pod_logs(
        self,
        name: str,
        namespace: str = "default",
        container: str | None = None,
        tail_lines: int | None = None,
    ) -> str:
        from kr8s.objects import Pod

        pod = Pod.get(name, namespace=namespace, api=self.api)
        return "\n".join(pod.logs(container=container, tail_lines=tail_lines))

    def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 60,
        interval: float = 0.25,
        message: str | Callable[[], str] = "condition",
    ) -> Any:
        return wait_for(predicate, timeout, interval, message)

    def env(self) -> dict[str, str]:
        """Environment for a host-side subprocess that should talk to this cluster."""
        return dict(os.environ, KUBECONFIG=self.kubeconfig)


class RealCluster(_Base):
    """A handle on an existing cluster (e.g. kind), from SWEEP_TEST_KUBECONFIG."""

    emulated = False
    hosts_file = None
    state_dir = None

    def __init__(self, kubeconfig: str):
        super().__init__()
        self.kubeconfig = kubeconfig
        cfg = yaml.safe_load(pathlib.Path(kubeconfig).read_text())
        ctx_name = cfg.get("current-context")
        ctx = next((c["context"] for c in cfg.get("contexts", []) if c["name"] == ctx_name), {})
        cluster = next(
            (c["cluster"] for c in cfg.get("clusters", []) if c["name"] == ctx.get("cluster")), {}
        )
        self.api_url = cluster.get("server", "")

    def start(self) -> RealCluster:
        return self

    def stop(self) -> None:
        pass

    def install_resolver(self) -> None:  # on a real cluster, KubeCluster port-forwards
        pass

    def uninstall_resolver(self) -> None:
        pass

    def pod_processes(self, namespace: str | None = None) -> list[int]:
        return []


class EmulatedCluster(_Base):
    """Start/stop the in-process-emulated cluster as a subprocess."""

    emulated = True

    def __init__(
        self,
        state_dir: str | os.PathLike | None = None,
        operator: bool = True,
        keep_state: bool = False,
        dask_crds: bool = True,
    ):
        super().__init__()
        self._own_dir = state_dir is None
        self.state_dir = pathlib.Path(state_dir or tempfile.mkdtemp(prefix="kube-emu-")).resolve()
        self.operator = operator
        self.dask_crds = dask_crds
        self.keep_state = keep_state
        self.proc: subprocess.Popen | None = None
        self.kubeconfig = ""
        self.api_url = ""
        self.hosts_file = ""
        self.info: dict = {}

    def start(self, timeout: float = 60) -> EmulatedCluster:
        ready = self.state_dir / "ready.json"
        ready.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "tests.kube.cluster",
            "--state-dir",
            str(self.state_dir),
            "--ready-file",
            str(ready),
        ]
        if not self.operator:
            cmd.append("--no-operator")
        if not self.dask_crds:
            cmd.append("--no-dask-crds")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        env.pop("KUBECONFIG", None)
        self._log = open(self.state_dir / "cluster.log", "ab")  # noqa: SIM115 (handed to Popen)
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(REPO_ROOT),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: ready.exists() or self.proc.poll() is not None,
                timeout,
                message="the emulated cluster to start",
            )
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"emulated cluster exited early; see {self.state_dir / 'cluster.log'}:\n"
                    + (self.state_dir / "cluster.log").read_text()[-3000:]
                )
        except BaseException:
            self.stop()
            raise
        self.info = json.loads(ready.read_text())
        self.kubeconfig = self.info["kubeconfig"]
        self.api_url = self.info["api_url"]
        self.hosts_file = self.info["hosts_file"]
        return self

    # --- name resolution for this (host) process

    def install_resolver(self) -> None:
        """Make '<svc>.<ns>[.svc[.cluster.local]]' resolve in this process (see resolver.py)."""
        from . import resolver

        resolver.install(self.hosts_file)

    def uninstall_resolver(self) -> None:
        from . import resolver

        resolver.uninstall()

    def env(self) -> dict[str, str]:
        """Env for a host-side Python subprocess: KUBECONFIG + service-name resolution."""
        env = super().env()
        env["KUBE_EMU_HOSTS"] = self.hosts_file
        shim = str(HERE / "hostshim")
        env["PYTHONPATH"] = shim + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    # --- processes

    def pod_processes(self, namespace: str | None = None) -> list[int]:
        """PIDs of live processes started for pods of this cluster (optionally of one namespace)."""
        return [
            pid
            for pid, env in _proc_envs()
            if env.get("KUBE_EMU_POD")
            and env.get("KUBE_EMU_STATE") == str(self.state_dir)
            and (namespace is None or env["KUBE_EMU_POD"].split("/")[0] == namespace)
            and not _is_zombie(pid)
        ]

    def _all_processes(self) -> list[int]:
        return [
            pid
            for pid, env in _proc_envs()
            if env.get("TMPDIR", "").startswith(str(self.state_dir) + os.sep)
            or env.get("KUBE_EMU_STATE") == str(self.state_dir)
        ]

    def stop(self, timeout: float = 30) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Safety net: nothing of ours may survive.
        for pid in self._all_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if getattr(self, "_log", None):
            self._log.close()
        if self._api is not None:
            self._api = None
        if self._own_dir and not self.keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def _proc_envs():
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = pathlib.Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        env = {}
        for item in raw.split(b"\0"):
            k, sep, v = item.partition(b"=")
            if sep:
                env[k.decode(errors="replace")] = v.decode(errors="replace")
        yield int(entry.name), env


def _is_zombie(pid: int) -> bool:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _pdeathsig_term() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass
