"""The podman container runtime of the kubelet (``SWEEP_TEST_POD_RUNTIME=podman``).

One bridge network per emulated cluster (``10.90.B.0/24``, B random, or
``KUBE_EMU_POD_SUBNET``); each Kubernetes pod is a ``podman pod`` on it with the pod's
address (``--ip``), hostname, and shared network/UTS/IPC namespaces (podman's pause
container holds them, as the pause container does under a real kubelet); each container
is ``podman run --rm --pod ...`` of its image, attached, so its stdout/stderr go to the
kubelet's log file and the ``podman run`` process's exit status is the container's.
The host is the network's gateway: pods reach the API server (listening on 0.0.0.0) and
the test's S3 server there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import random
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

from .runtimes import ConfigError, launch

if TYPE_CHECKING:
    from .kubelet import Container, Kubelet, PodRuntime

log = logging.getLogger("kube-emu.podman")

POD_KUBECONFIG = "/var/run/kube-emu/kubeconfig"


def podman_env(state_dir: pathlib.Path) -> dict[str, str]:
    """podman's environment: CONTAINERS_CONF with rlimits this machine's runc can set."""
    env = dict(os.environ)
    conf = state_dir / "containers.conf"
    if "CONTAINERS_CONF" not in env and (conf.exists() or shutil.which("runc")):
        if not conf.exists():
            from tests.image.engines import containers_conf

            containers_conf(conf)
        env["CONTAINERS_CONF"] = str(conf)
    return env


class PodmanRuntime:
    name = "podman"

    def __init__(self, kubelet: Kubelet):
        if shutil.which("podman") is None:
            raise SystemExit("SWEEP_TEST_POD_RUNTIME=podman: podman is not installed")
        self.k = kubelet
        self.env = podman_env(kubelet.dir)
        self.id = os.urandom(3).hex()
        self.label = f"kube-emu={self.id}"
        self.network = f"kube-emu-{self.id}"
        subnet = self._create_network(os.environ.get("KUBE_EMU_POD_SUBNET"))
        self.prefix = subnet.split("/")[0].rsplit(".", 1)[0]
        self.host_ip = f"{self.prefix}.1"  # the bridge's gateway: this machine
        # the pods' kubeconfig: the API server at the gateway address
        host_url = f"http://{kubelet.api_host}:{kubelet.api_port}"
        pod_url = f"http://{self.host_ip}:{kubelet.api_port}"
        self.kubeconfig = kubelet.dir / "pod-kubeconfig"
        self.kubeconfig.write_text(
            pathlib.Path(kubelet.kubeconfig).read_text().replace(host_url, pod_url)
        )
        self._image_users: dict[str, str] = {}
        self._pending: list[subprocess.Popen] = []  # podman kill
        log.info("podman runtime: network %s %s, gateway %s", self.network, subnet, self.host_ip)

    def _create_network(self, wanted: str | None) -> str:
        """The cluster's network: KUBE_EMU_POD_SUBNET if it is free (the test session's S3
        host is its gateway), else a free random 10.90.B.0/24 (a second cluster in one
        session: its pods still reach the first gateway, an address of this machine)."""
        for attempt in range(8):
            subnet = wanted if wanted and attempt == 0 else f"10.90.{random.randint(0, 255)}.0/24"
            gateway = subnet.split("/")[0].rsplit(".", 1)[0] + ".1"
            r = subprocess.run(
                ["podman", "network", "create", "--subnet", subnet, "--gateway", gateway,
                 "--disable-dns", "--label", self.label, self.network],
                env=self.env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if r.returncode == 0:
                return subnet
            if "already used" not in r.stderr:
                raise RuntimeError(f"podman network create: exit {r.returncode}: {r.stderr}")
        raise RuntimeError("podman network create: no free 10.90.B.0/24 subnet")

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        r = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args[:2])}: exit {r.returncode}: {r.stderr}")
        return r.stdout

    async def _arun(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        return await asyncio.to_thread(self._run, *args, check=check, timeout=timeout)

    def pod_ip(self, n: int) -> str:
        return f"{self.prefix}.{2 + n % 253}"

    @staticmethod
    def pod_name(pr: PodRuntime) -> str:
        return f"{pr.ns}_{pr.name}_{pr.uid[:8]}"

    def container_name(self, pr: PodRuntime, c: Container) -> str:
        return f"{self.pod_name(pr)}_{c.name}"

    # --- env

    def base_env(self, pr: PodRuntime) -> dict[str, str]:
        # the image's ENV (PATH, HOME, ...) stays; the kubelet adds what a kubelet adds
        return {
            "HOSTNAME": pr.name,
            "KUBERNETES_SERVICE_HOST": self.host_ip,
            "KUBERNETES_SERVICE_PORT": str(self.k.api_port),
            "KUBECONFIG": POD_KUBECONFIG,
        }

    def finish_env(self, pr: PodRuntime, env: dict[str, str]) -> None:
        # lets the test handle find the pod's processes (EmulatedCluster.pod_processes)
        env["KUBE_EMU_POD"] = f"{pr.ns}/{pr.name}"
        env["KUBE_EMU_STATE"] = str(self.k.dir)

    # --- pods

    async def start_pod(self, pr: PodRuntime) -> None:
        await self._arun(
            "pod", "create", "--name", self.pod_name(pr), "--label", self.label,
            "--network", self.network, "--ip", pr.ip, "--hostname", pr.name[:63],
            "--share", "net,uts,ipc",
        )  # fmt: skip

    async def stop_pod(self, pr: PodRuntime) -> None:
        await self._arun("pod", "rm", "--force", "--time", "0", self.pod_name(pr), check=False)

    # --- containers

    def _image_user(self, image: str) -> str:
        if image not in self._image_users:
            out = self._run("image", "inspect", "--format", "{{.Config.User}}", image, check=False)
            self._image_users[image] = out.strip()
        return self._image_users[image]

    def _security_args(self, c: Container, image: str, sec: dict) -> list[str]:
        args: list[str] = []
        user, group = sec.get("runAsUser"), sec.get("runAsGroup")
        if sec.get("runAsNonRoot"):
            effective = user if user is not None else self._image_user(image).split(":")[0]
            if str(effective) in ("", "0", "root"):
                raise ConfigError(
                    "container has runAsNonRoot and image will run as root "
                    f"(pod: {c.name!r}, image: {image})"
                )
            if user is None and not str(effective).isdigit():
                raise ConfigError(
                    f"container has runAsNonRoot and image has non-numeric user ({effective}), "
                    "cannot verify user is non-root"
                )
        if user is not None:
            args += ["--user", f"{user}:{group}" if group is not None else str(user)]
        for g in [sec.get("fsGroup"), *(sec.get("supplementalGroups") or [])]:
            if g is not None:
                args += ["--group-add", str(g)]
        if sec.get("readOnlyRootFilesystem"):
            # no tmpfs on /tmp, /run, /var/tmp as podman would add: a pod gets only its volumes
            args += ["--read-only", "--read-only-tmpfs=false"]
        if sec.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if sec.get("privileged"):
            args.append("--privileged")
        caps = sec.get("capabilities") or {}
        for cap in caps.get("drop") or []:
            args += ["--cap-drop", cap]
        for cap in caps.get("add") or []:
            args += ["--cap-add", cap]
        return args

    def prepare(self, pr: PodRuntime, c: Container, cfg: dict) -> dict:
        image = cfg["image"]
        if not image:
            raise ConfigError(f"container {c.name!r} has no image")
        argv = [
            "podman", "run", "--rm", "--replace", "--name", self.container_name(pr, c),
            "--pod", self.pod_name(pr), "--label", self.label, "--pull", "never",
            "--log-driver", "none", "--sig-proxy=false",
        ]  # fmt: skip
        for k, v in cfg["env"].items():
            argv += ["--env", f"{k}={v}"]
        mounts = [*cfg["mounts"], {"src": str(self.kubeconfig), "dst": POD_KUBECONFIG}]
        for m in mounts:
            spec = f"type=bind,source={m['src']},destination={m['dst']}"
            argv += ["--mount", spec + (",ro" if m.get("readOnly") else "")]
        if cfg["working_dir"]:
            argv += ["--workdir", cfg["working_dir"]]
        argv += self._security_args(c, image, cfg["security"])
        if cfg["command"]:
            # Kubernetes: command replaces the image's ENTRYPOINT (and its CMD), args its CMD
            argv += ["--entrypoint", json.dumps(cfg["command"])]
        argv += [image, *cfg["args"]]
        # for the kubelet's log: no env values (Secrets)
        shown = [*(cfg["command"] or ["<entrypoint>"]), *cfg["args"], f"(image {image})"]
        return {"argv": argv, "shown": shown, "name": self.container_name(pr, c)}

    def start(self, pr: PodRuntime, c: Container, spec: dict, logf: Any) -> subprocess.Popen:
        return launch(spec["argv"], logf, env=self.env)

    def signal(self, pr: PodRuntime, c: Container, sig: int) -> None:
        """`podman kill`, not waited for: the kubelet (and the API server on its event loop)
        must not block while podman waits for a lock (a `--rm` cleanup, a `pod rm`). The
        kubelet sees the effect when `podman run` exits (and kills that client if it does
        not, e.g. for a container podman never created)."""
        self._pending = [p for p in self._pending if p.poll() is None]
        if c.proc is None or c.proc.poll() is not None:
            return
        argv = ["podman", "kill", "--signal", str(int(sig)), self.container_name(pr, c)]
        quiet = {
            "stdin": subprocess.DEVNULL,
            "stdout": subprocess.DEVNULL,
            "stderr": subprocess.DEVNULL,
        }
        self._pending.append(subprocess.Popen(argv, env=self.env, start_new_session=True, **quiet))

    def exec_argv(
        self, pr: PodRuntime, c: Container, command: list[str]
    ) -> tuple[list[str], dict | None, str | None] | None:
        argv = ["podman", "exec", self.container_name(pr, c), *command]
        return argv, self.env, None

    async def shutdown(self) -> None:
        pods = await self._arun("pod", "ps", "-q", "--filter", f"label={self.label}", check=False)
        for pod in pods.split():
            await self._arun("pod", "rm", "--force", "--time", "0", pod, check=False)
        left = await self._arun("ps", "-aq", "--filter", f"label={self.label}", check=False)
        for cid in left.split():
            await self._arun("rm", "--force", "--time", "0", cid, check=False)
        with contextlib.suppress(Exception):
            await self._arun("network", "rm", "--force", self.network)
