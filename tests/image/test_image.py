"""The runner image as users and pods run it: the CLI, a sweep as uid 10001 on a read-only
root, and a scheduler, a worker and the runner as three containers of one image."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import runner
from tests.image.engines import AS_THE_PODS, UID, Containers, Engine

pytestmark = pytest.mark.timeout(1800)  # the first test builds the image

SIM = "def f(a, b):\n    return a * b\n"


def _sweep_dir(tmp_path: Path, *, inline: bool = True) -> tuple[Path, Path]:
    """A spec with its function file (mounted read-only at /spec) and an output folder
    the container user may write (mounted at /out)."""
    spec_dir, out = tmp_path / "spec", tmp_path / "out"
    spec_dir.mkdir()
    out.mkdir()
    os.chown(out, UID, UID)
    (spec_dir / "sim.py").write_text(SIM)
    spec = {
        "name": "img",
        "function": "sim.py:f",
        "params": {"grid": {"a": [1, 2, 3, 4, 5], "b": {"start": 0, "stop": 1, "num": 40}}},
        "output": "/out/res",
        "cluster": {"inline": inline},
    }
    (spec_dir / "spec.yaml").write_text(json.dumps(spec))
    return spec_dir, out


def _check_results(out: Path) -> None:
    df = runner.load_results(str(out / "res"))
    assert len(df) == 200 and (df["status"] == "ok").all()
    np.testing.assert_allclose(df["result"], df["a"] * df["b"])
    assert (out / "res" / "_SUCCESS").exists()


def test_cli_and_dask_run_in_the_image(engine: Engine, image: str) -> None:
    r = engine("run", "--rm", *AS_THE_PODS, image, "--help")
    assert "Usage: sweep" in r.stdout and "submit" in r.stdout
    r = engine("run", "--rm", *AS_THE_PODS, "--entrypoint", "dask", image, "--version")
    assert r.stdout.startswith("dask, version")
    # what a user extends: the examples, a home, the non-root user
    r = engine("run", "--rm", "--entrypoint", "sh", image, "-c", "id -u; echo $HOME; ls examples")
    uid, home, *files = r.stdout.split()
    assert uid == str(UID) and home == "/home/sweep" and "pi.yaml" in files


def test_local_sweep_as_the_pods_run_it(engine: Engine, image: str, tmp_path: Path) -> None:
    """uid 10001, a read-only root and a tmpfs /tmp: the runner, its local Dask cluster
    (worker processes, scratch space, the dashboard) and the Parquet output all work."""
    spec_dir, out = _sweep_dir(tmp_path, inline=False)
    r = engine(
        "run", "--rm", *AS_THE_PODS, "-v", f"{spec_dir}:/spec:ro", "-v", f"{out}:/out",
        image, "run", "/spec/spec.yaml", "--workers", "2",
    )  # fmt: skip
    assert "Dask cluster (local) ready, dashboard http://" in r.stderr, r.stderr
    for trouble in ("Read-only file system", "Permission denied", "Traceback", "WARNING"):
        assert trouble not in r.stderr, r.stderr
    _check_results(out)


def test_scheduler_worker_and_runner_as_three_containers(
    engine: Engine, image: str, containers: Containers, tmp_path: Path
) -> None:
    """Each container in its own network namespace on one podman bridge network (names
    resolve through its DNS), the output a volume the worker and the runner share."""
    spec_dir, out = _sweep_dir(tmp_path)
    net = containers.network()
    sched = containers.start(
        "sched", "--network", net, *AS_THE_PODS, "--entrypoint", "dask", image,
        "scheduler", "--port", "8786", "--dashboard-address", ":8787",
    )  # fmt: skip
    containers.wait_log(sched, "Scheduler at:")
    worker = containers.start(
        "worker", "--network", net, *AS_THE_PODS, "-v", f"{out}:/out", "--entrypoint", "dask",
        image, "worker", f"tcp://{sched}:8786", "--nthreads", "2",
    )  # fmt: skip
    containers.wait_log(worker, "Registered to:")
    r = engine(
        "run", "--rm", "--network", net, *AS_THE_PODS, "-v", f"{spec_dir}:/spec:ro",
        "-v", f"{out}:/out", image, "run", "/spec/spec.yaml", "--scheduler", f"tcp://{sched}:8786",
    )  # fmt: skip
    assert f"dashboard http://{sched}:8787/status" in r.stderr
    _check_results(out)
    # the scheduler's dashboard answers (bokeh is in the image)
    status = engine(
        "run", "--rm", "--network", net, "--entrypoint", "python", image, "-c",
        f"import urllib.request as u; print(u.urlopen('http://{sched}:8787/status').status)",
    )  # fmt: skip
    assert status.stdout.strip() == "200"

    # the runner with an output folder of its own: the worker writes where it cannot see
    r = engine(
        "run", "--rm", "--network", net, *AS_THE_PODS, "--tmpfs", "/out:rw,mode=1777",
        "-v", f"{spec_dir}:/spec:ro", image, "run", "/spec/spec.yaml", "--overwrite",
        "--scheduler", f"tcp://{sched}:8786", check=False,
    )  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert "the runner does not see them there" in r.stderr and "s3://" in r.stderr
