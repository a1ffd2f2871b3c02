"""Results at any scale: the out-of-core summary (runner.results) checked against pandas
on the same files, locally and on S3 (moto), and its renderers (terminal, --json, PNG/SVG,
the HTML report in a real headless Chromium)."""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import runner
from runner.exceptions import SpecError
from runner.results import SweepOutput
from runner.spec import build_spec
from tests.clitools import sweep

pytestmark = pytest.mark.timeout(120)

N = 3000
SPEC = {
    "name": "analysis",
    "function": "examples.montecarlo:response",
    "params": {
        "random": {
            "n": N,
            "seed": 3,
            "columns": {
                "a": {"uniform": [0, 1]},
                "b": {"uniform": [0, 1]},
                "kind": {"choice": ["x", "y", "w"]},
            },
        }
    },
    "partition_size": 400,
    "max_failures": N,
}


@pytest.fixture(scope="module")
def output(dask_cluster, tmp_path_factory) -> Path:
    """One finished sweep of :func:`examples.montecarlo.response`: ``y`` follows ``a``, ``z``
    follows ``kind``, items with ``b > 0.9`` fail."""
    from distributed import Client

    out = tmp_path_factory.mktemp("results") / "out"
    with Client(dask_cluster) as client:
        report = runner.execute.run_sweep(build_spec({**SPEC, "output": str(out)}), client=client)
    assert report.items == N and report.errors > 0
    return out


@pytest.fixture(scope="module")
def table(output) -> pd.DataFrame:
    return pd.read_parquet(output).sort_values("item").reset_index(drop=True)


def _bins(x: pd.Series, n: int = 10) -> pd.Series:
    """The summary's binning, written independently: equal width from the parameter's min
    to its max over all items (failed ones too)."""
    lo, hi = x.min(), x.max()
    return np.clip(np.floor((x - lo) / (hi - lo) * n), 0, n - 1).astype(int)


# --------------------------------------------------------------------------- the numbers


def test_summary_matches_pandas_on_the_same_files(output, table):
    s = SweepOutput(str(output)).analyse(top=5, bottom=3)
    ok = table[table["status"] == "ok"]
    assert (s["items_done"], s["ok"], s["errors"]) == (N, len(ok), N - len(ok))
    assert s["parameters"] == ["a", "b", "kind"] and s["results"] == ["y", "z"]
    want = ok["y"].describe()
    got = s["describe"]["y"]
    for k in ("count", "mean", "std", "min", "25%", "50%", "75%", "max"):
        assert got[k] == pytest.approx(want[k], rel=1e-9), k

    # first-order sensitivity: between-bin variance over total variance, from pandas
    for y, x in (("y", "a"), ("y", "b"), ("z", "kind"), ("z", "a")):
        groups = (_bins(table[x]) if x != "kind" else table[x])[ok.index]
        means = ok.groupby(groups)[y].agg(["mean", "count"])
        between = (means["count"] * (means["mean"] - ok[y].mean()) ** 2).sum()
        want_share = between / (ok[y].var(ddof=0) * len(ok))
        assert s["sensitivity"][y][x] == pytest.approx(want_share, abs=1e-6), (y, x)
    assert next(iter(s["sensitivity"]["y"])) == "a" and s["sensitivity"]["y"]["a"] > 0.95
    assert next(iter(s["sensitivity"]["z"])) == "kind" and s["sensitivity"]["z"]["kind"] > 0.95
    # the effects of a on y: per bin, the mean rises, p10 < mean < p90
    bins = s["effects"]["y"]["a"]["bins"]
    assert len(bins) == 10 and sum(b["items"] for b in bins) == len(ok)
    means = [b["mean"] for b in bins]
    assert means == sorted(means)
    assert all(b["p10"] < b["mean"] < b["p90"] for b in bins)
    by_kind = {b["bin"]: b for b in s["effects"]["z"]["kind"]["bins"]}
    assert by_kind["x"]["mean"] == pytest.approx(ok[ok["kind"] == "x"]["z"].mean())

    # where it fails: every error in b's last bin, the bins' counts add up to all items
    fails = s["failures_by_parameter"]["b"]
    assert sum(f["items"] for f in fails) == N
    assert sum(f["errors"] for f in fails) == s["errors"] == fails[-1]["errors"]
    assert fails[-1]["lo"] < 0.9 < fails[-1]["hi"]
    # one kind of error (the messages differ only in their numbers), with an example
    (err,) = s["top_errors"]
    assert err["count"] == s["errors"] and err["pattern"].startswith("ValueError: unstable for b=#")
    # where it was raised, though the function travels by value (cloudpickle: <dynamic-code>)
    assert "(at montecarlo.py:27 in response)" in err["error"]
    assert err["example_params"]["b"] > 0.9
    assert err["example_item"] == table[table["status"] == "error"]["item"].min()

    # top and bottom items, with their parameters
    assert [r["item"] for r in s["top"]] == ok.nlargest(5, "y")["item"].tolist()
    assert [r["item"] for r in s["bottom"]] == ok.nsmallest(3, "y")["item"].tolist()
    assert set(s["top"][0]) == {"item", "a", "b", "kind", "z", "y"}

    # the heat map over a and b (y's two most influential), and the time
    h = s["heatmaps"]["y"]
    assert (h["x"], h["y"]) == ("a", "b") and len(h["mean"]) == len(h["y_bins"])
    assert s["time"]["partitions"]["count"] == s["partitions_done"]
    assert s["time"]["duration_s"]["count"] == N


