"""Items in a child process: find the item that kills its process, and enforce ``timeout``.

A partition's items normally run in the worker's own thread (the fast path). They
run *isolated* instead, in a child process (``python -m runner.isolate``), when

- the partition's worker died while running it (the engine runs it again isolated:
  one extra attempt finds the culprit, instead of killing worker after worker),
- the spec asks for it from the start (``isolation: process``), or
- a Python function has a ``timeout`` (a thread cannot be interrupted; a process can).

The child publishes the item it is running in a few shared bytes (index, start
time, running or not) and sends results back in batches. The parent, the worker
thread, watches it: when the child dies, the item it was running is the culprit. It
becomes an error naming the exit code or signal, and a new child continues after
it. An item running longer than ``timeout``, or a child growing over the worker's
memory limit, is killed and treated the same way. Such an item is retried like any
failing item (``retries``); after ``sweep.isolation.max-deaths`` deaths in one
partition, its remaining items are marked as not run (the failure budget counts them).

Cost: one child per worker thread, started once (a Python interpreter with numpy and
pyarrow: about 0.3 s) and reused; parameters and results pickled through a socket;
two writes to shared memory per item.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pyarrow as pa

from .calls import (
    MAX_BLOCK,
    BatchBlocks,
    CallPlan,
    ItemResults,
    retry_item,
    values_of,
)
from .exceptions import InfrastructureError, Interrupted
from .store import DIED_TEXT, TIMEOUT_TEXT

SLOT = struct.Struct(
    "qdqq"
)  # row, its start (time.monotonic), 1 while running it, rows in the call
STOP_AT = SLOT.size  # one more byte: the parent sets it to ask the child to stop after this item
SLOT_BYTES = SLOT.size + 1
RUNNING, IDLE = 1, 0
FLUSH_SECONDS = 0.2  # the child sends results at least this often
POLL_SECONDS = 0.02  # the parent checks the child this often


# --------------------------------------------------------------------------- parent side


class Child:
    """One child process, its socket and its slot; started on demand, replaced when it dies."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self._slot_file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        os.ftruncate(self._slot_file.fileno(), SLOT_BYTES)
        self.slot = mmap.mmap(self._slot_file.fileno(), SLOT_BYTES)
        fds = (theirs.fileno(), self._slot_file.fileno())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner.isolate", *map(str, fds)],
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            env=_child_env(),
            start_new_session=True,  # its own process group: a kill takes its children too
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.functions: set[str] = set()

    def read_slot(self) -> tuple[int, float, int, int]:
        return SLOT.unpack_from(self.slot, 0)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        if self.alive():
            self.kill()
        self.conn.close()
        self.slot.close()
        self._slot_file.close()


def _child_env() -> dict[str, str]:
    """The worker's environment, with its ``sys.path`` so the child imports what it can."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


_local = threading.local()


def _child() -> Child:
    """This thread's child, started if there is none (or it died)."""
    child: Child | None = getattr(_local, "child", None)
    if child is None or not child.alive():
        if child is not None:
            child.close()
        child = _local.child = Child()
    return child


def _drop_child() -> None:
    child = getattr(_local, "child", None)
    if child is not None:
        child.close()
        _local.child = None


def start_thread_child() -> None:
    """Start this thread's child process (it imports for a while: start it early)."""
    _child()


def close_thread_child() -> None:
    """Stop this thread's child process (a thread that runs no more items calls it)."""
    _drop_child()


def describe_exit(code: int) -> str:
    """``exit code 1``, ``signal 11 SIGSEGV``, ``signal 9 SIGKILL: ...``."""
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = "?"
    text = f"signal {-code} {name}"
    if -code == signal.SIGKILL:
        text += ": killed, often by the out-of-memory killer"
    return text


def _memory_limit(fraction: float) -> float | None:
    """``fraction`` of the worker's memory limit, when running in a worker that has one."""
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except (ImportError, ValueError, AttributeError):
        return None
    return limit * fraction if limit else None


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _rss(pid: int) -> int:
    import psutil  # a dependency of distributed

    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


@dataclass
class Death:
    """Why a child stopped: its culprit item (if it was running one), the error, how long it ran."""

    culprit: int | None
    reason: str
    seconds: float = 0.0
    block: int = 1  # rows in the call that was running (a batch function's block)


