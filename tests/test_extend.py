"""Extending a sweep: more items of a random/sobol/halton source (or values appended to a
grid's first axis) on an existing output run only the new items; the first ones are the
same values by construction; what cannot be extended says why."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

import runner
from runner.exceptions import OutputConflictError
from runner.execute import run_sweep
from runner.spec import build_spec
from runner.store import Store
from tests.clitools import kill_after, sweep

pytestmark = pytest.mark.timeout(180)


def _source(kind: str, n: int) -> dict:
    if kind == "random":
        return {"random": {"n": n, "seed": 5, "columns": {"a": {"uniform": [0, 1]},
                                                          "b": {"normal": [0, 1]}}}}  # fmt: skip
    return {kind: {"n": n, "seed": 5, "bounds": {"a": [0, 1], "b": [-1, 1]}}}


def _spec(out: str, params: dict, **fields) -> dict:
    return {
        "name": "extended",
        "function": "tests.funcs:add",
        "params": params,
        "partition_size": 64,
        "output": out,
        **fields,
    }


def _table(url: str) -> pd.DataFrame:
    return runner.load_results(url).set_index("item")


def _check_extension(client, out: str, tmp_path, kind: str, n0: int, n1: int) -> None:
    run_sweep(build_spec(_spec(out, _source(kind, n0))), client=client)
    before = _table(out)
    bigger = build_spec(_spec(out, _source(kind, n1)))
    report = run_sweep(bigger, client=client)
    assert report.items == n1 and report.items_run == n1 - n0  # only the new items ran
    after = _table(out)
    assert after.index.tolist() == list(range(n1))
    pd.testing.assert_frame_equal(after.loc[: n0 - 1], before)  # kept as they were
    # the same values as a sweep of n1 items from the start
    fresh = str(tmp_path / f"fresh-{kind}")
    run_sweep(build_spec(_spec(fresh, _source(kind, n1))), client=client)
    cols = ["a", "b", "result"]
    pd.testing.assert_frame_equal(after[cols], _table(fresh)[cols])
    manifest = Store(out).read_manifest()
    assert manifest["items"] == n1 and manifest["spec_hash"] == bigger.spec_hash()
    assert [(h["items_from"], h["items_to"]) for h in manifest["history"]] == [(n0, n1)]
    assert Store(out).has_success()
    again = run_sweep(bigger, client=client)  # now it is simply this sweep: nothing to do
    assert again.partitions_run == 0


@pytest.mark.parametrize("kind", ["random", "sobol", "halton"])
def test_more_items_run_only_the_new_ones(client, tmp_path, kind):
    # 300 is not a multiple of the random source's block: its last block is drawn again
    _check_extension(client, str(tmp_path / "out"), tmp_path, kind, 300, 1000)


def test_an_extension_on_s3(client, s3, tmp_path):
    _check_extension(client, f"{s3}/ext", tmp_path, "random", 200, 450)


def test_a_grid_extends_along_its_first_axis_only(client, tmp_path):
    out = str(tmp_path / "out")
    run_sweep(build_spec(_spec(out, {"grid": {"a": [1, 2, 3], "b": [0.0, 0.5]}})), client=client)
    before = _table(out)
    report = run_sweep(
        build_spec(_spec(out, {"grid": {"a": [1, 2, 3, 4, 5], "b": [0.0, 0.5]}})), client=client
    )
    assert report.items_run == 4
    after = _table(out)
    pd.testing.assert_frame_equal(after.loc[:5], before)
    assert after.loc[6:, "a"].tolist() == [4, 4, 5, 5]
    with pytest.raises(OutputConflictError, match=r"axis b gained values.*new sweep"):
        run_sweep(
            build_spec(_spec(out, {"grid": {"a": [1, 2, 3, 4, 5], "b": [0.0, 0.5, 1.0]}})),
            client=client,
        )
    with pytest.raises(OutputConflictError, match="holds a different sweep"):  # fewer items
        run_sweep(build_spec(_spec(out, {"grid": {"a": [1, 2], "b": [0.0, 0.5]}})), client=client)


def test_cli_lhs_refused_and_sobol_warned(cli_env, tmp_path):
    spec = tmp_path / "spec.yaml"
    out = tmp_path / "out"
    spec.write_text(yaml.safe_dump(_spec(str(out), _source("lhs", 100))))
    assert sweep("run", spec, "-q", env=cli_env).returncode == 0
    manifest = (out / "_manifest.json").read_bytes()
    spec.write_text(yaml.safe_dump(_spec(str(out), _source("lhs", 200))))
    r = sweep("run", spec, env=cli_env)
    assert (
        r.returncode == 2 and "cannot be extended without breaking its stratification" in r.stderr
    )
    assert (
        len(r.stderr.strip().splitlines()) == 1
        and (out / "_manifest.json").read_bytes() == manifest
    )

    spec.write_text(yaml.safe_dump(_spec(str(tmp_path / "sobol"), _source("sobol", 100))))
    r = sweep("run", spec, env=cli_env)
    assert (
        r.returncode == 0
        and "n=100 is not a power of two" in r.stderr
        and "(use n: 64 or 128)" in r.stderr
    )
    r = sweep("plan", spec, env=cli_env)
    assert "not a power of two" in r.stdout
    spec.write_text(yaml.safe_dump(_spec(str(tmp_path / "sobol"), _source("sobol", 256))))
    r = sweep("plan", spec, env=cli_env)
    assert r.returncode == 0 and "extends the output's sweep from 100 to 256 items" in r.stdout


@pytest.mark.slow
def test_a_killed_extension_resumes(cli_env, tmp_path):
    """SIGKILL in the middle of an extension; the same command finishes it."""
    out = tmp_path / "out"
    spec = tmp_path / "spec.yaml"
    fields = _spec(str(out), _source("random", 40), function="tests.funcs:slow", partition_size=8)
    spec.write_text(yaml.safe_dump(fields))
    env = {**cli_env, "SWEEP_TEST_SLEEP": "0.05"}  # 8 items: 0.4 s a partition
    assert sweep("run", spec, "-q", env=env).returncode == 0
    before = _table(str(out))
    fields["params"] = _source("random", 400)
    spec.write_text(yaml.safe_dump(fields))
    kill_after(
        "run", spec, env=env,
        lines=[(r"extending the sweep \(random\) from 40 to 400 items", 60),
               (r": [1-9][\d,]*/400 items", 90)],
    )  # fmt: skip
    middle = _table(str(out))
    assert 40 < len(middle) < 400 and middle.index.is_unique
    r = sweep("run", spec, "--json", env=env, timeout=150)
    assert r.returncode == 0, r.stderr
    after = _table(str(out))
    assert after.index.tolist() == list(range(400))
    pd.testing.assert_frame_equal(after.loc[:39], before)
    assert (out / "_SUCCESS").exists()