def test_where_narrows_the_analysis_not_the_counts(output, table):
    s = SweepOutput(str(output)).analyse(where="kind = 'x' AND a < 0.5")
    sub = table[(table["kind"] == "x") & (table["a"] < 0.5) & (table["status"] == "ok")]
    assert s["ok"] + s["errors"] == N
    assert s["describe"]["y"]["count"] == len(sub)
    assert s["describe"]["y"]["max"] == pytest.approx(sub["y"].max())
    with pytest.raises(SpecError, match="--where 'nope > 1'"):
        SweepOutput(str(output)).analyse(where="nope > 1")


def test_the_summary_on_s3_is_the_local_one(output, s3):
    import s3fs

    s3fs.S3FileSystem().put(str(output) + "/", f"{s3}/copy/", recursive=True)
    local = SweepOutput(str(output)).analyse(top=3)
    calls = _S3Calls()
    logger = logging.getLogger("s3fs")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(calls)
    try:
        remote = SweepOutput(f"{s3}/copy").analyse(top=3)
    finally:
        logger.removeHandler(calls)
        logger.setLevel(level)
    for s in (local, remote):
        s.pop("output")
    _assert_close(remote, local)
    # the scans' file opens are answered from the one listing: no HEAD per file per scan
    parts = len(list(output.glob("part-*.parquet")))
    assert parts >= 5
    assert calls.count["get_object"] >= parts, calls.count  # (the count is of real requests)
    assert calls.count["head_object"] <= 2, calls.count  # _SUCCESS and the manifest at most


class _S3Calls(logging.Handler):
    """Counts the S3 requests s3fs logs (``CALL: head_object - ...``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        m = re.match(r"CALL: (\w+)", record.getMessage())
        if m:
            self.count[m.group(1)] += 1


def _assert_close(got, want, where="summary"):
    """Equal, floats to 1e-9 (parallel sums add in any order)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for k in want:
            _assert_close(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), where
    else:
        assert got == want, where


def test_load_results_pushes_filters_and_columns_down(output, table):
    df = runner.load_results(str(output), columns=["item", "b", "y"], where="b > 0.5 AND y > 5")
    want = table[(table["b"] > 0.5) & (table["y"] > 5)]
    assert list(df.columns) == ["item", "b", "y"]
    assert df["item"].tolist() == want["item"].tolist()
    rel = runner.open_results(str(output))
    got = rel.filter("status = 'error'").aggregate("count(*)").fetchall()[0][0]
    assert got == (table["status"] == "error").sum()
    with pytest.raises(SpecError, match="--where"):
        runner.load_results(str(output), where="b >>> 1")


def test_other_readers_read_the_output_as_is(output, table):
    import dask.dataframe as dd
    import duckdb
    import polars as pl

    assert len(dd.read_parquet(str(output)).compute()) == N
    assert pl.scan_parquet(f"{output}/*.parquet").select(pl.len()).collect().item() == N
    got = duckdb.sql(f"SELECT avg(y) FROM '{output}/*.parquet' WHERE status = 'ok'").fetchall()
    assert got[0][0] == pytest.approx(table[table["status"] == "ok"]["y"].mean())


def test_timeouts_and_killed_workers_are_named_with_their_items(dask_cluster, tmp_path):
    from distributed import Client

    spec = {
        "function": "tests.funcs:hang_or_crash",
        "params": {"grid": {"a": list(range(10)), "b": [0, 1]}},
        "output": str(tmp_path / "out"),
        "timeout": 1.0,
        "partition_size": 10,
        "max_failures": 20,
    }
    with Client(dask_cluster) as client:
        runner.execute.run_sweep(build_spec(spec), client=client)
    s = SweepOutput(str(tmp_path / "out")).analyse()
    timed_out, killed = s["failures"]["timed_out"], s["failures"]["killed_worker"]
    assert timed_out["count"] == 2 and {i["params"]["a"] for i in timed_out["items"]} == {5}
    assert killed["count"] == 2 and {i["params"]["a"] for i in killed["items"]} == {7}


