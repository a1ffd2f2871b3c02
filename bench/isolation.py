"""What isolating items in a child process costs, per item, on the zero-work sweep.

Side by side on one LocalCluster (2 worker processes x 1 thread, started once): the same
random-source sweep (4 uniform parameters, Parquet written) with the items run in the
worker (the default) and with ``isolation: process``, for the kwargs and row call
styles; each run ``--repeat`` times, the median wall taken. Prints a table and the
extra cost per item; writes ``bench/isolation.json``.

    python -m bench.isolation            # 10^6 items
    python -m bench.isolation --quick    # 2 x 10^5 items
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import runner
from runner.spec import build_spec

ROOT = Path(__file__).resolve().parent.parent


def run_once(client, n: int, call: str, isolation: str, out: str) -> float:
    function = "bench.funcs:zero_work" if call == "kwargs" else "bench.funcs:zero_work_row"
    spec = build_spec(
        {
            "name": "bench-isolation",
            "function": function,
            "call": call,
            "isolation": isolation,
            "params": {"random": {"n": n, "columns": {k: {"uniform": [0, 1]} for k in "abcd"}}},
            "output": out,
        }
    )
    t0 = time.perf_counter()
    report = runner.execute.run_sweep(spec, client=client, overwrite=True)
    wall = time.perf_counter() - t0
    assert report.ok == n, report
    return wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    n = args.items or (200_000 if args.quick else 1_000_000)

    from distributed import Client, LocalCluster

    sys.path.insert(0, str(ROOT))
    rows = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        client.run(sys.path.insert, 0, str(ROOT))
        for call in ("kwargs", "row"):
            walls = {}
            for isolation in ("auto", "process"):
                run_once(client, min(n, 20_000), call, isolation, f"{tmp}/warm")  # warm-up
                times = [
                    run_once(client, n, call, isolation, f"{tmp}/{call}-{isolation}")
                    for _ in range(args.repeat)
                ]
                walls[isolation] = statistics.median(times)
            extra = (walls["process"] - walls["auto"]) / n
            rows.append(
                {
                    "call": call,
                    "items": n,
                    "inline_s": round(walls["auto"], 3),
                    "isolated_s": round(walls["process"], 3),
                    "inline_items_per_s": round(n / walls["auto"]),
                    "isolated_items_per_s": round(n / walls["process"]),
                    "ratio_isolated_to_inline": round(walls["auto"] / walls["process"], 3),
                    "extra_us_per_item": round(extra * 1e6, 3),
                }
            )
    print(
        f"{'call':8} {'items':>10} {'inline s':>9} {'isolated s':>11} {'ratio':>6} {'+us/item':>9}"
    )
    for r in rows:
        print(
            f"{r['call']:8} {r['items']:>10,} {r['inline_s']:>9.2f} {r['isolated_s']:>11.2f}"
            f" {r['ratio_isolated_to_inline']:>6.2f} {r['extra_us_per_item']:>9.2f}"
        )
    (Path(__file__).parent / "isolation.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
