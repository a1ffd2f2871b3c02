"""The ``sweep`` command: a thin face over spec → plan → execute → store → results.

Exit codes: 0 success, 1 finished but the failure budget was exceeded, 2 bad input or
config, 3 infrastructure error, 128+N interrupted by signal N (130 Ctrl-C, 143 SIGTERM).

Commands import the engine (spec, execute, store, results) inside their bodies, so that
``sweep --help`` and each command load only what they use (tests/test_imports.py).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from .exceptions import Interrupted, SpecError, SweepError
from .secrets import redact_url

app = typer.Typer(
    name="sweep",
    help="Run one function over many parameter sets on Dask; resumable, Parquet out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def _print(text: Any, **kwargs: Any) -> None:
    """``out.print`` with URL passwords (``scheme://user:***@host``) masked in text."""
    out.print(redact_url(text) if isinstance(text, str) else text, **kwargs)


def _print_json(data: Any, **kwargs: Any) -> None:
    """One JSON document on stdout, URL passwords masked."""
    print(redact_url(json.dumps(data, **kwargs)), flush=True)


SpecArg = Annotated[Path, typer.Argument(help="The sweep spec (YAML).", show_default=False)]


def _fail(e: SweepError) -> typer.Exit:
    message = redact_url(str(e))  # error messages quote URLs (datasets, outputs)
    err.print(
        f"[bold red]error:[/] {message}", markup=True, highlight=False
    ) if err.is_terminal else print(f"error: {message}", file=sys.stderr)
    return typer.Exit(e.exit_code)


def _load(spec_path: Path, **overrides: Any) -> Any:
    from .spec import load_spec

    return load_spec(spec_path, **overrides)


# --------------------------------------------------------------------------- progress


class Progress:
    """Rich bar on a terminal; a plain line every few seconds elsewhere (pod logs, CI)."""

    def __init__(self, name: str, quiet: bool = False) -> None:
        from . import config

        self.name = name
        self.quiet = quiet
        self.tty = err.is_terminal
        self.interval = float(config.get("progress.interval"))
        self.bar: Any = None
        self.task: Any = None
        self.total = 0
        self.base = 0
        self.done = 0
        self.failures = 0
        self.counting = "items_done"  # the partition events' count the bar follows
        self.t0 = time.monotonic()
        self.last_line = 0.0

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if self.quiet:
            return
        if event == "cluster":
            link = info.get("dashboard")
            self._say(
                f"{self.name}: Dask cluster ({info.get('provider')}) ready"
                + (f", dashboard {link}" if link else "")
            )
        elif event == "probe":
            at_once = f" ({info['probes']} probes at once)" if info.get("probes", 1) > 1 else ""
            self._say(
                f"{self.name}: probing the function on up to {info['items']:,} items{at_once}"
                " to size partitions"
            )
        elif event == "start":
            self.total, self.base, self.done = info["items"], info["items_done"], info["items_done"]
            if info.get("retry"):  # a retry's progress is its items, not the sweep's
                self.total, self.base, self.done = info["todo_items"], 0, 0
                self.counting = "items_run"
            self.failures = info["failures"]
            self.t0 = time.monotonic()
            retry = info.get("retry")
            todo = info["todo"] - (retry["partitions"] if retry else 0)
            self._say(
                f"{self.name}: {info['items']:,} items in {info['partitions']:,} partitions;"
                f" {todo:,} to run, {info['partitions'] - todo:,} already done"
            )
            if retry:
                which = f" matching {retry['where']}" if retry["where"] else ""
                self._say(
                    f"{self.name}: retrying {retry['items']:,} failed item(s){which} in"
                    f" {retry['partitions']:,} partition(s)"
                )
            if self.tty and info["todo"]:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )
                from rich.progress import Progress as RichProgress

                self.bar = RichProgress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]} items/s"),
                    TextColumn("[red]{task.fields[failures]} failed"),
                    TimeElapsedColumn(),
                    TextColumn("ETA"),
                    TimeRemainingColumn(),
                    console=err,
                    transient=True,
                )
                self.bar.start()
                self.task = self.bar.add_task(
                    self.name,
                    total=self.total,
                    completed=self.done,
                    rate="-",
                    failures=self.failures,
                )
        elif event == "partition":
            self.done, self.failures = info[self.counting], info["failures"]
            rate = (self.done - self.base) / max(1e-9, time.monotonic() - self.t0)
            if self.bar is not None:
                self.bar.update(
                    self.task, completed=self.done, rate=f"{rate:,.0f}", failures=self.failures
                )
            elif time.monotonic() - self.last_line >= self.interval or self.done == self.total:
                self.last_line = time.monotonic()
                left = (self.total - self.done) / rate if rate > 0 else float("nan")
                pct = 100.0 * self.done / max(1, self.total)
                self._say(
                    f"{self.name}: {self.done:,}/{self.total:,} items ({pct:.1f}%), {rate:,.0f} items/s,"
                    f" {self.failures:,} failed, ETA {_fmt_s(left)}"
                )
        elif event == "isolate":
            self._say(
                f"{self.name}: part-{info['index']:05d}: its worker died while running it;"
                " running it again with each item in a child process, to find the item that"
                " crashed it"
            )
        elif event == "preempted":
            self._say(
                f"{self.name}: part-{info['index']:05d}: its worker {info['worker']} was"
                f" {info['why']}; running it again (not counted as a failure)"
            )
        elif event == "context-lost":
            self._say(
                f"{self.name}: the worker holding the sweep's context ({info['worker']}) was lost;"
                " the partitions waiting for it run again"
            )
        elif event == "drain":
            running = ", ".join(f"part-{i:05d}" for i in info["running"][:8])
            more = " …" if len(info["running"]) > 8 else ""
            why, again = "stopping", " Send the signal again to stop now."
            if info.get("why") == "failures":
                why, again = "past the failure budget (max_failures), stopping", ""
            self._say(
                f"{self.name}: {why}: waiting up to {info['grace']:g}s for"
                f" {len(info['running'])} running partition(s) ({running or 'none'}{more});"
                f" {info['cancelled']} not started are cancelled.{again}"
            )
        elif event == "warning":
            self._say(f"{self.name}: warning: {info['message']}")
        elif event == "extend":
            self._say(
                f"{self.name}: extending the sweep ({info['source']}) from {info['items_from']:,}"
                f" to {info['items_to']:,} items: the first {info['items_from']:,} are kept, only"
                " the new ones run"
            )
        elif event == "projection":
            cost = f" (cost {info['cost']:,.4g})" if info["cost"] is not None else ""
            hours = (
                f"{info['worker_hours']:,.4g} worker-hours"
                if info["worker_hours"] >= 0.01
                else f"{info['worker_s']:,.3g} worker-seconds"
            )
            line = f"{self.name}: projected {hours}{cost} for the whole sweep"
            if info["over_cap"]:
                line += f"; more than {info['cap']}: it will stop there (rerun with more to go on)"
            self._say(line)
        elif event == "budget":
            self._say(
                f"{self.name}: {info['cap']} reached ({info['spent']}): starting nothing more;"
                f" {len(info['running'])} running partition(s) finish, {info['cancelled']}"
                " not started are left for a rerun with a larger cap"
            )
        elif event == "notify":
            if info["sent"]:
                self._say(f"{self.name}: notified {info['to']} ({info['event']})")
            else:
                self._say(
                    f"{self.name}: warning: the webhook {info['to'] or ''} was not notified"
                    f" ({info['event']}): {info['error']}; the sweep's outcome is unchanged"
                )
        elif event == "end":
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def _say(self, text: str) -> None:
        print(redact_url(text), file=sys.stderr, flush=True)


