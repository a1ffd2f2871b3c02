"""GitHub Actions workflows: every workflow (and the example users copy) checked against
SchemaStore's workflow schema (vendored by check-jsonschema) and, where it is installed, by
actionlint; and the kube-e2e workflow's contract with the kube test fixtures
(tests/kube/conftest.py, tests/kube/sweeps.py)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.timeout(60)

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
KUBE_E2E = WORKFLOWS_DIR / "kube-e2e.yml"
CHECKED = [*sorted(WORKFLOWS_DIR.glob("*.y*ml")), ROOT / "examples" / "ci" / "github-actions.yml"]
SWEEP_TEST_VARS = ("SWEEP_TEST_KUBECONFIG", "SWEEP_TEST_IMAGE", "SWEEP_TEST_S3_HOST")


def _find_actionlint() -> str | None:
    # the venv's bin first (a pip-installed actionlint), then PATH
    path = os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which("actionlint", path=path)


ACTIONLINT = _find_actionlint()
needs_actionlint = pytest.mark.skipif(
    ACTIONLINT is None, reason="actionlint not found in the venv or on PATH"
)


def _actionlint(*files: pathlib.Path) -> tuple[int, list[dict]]:
    """Run actionlint on files; (exit code, errors as dicts with filepath/line/message/kind)."""
    cmd = [ACTIONLINT, "-no-color", "-format", "{{json .}}"]
    if shutil.which("shellcheck") is None:
        cmd.append("-shellcheck=")  # shellcheck is optional: check run: scripts only when present
    proc = subprocess.run(
        [*cmd, *map(str, files)], cwd=ROOT, capture_output=True, text=True, timeout=50
    )
    assert proc.returncode in (0, 1), f"actionlint failed to run:\n{proc.stdout}\n{proc.stderr}"
    errors = json.loads(proc.stdout) if proc.stdout.strip() else []
    return proc.returncode, errors or []


def _fmt(errors: list[dict]) -> str:
    return "\n".join(
        f"{e['filepath']}:{e['line']}:{e['column']}: {e['message']} [{e['kind']}]" for e in errors
    )


@needs_actionlint
@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_actionlint_clean(path):
    code, errors = _actionlint(path)
    assert code == 0 and not errors, _fmt(errors)


@needs_actionlint
def test_actionlint_reports_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on:\n"
        "  push:\n"
        "jobs:\n"
        "  test:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - run: echo ${{ steps.nope.outputs.x }}\n"  # no step with id nope
        "      - uses: actions/checkout@v4\n"
        "        run: echo both\n"  # uses and run in one step
    )
    code, errors = _actionlint(broken)
    assert code == 1, _fmt(errors)
    by_kind = {e["kind"]: e for e in errors}
    assert set(by_kind) == {"expression", "syntax-check"}, _fmt(errors)
    assert '"nope"' in by_kind["expression"]["message"], _fmt(errors)
    assert '"run"' in by_kind["syntax-check"]["message"], _fmt(errors)


def _schema_check(*files: pathlib.Path) -> subprocess.CompletedProcess:
    check = shutil.which("check-jsonschema", path=str(pathlib.Path(sys.executable).parent))
    assert check, "check-jsonschema is missing: pip install -e '.[test]'"
    return subprocess.run(
        [check, "--builtin-schema", "vendor.github-workflows", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
    )


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_workflow_schema(path):
    proc = _schema_check(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflow_schema_reports_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    timeout-minutes: soon\n"
        "    steps:\n      - uses: actions/checkout@v7\n        run: echo both\n"
    )
    proc = _schema_check(broken)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "broken.yml" in proc.stdout, proc.stdout


# ------------------------------------------------------------------- kube-e2e.yml's contract


def _load(path: pathlib.Path) -> dict:
    return yaml.safe_load(path.read_text())


def _test_kind_step() -> tuple[dict, dict, list[dict], int]:
    """(workflow, job, steps, index) of the one step that runs `make test-kind`."""
    wf = _load(KUBE_E2E)
    found = [
        (job, steps, i)
        for job in wf["jobs"].values()
        for steps in [job.get("steps", [])]
        for i, step in enumerate(steps)
        if re.search(r"\bmake\s+test-kind\b", step.get("run", ""))
    ]
    assert len(found) == 1, "kube-e2e.yml needs exactly one step that runs `make test-kind`"
    job, steps, i = found[0]
    return wf, job, steps, i


def test_kube_e2e_runs_on_push_pr_and_dispatch():
    wf = _load(KUBE_E2E)
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request", "workflow_dispatch"} <= set(on)
    assert on["push"]["branches"] == ["main"]
    for job in wf["jobs"].values():
        assert job.get("timeout-minutes"), "every job needs a timeout"


def test_kube_e2e_sets_the_fixture_variables_for_make_test_kind():
    wf, job, steps, i = _test_kind_step()
    env = {**wf.get("env", {}), **job.get("env", {}), **steps[i].get("env", {})}
    missing = [v for v in SWEEP_TEST_VARS if not str(env.get(v) or "").strip()]
    assert not missing, f"the `make test-kind` step does not set {missing}"

    # ${{ steps.ID.outputs.X }} must name a step that runs earlier in the job
    earlier_ids = {s.get("id") for s in steps[:i]}
    for var in SWEEP_TEST_VARS:
        for step_id in re.findall(r"steps\.([\w-]+)\.outputs", str(env[var])):
            assert step_id in earlier_ids, f"{var} uses step {step_id!r}, not an earlier step"

    # the image: a pinned, non-latest tag, built and loaded into kind before the tests
    image = str(env["SWEEP_TEST_IMAGE"])
    ref = re.fullmatch(r"\$\{\{\s*env\.(\w+)\s*\}\}", image)
    if ref:
        image = str({**wf.get("env", {}), **job.get("env", {})}[ref.group(1)])
    assert ":" in image and not image.endswith(":latest"), image
    before = "\n".join(s.get("run", "") for s in steps[:i])
    assert "docker build" in before or "make image" in before
    assert "kind load docker-image" in before


def test_kube_e2e_creates_kind_and_installs_the_dask_operator_first():
    _, _, steps, i = _test_kind_step()
    uses = [str(s.get("uses", "")) for s in steps[:i]]
    assert any(u.startswith("helm/kind-action@v") for u in uses)
    installs = [
        s["run"]
        for s in steps[:i]
        if re.search(r"helm\s+(upgrade\s+--install|install)\b", s.get("run", ""))
        and "dask-kubernetes-operator" in s["run"]
    ]
    assert installs, "no step before `make test-kind` installs the Dask operator with helm"
    # the chart's image tag is a chartpress placeholder: pin the version (repo) or the image tag
    assert any(re.search(r"--version\b|image\.tag=", run) for run in installs)
    assert any("--wait" in run or re.search(r"kubectl\b.*\bwait\b", run) for run in installs)


def test_kube_e2e_dumps_diagnostics_on_failure():
    _, _, steps, i = _test_kind_step()
    after = [s for s in steps[i + 1 :] if "failure()" in str(s.get("if", ""))]
    assert after, "no `if: failure()` step after the tests"
    dump = "\n".join(s.get("run", "") for s in after)
    for command in ("kubectl get all -A", "kubectl describe pods", "kubectl -n dask-operator logs"):
        assert command in dump, command
