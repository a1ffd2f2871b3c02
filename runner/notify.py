"""Tell someone a sweep ended: one JSON document POSTed to a webhook.

The document is the run's report (what ``sweep run --json`` prints, secrets redacted)
with ``event``: ``finished``, ``failed`` (more failed items than allowed, or an error),
``budget`` (a worker-hour or cost cap stopped it) or ``interrupted``. A webhook that
fails is retried briefly, then logged: it never changes how the sweep ended.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from typing import Any

from .exceptions import Status
from .secrets import redact, redact_url
from .spec import NotifySpec

#: the notify.on name of each way a run ends
EVENT_OF = {
    Status.SUCCEEDED: "finished",
    Status.FAILED: "failed",
    Status.ERROR: "failed",
    Status.BUDGET_EXHAUSTED: "budget",
    Status.INTERRUPTED: "interrupted",
}
ATTEMPTS = 3
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def event_of(status: str) -> str | None:
    """The ``notify.on`` event a run's end status is, if any."""
    return EVENT_OF.get(Status(status)) if status in set(Status) else None


def webhook_url(spec: NotifySpec) -> str:
    """The URL to POST to (``${VAR}`` read from the environment).

    Raises
    ------
    ValueError
        The variable is not set.
    """
    m = _ENV_REF.match(spec.webhook)
    if not m:
        return spec.webhook
    url = os.environ.get(m.group(1))
    if not url:
        raise ValueError(f"notify.webhook: the environment variable {m.group(1)} is not set")
    return url


def describe(url: str) -> str:
    """Where a webhook goes, fit for a log line: its scheme and host, nothing of its path."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return redact_url(f"{scheme}://{host}/…")


def send(spec: NotifySpec, status: str, report: dict[str, Any]) -> dict[str, Any] | None:
    """POST the report if ``spec.on`` asks for this end; ``None`` when it does not.

    Returns ``{"event", "sent", "to", "error"}``: ``sent`` is whether the webhook
    answered 2xx; ``error`` says why not (never raises).
    """
    event = event_of(status)
    if event is None or event not in spec.on:
        return None
    try:
        url = webhook_url(spec)
    except ValueError as e:
        return {"event": event, "sent": False, "to": None, "error": str(e)}
    body = json.dumps({"event": event, **redact(report)}, default=str).encode()
    error: str | None = None
    for attempt in range(ATTEMPTS):
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "sweep-runner"},
        )
        try:
            with urllib.request.urlopen(request, timeout=spec.timeout) as response:
                response.read()
            return {"event": event, "sent": True, "to": describe(url), "error": None}
        except urllib.error.HTTPError as e:
            error = f"HTTP {e.code} {e.reason}"
            if e.code < 500 and e.code != 429:
                break  # the webhook refused it: asking again will not help
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            error = f"{type(reason).__name__}: {reason}"
        if attempt + 1 < ATTEMPTS:
            time.sleep(0.5 * 2**attempt)
    return {"event": event, "sent": False, "to": describe(url), "error": redact_url(str(error))}
