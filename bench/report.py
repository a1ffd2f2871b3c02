"""The records as one table (rich on the terminal, Markdown in bench/README.md) and results.json."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from bench.contenders import BASELINE

README_START = "<!-- bench:table:start -->"
README_END = "<!-- bench:table:end -->"
COLUMNS = (
    "workload",
    "contender",
    "N",
    "items/s",
    "wall s",
    "RSS MB",
    "tasks",
    "B/item",
    "ratio",
    "eff.",
    "note",
)


def machine() -> dict[str, Any]:
    """Cores, CPU, memory, Python and the versions of what the contenders run on."""
    versions = {}
    for dist in ("sweep-runner", "dask", "distributed", "pyarrow", "numpy", "ray", "joblib"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def add_ratios(records: list[dict[str, Any]]) -> None:
    """Set each ok record's ``ratio`` (items/s over its group's local ``handwritten``) and,
    for an S3 record, ``s3_overhead`` (its wall over the same contender's local wall, - 1)."""
    ok = [r for r in records if r["status"] == "ok"]
    for r in ok:
        same = [o for o in ok if o["group"] == r["group"]]
        base = next((o for o in same if o["contender"] == BASELINE and o["io"] == "local"), None)
        r["ratio"] = r["items_per_s"] / base["items_per_s"] if base else None
        if r["io"] != "local":
            local = next(
                (o for o in same if o["contender"] == r["contender"] and o["io"] == "local"), None
            )
            r["s3_overhead"] = r["wall_s"] / local["wall_s"] - 1 if local else None


def _note(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        return f"{r['status']}: {r.get('reason', '')}".strip()
    notes = []
    if r["n"] < r["group_n"]:
        notes.append("smaller N")
    if r.get("s3_overhead") is not None:
        notes.append(f"S3 {r['s3_overhead']:+.0%} wall vs local")
    if len(r.get("walls", [])) > 1:
        notes.append("median of " + "/".join(f"{w:.2f}" for w in r["walls"]) + " s")
    if r.get("rss_source") == "polled":
        notes.append("RSS polled")
    return "; ".join(notes)


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    return "" if value is None else f"{value:{spec}}{suffix}"


def rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """The table's cells, one row per record, in :data:`COLUMNS` order."""
    out = []
    for r in records:
        ok = r["status"] == "ok"
        out.append(
            [
                f"{r['workload']} {r['title']}",
                r["label"],
                f"{r['n']:,}",
                _fmt(r.get("items_per_s"), ",.0f") if ok else "",
                _fmt(r.get("wall_s"), ".2f") if ok else "",
                _fmt(r.get("peak_rss_mb"), ".0f") if ok else "",
                _fmt(r.get("tasks"), ",") if ok else "",
                _fmt(r.get("output_bytes_per_item"), ".1f") if ok else "",
                _fmt(r.get("ratio"), ".2f", "x") if ok else "",
                _fmt(r.get("efficiency"), ".1%") if ok else "",
                _note(r),
            ]
        )
    return out


def print_table(results: dict[str, Any]) -> None:
    """Print the table with rich, where and how it was measured below it."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    records = results["records"]
    table = Table(title=f"python -m bench ({results['mode']})", caption=summary_line(results))
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("workload", "contender", "note") else "right")
    previous = None
    for r, cells in zip(records, rows(records), strict=True):
        if previous is not None and r["group"] != previous:
            table.add_section()
        previous = r["group"]
        table.add_row(*(escape(c) for c in cells))
    Console(width=200).print(table)


def markdown(records: list[dict[str, Any]]) -> str:
    """The table as Markdown."""
    right = {c: c not in ("workload", "contender", "note") for c in COLUMNS}
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---:" if right[c] else "---" for c in COLUMNS) + "|",
    ]
    lines += [
        "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in rows(records)
    ]
    return "\n".join(lines)


def summary_line(results: dict[str, Any]) -> str:
    """Where and how the table was measured, in one line."""
    m = results["machine"]
    load = results["loadavg_start"]
    command = " ".join(["python -m bench", *results["argv"]])
    runner = results["runner"]
    changes = " + uncommitted changes" if runner.get("uncommitted_changes") else ""
    return (
        f"`{command}` on {results['started']}: {m['cores']} cores ({m['cpu']}), Python {m['python']},"
        f" dask {m['versions']['dask']}, pyarrow {m['versions']['pyarrow']},"
        f" ray {m['versions']['ray'] or 'not installed'};"
        f" sweep from {runner['path']} at {runner.get('commit')}{changes};"
        f" 1-min load average {load:.2f} at the start, {results['loadavg_end']:.2f} at the end;"
        f" {results['total_s']:.0f} s in all."
    )


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write ``results.json``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def write_readme(path: Path, results: dict[str, Any]) -> None:
    """Replace the table section of ``path`` (between the markers) with this run's table."""
    text = path.read_text()
    block = (
        f"{README_START}\n{summary_line(results)}\n\n{markdown(results['records'])}\n{README_END}"
    )
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path} has no {README_START} ... {README_END} section")
    path.write_text(pattern.sub(lambda _: block, text))
