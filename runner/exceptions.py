"""The few error types of sweep runner.

Every error carries the process exit code the CLI uses for it and a message that
says what went wrong *and what to do*, on one line.
"""

from __future__ import annotations


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


class InfrastructureError(SweepError):
    """The cluster or the storage failed underneath a valid sweep."""

    exit_code = 3


class FailureBudgetExceeded(SweepError):
    """The sweep finished (or stopped early) with more failed items than allowed."""

    exit_code = 1


class Interrupted(SweepError):
    """The sweep was stopped by a signal; finished partitions are kept."""

    exit_code = 130
