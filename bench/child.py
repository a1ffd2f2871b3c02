"""Runs one contender on one task in this fresh process: ``python -m bench.child JOB.json``.

The job file names the contender, the task and where to write the record. The wall time is
the contender call's (cluster start and stop included); the peak RSS is this process's
(:func:`own_peak_rss_mb`) taken right after it (or the driving process's the contender measured). Then
the output is checked: as many rows as items, its size in bytes, and for the sleep workload
the ideal wall (sum of the sleep times over the slots).
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.contenders import CONTENDERS
from bench.task import Skipped, Task


def own_peak_rss_mb() -> float:
    """This process's peak RSS in MB: ``VmHWM`` of /proc/self/status.

    Not ``ru_maxrss``: Linux carries that across ``exec``, so a child of a big harness would
    report at least the harness's RSS at the time of the fork.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB where not Linux


def inspect_output(task: Task) -> dict[str, Any]:
    """Rows and bytes of the output (files starting with ``_`` or ``.`` are not rows)."""
    import fsspec
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    fs, root = fsspec.core.url_to_fs(task.output)
    dataset = ds.dataset(root, filesystem=fs, format="parquet")
    info: dict[str, Any] = {"output_rows": dataset.count_rows(), "output_bytes": fs.du(root)}
    if task.family == "sleep":
        sleep_s = pc.sum(dataset.to_table(columns=["a"])["a"]).as_py()
        info["ideal_s"] = sleep_s / task.slots
    return info


def run(contender: str, task: Task) -> dict[str, Any]:
    """Run ``contender`` on ``task`` and return its record (status ok, skipped or failed)."""
    t0 = time.perf_counter()
    try:
        outcome = CONTENDERS[contender](task)
    except Skipped as e:
        return {"status": "skipped", "reason": str(e)}
    except Exception as e:
        traceback.print_exc()
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    wall = time.perf_counter() - t0
    own_rss = own_peak_rss_mb()
    record: dict[str, Any] = {
        "status": "ok",
        "wall_s": wall,
        "items_per_s": task.n / wall,
        "peak_rss_mb": own_rss if outcome.peak_rss_mb is None else outcome.peak_rss_mb,
        "rss_source": outcome.rss_source,
        "tasks": outcome.tasks,
        "extra": outcome.extra,
    }
    record.update(inspect_output(task))
    if record["output_rows"] != task.n:
        return {
            "status": "failed",
            "reason": f"wrote {record['output_rows']} rows for {task.n} items",
        }
    record["output_bytes_per_item"] = record["output_bytes"] / task.n
    if "ideal_s" in record:
        record["efficiency"] = record["ideal_s"] / wall
    return record


def main(argv: list[str]) -> int:
    """Read the job file named by ``argv[0]``, run it, write the record where it says."""
    job = json.loads(Path(argv[0]).read_text())
    record = run(job["contender"], Task.from_dict(job["task"]))
    Path(job["record"]).write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
