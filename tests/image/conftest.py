"""The runner image, built from the repository and run as the pods run it (podman).

The image is built once per session: on ``python:3.11-slim`` when it can be pulled,
else on a stand-in made from Debian's packages by ``make-base.sh`` (kept between
runs: podman's image store persists on the machine). ``SWEEP_TEST_ENGINE`` picks the
engine (default podman), ``SWEEP_TEST_PYTHON_IMAGE`` the base.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.engines import BASE_STAND_IN, IMAGE, ROOT, Containers, Engine, containers_conf


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.image)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    exe = os.environ.get("SWEEP_TEST_ENGINE", "podman")
    if shutil.which(exe) is None:
        pytest.skip(f"{exe} is not installed (apt-get install podman buildah runc; .ci/run does)")
    env = dict(os.environ)
    if exe == "podman" and "CONTAINERS_CONF" not in env and shutil.which("runc"):
        env["CONTAINERS_CONF"] = str(
            containers_conf(tmp_path_factory.mktemp("podman") / "containers.conf")
        )
    return Engine(exe, env)


@pytest.fixture(scope="session")
def base_image(engine: Engine) -> str:
    """python:3.11-slim if it is here or can be pulled, else the Debian-made stand-in."""
    wanted = os.environ.get("SWEEP_TEST_PYTHON_IMAGE")
    if wanted:
        return wanted
    for name in ("python:3.11-slim", "docker.io/library/python:3.11-slim"):
        if engine.exists(name):
            return name
    try:
        if (
            engine(
                "pull", "-q", "docker.io/library/python:3.11-slim", check=False, timeout=60
            ).returncode
            == 0
        ):
            return "docker.io/library/python:3.11-slim"
    except subprocess.TimeoutExpired:
        pass
    t0 = time.monotonic()
    cached = engine.exists(BASE_STAND_IN)
    r = subprocess.run(
        ["bash", str(ROOT / "tests/image/make-base.sh"), BASE_STAND_IN],
        env={**engine.env, "ENGINE": engine.exe}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    engine.timings["base (cached)" if cached else "base (cold)"] = time.monotonic() - t0
    return BASE_STAND_IN


@pytest.fixture(scope="session")
def image(engine: Engine, base_image: str) -> str:
    """The project's image, built from this checkout as `make image` builds it."""
    t0 = time.monotonic()
    r = subprocess.run(
        ["make", "-s", "image", f"ENGINE={engine.exe}", f"PYTHON_IMAGE={base_image}",
         f"IMAGE={IMAGE}"],
        cwd=ROOT, env=engine.env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    engine.timings["image build"] = time.monotonic() - t0
    print(f"\nimage timings (s): {engine.timings}")
    return IMAGE


@pytest.fixture
def containers(engine: Engine) -> Iterator[Containers]:
    c = Containers(engine)
    yield c
    c.close()