class IsolatedRun:
    """Run one partition's items in child processes, surviving the ones that kill them.

    State lives here: the results so far, the items to skip (their error is known)
    and how often each item killed its process.
    """

    def __init__(
        self,
        function: bytes,
        function_key: str,
        call: str,
        retries: int,
        timeout: float | None,
        max_deaths: int,
        memory_fraction: float,
        batch_format: str = "numpy",
    ) -> None:
        self.function = function
        self.batch_format = batch_format
        self.function_key = function_key
        self.call = call
        self.retries = retries
        self.timeout = timeout
        self.max_deaths = max_deaths
        self.memory_limit = _memory_limit(memory_fraction)
        self.child: Child | None = None
        self.aborted = False
        self.stop: threading.Event | None = None
        self.first_item_at: float | None = None
        self.running_row = 0
        self.received = 0

    def run(
        self,
        params: pa.Table,
        items: np.ndarray,
        seed: int,
        probe_seconds: float | None = None,
        stop: threading.Event | None = None,
    ) -> ItemResults:
        """Results for every row (or for the rows run within ``probe_seconds``, or until ``stop``).

        ``stop`` ends the run after the item running when it is set (after at least one).
        """
        n = params.num_rows
        self.stop = stop
        self.first_item_at: float | None = None  # time.monotonic() of the first item's start
        self.running_row = 0  # the row the child is on (or last finished)
        self.values: list[Any] = [None] * n
        self.durations: list[float] = [0.0] * n
        self.errors: dict[int, str] = {}
        self.attempts: dict[int, int] = {}
        self.skip: dict[int, str] = {}
        self.item_deaths: dict[int, int] = {}
        self.last_run_s: dict[int, float] = {}  # how long a culprit ran before its process died
        self.received = 0  # rows 0..received-1 have their results
        self.single_until = 0  # rows before this run one per call (a block died there)
        deadline = time.monotonic() + probe_seconds if probe_seconds is not None else None
        deaths = 0
        stop = n
        while self.received < stop:
            late = deadline is not None and time.monotonic() >= deadline
            if self.received and (late or self._stopping()):
                stop = self.received
                break
            budget = None if deadline is None else max(0.0, deadline - time.monotonic())
            child = self.child = _child()
            start = self.received
            # after a death, every result comes back at once: the next death loses none
            flush = FLUSH_SECONDS if deaths == 0 else 0.0
            self._send_work(child, params, items, seed, start, budget, flush)
            outcome = self._watch(child, start)
            if isinstance(outcome, int):
                stop = outcome
                break
            if self.aborted:
                raise Interrupted("the run was stopped while this partition's items ran")
            deaths += 1
            if outcome.block > 1 and outcome.culprit is not None:
                # a block of rows died: run them one by one to find which row did it
                self.single_until = max(self.single_until, outcome.culprit + outcome.block)
            else:
                self._blame(outcome)
            if deaths >= self.max_deaths:
                self._give_up(deaths, outcome.reason, stop)
                break
        return ItemResults(
            self.values[:stop],
            {k: v for k, v in self.errors.items() if k < stop},
            {k: v for k, v in self.attempts.items() if k < stop},
            self.durations[:stop],
            deaths=deaths,
        )

    def progress(self) -> tuple[int, float]:
        """``(rows done, seconds since the first one started)``, for a caller's estimate."""
        if self.first_item_at is None:
            return 0, 0.0
        return max(self.running_row, self.received), time.monotonic() - self.first_item_at

    def abort(self) -> None:
        """Kill the child now (from another thread): :meth:`run` raises ``Interrupted``."""
        self.aborted = True
        child = self.child
        if child is not None:
            child.kill()

    def _stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    # ------------------------------------------------------------------ steps

    def _send_work(
        self,
        child: Child,
        params: pa.Table,
        items: np.ndarray,
        seed: int,
        start: int,
        budget: float | None,
        flush: float,
    ) -> None:
        if self.function_key not in child.functions:
            child.conn.send(("function", self.function_key, self.function))
            child.functions.add(self.function_key)
        skip = {k - start: why for k, why in self.skip.items() if k >= start}
        SLOT.pack_into(child.slot, 0, -1, 0.0, IDLE, 1)  # "no item started yet in this run"
        child.slot[STOP_AT] = 0
        child.conn.send(
            (
                "run",
                self.function_key,
                self.call,
                self.batch_format,
                params.slice(start),
                items[start:],
                seed,
                self.retries,
                skip,
                budget,
                flush,
                # with a timeout, every row is its own call: a timeout is per item
                params.num_rows if self.timeout is not None else max(0, self.single_until - start),
            )
        )

    def _watch(self, child: Child, start: int) -> int | Death:
        """Follow the child until it finishes (the row it stopped at) or dies (a Death)."""
        while True:
            if child.conn.poll(POLL_SECONDS):
                try:
                    msg = child.conn.recv()
                except (EOFError, OSError):
                    return self._died(child, start)
                done = self._receive(msg, start)
                if done is not None:
                    return done
                continue
            if not child.alive():
                return self._died(child, start)
            k, began, state, rows = child.read_slot()
            if k >= 0:
                self.running_row = start + k
                if self.first_item_at is None:
                    self.first_item_at = began
            if self._stopping() and (self.received or k > 0):
                child.slot[STOP_AT] = 1
            if state != RUNNING:
                continue
            ran = time.monotonic() - began
            if self.timeout is not None and ran > self.timeout:
                child.kill()
                self._drain(child, start)
                _drop_child()
                return Death(start + k, f"{TIMEOUT_TEXT} {self.timeout:g}s", ran)
            if self.memory_limit and _rss(child.proc.pid) > self.memory_limit:
                child.kill()
                self._drain(child, start)
                _drop_child()
                limit = _size(self.memory_limit)
                return Death(
                    start + k,
                    f"{DIED_TEXT} (killed: over the memory limit of {limit}) while"
                    " running this item",
                    ran,
                    rows,
                )

    def _receive(self, msg: tuple[Any, ...], start: int) -> int | None:
        kind = msg[0]
        if kind == "batch":
            _, first, values, errors, attempts, durations = msg
            base = start + first
            self.values[base : base + len(values)] = values
            self.durations[base : base + len(durations)] = durations
            for j, err in errors.items():
                self.errors[base + j] = err
            for j in range(len(values)):
                died = self.item_deaths.get(base + j, 0)
                tries = died if base + j in self.skip else attempts.get(j, 1) + died
                if tries != 1:
                    self.attempts[base + j] = tries
                if base + j in self.skip:
                    self.durations[base + j] = self.last_run_s.get(base + j, 0.0)
            self.received = base + len(values)
            return None
        if kind == "done":
            return start + msg[1]
        if kind == "error":
            _drop_child()
            raise InfrastructureError(f"the isolated item process failed: {msg[1]}")
        raise AssertionError(f"unexpected message {kind!r}")  # pragma: no cover

    def _drain(self, child: Child, start: int) -> None:
        """Take the batches the child sent before it stopped."""
        try:
            while child.conn.poll(0):
                self._receive(child.conn.recv(), start)
        except (EOFError, OSError):
            pass

    def _died(self, child: Child, start: int) -> Death:
        try:
            child.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
        self._drain(child, start)
        k, began, state, rows = child.read_slot()
        code = child.proc.returncode
        _drop_child()
        if k < 0:
            raise InfrastructureError(
                f"the process that runs isolated items exited ({describe_exit(code)}) before"
                " running any item; its error is in the worker's log"
            )
        culprit = start + k if state == RUNNING and start + k >= self.received else None
        return Death(
            culprit,
            f"{DIED_TEXT} ({describe_exit(code)}) while running this item",
            time.monotonic() - began,
            rows,
        )

    def _blame(self, death: Death) -> None:
        """Count a death against its culprit; past ``retries``, the culprit is skipped with its error."""
        k = death.culprit
        if k is None:
            return
        self.item_deaths[k] = self.item_deaths.get(k, 0) + 1
        self.last_run_s[k] = death.seconds
        if self.item_deaths[k] > self.retries:
            self.skip[k] = death.reason

    def _give_up(self, deaths: int, last: str, stop: int) -> None:
        note = (
            f"not run: the worker process died {deaths} times in this partition"
            f" (sweep.isolation.max-deaths={self.max_deaths}; last: {last})"
        )
        for k in range(self.received, stop):
            self.values[k] = None
            self.errors[k] = self.skip.get(k, note)
            self.attempts[k] = self.item_deaths.get(k, 0)
            self.durations[k] = self.last_run_s.get(k, 0.0)
        self.received = stop


