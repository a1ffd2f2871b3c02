"""``--retry-failed``: only the failed items run again, in place, with their own seeds;
the rest of the output is untouched; a filter narrows it; a killed retry resumes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

import runner
from runner.exceptions import FailureBudgetExceeded
from runner.execute import run_sweep
from runner.results import SweepOutput
from runner.spec import build_spec
from runner.store import Store
from tests.clitools import kill_after, sweep

pytestmark = pytest.mark.timeout(180)


def _spec(out: str, marker: Path, a: list[int], delay: float = 0.0, size: int = 8) -> dict:
    return {
        "name": "retry",
        "function": "tests.funcs:needs_fix",
        "params": {
            "grid": {"a": a, "b": [0.0, 0.25, 0.5, 0.75], "marker": [str(marker)], "delay": [delay]}
        },
        "partition_size": size,
        "max_failures": 0.9,
        "output": out,
    }


def _table(url: str) -> pd.DataFrame:
    return runner.load_results(url).set_index("item")


def _check_retry(client, out: str, tmp_path: Path) -> None:
    marker = tmp_path / "fixed"
    spec = build_spec(_spec(out, marker, list(range(10))))
    first = run_sweep(spec, client=client)
    assert (first.errors, first.items) == (22, 40)  # a == 0 (4), b >= 0.5 (18)
    before = _table(out)

    marker.touch()  # the dependency is fixed
    report = run_sweep(spec, client=client, retry_failed=True)
    after = _table(out)
    failed = before["status"] == "error"
    assert (report.items_retried, report.items_fixed, report.errors) == (22, 18, 4)
    # every partition holds a failed item (each a's four b values are in one partition)
    assert report.partitions_run == report.partitions and report.items_run == 22
    # what had succeeded is untouched, to the last column
    pd.testing.assert_frame_equal(after[~failed], before[~failed])
    # what failed ran once more: attempts count across runs
    assert (after.loc[failed, "attempts"] == 2).all()
    assert after.loc[failed & (after["a"] == 0), "status"].eq("error").all()
    assert after.loc[failed & (after["a"] > 0), "status"].eq("ok").all()
    # with the item's own seed: the same numbers as a sweep that never failed
    clean = build_spec({**spec.to_dict(), "output": str(tmp_path / "clean")})
    run_sweep(clean, client=client)
    pd.testing.assert_series_equal(after["result"], _table(str(tmp_path / "clean"))["result"])

    store = Store(out)
    manifest = store.read_manifest()
    assert store.has_success() and manifest["status"] == "succeeded"
    assert manifest["runs"][-1]["retry"] == {
        "where": None, "partitions": report.partitions, "items_retried": 22, "items_fixed": 18
    }  # fmt: skip
    assert manifest["counts"]["errors"] == 4
    counts = SweepOutput(out).counts  # the rewritten footers agree with the rows
    assert sum(c.errors for c in counts) == 4 and sum(c.items for c in counts) == 40

    # a filter narrows it: only the TimeoutErrors (there are no others left)
    narrow = run_sweep(spec, client=client, retry_failed="error LIKE 'TimeoutError%'")
    assert (narrow.items_retried, narrow.items_fixed) == (4, 0)
    again = _table(out)
    assert (again.loc[again["a"] == 0, "attempts"] == 3).all()
    pd.testing.assert_frame_equal(again[again["a"] > 0], after[after["a"] > 0])


def test_retry_failed_runs_only_the_failed_items(client, tmp_path):
    _check_retry(client, str(tmp_path / "out"), tmp_path)


def test_retry_failed_on_s3(client, s3, tmp_path):
    _check_retry(client, f"{s3}/retry", tmp_path)


def test_a_filter_keeps_the_other_failures(client, tmp_path):
    marker, out = tmp_path / "fixed", str(tmp_path / "out")
    spec = build_spec(_spec(out, marker, list(range(10))))
    run_sweep(spec, client=client)
    before = _table(out)
    marker.touch()
    report = run_sweep(spec, client=client, retry_failed="error LIKE '%dependency missing%'")
    after = _table(out)
    assert (report.items_retried, report.items_fixed) == (18, 18)
    zero = after["a"] == 0
    pd.testing.assert_frame_equal(after[zero], before[zero])  # not asked for: untouched
    assert after.loc[~zero, "status"].eq("ok").all()


def test_cli_retry_refuses_bad_input_and_writes_nothing(cli_env, tmp_path):
    marker = tmp_path / "fixed"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_spec(str(tmp_path / "out"), marker, list(range(4)))))
    r = sweep("run", spec, "--retry-failed", env=cli_env)
    assert r.returncode == 2, r.stderr
    assert "holds no run of this sweep yet" in r.stderr and not (tmp_path / "out").exists()
    assert sweep("run", spec, "-q", env=cli_env).returncode == 0
    manifest = (tmp_path / "out" / "_manifest.json").read_bytes()
    for args, message in [
        (["--where", "status = 'error'"], "--where: it narrows --retry-failed"),
        (["--retry-failed", "--where", "nope > 1"], "--where 'nope > 1'"),
        (["--retry-failed", "--overwrite"], "pick one"),
    ]:
        r = sweep("run", spec, *args, env=cli_env)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert (tmp_path / "out" / "_manifest.json").read_bytes() == manifest
    marker.touch()
    r = sweep("run", spec, "--retry-failed", "--json", env=cli_env)
    assert r.returncode == 0, r.stderr
    assert "retrying 10 failed item(s) in 2 partition(s)" in r.stderr
    assert '"items_retried": 10, "items_fixed": 6' in r.stdout


@pytest.mark.slow
def test_a_killed_retry_resumes(cli_env, tmp_path):
    """SIGKILL in the middle of --retry-failed: every partition is as it was or rewritten
    whole, and the same command finishes the rest; each failed item ran exactly twice."""
    marker, out = tmp_path / "fixed", tmp_path / "out"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_spec(str(out), marker, list(range(1, 51)), 0.1, 10)))
    assert sweep("run", spec, "-q", env=cli_env).returncode == 0
    before = _table(str(out))
    failed = before["status"] == "error"
    assert failed.sum() == 100

    marker.touch()  # now each failed item takes 0.1 s: 20 partitions of 1 s each
    kill_after(
        "run", spec, "--retry-failed", env=cli_env,
        lines=[(r"retrying 100 failed item\(s\) in 20 partition\(s\)", 60),
               (r": [1-9]\d*/100 items", 60)],
    )  # fmt: skip
    middle = _table(str(out))
    assert middle.index.is_unique and len(middle) == 200  # no partition lost or doubled
    fixed = (middle["status"] == "ok") & failed
    assert 0 < fixed.sum() < 100, fixed.sum()

    r = sweep("run", spec, "--retry-failed", "--json", env=cli_env, timeout=120)
    assert r.returncode == 0, r.stderr
    after = _table(str(out))
    assert after["status"].eq("ok").all()
    assert (after.loc[failed, "attempts"] == 2).all()  # once in the first run, once retried
    assert after["error"].isna().all()  # (all null now: DuckDB's frame types it otherwise)
    pd.testing.assert_frame_equal(
        after[~failed].drop(columns="error"), before[~failed].drop(columns="error")
    )
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert (out / "_SUCCESS").exists()


def test_a_retry_that_cannot_succeed_stops_early(client, tmp_path):
    """Retried items that fail again stop the retry once ``max_failures`` can no longer
    hold, not after every partition ran; a filtered retry of a sweep already past its
    budget is not refused, it runs what was asked for."""
    out = str(tmp_path / "out")
    fields = {
        "name": "broken",
        "function": "tests.funcs:broken_after",
        "params": {"grid": {"a": list(range(40)), "delay": [0.05]}},
        "partition_size": 4,
        "max_failures": 40,
        "output": out,
    }
    assert run_sweep(build_spec(fields), client=client).errors == 40
    strict = build_spec({**fields, "max_failures": 3})
    with pytest.raises(FailureBudgetExceeded) as ei:
        run_sweep(strict, client=client, retry_failed=True)
    report = ei.value.report
    assert report.status == "failed" and 0 < report.partitions_run < 10, report
    after = _table(out)
    assert len(after) == 40 and after["status"].eq("error").all()  # nothing lost
    # the partitions running at the stop finished and are in the report, none came later
    assert set(after["attempts"]) == {1, 2} and (after["attempts"] == 2).sum() == report.items_run

    with pytest.raises(FailureBudgetExceeded) as ei:
        run_sweep(strict, client=client, retry_failed="a >= 36")
    assert ei.value.report.items_retried == 4 and ei.value.report.partitions_run == 1
    last = _table(out)
    assert (last["attempts"] - after["attempts"]).to_dict() == {i: int(i >= 36) for i in range(40)}


def test_cli_says_the_retry_stopped_past_the_budget(cli_env, dask_cluster, tmp_path):
    fields = {
        "name": "broken",
        "function": "tests.funcs:broken_after",
        "params": {"grid": {"a": list(range(40)), "delay": [0.05]}},
        "partition_size": 4,
        "max_failures": 40,
        "output": str(tmp_path / "out"),
    }
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(fields))
    scheduler = ("--scheduler", dask_cluster.scheduler_address)
    assert sweep("run", spec, *scheduler, "-q", env=cli_env).returncode == 0
    spec.write_text(yaml.safe_dump({**fields, "max_failures": 3}))
    r = sweep("run", spec, *scheduler, "--retry-failed", env=cli_env)
    assert r.returncode == 1, r.stderr
    assert "past the failure budget (max_failures), stopping: waiting up to" in r.stderr
    assert "Send the signal again" not in r.stderr and "Traceback" not in r.stderr
    assert 0 < (_table(fields["output"])["attempts"] == 2).sum() < 40


def test_timed_out_items_are_retried_in_their_child_processes(client, tmp_path):
    """Items that timed out run again isolated (``timeout``), and succeed once fixed."""
    marker, out = tmp_path / "fixed", str(tmp_path / "out")
    spec = build_spec(
        {
            "name": "timeouts",
            "function": "tests.funcs:hangs_until_fixed",
            "params": {"grid": {"a": [1, 2, 3], "b": [0.0, 0.75], "marker": [str(marker)]}},
            "timeout": 1,
            "max_failures": 0.9,
            "output": out,
        }
    )
    first = run_sweep(spec, client=client)
    assert first.errors == 3
    assert _table(out).query("status == 'error'")["error"].str.startswith("timed out").all()
    marker.touch()
    report = run_sweep(spec, client=client, retry_failed="error LIKE 'timed out%'")
    assert (report.items_retried, report.items_fixed, report.errors) == (3, 3, 0)
    after = _table(out)
    assert after["status"].eq("ok").all() and after["result"].eq(after["a"] + after["b"]).all()


def test_runner_sweep_retry_failed(client, s3, tmp_path):
    """The Python API, on S3: ``runner.sweep(..., retry_failed=True)``."""
    marker, out = tmp_path / "fixed", f"{s3}/api-retry"
    fields = _spec(out, marker, [1, 2, 3])
    call = dict(
        output=out, client=client, partition_size=fields["partition_size"],
        max_failures=fields["max_failures"], name="api",
    )  # fmt: skip
    first = runner.sweep(fields["function"], fields["params"], **call)
    assert first.errors == 6
    marker.touch()
    again = runner.sweep(fields["function"], fields["params"], retry_failed=True, **call)
    assert (again.items_retried, again.items_fixed, again.errors) == (6, 6, 0)
    assert (_table(out)["status"] == "ok").all()