def _fmt_s(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = round(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _print_summary(report: dict[str, Any]) -> None:
    status = report["status"]
    colour = {"succeeded": "green", "failed": "red"}.get(status, "yellow")
    _print(f"[bold {colour}]{report['name']}: {status}[/]")
    _print(
        f"  items      {report['items']:,}  ok {report['ok']:,}  failed {report['errors']:,}"
        f" (allowed {report['allowed_failures']:,})"
    )
    _print(
        f"  partitions {report['partitions_done']:,}/{report['partitions']:,} written,"
        f" {report['partitions_run']:,} this run ({report['items_run']:,} items)"
    )
    _print(
        f"  time       {report['wall_s']:.1f}s wall, {report['worker_s']:.1f} worker-s,"
        f" {report['items_per_s']:,.0f} items/s"
    )
    if report.get("isolated_partitions"):
        _print(
            f"  isolated   {report['isolated_partitions']:,} partition(s) ran with items in child"
            " processes (a worker died, or isolation/timeout asked for it)"
        )
    if report.get("cost") is not None:
        _print(f"  cost       {report['worker_hours']:,.4g} worker-hours, {report['cost']:,.4g}")
    if report.get("items_retried"):
        fixed = report["items_fixed"]
        _print(
            f"  retried    {report['items_retried']:,} failed item(s): {fixed:,} now ok,"
            f" {report['items_retried'] - fixed:,} failed again"
        )
    inline = report.get("inline_partitions", 0)
    if inline:
        where = (
            "no cluster was started: the runner ran the items itself"
            if inline == report["partitions_run"]
            else f"the runner ran {inline:,} partition(s) itself while the cluster started"
        )
        _print(f"  cluster    {where}")
    _print(f"  output     {report['output']}")
    _print(f"  next       sweep results {report['output']}")


# --------------------------------------------------------------------------- commands


@app.command()
def run(
    spec_path: SpecArg,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Override the spec's output URL.")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Use a running Dask scheduler at this address.")
    ] = None,
    cluster: Annotated[
        str | None, typer.Option(help="local | address | kubernetes (overrides cluster.kind).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Workers for the local cluster (default: one per core).")
    ] = None,
    partition_size: Annotated[
        str | None, typer.Option(help="Items per partition, or 'auto'.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a different sweep found at the output.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON summary line on stdout.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Also run again the items whose status is error (same spec, same output).",
        ),
    ] = False,
    where: Annotated[
        str | None,
        typer.Option(
            help="With --retry-failed: only the failed items this SQL filter keeps,"
            " e.g. \"error LIKE '%Timeout%'\".",
        ),
    ] = None,
) -> None:
    """Run a sweep (or resume it: only partitions missing from the output are computed).

    SIGTERM or Ctrl-C stops it gracefully: running partitions get ``grace-seconds`` to
    finish, the rest is cancelled; a second signal stops at once. Rerun to resume.
    """
    from .execute import SweepRun

    overrides: dict[str, Any] = {"output": output, "cluster.workers": workers}
    if scheduler:
        overrides["cluster.kind"] = "address"
        overrides["cluster.address"] = scheduler
    if cluster:
        overrides["cluster.kind"] = cluster
    if partition_size is not None:
        overrides["partition_size"] = (
            int(partition_size) if partition_size.isdigit() else partition_size
        )
    try:
        if where is not None and not retry_failed:
            raise SpecError("--where: it narrows --retry-failed; add --retry-failed")
        spec = _load(spec_path, **overrides)
    except SweepError as e:
        raise _fail(e) from e
    progress = Progress(spec.name, quiet=quiet)
    sweep_run = SweepRun(
        spec,
        overwrite=overwrite,
        progress=progress,
        retry_failed=(where or True) if retry_failed else False,
    )
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) == 1 and sweep_run.request_stop():
            return  # drain: the run stops at its next step
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    report: dict[str, Any] | None = None
    code = 0
    stopped = ""
    try:
        report = sweep_run.run().to_dict()
    except SweepError as e:
        progress.close()
        report = getattr(e, "report", None)
        report = report.to_dict() if report is not None else None
        code = e.exit_code
        stopped = str(e)
        if isinstance(e, Interrupted) and received:
            code = 128 + received[0]
        if report is None or code not in (1, 4):  # these two have a report to show
            _fail(e)
    except KeyboardInterrupt:
        progress.close()
        code = 128 + (received[0] if received else signal.SIGINT)
        print(Interrupted(), file=sys.stderr)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if report is not None:
        if as_json:
            _print_json(report)
        else:
            _print_summary(report)
            if code == 1:
                print(
                    f"error: {report['errors']} items failed, max_failures allows {report['allowed_failures']};"
                    f" see: sweep results {redact_url(report['output'])}",
                    file=sys.stderr,
                )
            elif code == 4:
                print(f"budget-exhausted: {redact_url(stopped)}", file=sys.stderr)
    _exit_now(code)


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown (0.3-0.5 s with distributed loaded).

    Only once a command is done: its output is final, a cluster it used is closed and
    every thread it started has ended or is a daemon; nothing is left to flush but stdio.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


