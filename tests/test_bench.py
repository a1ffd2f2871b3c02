"""The benchmark harness (bench/): its plan, its table, and one real run at tiny N."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import funcs, report
from bench.task import partition_bounds
from bench.workloads import RAY, plan, select

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("family", sorted(funcs.FAMILIES))
def test_call_styles_agree(family: str) -> None:
    rng = np.random.default_rng(0)
    batch = {k: rng.uniform(0, 0.001, 5) for k in "abcd"}
    styles = funcs.FAMILIES[family]
    rows = list(zip(*(batch[k].tolist() for k in "abcd"), strict=True))
    by_kwargs = [styles["kwargs"](*r) for r in rows]
    np.testing.assert_allclose([styles["row"](list(r)) for r in rows], by_kwargs)
    np.testing.assert_allclose(styles["batch"](batch), by_kwargs)


def test_partition_bounds_cover_every_item_once() -> None:
    for n, parts in [(10, 1), (10, 3), (1000, 300), (7, 300)]:
        bounds = partition_bounds(n, parts)
        assert len(bounds) <= parts
        assert [i for lo, hi in bounds for i in range(lo, hi)] == list(range(n))


def test_quick_mode_leaves_out_ray_and_w3_w4_unless_named() -> None:
    quick = select(plan("quick"), "quick")
    assert {g.workload for g in quick} == {"W1", "W2", "W5", "W6"}
    assert not {e.contender for g in quick for e in g.entries} & set(RAY)
    named = select(plan("quick"), "quick", only={"W3"}, contenders={"ray-remote", "handwritten"})
    assert [g.workload for g in named] == ["W3", "W3"]
    assert {e.contender for g in named for e in g.entries} == {"handwritten"}


def test_items_override_collapses_the_scale_groups() -> None:
    groups = select(plan("default"), "default", only={"W1", "W3"}, items=500)
    assert [(g.workload, g.n) for g in groups] == [("W1", 500), ("W3", 500)]
    w1 = groups[0]
    assert all(w1.size(e) <= 500 for e in w1.entries)


def test_ratios_are_against_the_local_handwritten_run_of_the_group() -> None:
    def rec(contender: str, io: str, ips: float, group: str = "W4-10") -> dict:
        return {
            "group": group,
            "contender": contender,
            "io": io,
            "status": "ok",
            "items_per_s": ips,
            "wall_s": 10 / ips,
        }

    records = [
        rec("handwritten", "local", 100.0),
        rec("handwritten", "s3", 50.0),
        rec("sweep-kwargs", "local", 80.0),
        rec("sweep-kwargs", "local", 1.0, group="W1-10"),
    ]
    report.add_ratios(records)
    assert [r["ratio"] for r in records] == [1.0, 0.5, 0.8, None]
    assert records[1]["s3_overhead"] == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_quick_run_measures_every_contender(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    cmd = [sys.executable, "-m", "bench", "--quick", "--only", "W1", "--items", "2000"]
    cmd += ["--contenders", "loop,handwritten,sweep-kwargs", "--results", str(results)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=85)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(results.read_text())
    assert data["machine"]["cores"] >= 1 and data["machine"]["versions"]["dask"]
    records = {r["contender"]: r for r in data["records"]}
    assert set(records) == {"loop", "handwritten", "sweep-kwargs"}
    for name, r in records.items():
        assert r["status"] == "ok", r
        assert r["n"] == r["output_rows"] == 2000
        assert r["items_per_s"] > 0 and r["wall_s"] > 0 and r["peak_rss_mb"] > 0
        assert r["output_bytes_per_item"] > 0
        assert name in proc.stdout  # the table
    assert records["handwritten"]["ratio"] == 1.0
    assert records["handwritten"]["tasks"] >= 20  # one per partition, at least


def test_child_records_failures_skips_and_short_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import child
    from bench.contenders import CONTENDERS
    from bench.task import Outcome, Skipped, Task, generate, prepare_output, write_partition
    from bench.workloads import UNIFORM4

    task = Task("W1", "zero", 10, UNIFORM4, str(tmp_path / "out"), str(tmp_path), partitions=2)

    def boom(t: Task) -> Outcome:
        raise ValueError("no")

    def skip(t: Task) -> Outcome:
        raise Skipped("lib not installed")

    def short(t: Task) -> Outcome:
        prepare_output(t.output)
        write_partition(t.output, 0, generate(t, 0, 5), [0.0] * 5)
        return Outcome()

    for name, fn in [("boom", boom), ("skip", skip), ("short", short)]:
        monkeypatch.setitem(CONTENDERS, name, fn)
    assert child.run("boom", task) == {"status": "failed", "reason": "ValueError: no"}
    assert child.run("skip", task) == {"status": "skipped", "reason": "lib not installed"}
    assert child.run("short", task) == {"status": "failed", "reason": "wrote 5 rows for 10 items"}
    ok = child.run("loop", task)
    assert ok["status"] == "ok" and ok["output_rows"] == 10 and ok["items_per_s"] > 0
