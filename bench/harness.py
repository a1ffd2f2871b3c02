"""``python -m bench``: every contender side by side on workloads W1-W6 (issue 9), one table.

Each contender runs in its own fresh process (``bench.child``) with a timeout; one that fails
or times out is a row saying so and the rest go on. The table (items/s, wall, peak RSS of
the driving process, scheduler tasks, output bytes per item, ratio to the hand-written
pipeline of the same group, W2's efficiency) is printed and written with every record to
``bench/results.json``; ``--write-readme`` puts it into ``bench/README.md``.

    python -m bench                       # default: under ~10 minutes on 2 cores
    python -m bench --quick               # smaller N, fewer contenders
    python -m bench --full                # 10^8 items in W3, more contenders at 3x10^7
    python -m bench --only W1,W5 --contenders handwritten,sweep-kwargs --items 10000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import report
from bench.contenders import CONTENDERS
from bench.task import Task, generate, partition_bounds
from bench.workloads import Entry, Group, partitions_for, plan, select

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server() -> Iterator[dict[str, str] | None]:
    """moto's S3 server on 127.0.0.1 with dummy credentials and a bucket; yields its env
    (``None`` when moto is not installed). The env is also set in this process."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench-key-id",
        "AWS_SECRET_ACCESS_KEY": "bench-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import fsspec

        fsspec.filesystem("s3").mkdir(BUCKET)
        yield env
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def upload_params(task: Task) -> None:
    """Write the generated params of ``task`` to ``task.params_url``, a file per partition."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.task import dataset_file

    for index, (lo, hi) in enumerate(partition_bounds(task.n, task.partitions)):
        with fsspec.open(dataset_file(str(task.params_url), index), "wb") as f:
            pq.write_table(pa.table(generate(task, index, hi - lo)), f)


def task_for(group: Group, entry: Entry, workdir: Path, n: int) -> Task:
    """The task ``entry`` runs: local output in ``workdir``, or S3 for an ``s3`` entry."""
    s3 = entry.io == "s3"
    return Task(
        workload=group.workload,
        family=group.family,
        n=n,
        columns=group.columns,
        output=f"s3://{BUCKET}/out/{workdir.name}" if s3 else str(workdir / "out"),
        workdir=str(workdir),
        workers=group.workers,
        threads=group.threads,
        partitions=partitions_for(n),
        params_url=f"s3://{BUCKET}/params-{n}" if s3 else None,
        cluster=group.cluster,
    )


def _tail(path: Path, lines: int = 20) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []


def run_child(contender: str, task: Task, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    """Run one contender in a fresh process (its own process group, killed after it)."""
    workdir = Path(task.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    job, record, log = workdir / "job.json", workdir / "record.json", workdir / "child.log"
    job.write_text(
        json.dumps({"contender": contender, "task": task.to_dict(), "record": str(record)})
    )
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.child", str(job)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the child's workers and helpers too
            proc.wait()
    if timed_out:
        return {"status": "timeout", "reason": f"stopped after {timeout:g} s"}
    if not record.exists():
        tail = _tail(log)
        return {
            "status": "failed",
            "reason": f"exit {proc.returncode}: {tail[-1] if tail else 'no output'}",
            "log_tail": tail,
        }
    result = json.loads(record.read_text())
    if result["status"] == "failed":
        result["log_tail"] = _tail(log)
    return result


def remove_output(task: Task) -> None:
    """Delete an entry's output and scratch directory (outputs of 10^8 items are GBs)."""
    if task.output.startswith("s3://"):
        import fsspec

        fs = fsspec.filesystem("s3")
        if fs.exists(task.output):
            fs.rm(task.output, recursive=True)
    shutil.rmtree(task.workdir, ignore_errors=True)


def measure(
    group: Group,
    entry: Entry,
    workdir: Path,
    env: dict[str, str] | None,
    timeout: float | None,
) -> dict[str, Any]:
    """Run ``entry`` ``group.repeat`` times; its record (the median wall's, when repeated)."""
    n = group.size(entry)
    base = {
        "workload": group.workload,
        "title": group.title,
        "group": f"{group.workload}-{group.n}",
        "group_n": group.n,
        "contender": entry.contender,
        "label": entry.label,
        "io": entry.io,
        "n": n,
        "cluster": f"{group.workers}x{group.threads}" if group.cluster else "default",
        "loadavg": os.getloadavg()[0],
    }
    if env is None:
        return {**base, "status": "skipped", "reason": "moto (S3 server) not installed"}
    limit = timeout or group.timeout(n)
    runs = []
    for i in range(group.repeat):
        task = task_for(group, entry, workdir / f"{workdir.name}-{i}", n)
        runs.append(run_child(entry.contender, task, limit, env))
        remove_output(task)
        if runs[-1]["status"] != "ok":
            return {**base, **runs[-1]}
    walls = [r["wall_s"] for r in runs]
    chosen = min(runs, key=lambda r: abs(r["wall_s"] - statistics.median(walls)))
    return {**base, **chosen, **({"walls": walls} if len(runs) > 1 else {})}


