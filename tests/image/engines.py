"""Containers for the image tests: the engine, and the containers a test starts."""

from __future__ import annotations

import resource
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE_STAND_IN = "localhost/sweep-base:3.11-bookworm"
IMAGE = "localhost/sweep-runner:test"
UID = 10001
# the pods' securityContext (runner/kube/manifests.py, helm/sweep/files/*-pod.yaml)
AS_THE_PODS = [
    "--user", f"{UID}:{UID}", "--read-only", "--tmpfs", "/tmp:rw,mode=1777",
    "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
]  # fmt: skip


def containers_conf(path: Path) -> Path:
    """podman's defaults ask for rlimits this sandbox's runc may not set (nofile 1048576).

    nofile: this process's hard limit; nproc: at most 32768, the highest that runc could
    set here (65536 and up failed with 'error setting rlimit type 6').
    """
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    path.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
    )
    return path


@dataclass
class Engine:
    """A container engine on this machine (podman as root, or docker), with its settings."""

    exe: str
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [self.exe, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"{self.exe} {' '.join(args[:3])}: exit {r.returncode}\n{r.stderr[-3000:]}"
            )
        return r

    def exists(self, image: str) -> bool:
        return self("image", "exists", image, check=False).returncode == 0


@dataclass
class Containers:
    """Containers and networks a test started; all removed at its end."""

    engine: Engine
    names: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)

    def network(self) -> str:
        name = f"sweep-test-{uuid.uuid4().hex[:8]}"
        self.engine("network", "create", name)
        self.networks.append(name)
        return name

    def start(self, name: str, *args: str) -> str:
        name = f"{name}-{uuid.uuid4().hex[:6]}"
        self.engine("run", "-d", "--name", name, *args)
        self.names.append(name)
        return name

    def logs(self, name: str) -> str:
        r = self.engine("logs", name, check=False)
        return r.stdout + r.stderr

    def wait_log(self, name: str, text: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while text not in self.logs(name):
            assert time.monotonic() < deadline, f"{name}: no {text!r} in\n{self.logs(name)[-2000:]}"
            time.sleep(0.2)

    def close(self) -> None:
        for name in self.names:
            self.engine("rm", "-f", "-t", "0", name, check=False)
        for net in self.networks:
            self.engine("network", "rm", "-f", net, check=False)
