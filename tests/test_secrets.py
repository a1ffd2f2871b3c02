"""What is secret (runner.secrets), the chart's copy of the rule, and nothing leaking.

- The chart's ``sweep.isSecretName`` helper, rendered with the real Helm SDK in a copy
  of the chart, answers like :func:`runner.secrets.is_secret_name` for every name below.
- :func:`runner.secrets.redact` and :func:`runner.secrets.redact_url` on their own.
- A leak scan: the CLI run as users run it, with sentinel credentials in the spec's
  ``storage_options`` and in the environment; no output, file or message may show them.
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.secrets import MASK, is_secret_name, literal_secrets, redact, redact_url
from tests.conftest import BUCKET, ROOT, free_port
from tests.test_cli import sweep

CHART = ROOT / "helm" / "sweep"
PI = (ROOT / "examples" / "pi.yaml").read_text()
#: values the chart renders with (its templates fail without a spec)
BASE_VALUES: dict[str, Any] = {"specYaml": PI, "spec": {"output": "s3://bucket/sweeps/pi"}}

# --------------------------------------------------------------------------- the rule

SECRET = [
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "aws_secret_access_key",
    "key",
    "KEY",
    "secret",
    "token",
    "sessionToken",
    "session_token",
    "SessionToken",
    "password",
    "passwd",
    "DB_PASSWORD",
    "credentials",
    "credential",
    "client_secret",
    "clientSecret",
    "api_key",
    "apiKey",
    "apiKEY",
    "x-api-key",
    "access.key",
    "private_key",
    "sas_token",
    "account_key",
    "GITHUB_TOKEN",
    "session",
    "webhook",  # notify.webhook: its URL often embeds a token
    "SLACK_WEBHOOK_URL",
    "key_",  # separators at the ends are not words
    "_key",
    "__secret__",
    "key_2",
    "secret_key_value",
    "token_\u0130d",  # İ lowercases to "i" + a combining dot in Python: not an "id"
    "\u212aEY",  # KELVIN SIGN lowercases to an ASCII k
]
NOT_SECRET = [
    "secretName",
    "secret_name",
    "secretNames",
    "env_from_secret",
    "fromSecret",
    "secretRef",
    "secretKeyRef",
    "role_arn",
    "ROLE_ARN",
    "private_key_id",
    "key_file",
    "keyFile",
    "credentials_path",
    "token_path",
    "password_file",
    "session_id",
    "SESSION_ID",
    "secret_name_",  # trailing separator: the last word is still "name"
    "keyword",
    "monkey",
    "MONKEY",
    "webhooks",
    "keyboard",
    "tokenizer",
    "passage",
    "passwords_hint",  # "passwords" is not a word of the rule
    "secrets",
    "keys",
    "tokens",
    "region_name",
    "endpoint_url",
    "anon",
    "client_kwargs",
    "config_kwargs",
    "APIKey",  # no lowercase before the K: one word "apikey"
    "",
    "_",
    "1password",
    "key2",  # digits belong to the word: "key2" is not "key"
    "name",
    "id",
]


def test_is_secret_name_lists() -> None:
    wrong = [n for n in SECRET if not is_secret_name(n)]
    wrong += [n for n in NOT_SECRET if is_secret_name(n)]
    assert not wrong


def _probe_chart(tmp_path: Path) -> Path:
    """A copy of the chart with one extra template printing isSecretName for values' names."""
    chart = tmp_path / "sweep"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "secret-names.json").write_text(
        "{{- $out := list }}\n"
        "{{- range .Values.secretNameProbe }}\n"
        '{{- $out = append $out (list . (include "sweep.isSecretName" .)) }}\n'
        "{{- end }}\n"
        "{{- toJson $out }}\n"
    )
    schema_path = chart / "values.schema.json"
    schema = json.loads(schema_path.read_text())
    schema["properties"]["secretNameProbe"] = {"type": "array", "items": {"type": "string"}}
    schema_path.write_text(json.dumps(schema))
    return chart


