"""Driving the `sweep` command as users do: one-shot runs, and runs watched while they go."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

SWEEP = str(Path(sys.executable).parent / "sweep")


def sweep(*args: Any, env: dict[str, str], timeout: float = 120, cwd: Path = ROOT):
    """Run `sweep ARGS...` to the end; returns the CompletedProcess (text)."""
    return subprocess.run(
        [SWEEP, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd
    )


def write_spec(path: Path, **fields: Any) -> Path:
    """A small grid sweep (20 items, partitions of 4) with ``fields`` replaced."""
    spec = {
        "name": "cli-test",
        "function": "tests.funcs:add",
        "params": {"grid": {"a": list(range(10)), "b": [0.0, 0.5]}},
        "output": str(path.parent / "out"),
        "partition_size": 4,
    }
    spec.update(fields)
    path.write_text(yaml.safe_dump(spec))
    return path


class Running:
    """A `sweep` process in its own process group, its stderr lines collected as they come."""

    def __init__(self, *args: Any, env: dict[str, str], cwd: Path = ROOT) -> None:
        self.proc = subprocess.Popen(
            [SWEEP, *map(str, args)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.err: list[str] = []
        self.out: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
        ]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)

    def wait_line(self, pattern: str, timeout: float) -> str:
        """The first stderr line matching ``pattern`` (a regex), waiting up to ``timeout`` s."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.err):
                if rx.search(line):
                    return line
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the readers may still hold the last lines
                for line in list(self.err):
                    if rx.search(line):
                        return line
                raise AssertionError(
                    f"sweep exited ({self.proc.returncode}) before printing /{pattern}/:\n"
                    + self.stderr
                )
            time.sleep(0.05)
        raise AssertionError(f"no line /{pattern}/ within {timeout}s:\n{self.stderr}")

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL the runner and everything in its process group (its local workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.kill_group()
                self.proc.wait()
            for t in self._readers:
                t.join(timeout=5)


def kill_after(*args: Any, env: dict[str, str], lines: list[tuple[str, float]]) -> None:
    """Run `sweep ARGS...`, wait for each of ``lines`` (regex, timeout s) on its stderr in
    turn, then SIGKILL it and its process group (it must still be running then)."""
    run = Running(*args, env=env)
    try:
        for pattern, timeout in lines:
            run.wait_line(pattern, timeout)
        assert run.proc.poll() is None, f"sweep {' '.join(map(str, args))} ended before the kill"
        run.kill_group()
        run.wait(30)
    finally:
        run.kill_group()
