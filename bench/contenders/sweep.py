"""``sweep run`` (the CLI) as a subprocess, timed from command start to exit.

The spec is generated from the task (random source or the W4 dataset, the workload's cluster
shape unless ``task.cluster`` is false); the CLI prints its JSON report on stdout. The report's
``peak_rss_mb`` and ``tasks`` are used when it has them; otherwise the CLI's RSS is polled with
psutil (when installed) and the task count stays empty.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from bench.task import Outcome, Skipped, Task


class RssPoller(threading.Thread):
    """Polls one process's RSS every ``interval`` seconds and keeps the peak (in MB)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak_mb = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        """Poll until :attr:`done` is set or the process is gone."""
        import psutil

        while not self.done.is_set():
            try:
                self.peak_mb = max(self.peak_mb, self.process.memory_info().rss / 2**20)
            except psutil.Error:
                return
            self.done.wait(self.interval)


def spec_for(task: Task, call: str, isolation: str) -> dict[str, Any]:
    """The sweep spec of ``task`` with call style ``call``."""
    if task.params_url:
        params: dict[str, Any] = {"dataset": task.params_url}
    else:
        columns = {k: {"uniform": [lo, hi]} for k, (lo, hi) in task.columns.items()}
        params = {"random": {"n": task.n, "seed": task.seed, "columns": columns}}
    spec: dict[str, Any] = {
        "name": f"bench-{task.workload.lower()}",
        "function": f"bench.funcs:{task.function(call).__name__}",
        "call": call,
        "params": params,
        "output": task.output,
    }
    if isolation != "auto":
        spec["isolation"] = isolation
    if task.cluster:
        spec["cluster"] = {"workers": task.workers, "threads_per_worker": task.threads}
    return spec


def sweep_cli() -> str:
    """The ``sweep`` executable next to this Python, else the one on ``PATH``."""
    exe = Path(sys.executable).with_name("sweep")
    found = str(exe) if exe.exists() else shutil.which("sweep")
    if found is None:
        raise Skipped("the sweep CLI is not installed")
    return found


def run_cli(task: Task, call: str, isolation: str = "auto") -> Outcome:
    """``sweep run spec.yaml --json --quiet --overwrite``; the JSON report read from stdout."""
    spec_path = Path(task.workdir) / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec_for(task, call, isolation), sort_keys=False))
    cmd = [sweep_cli(), "run", str(spec_path), "--json", "--quiet", "--overwrite"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=task.workdir
    )
    try:
        poller: RssPoller | None = RssPoller(proc.pid)
    except ImportError:
        poller = None
    if poller is not None:
        poller.start()
    out, err = proc.communicate()
    if poller is not None:
        poller.done.set()
        poller.join()
    last_err = err.strip().splitlines()[-1] if err.strip() else ""
    last_err = last_err.replace(f"{spec_path}: ", "")
    if proc.returncode == 2 and call == "batch" and "call" in err:
        raise Skipped(f"call batch not supported ({last_err})")
    if proc.returncode != 0:
        raise RuntimeError(f"sweep exited {proc.returncode}: {last_err}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError("sweep printed no JSON report")
    report = json.loads(lines[-1])
    if report.get("ok") != task.n:
        raise RuntimeError(f"sweep reports {report.get('ok')} items ok of {task.n}")
    if report.get("peak_rss_mb") is not None:
        rss, source = float(report["peak_rss_mb"]), "report"
    elif poller is not None:
        rss, source = poller.peak_mb, "polled"
    else:
        rss, source = None, "none"
    keep = ("wall_s", "partitions", "items_per_s", "isolated_partitions")
    extra: dict[str, Any] = {"report": {k: report[k] for k in keep if k in report}}
    if poller is not None:
        extra["rss_polled_mb"] = poller.peak_mb  # a cross-check of the report's peak
    return Outcome(tasks=report.get("tasks"), peak_rss_mb=rss, rss_source=source, extra=extra)


def sweep_kwargs(task: Task) -> Outcome:
    """``call: kwargs`` (the default call style)."""
    return run_cli(task, "kwargs")


def sweep_row(task: Task) -> Outcome:
    """``call: row``."""
    return run_cli(task, "row")


def sweep_batch(task: Task) -> Outcome:
    """``call: batch`` (skipped while the engine refuses it)."""
    return run_cli(task, "batch")


def sweep_isolated(task: Task) -> Outcome:
    """``call: kwargs`` with ``isolation: process`` (every item in a child process)."""
    return run_cli(task, "kwargs", isolation="process")