# --------------------------------------------------------------------------- the CLI


def test_cli_json_terminal_csv_and_plots(output, table, tmp_path, cli_env):
    r = sweep("results", output, "--json", "--top", "3", "--by", "z", env=cli_env)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    for key in ("sensitivity", "failures_by_parameter", "effects", "heatmaps", "top", "time"):
        assert key in s, key
    assert s["by"] == "z" and len(s["top"]) == 3 and "bottom" not in s
    r = sweep("results", output, env=cli_env)
    assert r.returncode == 0, r.stderr
    assert "what the parameters do" in r.stdout and "where it fails" in r.stdout
    assert "│ [0.8998, 0.9998] │" in r.stdout and "100.0%" in r.stdout  # b's last bin
    csv, png, svg = tmp_path / "r.csv", tmp_path / "r.png", tmp_path / "r.svg"
    r = sweep("results", output, "--csv", csv, "--plot", png, "--where", "y > 5", env=cli_env)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(csv)
    assert df["item"].tolist() == table[table["y"] > 5]["item"].tolist()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = sweep("results", output, "--plot", svg, env=cli_env)
    assert r.returncode == 0, r.stderr
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg.read_text())
    assert root.tag.endswith("svg") and len(root.findall("{http://www.w3.org/2000/svg}svg")) >= 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "nope > 1"], "--where 'nope > 1'"),
        (["--top", "3", "--by", "nope"], "--by 'nope'"),
        (["--bins", "0"], "--bins 0"),
    ],
)
def test_cli_bad_options_exit_2_and_write_nothing(output, tmp_path, cli_env, args, message):
    csv = tmp_path / "r.csv"
    r = sweep("results", output, "--csv", csv, *args, env=cli_env)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_summary_memory_stays_bounded(dask_cluster, tmp_path, cli_env):
    """A 10^6-item output summarised under the scans' memory limit (the 10^8 figure is
    make bench's, W7): the `sweep results` process's peak RSS."""
    from distributed import Client

    out = tmp_path / "big"
    spec = {
        "function": "tests.funcs:add_batch",
        "call": "batch",
        "params": {"random": {"n": 1_000_000, "seed": 1, "columns": {
            "a": {"uniform": [0, 1]}, "b": {"integers": [0, 50]}}}},
        "output": str(out),
        "partition_size": 100_000,
    }  # fmt: skip
    with Client(dask_cluster) as client:
        runner.execute.run_sweep(build_spec(spec), client=client)
    probe = (
        "import resource, subprocess, sys; "
        "r = subprocess.run(sys.argv[1:], capture_output=True); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    exe = str(Path(sys.executable).parent / "sweep")
    r = subprocess.run(
        [sys.executable, "-c", probe, exe, "results", str(out), "--json", "--top", "5"],
        capture_output=True, text=True, env=cli_env, timeout=120,
    )  # fmt: skip
    code, rss_kb = map(int, r.stdout.split())
    assert code == 0, r.stderr
    assert rss_kb / 1024 < 400, f"peak RSS {rss_kb / 1024:.0f} MB"


# --------------------------------------------------------------------------- the report


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_opens_in_a_headless_browser(output, tmp_path, cli_env):
    """`sweep report`: one self-contained page, no console errors, every figure drawn."""
    report = tmp_path / "report.html"
    r = sweep("report", output, "-o", report, env=cli_env)
    assert r.returncode == 0, r.stderr
    text = report.read_text()
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    s = json.loads(sweep("results", output, "--json", env=cli_env).stdout)
    # the report's numbers are the summary's
    assert f"{s['sensitivity']['y']['a']:.1%}" in text and f"{s['errors']:,}" in text
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("SWEEP_TEST_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (make test installs Debian's chromium)")
        pytest.skip("chromium is not installed (make test installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            figures = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth, e.naturalHeight])"
            )
            sections = page.eval_on_selector_all("section", "els => els.map(e => e.id)")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    # effects and heat map per result, and the failure map
    assert len(figures) == 5, figures
    assert all(done and w > 100 and h > 100 for _, done, w, h in figures), figures
    assert {"status", "results", "parameters", "failures", "time", "spec"} <= set(sections)
    assert (tmp_path / "report.png").stat().st_size > 10_000
