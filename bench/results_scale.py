"""W7, results at scale: `sweep results --json` on a large output, side by side with a
hand-written DuckDB query that computes the same numbers on the same files.

The output is made by the project's own sweep (``bench.funcs:response_batch``, four
parameters, two results, ``call: batch``) once per size and kept under ``--cache``. Each
contender runs in its own process, one after the other, ``--repeat`` times (the median
wall is kept); its peak RSS is the process's ``ru_maxrss``, read by a small parent that
runs nothing else. Contenders:

- ``sweep-results``: ``sweep results OUT --json --top 10`` (the whole summary: describe,
  parameter effects and sensitivity, failure map, heat maps, errors, top items, time);
- ``duckdb-handwritten``: one Python script with the same aggregates in DuckDB (default
  settings, all the machine's memory), what a user who knows DuckDB would write;
- ``pandas``: ``pd.read_parquet`` then the same numbers in pandas (the old way; only up
  to ``--pandas-max`` items: it needs the whole table in memory).

    python -m bench.results_scale                 # 10^8 items (make bench)
    python -m bench.results_scale --items 1e7     # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

PROBE = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "w = time.perf_counter() - t; "
    "print(r.returncode, w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.stderr.write(r.stderr[-2000:])"
)

HANDWRITTEN = r'''
import sys, duckdb
files = sys.argv[1] + "/part-*.parquet"
con = duckdb.connect()
con.execute(f"CREATE VIEW r AS SELECT * FROM read_parquet('{files}')")
q = "reservoir_quantile"
ok = "status = 'ok'"
# totals: describe y, z and duration_s, the parameters' ranges
con.execute(f"""SELECT count(*),
  count(y) FILTER ({ok}), avg(y) FILTER ({ok}), stddev_samp(y) FILTER ({ok}), min(y), {q}(y, [0.25,0.5,0.75]), max(y), var_pop(y) FILTER ({ok}),
  count(z) FILTER ({ok}), avg(z) FILTER ({ok}), stddev_samp(z) FILTER ({ok}), min(z), {q}(z, [0.25,0.5,0.75]), max(z), var_pop(z) FILTER ({ok}),
  avg(duration_s), stddev_samp(duration_s), min(duration_s), {q}(duration_s, [0.25,0.5,0.75]), max(duration_s),
  min(a), max(a), min(b), max(b), min(c), max(c), approx_count_distinct(kind) FROM r""").fetchall()
lo = con.execute("SELECT min(a), max(a), min(b), max(b), min(c), max(c) FROM r").fetchall()[0]
def bin(col, low, high):
    return f"LEAST(FLOOR(({col} - {low}) / {high - low} * 10), 9)"
ba, bb, bc = bin("a", lo[0], lo[1]), bin("b", lo[2], lo[3]), bin("c", lo[4], lo[5])
# per parameter bin: items, errors, mean and p10/p90 of each result
con.execute(f"""SELECT {ba} AS ka, {bb} AS kb, {bc} AS kc, kind, count(*), count_if(status = 'error'),
  count(y), avg(y), {q}(y, [0.1, 0.9]), count(z), avg(z), {q}(z, [0.1, 0.9])
  FROM r GROUP BY GROUPING SETS ((ka), (kb), (kc), (kind))""").fetchall()
# heat maps: y over a x b, z over kind x a
con.execute(f"""SELECT {ba} AS ka, {bb} AS kb, kind, avg(y), avg(z) FROM r
  GROUP BY GROUPING SETS ((ka, kb), (kind, ka))""").fetchall()
# errors and top items
con.execute("SELECT error, count(*) n, min(item) FROM r WHERE status = 'error' GROUP BY error ORDER BY n DESC LIMIT 5").fetchall()
con.execute("SELECT item, a, b, c, kind, z, y FROM r WHERE status = 'ok' ORDER BY y DESC LIMIT 10").fetchall()
con.execute("SELECT item, a, b, c, kind, z, y FROM r WHERE status = 'ok' ORDER BY y ASC LIMIT 10").fetchall()
'''

PANDAS = r"""
import sys, numpy as np, pandas as pd
df = pd.read_parquet(sys.argv[1])
ok = df[df["status"] == "ok"]
ok[["y", "z"]].describe(); df["duration_s"].describe()
for p in ("a", "b", "c"):
    k = np.clip(np.floor((df[p] - df[p].min()) / (df[p].max() - df[p].min()) * 10), 0, 9)
    g = ok.groupby(k[ok.index])
    g[["y", "z"]].agg(["count", "mean"]); g[["y", "z"]].quantile([0.1, 0.9])
    df.groupby(k)["status"].agg(lambda s: (s == "error").sum())
