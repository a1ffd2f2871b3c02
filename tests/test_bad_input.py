"""The bad-input corpus: each case exits 2 (or 3 for infrastructure) with one line that names
the field, file or URL and what to do, no traceback, and nothing written to the output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.clitools import sweep
from tests.conftest import BUCKET

pytestmark = pytest.mark.timeout(120)


@dataclass
class Case:
    """A spec (``fields`` over a small valid grid sweep, or written by ``setup``) and what it must print."""

    id: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    setup: Callable[[Path, dict[str, Any]], Path | None] | None = None
    code: int = 2
    validate: bool = True  # `sweep validate` refuses it too (it reads no output and runs nothing)
    args: tuple[str, ...] = ()
    s3: bool = False  # the output is on the S3 test server


def base_spec(tmp: Path) -> dict[str, Any]:
    return {
        "name": "bad",
        "function": "tests.funcs:add",
        "params": {"grid": {"a": [1, 2, 3], "b": [0.5]}},
        "output": str(tmp / "out"),
        "partition_size": 2,
    }


def write(tmp: Path, spec: dict[str, Any]) -> Path:
    path = tmp / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def parquet(path: Path, **columns: list[Any]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(columns).to_parquet(path)
    return str(path)


def raw(text: str | bytes) -> Callable[[Path, dict[str, Any]], Path]:
    def setup(tmp: Path, spec: dict[str, Any]) -> Path:
        path = tmp / "bad.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    return setup


def dataset(make: Callable[[Path], str]) -> Callable[[Path, dict[str, Any]], None]:
    def setup(tmp: Path, spec: dict[str, Any]) -> None:
        spec["params"] = {"dataset": make(tmp)}

    return setup


def other_sweep(tmp: Path, spec: dict[str, Any]) -> None:
    out = tmp / "out"
    out.mkdir()
    (out / "_manifest.json").write_text('{"spec_hash": "0123456789abcdef", "runs": []}')


def stray_partitions(tmp: Path, spec: dict[str, Any]) -> None:
    parquet(tmp / "out" / "part-00000.parquet", x=[1])


def under_a_file(tmp: Path, spec: dict[str, Any]) -> None:
    (tmp / "afile").write_text("not a directory")
    spec["output"] = str(tmp / "afile" / "out")


def mixed_schemas(tmp: Path) -> str:
    parquet(tmp / "ds" / "one.parquet", a=[1], b=[2.0])
    parquet(tmp / "ds" / "two.parquet", a=[1], c=[2.0])
    return str(tmp / "ds")


def corrupt(tmp: Path) -> str:
    (tmp / "ds").mkdir()
    (tmp / "ds" / "broken.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    return str(tmp / "ds")


GRID = {"a": [1, 2], "b": [0.5]}
CASES = [
    # --- the spec file
    Case("spec-missing", "cannot read the spec file", setup=lambda t, s: t / "nope.yaml"),
    Case("spec-empty", "the spec file is empty", setup=raw("")),
    Case("spec-is-a-directory", "cannot read the spec file", setup=lambda t, s: t),
    Case("spec-not-text", "not a text file", setup=raw(b"\xff\xfe\x00binary")),
    Case("spec-invalid-yaml", "not valid YAML at line", setup=raw("name: [unclosed\n")),
    Case("spec-not-a-mapping", "must be a mapping of fields", setup=raw("- a\n- b\n")),
    # --- fields
    Case("unknown-key", "paramz: unknown field (did you mean 'params'?", {"paramz": {}}),
    Case("misspelled-key", "partiton_size: unknown field (did you mean 'partition_size'?",
         {"partiton_size": 3}),
    Case("misspelled-nested", "cluster.workerz: unknown field (did you mean 'workers'?",
         {"cluster": {"workerz": 2}}),
    Case("wrong-type-int", "retries: Input should be a valid integer", {"retries": "lots"}),
    Case("wrong-type-float", "timeout: Input should be a valid number", {"timeout": "soon"}),
    Case("wrong-call", "call: Input should be 'row', 'kwargs', 'batch' or 'command'", {"call": "kwarg"}),
    Case("bad-name", "name: use lowercase letters", {"name": "Bad Name"}),
    Case("bad-budget", "max_failures", {"max_failures": 1.5}),
    Case("partition-size-zero", "partition_size", {"partition_size": 0}),
    Case("unknown-protocol", "output: unknown storage protocol", {"output": "nosuch://b/x"}),
    Case("no-bucket", "names no bucket", {"output": "s3://"}),
    # --- parameter sources
    Case("no-source", "params: give exactly one parameter source", {"params": {}}),
    Case("two-sources", "params: give exactly one parameter source of dataset, grid, random, lhs, sobol, halton (got grid, random)",
         {"params": {"grid": GRID, "random": {"n": 3, "columns": {"x": {"uniform": [0, 1]}}}}}),
    Case("empty-axis", "params.grid.a: List should have at least 1 item",
         {"params": {"grid": {"a": [], "b": [1]}}}),
    Case("n-zero", "params.random.n: Input should be greater than 0",
         {"params": {"random": {"n": 0, "columns": {"a": {"uniform": [0, 1]}, "b": {"normal": [0, 1]}}}}}),
    Case("uniform-low-high", "uniform needs [low, high] with low < high",
         {"params": {"random": {"n": 5, "columns": {"a": {"uniform": [1, 0]}}}}}),
    Case("bounds-low-high", "bounds of 'a' need [low, high] with low < high",
         {"params": {"lhs": {"n": 5, "bounds": {"a": [2, 1], "b": [0, 1]}}}}),
    # --- the function
    Case("module-missing", "function: cannot import module 'nosuchmodule'",
         {"function": "nosuchmodule:f"}),
    Case("attribute-missing", "function: 'tests.funcs' has no attribute 'nope'",
         {"function": "tests.funcs:nope"}),
    Case("not-callable", "is not callable", {"function": "tests.funcs:_attempts"}),
    Case("file-missing", "function: file 'missing.py' not found", {"function": "missing.py:f"}),
    Case("no-colon", "function: use 'package.module:function'", {"function": "no-colon"}),
    Case("kwargs-unexpected", "parameter(s) x, y match no argument",
         {"params": {"grid": {"x": [1], "y": [2]}}}),
    Case("kwargs-missing", "argument(s) b get no parameter", {"params": {"grid": {"a": [1, 2]}}}),
    Case("row-two-args", "cannot be called with one list of values", {"call": "row"}),
    Case("command-field", "the command template names 'zzz'",
         {"function": ["echo", "{zzz}"], "call": "command"}),
    Case("command-and-row", "a command list needs call: command",
         {"function": ["./x"], "call": "row"}),
    # --- parameters named like output columns, in every source
    Case("grid-result", "params.grid: parameter(s) 'result' are named like output columns",
         {"params": {"grid": {"result": [1, 2], "b": [0, 5]}}, "function": "tests.funcs:row_sum",
          "call": "row"}),
    Case("random-item", "params.random: parameter(s) 'item' are named like output columns",
         {"params": {"random": {"n": 4, "columns": {"item": {"uniform": [0, 1]}}}},
          "function": "tests.funcs:row_sum", "call": "row"}),
    Case("lhs-status", "params.lhs: parameter(s) 'status' are named like output columns",
         {"params": {"lhs": {"n": 4, "bounds": {"status": [0, 1]}}},
          "function": "tests.funcs:row_sum", "call": "row"}),
    Case("sobol-duration", "params.sobol: parameter(s) 'duration_s' are named like output columns",
         {"params": {"sobol": {"n": 4, "bounds": {"duration_s": [0, 1]}}},
          "function": "tests.funcs:row_sum", "call": "row"}),
    Case("dataset-error-attempts", "params.dataset: parameter(s) 'error', 'attempts' are named like",
         setup=dataset(lambda t: parquet(t / "p.parquet", error=[1], attempts=[2])),
         fields={"function": "tests.funcs:row_sum", "call": "row"}),
    Case("result-key-clash", "function: it returns key(s) 'a', named like parameter or output",
         {"function": "tests.funcs:result_key_clash"}, validate=False),
    # --- datasets
    Case("dataset-missing", "params.dataset: /definitely/not/here.parquet does not exist",
         {"params": {"dataset": "/definitely/not/here.parquet"}}),
    Case("dataset-empty-file", "params: the dataset source has no items",
         setup=dataset(lambda t: parquet(t / "e.parquet", a=[], b=[]))),
    Case("dataset-empty-dir", "holds no files",
         setup=dataset(lambda t: (t / "empty").mkdir() or str(t / "empty"))),
    Case("dataset-mixed-schemas", "has columns ['a', 'c'], other files have ['a', 'b']",
         setup=dataset(mixed_schemas)),
    Case("dataset-corrupt", "cannot read", setup=dataset(corrupt)),
    Case("dataset-unknown-format", "cannot tell the format",
         setup=dataset(lambda t: (t / "w.txt").write_text("x") and str(t / "w.txt"))),
    # --- the output
    Case("output-other-sweep", "holds a different sweep", setup=other_sweep, validate=False),
    Case("output-stray-partitions", "holds partition files but no _manifest.json",
         setup=stray_partitions, validate=False),
    Case("output-under-a-file", "storage refused", setup=under_a_file, validate=False),
    Case("output-missing-bucket", "output s3://no-such-bucket-here/x", {"output": "s3://no-such-bucket-here/x"},
         validate=False, s3=True),
    Case("kubernetes-local-output", "is a local path, but workers on Kubernetes write",
         {"cluster": {"kind": "kubernetes"}}, args=("--cluster", "kubernetes")),
    Case("bad-storage-option", "check the URL and storage_options",
         {"storage_options": {"no_such_option": 1}}, validate=False, s3=True),
    # --- the cluster
    Case("scheduler-unreachable", "cannot reach the Dask scheduler at tcp://127.0.0.1:9",
         validate=False, code=3, args=("--scheduler", "tcp://127.0.0.1:9")),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, cli_env, s3, dask_cluster):
    spec = base_spec(tmp_path)
    if case.s3:
        spec["output"] = f"{s3}/out"
    spec.update(case.fields)
    path = case.setup(tmp_path, spec) if case.setup else None
    path = path or write(tmp_path, spec)
    before = _listing(tmp_path / "out")
    env = dict(cli_env, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="3s")
    commands = ["validate", "run"] if case.validate else ["run"]
    for cmd in commands:
        args = [cmd, path]
        if cmd == "run":  # quiet: the error is the only line, even after progress lines
            args += ["--quiet", *(case.args or ("--scheduler", dask_cluster.scheduler_address))]
        r = sweep(*args, env=env, cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == case.code, (cmd, r.returncode, r.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (cmd, r.stderr)
        assert case.message in lines[0], (cmd, lines[0])
        assert "Traceback" not in r.stderr + r.stdout
    assert _listing(tmp_path / "out") == before, "the output changed"
    if case.s3:
        import s3fs

        fs = s3fs.S3FileSystem()
        assert fs.ls(BUCKET) == [], "something was written to the bucket"


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30


def test_missing_credentials(tmp_path, cli_env, s3, dask_cluster):
    spec = {**base_spec(tmp_path), "output": f"{s3}/out"}
    path = write(tmp_path, spec)
    env = {
        k: v
        for k, v in cli_env.items()
        if not k.startswith("AWS_") or k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
    }
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    r = sweep("run", path, "--scheduler", dask_cluster.scheduler_address, env=env, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and f"output {s3}/out" in lines[0] and "credentials" in lines[0]


def _listing(path: Path) -> dict[str, bytes] | None:
    if not path.exists():
        return None
    return {
        str(p.relative_to(path)): p.read_bytes() if p.is_file() else b""
        for p in sorted(path.rglob("*"))
    }


def test_invalid_credentials(tmp_path, cli_env, s3_auth_server, dask_cluster):
    """A server that knows no key refuses them: exit 2, the output URL named, nothing left."""
    spec = {
        **base_spec(tmp_path),
        "output": "s3://private/out",
        "storage_options": {"client_kwargs": {"endpoint_url": s3_auth_server}},
    }
    path = write(tmp_path, spec)
    env = dict(cli_env, AWS_ENDPOINT_URL=s3_auth_server)
    r = sweep("run", path, "-q", "--scheduler", dask_cluster.scheduler_address, env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: output s3://private/out"), r.stderr
    assert "storage refused" in lines[0] and "credentials" in lines[0]
