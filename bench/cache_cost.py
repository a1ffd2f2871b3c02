"""W8, what the cache costs: the same zero-work sweep of 10^6 items run without a cache,
with an empty one (every item looked up, missed, computed and written to it), and with a
full one (every item found: nothing runs), each its own ``sweep run`` process, side by
side. The issue's target: the lookup on a zero-work sweep costs at most 20 % of the sweep.

    python -m bench.cache_cost                # 10^6 items (make bench)
    python -m bench.cache_cost --items 1e5    # quicker
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from bench.results_scale import measure, write_record

ROOT = Path(__file__).resolve().parent.parent


def spec(n: int, out: Path, cache: Path | None) -> dict:
    columns = {c: {"uniform": [0, 1]} for c in "abcd"}
    s = {
        "name": "cache-cost",
        "function": "bench.funcs:zero_work",
        "params": {"random": {"n": n, "seed": 1, "columns": columns}},
        "output": str(out),
        "cluster": {"workers": 2},
    }
    if cache is not None:
        s["cache"] = str(cache)
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=float, default=1e6)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "cache_cost.json")
    args = ap.parse_args(argv)
    n = int(args.items)
    work = Path(tempfile.mkdtemp(prefix="sweep-cache-bench-"))
    sweep = str(Path(sys.executable).parent / "sweep")
    env_path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    os.environ["PYTHONPATH"] = env_path
    rows: dict[str, list[float]] = {"no cache": [], "empty cache": [], "full cache": []}
    try:
        for _ in range(args.repeat):
            for name in rows:
                cache = None if name == "no cache" else work / "cache"
                if name == "empty cache":
                    shutil.rmtree(work / "cache", ignore_errors=True)
                path = work / "spec.yaml"
                path.write_text(yaml.safe_dump(spec(n, work / "out", cache)))
                wall, _ = measure([sweep, "run", str(path), "--json", "--quiet", "--overwrite"])
                rows[name].append(wall)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(rows["no cache"])
    print(f"W8 the cache's cost: zero-work sweep of {n:,} items, median of {args.repeat}")
    print(f"{'contender':14s} {'wall s':>8s} {'x no cache':>11s}")
    out = []
    for name, walls in rows.items():
        w = statistics.median(walls)
        out.append({"contender": name, "wall_s": w, "ratio": round(w / base, 3), "walls": walls})
        print(f"{name:14s} {w:8.2f} {w / base:11.2f}")
    write_record(args.results, "W8", n, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
