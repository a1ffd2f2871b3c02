"""The runner image, checked by reading the Dockerfile (no Docker engine here).

One image serves the runner Job, the Dask scheduler and the workers: multi-stage (a wheel
built from the repo, installed into python:3.11-slim), a numeric non-root user matching
the pods' runAsUser, ``ENTRYPOINT ["sweep"]`` and the ``dask`` CLI the pod templates run.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runner.kube import cluster_spec as cs
from runner.kube import manifests as mf

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        elif op == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value.strip('"')
        elif stages:
            stages[-1].instructions.append((op, rest))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse((ROOT / "Dockerfile").read_text())


def test_multi_stage_build_into_slim_python(dockerfile) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2
    build, final = stages[0], stages[-1]
    assert build.name and final.image == "python:3.11-slim"
    assert any("build --wheel" in r for r in build.all("RUN"))
    copies = final.all("COPY")
    assert any(c.startswith(f"--from={build.name} ") for c in copies), copies
    assert not any("build" in r and "--wheel" in r for r in final.all("RUN"))


def test_final_stage_installs_the_locked_dependencies_then_the_wheel(dockerfile) -> None:
    _, stages = dockerfile
    final = stages[-1]
    ops = final.instructions
    runs = [(i, arg) for i, (op, arg) in enumerate(ops) if op == "RUN"]
    deps = next(i for i, r in runs if "-r /tmp/image-requirements.txt" in r)
    wheel = next(i for i, r in runs if ".whl" in r)
    copy_wheel = next(i for i, (op, a) in enumerate(ops) if op == "COPY" and a.startswith("--from"))
    # the dependency layer comes before anything built from runner/ is copied in
    assert deps < copy_wheel < wheel
    assert "--upgrade" in dict(runs)[deps] and '"pip>=25"' in dict(runs)[deps]
    assert "--no-deps" in dict(runs)[wheel] and "pip check" in dict(runs)[wheel]
    assert "dask --version" in dict(runs)[wheel] and "sweep --help" in dict(runs)[wheel]


def _locked() -> dict[str, str]:
    """``image-requirements.txt`` as name -> version, for Python 3.11 on Linux."""
    from packaging.markers import Marker
    from packaging.utils import canonicalize_name

    env = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
           "platform_system": "Linux", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "platform_machine": "x86_64",
           "os_name": "posix", "extra": ""}  # fmt: skip
    out = {}
    for line in (ROOT / "image-requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate(env):
            continue
        name, _, version = req.strip().partition("==")
        out[canonicalize_name(name)] = version
    return out


def test_the_image_lock_satisfies_pyproject() -> None:
    """image-requirements.txt pins every dependency of the image (`make lock` writes it)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = _locked()
    wanted = [*project["dependencies"], *project["optional-dependencies"]["kubernetes"]]
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in locked, f"{name} is not in image-requirements.txt: run make lock"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"image-requirements.txt pins {name}=={locked[name]}, pyproject wants {text}:"
            " run make lock"
        )
        for extra in req.extras:  # dask[distributed]
            assert "distributed" in locked or extra != "distributed"
    # the pair that old pip could not resolve (see the Dockerfile)
    assert {"kubernetes", "botocore", "python-dateutil"} <= set(locked)


def test_runs_as_the_non_root_user_the_pods_expect(dockerfile) -> None:
    _, stages = dockerfile
    (user,) = stages[-1].all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be numeric for runAsNonRoot"
    assert int(uid) == mf.RUNNER_UID and (not gid or int(gid) == mf.RUNNER_UID)
    for role in ("worker", "scheduler"):
        pod = cs.load_pod_template(None, role)["spec"]
        assert pod["securityContext"]["runAsUser"] == int(uid)
    ops = [op for op, _ in stages[-1].instructions]
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN")


def test_entrypoint_is_sweep(dockerfile) -> None:
    _, stages = dockerfile
    (entry,) = stages[-1].all("ENTRYPOINT")
    assert json.loads(entry) == ["sweep"]
    (cmd,) = stages[-1].all("CMD")
    assert json.loads(cmd) == ["--help"]
    exposed = {p for e in stages[-1].all("EXPOSE") for p in e.split()}
    assert {"8786", "8787", "8788"} <= exposed


def test_build_context_has_what_the_dockerfile_copies(dockerfile) -> None:
    _, stages = dockerfile
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".venv" in ignored and ".git" in ignored
    for stage in stages:
        for copy in stage.all("COPY"):
            parts = [p for p in shlex.split(copy) if not p.startswith("--")]
            if any(c.startswith("--from") for c in shlex.split(copy)):
                continue
            for src in parts[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: missing in the repo"
                assert src.rstrip("/") not in ignored, f"COPY {src}: excluded by .dockerignore"