# --------------------------------------------------------------------------- child side


def _watch_parent() -> None:
    """Exit when the worker is gone (also while an item runs forever)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _send_batch(conn: Connection, batch: tuple[Any, ...]) -> None:
    try:
        conn.send(batch)
    except (pickle.PicklingError, TypeError, AttributeError, ValueError):
        _, first, values, errors, attempts, durations = batch
        for k, v in enumerate(values):
            try:
                pickle.dumps(v)
            except Exception as e:
                values[k] = None
                errors[k] = f"result of type {type(v).__name__} cannot be sent back: {e}"
        conn.send((batch[0], first, values, errors, attempts, durations))


def run_child_items(
    conn: Connection,
    slot: mmap.mmap,
    fn: Callable[..., Any],
    call: str,
    batch_format: str,
    params: pa.Table,
    items: np.ndarray,
    seed: int,
    retries: int,
    skip: dict[int, str],
    budget: float | None,
    flush: float = FLUSH_SECONDS,
    single_until: int = 0,
) -> int:
    """The child's loop: publish each call in the slot, send results in batches; rows run.

    A batch goes back every ``flush`` seconds (0: after every call). A ``batch``
    function gets blocks of rows growing from one, four times each; rows before
    ``single_until`` (where a block's process died) get a call each, so a death
    names its item.
    """
    clock = time.monotonic
    first, values, errors, attempts, durations = 0, [], {}, {}, []
    last_flush = clock()
    deadline = last_flush + budget if budget is not None else None
    plan = CallPlan(fn, call, params, items, seed, batch_format)
    g = plan.fn
    blocks = BatchBlocks(fn, params, items, seed, batch_format) if call == "batch" else None
    size = 1
    k = 0
    n = plan.n
    while k < n:
        t0 = clock()
        m = 1
        if k in skip:
            rs: list[Any] = [None]
            errors[k - first] = skip[k]
        else:
            if blocks is not None and k >= single_until:
                m = min(size, n - k, min((j for j in skip if j > k), default=n) - k)
                size = min(size * 4, MAX_BLOCK)
            SLOT.pack_into(slot, 0, k, t0, RUNNING, m)
            got = blocks.columns(k, k + m) if blocks is not None and m > 1 else None
            if got is not None:
                rs = values_of([got])
            else:
                rs = []
                for j in range(k, k + m):
                    args = plan.args_at(j)
                    try:
                        r = g(*args)
                    except Exception as e:
                        r, tries, err = retry_item(g, args, {}, retries, e)
                        if err is not None:
                            errors[j - first] = err
                        attempts[j - first] = tries
                    rs.append(r)
        t1 = clock()
        SLOT.pack_into(slot, 0, k + m - 1, t1, IDLE, 1)
        values.extend(rs)
        durations.extend([(t1 - t0) / m] * m)
        k += m
        over = (deadline is not None and t1 >= deadline) or slot[STOP_AT] != 0
        if over or t1 - last_flush >= flush:
            _send_batch(conn, ("batch", first, values, errors, attempts, durations))
            first, values, errors, attempts, durations = k, [], {}, {}, []
            last_flush = t1
        if over:
            break
    if values:
        _send_batch(conn, ("batch", first, values, errors, attempts, durations))
    return k


def main(argv: list[str]) -> int:
    """``python -m runner.isolate SOCKET_FD SLOT_FD``: serve the parent until it goes."""
    import cloudpickle

    conn = Connection(int(argv[1]))
    slot = mmap.mmap(int(argv[2]), SLOT_BYTES)
    _watch_parent()
    functions: dict[str, Any] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return 0
        if msg[0] == "function":
            _, key, data = msg
            try:
                functions[key] = cloudpickle.loads(data)
            except Exception as e:
                conn.send(("error", f"cannot load the function here: {type(e).__name__}: {e}"))
            continue
        _, key, call, batch_format, params, items, seed, retries, skip, budget, flush, single = msg
        ran = run_child_items(
            conn, slot, functions[key], call, batch_format, params, items, seed, retries, skip,
            budget, flush, single,
        )  # fmt: skip
        conn.send(("done", ran))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
