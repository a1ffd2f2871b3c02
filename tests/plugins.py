"""Dask worker plugins the tests register (kept out of tests/funcs.py, which must not
import distributed: `sweep validate` of a spec naming a function there loads no cluster)."""

from __future__ import annotations

import os

from distributed.diagnostics.plugin import WorkerPlugin


class HoldContext(WorkerPlugin):
    """A worker plugin that holds the sweep's context task as it starts executing, once
    (``marker`` records the worker's pid), so a test can kill the worker mid-context."""

    name = "hold-context"

    def __init__(self, marker: str, seconds: float = 60.0) -> None:
        self.marker = marker
        self.seconds = seconds

    def transition(self, key, start, finish, **kwargs):
        import time

        if str(key).startswith("_context") and finish == "executing":
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return  # the worker after the kill: let it run
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            time.sleep(self.seconds)