ok.groupby("kind")[["y", "z"]].agg(["count", "mean", lambda s: s.quantile(0.1), lambda s: s.quantile(0.9)])
ok.nlargest(10, "y"); ok.nsmallest(10, "y")
"""


def make_output(n: int, cache: Path) -> Path:
    """The sweep's output of ``n`` items under ``cache`` (made once; reused while complete)."""
    out = cache / f"w7-{n}"
    if (out / "_SUCCESS").exists():
        return out
    spec = {
        "name": "w7",
        "function": "bench.funcs:response_batch",
        "call": "batch",
        "params": {
            "random": {
                "n": n,
                "seed": 7,
                "columns": {
                    "a": {"uniform": [0, 1]},
                    "b": {"uniform": [0, 1]},
                    "c": {"uniform": [0, 1]},
                    "kind": {"choice": ["x", "y", "w"]},
                },
            }
        },
        "output": str(out),
        "cluster": {"workers": 2},
    }
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"w7-{n}.yaml"
    path.write_text(yaml.safe_dump(spec))
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sweep = str(Path(sys.executable).parent / "sweep")
    subprocess.run([sweep, "run", str(path), "--overwrite", "--quiet"], check=True, env=env)
    print(f"made {out} ({n:,} items) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return out


def measure(cmd: list[str]) -> tuple[float, float]:
    """(wall s, peak RSS MB) of ``cmd`` in a process of its own."""
    r = subprocess.run([sys.executable, "-c", PROBE, *cmd], capture_output=True, text=True)
    code, wall, rss = r.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({code}): {r.stderr}")
    return float(wall), int(rss) / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=float, default=1e8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pandas-max", type=float, default=1e7)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sweep-bench")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results_scale.json")
    args = ap.parse_args(argv)
    n = int(args.items)
    out = make_output(n, args.cache)
    size = sum(p.stat().st_size for p in out.iterdir())
    sweep = str(Path(sys.executable).parent / "sweep")
    contenders = {
        "sweep-results": [sweep, "results", str(out), "--json", "--top", "10", "--bottom", "10"],
        "duckdb-handwritten": [sys.executable, "-c", HANDWRITTEN, str(out)],
    }
    if n <= args.pandas_max:
        contenders["pandas"] = [sys.executable, "-c", PANDAS, str(out)]
    rows = []
    for name, cmd in contenders.items():
        runs = [measure(cmd) for _ in range(args.repeat)]
        rows.append(
            {
                "contender": name,
                "wall_s": statistics.median(w for w, _ in runs),
                "peak_rss_mb": max(r for _, r in runs),
                "walls": [round(w, 3) for w, _ in runs],
            }
        )
    base = next(r for r in rows if r["contender"] == "duckdb-handwritten")["wall_s"]
    print(f"W7 results at scale: {n:,} items, {size / 1e6:,.0f} MB of Parquet")
    print(f"{'contender':20s} {'wall s':>8s} {'x hand':>7s} {'peak RSS MB':>12s}")
    for r in rows:
        r["ratio"] = round(r["wall_s"] / base, 2)
        print(f"{r['contender']:20s} {r['wall_s']:8.2f} {r['ratio']:7.2f} {r['peak_rss_mb']:12.0f}")
    write_record(args.results, "W7", n, rows, parquet_mb=round(size / 1e6, 1))
    return 0


def write_record(path: Path, workload: str, items: int, rows: list, **extra: object) -> None:
    """One workload's measurements, with the machine and the time, as JSON at ``path``."""
    record = {
        "workload": workload,
        "items": items,
        **extra,
        "rows": rows,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