@pytest.mark.timeout(60)
def test_chart_is_secret_name_agrees_with_the_python_rule(tmp_path: Path) -> None:
    helm = pytest.importorskip("helm_python")
    names = SECRET + NOT_SECRET
    assert len(names) >= 40
    helm.disable_logging()
    with helm.Chart.load(_probe_chart(tmp_path)) as chart:
        out = chart.render({**BASE_VALUES, "secretNameProbe": names}, name="pi", namespace="s")
    text = next(t for path, t in out.items() if path.endswith("/secret-names.json"))
    answers = {name: answer for name, answer in json.loads(text)}
    assert set(answers) == set(names)
    # the chart's callers test the helper's output for emptiness
    disagree = {n: answers[n] for n in names if bool(answers[n]) != is_secret_name(n)}
    assert not disagree, f"the chart's sweep.isSecretName disagrees with runner.secrets: {disagree}"
    assert set(answers.values()) <= {"true", ""}
    # and the chart is not in the copy only
    assert "secret-names.json" not in {p.name for p in (CHART / "templates").iterdir()}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "storage_options",
    [
        {"key": "AKIA", "anon": False},
        {"client_kwargs": {"aws_secret_access_key": "s"}},
        {"client_kwargs": {"headers": [{"x-api-key": "s"}]}},  # under a list
        {"secretName": "s3", "keyword": "kw", "client_kwargs": {"endpoint_url": "http://m:9"}},
        {"key": "", "token": None, "profile": "p"},
    ],
)
def test_chart_refuses_literal_secrets_where_python_does(
    tmp_path: Path, storage_options: dict[str, Any]
) -> None:
    helm = pytest.importorskip("helm_python")
    values = {
        "specYaml": PI,
        "spec": {"output": "s3://bucket/pi", "storage_options": storage_options},
    }
    found = literal_secrets(storage_options, "storage_options")
    helm.disable_logging()
    with helm.Chart.load(CHART) as chart:
        if found:
            with pytest.raises(helm.HelmError, match="literal credential") as e:
                chart.render(values, name="pi", namespace="s")
            assert f"spec.{found[0]} holds" in str(e.value)
        else:
            chart.render(values, name="pi", namespace="s")


# --------------------------------------------------------------------------- redact


