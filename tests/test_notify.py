"""``notify``: one JSON document POSTed to a webhook (a local HTTP server started by the
test) when a sweep ends as asked; a failing webhook never changes the sweep's outcome,
and the webhook URL is a secret."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.clitools import sweep
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(120)
TOKEN = "T0KEN-s3cr3t"


class Hook:
    """A webhook: records each POST (path, headers, JSON body) and answers ``status``."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.status = 200
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.calls.append(
                    {
                        "path": self.path,
                        "type": self.headers["Content-Type"],
                        "json": json.loads(body),
                    }
                )
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.server.shutdown()


@pytest.fixture
def env(cli_env) -> dict[str, str]:
    return {**cli_env, "DASK_SWEEP__INLINE__MAX_SECONDS": "3"}  # small sweeps: no cluster


def _spec(tmp_path: Path, notify: dict, **fields) -> Path:
    spec = {
        "name": "notified",
        "function": "tests.funcs:fail_on_odd",
        "params": {"grid": {"a": [0, 2, 4, 6], "b": [0.5]}},
        "output": str(tmp_path / "out"),
        "notify": notify,
        **fields,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_finished_sweep_posts_its_report(hook, env, tmp_path):
    r = sweep("run", _spec(tmp_path, {"webhook": hook.url}), env=env)
    assert r.returncode == 0, r.stderr
    (call,) = hook.calls
    assert call["path"] == f"/hooks/{TOKEN}" and call["type"] == "application/json"
    doc = call["json"]
    assert doc["event"] == "finished" and doc["status"] == "succeeded"
    assert (doc["items"], doc["ok"], doc["errors"]) == (4, 4, 0)
    assert doc["output"] == str(tmp_path / "out")
    # the URL is a secret: not in the log, not in the manifest
    assert "notified http://127.0.0.1:" in r.stderr and TOKEN not in r.stderr + r.stdout
    manifest = (tmp_path / "out" / "_manifest.json").read_text()
    assert TOKEN not in manifest
    assert json.loads(manifest)["spec"]["notify"]["webhook"] == "***"


def test_a_failed_sweep_on_s3_posts_failed(hook, env, tmp_path, s3):
    spec = _spec(
        tmp_path, {"webhook": hook.url}, params={"grid": {"a": [1, 2], "b": [0.5]}},
        output=f"{s3}/notified",
    )  # fmt: skip
    r = sweep("run", spec, env=env)
    assert r.returncode == 1, r.stderr
    (call,) = hook.calls
    assert call["json"]["event"] == "failed" and call["json"]["errors"] == 1
    assert call["json"]["output"] == f"{s3}/notified"


def test_only_the_ends_asked_for_are_posted(hook, env, tmp_path):
    r = sweep("run", _spec(tmp_path, {"webhook": hook.url, "on": ["failed"]}), env=env)
    assert r.returncode == 0, r.stderr
    assert hook.calls == [] and "notified http" not in r.stderr


def test_a_failing_webhook_never_fails_the_sweep(hook, env, tmp_path):
    hook.status = 503
    r = sweep("run", _spec(tmp_path, {"webhook": hook.url, "timeout": 2}), env=env)
    assert r.returncode == 0, r.stderr
    assert len(hook.calls) == 3  # retried, then given up
    assert "warning: the webhook http://127.0.0.1:" in r.stderr and "HTTP 503" in r.stderr
    assert TOKEN not in r.stderr
    assert (tmp_path / "out" / "_SUCCESS").exists()

    nobody = f"http://127.0.0.1:{free_port()}/hooks/{TOKEN}"
    r = sweep("run", _spec(tmp_path, {"webhook": nobody, "timeout": 2}), "--overwrite", env=env)
    assert r.returncode == 0 and "was not notified" in r.stderr and TOKEN not in r.stderr


def test_the_webhook_can_come_from_the_environment(hook, env, tmp_path):
    spec = _spec(tmp_path, {"webhook": "${SWEEP_TEST_HOOK}"})
    r = sweep("run", spec, env={**env, "SWEEP_TEST_HOOK": hook.url})
    assert r.returncode == 0, r.stderr
    assert [c["json"]["event"] for c in hook.calls] == ["finished"]
    r = sweep("run", spec, "--overwrite", env=env)  # not set: said, and the sweep still ends well
    assert r.returncode == 0 and "SWEEP_TEST_HOOK is not set" in r.stderr


def test_a_bad_webhook_is_refused_before_anything_runs(env, tmp_path):
    r = sweep("run", _spec(tmp_path, {"webhook": "ftp://example.org/x"}), env=env)
    assert r.returncode == 2 and "notify.webhook" in r.stderr
    assert not (tmp_path / "out").exists()
