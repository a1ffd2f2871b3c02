"""The few error types of sweep runner, the statuses of a run, and their exit codes.

Every error carries the process exit code the CLI uses for it and a message that
says what went wrong *and what to do*, on one line. :class:`Status` maps the end
state of a run to the same codes, so there is one table of exit codes: this file.
"""

from __future__ import annotations

from enum import StrEnum


class SweepError(Exception):
    """Base class: a problem the user can act on."""

    exit_code = 3


class SpecError(SweepError, ValueError):
    """The sweep spec (or a CLI option standing in for a spec field) is invalid."""

    exit_code = 2


class OutputConflictError(SweepError):
    """The output already holds a *different* sweep; refuse rather than mix results."""

    exit_code = 2


class SourceError(SweepError):
    """The parameter source cannot be read (missing file, unreadable format, ...)."""

    exit_code = 2


class StorageError(SweepError):
    """Storage refused a valid request: missing bucket or path, no permission, bad credentials."""

    exit_code = 2


class InfrastructureError(SweepError):
    """The cluster or the storage failed underneath a valid sweep (rerun to resume)."""

    exit_code = 3


class StorageUnreachable(InfrastructureError):
    """Storage could not be reached (network, endpoint, outage), even after retries."""


class FailureBudgetExceeded(SweepError):
    """The sweep finished (or stopped early) with more failed items than allowed."""

    exit_code = 1


class BudgetExhausted(SweepError):
    """The sweep reached ``max_worker_hours`` or ``max_cost``: it stopped cleanly, its
    finished partitions kept; rerun with a larger cap to continue."""

    exit_code = 4


class Interrupted(SweepError):
    """The sweep was stopped by a signal; finished partitions are kept."""

    exit_code = 130

    def __init__(
        self,
        message: str = "interrupted: finished partitions are kept; run the same command to resume",
    ) -> None:
        super().__init__(message)


class Status(StrEnum):
    """The state of a sweep's run, as written to ``_manifest.json`` and ``--json``."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # finished, but more items failed than max_failures allows
    INTERRUPTED = "interrupted"  # stopped by a signal; rerun to resume
    ERROR = "error"  # bad input or infrastructure; see the message
    BUDGET_EXHAUSTED = "budget-exhausted"  # max_worker_hours / max_cost reached; rerun with more

    @property
    def exit_code(self) -> int:
        return {
            Status.SUCCEEDED: 0,
            Status.FAILED: FailureBudgetExceeded.exit_code,
            Status.BUDGET_EXHAUSTED: BudgetExhausted.exit_code,
            Status.INTERRUPTED: Interrupted.exit_code,
        }.get(self, InfrastructureError.exit_code)
