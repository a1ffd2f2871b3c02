"""Each `sweep` command imports only what it needs (issue 9: import time).

Every check runs in a fresh interpreter and reads its ``sys.modules``: a module
imported eagerly again (at the top of runner/__init__.py, runner/cli.py or a module
they import) fails here, whatever the machine's speed. No wall times are asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import ROOT

# What no help text, and none of the commands checked below, needs.
NEVER = ("scipy", "kubernetes", "dask_kubernetes", "kr8s", "s3fs", "matplotlib", "bokeh")
# What `import runner.cli` and `sweep --help` need neither: the engine and its data stack.
ENGINE = (
    "dask",
    "distributed",
    "dask.bag",
    "dask.dataframe",
    "pandas",
    "numpy",
    "pyarrow",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "fsspec",
    "cloudpickle",
    "yaml",
    "runner.api",
    "runner.execute",
    "runner.spec",
    "runner.store",
    "runner.kube.manifests",
    "runner.kube.submit",
)
COMMANDS = ("run", "validate", "plan", "results", "manifest", "submit", "status", "logs", "cancel")


PROBE = """
import json, os, sys
sys.argv = ["sweep", *json.loads(os.environ["PROBE_ARGV"])]


def _exit(code):  # the CLI ends with os._exit; here the modules are read first
    raise SystemExit(code)


os._exit = _exit
code = 0
try:
    exec(os.environ["PROBE_CODE"])
except SystemExit as e:
    code = e.code or 0
with open(os.environ["PROBE_OUT"], "w") as fh:
    json.dump({"exit": code, "modules": sorted(sys.modules)}, fh)
"""


@pytest.fixture
def loaded(tmp_path):
    """``loaded(code, *argv)``: the modules a fresh interpreter holds after running ``code``.

    ``code`` sees ``argv`` as ``sys.argv[1:]``; it must exit with ``exit`` (default 0).
    """
    runs = iter(range(1_000))

    def run(code: str, *argv: str, exit: int = 0) -> set[str]:
        out = tmp_path / f"modules-{next(runs)}.json"
        env = {
            **os.environ,
            "PROBE_ARGV": json.dumps(argv),
            "PROBE_CODE": code,
            "PROBE_OUT": str(out),
            "PYTHONPATH": str(ROOT),
        }
        proc = subprocess.run(
            [sys.executable, "-c", PROBE],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )
        assert proc.returncode == 0 and out.exists(), proc.stderr
        got = json.loads(out.read_text())
        assert got["exit"] == exit, proc.stderr
        return set(got["modules"])

    return run


CLI = "from runner.cli import main\nmain()"


def among(mods: set[str], *names: str) -> list[str]:
    """Which of ``names`` the interpreter imported (``[]``: none of them)."""
    return sorted(mods.intersection(names))


def test_import_runner_loads_no_dependency(loaded):
    mods = loaded("import runner")
    assert among(mods, *NEVER, *ENGINE, "typer", "rich", "pydantic", "importlib.metadata") == []


def test_import_runner_cli_loads_no_engine(loaded):
    assert among(loaded("import runner.cli"), *NEVER, *ENGINE, "pydantic") == []


@pytest.mark.parametrize("argv", [["--help"], *[[c, "--help"] for c in COMMANDS]])
def test_help_loads_no_engine(loaded, argv):
    # (typer itself parses a command's options with pydantic: not ours to avoid)
    assert among(loaded(CLI, *argv), *NEVER, *ENGINE) == []


def test_bare_sweep_shows_help_without_the_engine(loaded):
    assert among(loaded(CLI, exit=2), *NEVER, *ENGINE) == []


def test_api_attributes_still_resolve_lazily(loaded):
    mods = loaded(
        "import runner\n"
        "assert runner.__version__ and callable(runner.sweep) and runner.SweepSpec\n"
        "assert runner.config.get('grace-seconds') == 20.0"
    )
    assert {"runner.api", "dask"} <= mods


def test_isolated_child_loads_neither_dask_nor_pandas(loaded):
    # `python -m runner.isolate` starts once per worker thread of an isolated partition
    mods = loaded("import runner.isolate")
    assert among(mods, *NEVER, "dask", "distributed", "pandas", "pyarrow.dataset", "pydantic") == []


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "imports",
                "function": "tests.funcs:add",
                "params": {"grid": {"a": [1, 2, 3], "b": [0.5]}},
                "output": str(tmp_path / "out"),
            }
        )
    )
    return path


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_validate_and_plan_load_no_cluster(loaded, spec, command):
    mods = loaded(CLI, command, str(spec))
    assert "runner.spec" in mods  # it did check the spec
    assert among(mods, *NEVER, "distributed", "dask.bag", "pandas", "pyarrow.dataset") == []


def test_manifest_loads_no_engine(loaded, spec):
    mods = loaded(CLI, "manifest", str(spec), "--output", "s3://bucket/imports")
    assert "runner.kube.manifests" in mods
    assert among(mods, *NEVER, "distributed", "numpy", "pyarrow", "pandas", "runner.execute") == []


def test_results_summary_loads_neither_distributed_nor_pandas(loaded, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for i, (items, results) in enumerate([([0, 1], [0.5, 1.5]), ([2], [2.5])]):
        table = pa.table(
            {
                "item": items,
                "result": results,
                "status": ["ok"] * len(items),
                "error": pa.nulls(len(items), pa.string()),
            }
        )
        meta = {"start": items[0], "stop": items[-1] + 1, "ok": len(items), "errors": 0}
        pq.write_table(
            table.replace_schema_metadata({"sweep": json.dumps(meta)}),
            out / f"part-{i:05d}.parquet",
        )
    mods = loaded(CLI, "results", str(out), "--json")
    assert "runner.results" in mods
    assert among(mods, *NEVER, "distributed", "pandas", "pyarrow.dataset", "runner.execute") == []
