"""`sweep manifest|submit|status|logs|cancel` (registered on the main CLI app)."""

from __future__ import annotations

from typing import Any


def register(app: Any) -> None:
    """Add the Kubernetes commands to the ``sweep`` Typer app."""