def test_redact_by_words_not_substrings() -> None:
    spec = {
        "name": "s",
        "params": {"grid": {"keyword": [1, 2], "monkey": ["a"], "tokenizer": ["bpe"]}},
        "storage_options": {
            "key": "AKIAEXAMPLE",
            "secret": "s3cr3t",
            "token": None,
            "session_token": "",
            "anon": False,
            "client_kwargs": {
                "endpoint_url": "http://minio:9000",
                "region_name": "eu-west-1",
                "aws_secret_access_key": "nested",
            },
            "credentials": {"a": 1},  # a whole mapping under a secret key goes
        },
        "cluster": {"kubernetes": {"env_from_secret": "s3-credentials"}},
        "volumes": [{"secret": {"secretName": "my-secret"}}, {"password": "p", "passage": "x"}],
        "env": [{"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"key": "k"}}}],
    }
    before = copy.deepcopy(spec)
    out = redact(spec)
    assert spec == before  # the input is not modified
    so = out["storage_options"]
    assert so["key"] == so["secret"] == so["credentials"] == MASK
    assert so["client_kwargs"]["aws_secret_access_key"] == MASK
    assert so["token"] is None and so["session_token"] == ""  # nothing there to hide
    assert so["anon"] is False
    assert so["client_kwargs"]["endpoint_url"] == "http://minio:9000"
    assert so["client_kwargs"]["region_name"] == "eu-west-1"
    assert out["params"] == spec["params"]  # keyword, monkey, tokenizer kept
    assert out["cluster"]["kubernetes"]["env_from_secret"] == "s3-credentials"
    # a mapping under "secret" is redacted whole, a secretName elsewhere is kept
    assert out["volumes"][0] == {"secret": MASK}
    assert redact({"secretName": "my-secret"}) == {"secretName": "my-secret"}
    assert out["volumes"][1] == {"password": MASK, "passage": "x"}
    # the secretKeyRef's "key" names a key of the Secret; it is redacted all the same
    assert out["env"][0]["valueFrom"]["secretKeyRef"]["key"] == MASK
    # a deep copy: changing the output leaves the input alone
    out["params"]["grid"]["keyword"].append(3)
    assert spec["params"]["grid"]["keyword"] == [1, 2]


def test_redact_lists_tuples_scalars_and_urls() -> None:
    data = [
        {"token": "t"},
        ("a", {"apiKey": "k"}),
        "postgres://user:pw@db:5432/x",
        3,
        None,
    ]
    out = redact(data)
    assert out == [
        {"token": MASK},
        ("a", {"apiKey": MASK}),
        "postgres://user:***@db:5432/x",
        3,
        None,
    ]
    assert isinstance(out[1], tuple)
    assert redact("plain") == "plain" and redact(1.5) == 1.5
    assert redact({"endpoint_url": "http://u:p@minio:9000"}) == {
        "endpoint_url": "http://u:***@minio:9000"
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://AKIA:abc@bucket/key", "s3://AKIA:***@bucket/key"),
        ("https://user:p%40ss@host:8443/p?q=1", "https://user:***@host:8443/p?q=1"),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        # unencoded '/' in the password, as AWS secret keys have
        ("s3://AKIA:wJal/rXUtn+FEMI@bucket/x", "s3://AKIA:***@bucket/x"),
        # unencoded '@' in the password: the last '@' of the authority ends it
        ("ftp://u:p@ss@host/f", "ftp://u:***@host/f"),
        (
            "error: cannot reach http://u:pw@a:1/x and http://v:pw2@b:2/y",
            "error: cannot reach http://u:***@a:1/x and http://v:***@b:2/y",
        ),
        # no password: unchanged
        ("https://token@github.com/o/r.git", "https://token@github.com/o/r.git"),
        ("http://host:8080/path@v1", "http://host:8080/path@v1"),
        ("https://registry.example:443/@scope/pkg", "https://registry.example:443/@scope/pkg"),
        ("s3://bucket/a:b@c", "s3://bucket/a:b@c"),
        ("mailto:x@y.z", "mailto:x@y.z"),
        ("user:pass@host", "user:pass@host"),  # not a URL
        ("", ""),
    ],
)
def test_redact_url(text: str, expected: str) -> None:
    assert redact_url(text) == expected


# --------------------------------------------------------------------------- leak scan

SENTINEL_ID = "AKIASENTINELKEYID7Q3Z"
SENTINEL_SECRET = "sentinel-storage-secret-9f3a1c"
SENTINEL_ENV = "sentinel-env-secret-5b7e2d"
SENTINELS = (SENTINEL_ID, SENTINEL_SECRET, SENTINEL_ENV)
SECRET_NAME = "s3-credentials"


def assert_no_sentinel(where: str, text: str) -> None:
    found = [s for s in SENTINELS if s in text]
    assert not found, f"{where} shows {found}:\n{text[:3000]}"


def write_leak_spec(path: Path, output: str, storage_options: dict[str, Any]) -> Path:
    spec = {
        "name": "leak-scan",
        "function": "tests.funcs:add",
        "params": {"grid": {"a": list(range(6)), "b": [0.0, 0.5]}},
        "output": output,
        "partition_size": 4,
        "storage_options": storage_options,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def _check(where: str, r: subprocess.CompletedProcess, code: int | None = 0) -> None:
    assert_no_sentinel(f"{where} stdout", r.stdout)
    assert_no_sentinel(f"{where} stderr", r.stderr)
    if code is not None:
        assert r.returncode == code, (where, r.returncode, r.stdout, r.stderr)


@pytest.mark.timeout(180)
def test_no_credential_leaks_through_the_cli(
    tmp_path: Path,
    cli_env: dict[str, str],
    s3: str,
    s3_server: str,
    s3_auth_server: str,
    dask_cluster: Any,
) -> None:
    import boto3

    env = {**cli_env, "AWS_SECRET_ACCESS_KEY": SENTINEL_ENV}
    options = {
        "key": SENTINEL_ID,
        "secret": SENTINEL_SECRET,
        "client_kwargs": {"endpoint_url": s3_server},
    }
    output = f"{s3}/leak"
    spec = write_leak_spec(tmp_path / "spec.yaml", output, options)

    r = sweep("validate", spec, env=env)
    _check("validate", r)
    r = sweep("plan", spec, "--json", env=env)
    _check("plan --json", r)
    r = sweep("run", spec, "--scheduler", dask_cluster.scheduler_address, "--json", env=env)
    _check("run --json", r)
    assert json.loads(r.stdout.strip().splitlines()[-1])["status"] == "succeeded"
    r = sweep("plan", spec, "--json", env=env)  # now with a manifest at the output
    _check("plan --json (after the run)", r)
    r = sweep(
        "results",
        output,
        "--json",
        "-s",
        f"key={SENTINEL_ID}",
        "-s",
        f"secret={SENTINEL_SECRET}",
        "-s",
        f"endpoint_url={s3_server}",
        env=env,
    )
    _check("results --json", r)
    assert json.loads(r.stdout)["complete"]

    # every object of the output but the partitions (the manifest, _SUCCESS, ...)
    client = boto3.client("s3", endpoint_url=s3_server)
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="leak/")["Contents"]
    keys = [o["Key"] for o in listed]
    assert "leak/_manifest.json" in keys and "leak/_SUCCESS" in keys
    for k in keys:
        if k.endswith(".parquet"):
            continue
        body = client.get_object(Bucket=BUCKET, Key=k)["Body"].read().decode("utf-8", "replace")
        # NOTE: _manifest.json's spec is redacted by runner/execute.py's own redact() (the
        # old substring rule, not yet switched to runner.secrets); its "key"/"secret"
        # values are redacted by both rules, so this holds either way.
        assert_no_sentinel(f"output object {k}", body)
    manifest = json.loads(
        client.get_object(Bucket=BUCKET, Key="leak/_manifest.json")["Body"].read()
    )
    assert manifest["spec"]["storage_options"]["key"] == MASK
    assert manifest["spec"]["storage_options"]["secret"] == MASK
    assert manifest["spec"]["storage_options"]["client_kwargs"]["endpoint_url"] == s3_server

    # sweep manifest: literal credentials are refused, without showing them
    for extra in ((), ("--secret", SECRET_NAME)):
        r = sweep("manifest", spec, *extra, env=env)
        _check(f"manifest {' '.join(extra)} (literal credentials)", r, code=2)
        assert "storage_options.key" in r.stderr and "Secret" in r.stderr
    # by reference: the Secret's name shows, no value
    by_ref = write_leak_spec(
        tmp_path / "by-ref.yaml", output, {"client_kwargs": {"endpoint_url": s3_server}}
    )
    r = sweep("manifest", by_ref, "--secret", SECRET_NAME, env=env)
    _check("manifest --secret (by reference)", r)
    assert f"name: {SECRET_NAME}" in r.stdout and "kind: Secret\n" not in r.stdout

    # storage that refuses the credentials: the run fails, the messages show none of them
    endpoint = s3_auth_server
    denied = write_leak_spec(
        tmp_path / "denied.yaml",
        "s3://denied-bucket/leak",
        {
            "key": SENTINEL_ID,
            "secret": SENTINEL_SECRET,
            "client_kwargs": {"endpoint_url": endpoint},
        },
    )
    denied_env = {**env, "AWS_ENDPOINT_URL": endpoint}
    for args in (
        ("run", denied, "--scheduler", dask_cluster.scheduler_address, "--json"),
        ("plan", denied, "--json"),
        (
            "results",
            "s3://denied-bucket/leak",
            "--json",
            "-s",
            f"key={SENTINEL_ID}",
            "-s",
            f"secret={SENTINEL_SECRET}",
            "-s",
            f"endpoint_url={endpoint}",
        ),
    ):
        r = sweep(*args, env=denied_env)
        _check(f"{args[0]} (access denied)", r, code=None)
        assert r.returncode != 0, (args[0], r.stdout, r.stderr)
        # it failed for the credentials (the bucket does not exist either: moto says
        # Forbidden before looking)
        assert "Forbidden" in r.stderr, (args[0], r.stderr)


# --------------------------------------------------------------------------- URL credentials

URL_PASSWORD = "sentinel-url-password-3d9c"
PARAMS_CSV = b"a,b\n1,0.5\n2,1.5\n3,2.5\n"


class _BasicAuthCSV(http.server.BaseHTTPRequestHandler):
    """Serves /params.csv to ``user:URL_PASSWORD`` only (HEAD, GET and byte ranges)."""

    def _allowed(self) -> bool:
        token = base64.b64encode(f"user:{URL_PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") == f"Basic {token}":
            if self.path == "/params.csv":
                return True
            self.send_response(404)
        else:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="params"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_HEAD(self) -> None:
        if self._allowed():
            self.send_response(200)
            self.send_header("Content-Length", str(len(PARAMS_CSV)))
            self.send_header("Content-Type", "text/csv")
            self.end_headers()

    def do_GET(self) -> None:
        if not self._allowed():
            return
        body, total = PARAMS_CSV, len(PARAMS_CSV)
        ranged = self.headers.get("Range", "").removeprefix("bytes=")
        if ranged:
            lo, _, hi = ranged.partition("-")
            start, stop = int(lo), min(int(hi) + 1 if hi else total, total)
            body = PARAMS_CSV[start:stop]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{total}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "text/csv")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def basic_auth_csv() -> Iterator[str]:
    """``http://127.0.0.1:PORT``: a CSV of parameters behind HTTP basic auth."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _BasicAuthCSV)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _dataset_spec(path: Path, url: str, output: Path) -> Path:
    spec = {
        "name": "url-leak-scan",
        "function": "tests.funcs:add",
        "params": {"dataset": url},
        "output": str(output),
    }
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.timeout(180)
def test_no_url_password_leaks_through_the_cli(
    tmp_path: Path, cli_env: dict[str, str], dask_cluster: Any, basic_auth_csv: str
) -> None:
    host = basic_auth_csv.removeprefix("http://")
    output = tmp_path / "out"
    good = _dataset_spec(
        tmp_path / "good.yaml", f"http://user:{URL_PASSWORD}@{host}/params.csv", output
    )
    # the wrong password: every command fails, quoting the URL without it
    wrong = _dataset_spec(
        tmp_path / "wrong.yaml", f"http://user:{SENTINEL_SECRET}@{host}/params.csv", output
    )
    for args in (
        ("validate", wrong),
        ("plan", wrong, "--json"),
        ("run", wrong, "--scheduler", dask_cluster.scheduler_address, "--json"),
    ):
        r = sweep(*args, env=cli_env)
        assert r.returncode == 2, (args[0], r.stdout, r.stderr)
        assert f"http://user:***@{host}/params.csv" in r.stderr, r.stderr
        assert_no_sentinel(f"{args[0]} stderr (wrong password)", r.stderr)
        assert not output.exists()

    # the right one: the sweep runs; the password shows nowhere
    texts = {}
    for args in (
        ("validate", good),
        ("plan", good, "--json"),
        ("run", good, "--scheduler", dask_cluster.scheduler_address, "--json"),
        ("run", good, "--scheduler", dask_cluster.scheduler_address),  # the human summary
        ("plan", good),
        ("results", output, "--json"),
        ("results", output),
    ):
        r = sweep(*args, env=cli_env)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        texts[" ".join(map(str, args[:1] + args[2:]))] = r.stdout + r.stderr
    assert "3 items from dataset http://user:***@" in texts["validate"]
    leaks = [where for where, text in texts.items() if URL_PASSWORD in text]
    assert not leaks, f"the URL password shows in the output of {leaks}"
    manifest = json.loads((output / "_manifest.json").read_text())
    assert URL_PASSWORD not in manifest["source"]
    for f in output.rglob("*"):
        if f.is_file() and f.suffix != ".parquet" and f.name != "_manifest.json":
            assert URL_PASSWORD not in f.read_text(errors="replace"), f
    assert URL_PASSWORD not in json.dumps(manifest)


def test_execute_uses_the_one_rule() -> None:
    from runner import execute

    assert execute.redact is redact