@app.command()
def validate(spec_path: SpecArg) -> None:
    """Check a spec: fields, the function's import and signature, and the parameter source."""
    from .execute import check_inputs

    try:
        spec = _load(spec_path)
        inputs = check_inputs(spec)
    except SweepError as e:
        raise _fail(e) from e
    _print(
        f"{spec_path}: ok — {spec.name}: {inputs.n_items:,} items from {inputs.source.describe()},"
        f" call {spec.call}, output {spec.output}"
    )


@app.command()
def plan(
    spec_path: SpecArg,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Override the spec's output URL.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the partitions: how many, their items, which are done, where params come from."""
    from .execute import check_inputs, check_output
    from .extend import sobol_warning
    from .plan import Layout, todo
    from .store import Store

    try:
        spec = _load(spec_path, output=output)
        inputs = check_inputs(spec)
        source, n = inputs.source, inputs.n_items
        store = Store(spec.output, spec.storage_options)
        manifest, extension = check_output(store, spec, overwrite=False)
    except SweepError as e:
        raise _fail(e) from e
    layout = Layout.from_dict(manifest["layout"]) if manifest and manifest.get("layout") else None
    warning = sobol_warning(spec)
    info: dict[str, Any] = {
        "name": spec.name,
        "items": n,
        "source": source.describe(),
        "output": spec.output,
        "spec_hash": spec.spec_hash(),
        "partition_size": spec.partition_size,
        "warnings": [warning] if warning else [],
    }
    if extension is not None:
        info["extension"] = {"items_from": extension.old_items, "items_to": extension.new_items}
    if spec.cache is not None:
        from .cache import preview, sweep_cache

        try:
            cache = sweep_cache(spec, inputs.function, source.columns)
            assert cache is not None
            info["cache"] = {"url": spec.cache, **preview(cache, source, spec.seed, n)}
        except SweepError as e:
            raise _fail(e) from e
    if layout is None:
        info["layout"] = None
        info["note"] = (
            "short probes run first (one per worker thread); they fix the result schema and size the rest"
            + ("" if isinstance(spec.partition_size, int) else " (partition_size: auto)")
        )
        if isinstance(spec.partition_size, int):
            # plus up to two per probe: a probe and the gap after it each end in a part-size one
            info["partitions_about"] = -(-n // spec.partition_size)
    else:
        missing = todo(layout, store.list_partitions())
        info["layout"] = layout.to_dict()
        info["todo"] = [[d.index, d.start, d.stop] for d in missing[:1000]]
        info["todo_count"] = len(missing)
    if as_json:
        _print_json(info)
        return
    _print(f"{spec.name}: {n:,} items from {info['source']}")
    _print(f"  output {spec.output} (spec hash {info['spec_hash']})")
    if "cache" in info:
        c = info["cache"]
        about = "" if c["checked"] == n else f" (of the first {c['checked']:,})"
        why = f": {c['why']}" if c["why"] else ""
        _print(f"  cache {c['url']}: {c['hits']:,} items hit{about}{why}")
    for w in info["warnings"]:
        _print(f"  [yellow]warning[/]: {w}")
    if extension is not None:
        _print(
            f"  extends the output's sweep from {extension.old_items:,} to"
            f" {extension.new_items:,} items: only the {extension.new_items - extension.old_items:,}"
            " new ones run, in new partitions after the existing ones"
        )
    if layout is None:
        _print(f"  not started: {info['note']}")
    else:
        _print(
            f"  {layout.partitions:,} partitions ({layout.describe()});"
            f" {info['todo_count']:,} to run"
            + (" (and the new items' partitions)" if extension is not None else "")
        )
        for idx, start, stop in info["todo"][:10]:
            _print(f"    part-{idx:05d}: items {start:,}..{stop - 1:,}")
        if info["todo_count"] > 10:
            _print(f"    … {info['todo_count'] - 10:,} more")


StorageOpt = Annotated[
    list[str] | None, typer.Option("--storage-option", "-s", help="key=value for fsspec.")
]


def _storage_options(pairs: list[str] | None) -> dict[str, str]:
    opts = {}
    for kv in pairs or []:
        k, sep, v = kv.partition("=")
        if not sep:
            raise _fail(SpecError(f"--storage-option {kv!r}: use key=value"))
        opts[k] = v
    return opts


@app.command()
def results(
    url: Annotated[str, typer.Argument(help="The sweep's output URL.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    csv: Annotated[
        Path | None, typer.Option(help="Export the results table to this CSV file (streamed).")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Draw what the parameters do and where it fails to this PNG/SVG file."),
    ] = None,
    where: Annotated[
        str | None,
        typer.Option(
            help="Only rows matching this SQL filter, e.g. \"b > 0.9 AND status = 'ok'\""
            " (the analysis, --csv and --plot; the counts stay the whole output's)."
        ),
    ] = None,
    top: Annotated[int | None, typer.Option(help="Show the N items with the highest --by.")] = None,
    bottom: Annotated[
        int | None, typer.Option(help="Show the N items with the lowest --by.")
    ] = None,
    by: Annotated[
        str | None, typer.Option(help="Column for --top/--bottom (default: the first result).")
    ] = None,
    bins: Annotated[int, typer.Option(help="Bins per numeric parameter.")] = 10,
    storage_option: StorageOpt = None,
) -> None:
    """Summarise a sweep's output (also mid-sweep): what the parameters do, where it fails,
    top and bottom items, time; export CSV, plot. Out of core: any size."""
    from .render import print_summary, write_plot
    from .results import SweepOutput

    opts = _storage_options(storage_option)
    try:
        output = SweepOutput(url, opts)
        summary = output.analyse(bins=bins, top=top, bottom=bottom, by=by, where=where)
        rows = None
        if csv:
            rows = output.export_csv(csv, where)
        if plot:
            write_plot(summary, str(plot))
    except SweepError as e:
        raise _fail(e) from e
    if as_json:
        _print_json(summary, default=str)
    else:
        print_summary(summary, _print)
        if csv:
            _print(f"  wrote {csv} ({rows:,} rows)")
        if plot:
            _print(f"  wrote {plot}")


@app.command()
def report(
    url: Annotated[str, typer.Argument(help="The sweep's output URL.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    bins: Annotated[int, typer.Option(help="Bins per numeric parameter.")] = 10,
    top: Annotated[int, typer.Option(help="Top and bottom items to list.")] = 10,
    storage_option: StorageOpt = None,
) -> None:
    """Write one self-contained HTML report of a sweep (running, interrupted or done)."""
    from .render import report_html
    from .results import SweepOutput
    from .secrets import redact

    opts = _storage_options(storage_option)
    try:
        out_ = SweepOutput(url, opts)
        summary = out_.analyse(bins=bins, top=top, bottom=top)
        page = report_html(summary, spec=out_.manifest.get("spec"), redact=redact)
    except SweepError as e:
        raise _fail(e) from e
    except ImportError as e:
        raise _fail(
            SpecError(
                f"the report draws figures with matplotlib ({e}); pip install 'sweep-runner[plot]'"
            )
        ) from e
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        tmp.write_text(redact_url(page))
        tmp.replace(output)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _fail(SpecError(f"--output {output}: cannot write ({e.strerror})")) from e
    _print(f"wrote {output} ({summary['items_done']:,} items, state {summary['state']})")


def _register_extensions() -> None:
    from .kube.commands import register

    register(app)


_register_extensions()


def main() -> None:
    """Console-script entry point.

    Every command ends in :func:`_exit_now`: its files are closed and its output
    written by then, and the interpreter's teardown can abort the process after the
    work is done (pyarrow's thread pools, after reading through Python file objects,
    apache/arrow#34314: "terminate called without an active exception", exit -6).
    """
    if os.environ.get("SWEEP_DEBUG"):
        app()
        return
    code: int = 0
    try:
        app()
    except SystemExit as e:  # click ends every command so, 0 included
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        code = 1 if isinstance(e.code, str) else int(e.code or 0)
    except SweepError as e:
        print(f"error: {redact_url(str(e))}", file=sys.stderr)
        code = e.exit_code
    except Exception as e:  # an unexpected failure is infrastructure, never "budget exceeded"
        print(
            f"error: internal error {type(e).__name__}: {redact_url(str(e))}"
            " (rerun with SWEEP_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        code = 3
    _exit_now(code)


if __name__ == "__main__":
    main()
