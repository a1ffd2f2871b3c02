"""Run the whole emulated cluster in this process: API server + kubelet, plus
the real Dask operator (kopf) as a subprocess.  See `python -m tests.kube.cluster --help`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

import kmock

from .apiserver import KubeEmulator
from .kubelet import Kubelet
from .runtimes import api_listen_host, pdeathsig

log = logging.getLogger("kube-emu")

KUBECONFIG_TEMPLATE = """apiVersion: v1
kind: Config
clusters:
- name: kube-emu
  cluster:
    server: {url}
users:
- name: kube-emu
  user: {{}}
contexts:
- name: kube-emu
  context:
    cluster: kube-emu
    user: kube-emu
    namespace: default
current-context: kube-emu
"""


def start_operator(
    state_dir: pathlib.Path, kubeconfig: str, hosts_file: pathlib.Path
) -> subprocess.Popen:
    """The real, unmodified Dask operator, in its own mount namespace whose
    /etc/hosts carries the cluster's service names (it talks to schedulers)."""
    env = {
        "PATH": f"{pathlib.Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "KUBECONFIG": kubeconfig,
        "KUBE_EMU_STATE": str(state_dir),
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": str(state_dir / "operator-tmp"),
    }
    (state_dir / "operator-tmp").mkdir(exist_ok=True)
    script = (
        f'mount --bind "{hosts_file}" /etc/hosts && exec "{sys.executable}" -m kopf run '
        "--standalone --all-namespaces -m dask_kubernetes.operator.controller"
    )
    logf = open(state_dir / "operator.log", "ab")  # noqa: SIM115 (handed to Popen)
    try:
        return subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
            env=env,
            cwd=str(state_dir),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pdeathsig,
        )
    finally:
        logf.close()


async def serve(
    state_dir: pathlib.Path,
    *,
    port: int = 0,
    operator: bool = True,
    dask_crds: bool = True,
    ready_file: pathlib.Path | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    emu = KubeEmulator(dask_crds=dask_crds)
    async with emu, kmock.Server(emu, host=api_listen_host(), port=port or None) as srv:
        url = f"http://127.0.0.1:{srv.port}"
        kubeconfig = state_dir / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG_TEMPLATE.format(url=url))
        kubelet = Kubelet(emu.store, state_dir, str(kubeconfig), "127.0.0.1", srv.port)
        emu.log_provider = kubelet.serve_logs
        ktask = loop.create_task(kubelet.run())
        op = (
            start_operator(state_dir, str(kubeconfig), kubelet.global_hosts)
            if operator and dask_crds
            else None
        )
        info = {
            "kubeconfig": str(kubeconfig),
            "api_url": url,
            "hosts_file": str(kubelet.global_hosts),
            "state_dir": str(state_dir),
            "operator_pid": op.pid if op else None,
            "pid": os.getpid(),
        }
        if ready_file:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(info))
            tmp.rename(ready_file)
        log.info("kube-emu is up: %s", json.dumps(info))
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if op is not None and op.poll() is not None:
                    log.error(
                        "the dask operator exited with %s, see %s",
                        op.returncode,
                        state_dir / "operator.log",
                    )
                    op = None
        finally:
            if op is not None and op.poll() is None:
                os.killpg(op.pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while op.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                if op.poll() is None:
                    os.killpg(op.pid, signal.SIGKILL)
                    op.wait()
            await kubelet.shutdown()
            ktask.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ktask