def child_env(scratch: Path) -> dict[str, str]:
    """The environment of every contender process: ``bench`` importable, and nothing else.

    Not the repository root on ``PYTHONPATH``: its ``runner`` would shadow the installed one,
    and the ``sweep`` under test is the installed CLI and package. So ``scratch`` gets a
    link to ``bench/`` alone. Dask dashboards go to a random port.
    """
    path = scratch / "pythonpath"
    path.mkdir(parents=True, exist_ok=True)
    (path / "bench").symlink_to(ROOT / "bench", target_is_directory=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(path), env.get("PYTHONPATH")) if p)
    env["DASK_SWEEP__LOCAL__DASHBOARD_ADDRESS"] = ":0"
    return env


def runner_under_test(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Where the contenders' ``runner`` package comes from, and that tree's git commit."""
    code = "import runner, pathlib; print(pathlib.Path(runner.__file__).parent.parent)"
    found = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True
    )
    if found.returncode != 0:
        return {"path": None}
    tree = found.stdout.strip()

    def git(*args: str) -> str | None:
        out = subprocess.run(
            ["git", "--no-optional-locks", "-C", tree, *args], capture_output=True, text=True
        )
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "path": tree,
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(status) if status is not None else None,
    }


def run_all(
    groups: list[Group], timeout: float | None, env: dict[str, str], scratch: Path
) -> list[dict[str, Any]]:
    """Measure every entry of ``groups`` one after the other; their records in that order."""
    needs_s3 = any(e.io == "s3" for g in groups for e in g.entries)
    records: list[dict[str, Any]] = []
    with s3_server() if needs_s3 else contextlib.nullcontext() as s3env:
        uploaded: set[str] = set()
        for g in groups:
            for e in g.entries:
                workdir = scratch / f"{len(records):03d}"
                entry_env: dict[str, str] | None = env
                if e.io == "s3":
                    entry_env = {**env, **s3env} if s3env else None
                    task = task_for(g, e, workdir, g.size(e))
                    if s3env and task.params_url not in uploaded:
                        upload_params(task)
                        uploaded.add(str(task.params_url))
                records.append(measure(g, e, workdir, entry_env, timeout))
                print(_progress(records[-1]), file=sys.stderr, flush=True)
    return records


def _progress(r: dict[str, Any]) -> str:
    what = f"{r['workload']} {r['label']:<22} N={r['n']:>12,}"
    if r["status"] != "ok":
        return f"{what}  {r['status']}: {r.get('reason', '')}"
    return f"{what}  {r['wall_s']:8.2f} s  {r['items_per_s']:>12,.0f} items/s"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller N, a minute or two")
    mode.add_argument("--full", action="store_true", help="10^8 in W3, more at 3x10^7")
    ap.add_argument("--only", help="workloads, e.g. W1,W5")
    ap.add_argument("--contenders", help=f"contenders, of: {','.join(CONTENDERS)}")
    ap.add_argument("--items", type=int, help="run every group at this N instead")
    ap.add_argument("--timeout", type=float, help="seconds per contender (default: by N)")
    ap.add_argument(
        "--results", type=Path, default=ROOT / "bench" / "results.json", help="the JSON file"
    )
    ap.add_argument(
        "--write-readme", action="store_true", help="put the table into bench/README.md"
    )
    args = ap.parse_args(argv)
    if args.contenders:
        unknown = set(args.contenders.split(",")) - set(CONTENDERS)
        if unknown:
            ap.error(f"unknown contenders {sorted(unknown)}; known: {', '.join(CONTENDERS)}")
    if args.only:
        unknown = set(args.only.split(",")) - {f"W{i}" for i in range(1, 7)}
        if unknown:
            ap.error(f"unknown workloads {sorted(unknown)}; known: W1 ... W6")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when no contender failed or timed out, else 1."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    mode = "quick" if args.quick else "full" if args.full else "default"
    groups = select(
        plan(mode),
        mode,
        only=set(args.only.split(",")) if args.only else None,
        contenders=set(args.contenders.split(",")) if args.contenders else None,
        items=args.items,
    )
    if not groups:
        print("nothing selected", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "argv": argv,
        "mode": mode,
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": report.machine(),
        "loadavg_start": os.getloadavg()[0],
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        env = child_env(Path(tmp))
        results["runner"] = runner_under_test(env, Path(tmp))
        results["records"] = run_all(groups, args.timeout, env, Path(tmp))
    results["total_s"] = time.perf_counter() - t0
    results["loadavg_end"] = os.getloadavg()[0]
    report.add_ratios(results["records"])
    report.print_table(results)
    report.write_results(args.results, results)
    if args.write_readme:
        report.write_readme(ROOT / "bench" / "README.md", results)
    failed = [r for r in results["records"] if r["status"] in ("failed", "timeout")]
    return 1 if failed else 0
