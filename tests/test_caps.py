"""Cost and caps: the projection after the probe, ``max_worker_hours``/``max_cost`` stop a
sweep cleanly (``budget-exhausted``, exit 4, finished partitions kept), a rerun with a
larger cap continues, and the manifest and ``sweep results`` show what each run spent."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from runner.exceptions import BudgetExhausted
from runner.execute import run_sweep
from runner.policy import SpendCap
from runner.results import SweepOutput
from runner.spec import build_spec
from runner.store import Store
from tests.clitools import sweep

pytestmark = pytest.mark.timeout(180)
PRICE = 2.5


def _spec(tmp_path, **fields) -> dict:
    marker = tmp_path / "fixed"
    marker.touch()
    return {
        "name": "capped",
        "function": "tests.funcs:needs_fix",  # every item here sleeps `delay`
        "params": {
            "grid": {
                "a": list(range(1, 41)),
                "b": [0.5, 0.75],
                "marker": [str(marker)],
                "delay": [0.05],
            }
        },
        "partition_size": 4,  # 20 partitions of 0.2 s
        "output": str(tmp_path / "out"),
        "price_per_worker_hour": PRICE,
        **fields,
    }


def test_the_cap_stops_the_sweep_and_a_larger_one_continues(client, tmp_path):
    cap_s = 1.0
    spec = build_spec(_spec(tmp_path, max_worker_hours=cap_s / 3600))
    with pytest.raises(BudgetExhausted) as e:
        run_sweep(spec, client=client)
    first = e.value.report  # type: ignore[attr-defined]
    assert first.status == "budget-exhausted" and first.exit_code == 4
    assert 0 < first.partitions_done < first.partitions  # stopped, its work kept
    # in-flight partitions finish: past the cap by at most one partition per worker
    spent = first.worker_hours * 3600
    assert cap_s <= spent < cap_s + 2 * 1.5, spent
    assert first.cost == pytest.approx(first.worker_hours * PRICE, rel=1e-3)
    store = Store(spec.output)
    manifest = store.read_manifest()
    assert manifest["status"] == "budget-exhausted" and not store.has_success()

    with pytest.raises(BudgetExhausted) as again:  # the same cap: already spent, runs nothing
        run_sweep(spec, client=client)
    assert again.value.report.partitions_run == 0  # type: ignore[attr-defined]

    larger = build_spec(_spec(tmp_path, max_worker_hours=1.0))
    done = run_sweep(larger, client=client)
    assert done.status == "succeeded" and done.partitions_done == done.partitions
    assert done.partitions_run == first.partitions - first.partitions_done
    manifest = store.read_manifest()
    runs = manifest["runs"]
    assert [r["status"] for r in runs] == ["budget-exhausted", "budget-exhausted", "succeeded"]
    assert manifest["worker_s"] == pytest.approx(sum(r["worker_s"] for r in runs), abs=0.01)
    assert manifest["cost"] == pytest.approx(manifest["worker_hours"] * PRICE, rel=1e-3)
    # sweep results shows them
    t = SweepOutput(spec.output).analyse()["time"]
    assert t["runs"] == 3 and [r["status"] for r in t["per_run"]][-1] == "succeeded"
    assert t["cost"] == manifest["cost"] and t["worker_hours"] == manifest["worker_hours"]


def test_max_cost_is_a_cap_in_money_on_s3(client, s3, tmp_path):
    fields = _spec(tmp_path, max_cost=PRICE * 1.0 / 3600)  # one worker-second
    spec = build_spec({**fields, "output": f"{s3}/capped"})
    with pytest.raises(BudgetExhausted):
        run_sweep(spec, client=client)
    assert Store(spec.output).read_manifest()["cap"] == f"max_cost {PRICE / 3600:g}"


def test_cli_projection_exit_4_and_the_budget_notification(cli_env, tmp_path):
    import http.server
    import threading

    posted: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fields = _spec(tmp_path, max_worker_hours=3.0 / 3600)  # past the probe, not the end
        fields["notify"] = {"webhook": f"http://127.0.0.1:{server.server_address[1]}/h"}
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump(fields))
        r = sweep("run", spec, env=cli_env)
    finally:
        server.shutdown()
    assert r.returncode == 4, r.stderr
    assert "projected " in r.stderr and "for the whole sweep" in r.stderr
    reached = re.search(r"max_worker_hours 0.000833333 reached \(([\d.e-]+) worker-hours", r.stderr)
    assert reached and float(reached[1]) >= 3.0 / 3600, r.stderr  # in-flight ones may add more
    assert "budget-exhausted: stopped at " in r.stderr and "run the same command" in r.stderr
    assert "capped: budget-exhausted" in r.stdout and "cost " in r.stdout
    r = sweep("results", tmp_path / "out", env=cli_env)
    assert r.returncode == 0 and "stopped at its cap" in r.stdout and "worker-hours" in r.stdout
    assert [p["event"] for p in posted] == ["budget"]


def test_spend_cap_policy():
    cap = SpendCap(max_worker_hours=2, max_cost=3, price_per_worker_hour=2, threads_per_worker=2)
    assert cap.limit_hours == 1.5  # the lower: 3 / 2 per hour
    assert cap.hours(3600 * 2) == 1.0  # two threads for an hour: one worker-hour
    assert not cap.reached(3600 * 2.9) and cap.reached(3600 * 3)
    assert cap.cost(3600 * 2) == 2.0 and SpendCap().cost(10) is None
    assert not SpendCap().limited and not SpendCap().reached(1e12)
    assert SpendCap(max_cost=1, price_per_worker_hour=0).limit_hours is None  # free workers
    with pytest.raises(ValueError, match="max_cost needs price_per_worker_hour"):
        build_spec({"function": "m:f", "params": {"grid": {"a": [1]}}, "output": "/x",
                    "max_cost": 1})  # fmt: skip
