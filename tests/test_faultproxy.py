"""tests/faultproxy.py: forwarding real S3 traffic (s3fs -> proxy -> moto) and each fault."""

from __future__ import annotations

import http.client
import http.server
import os
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import boto3
import pytest
import requests
import s3fs
from botocore.exceptions import ClientError

from tests.conftest import BUCKET, free_port
from tests.faultproxy import KINDS, FaultProxy

pytestmark = pytest.mark.timeout(60)


def proxied_fs(proxy: FaultProxy) -> s3fs.S3FileSystem:
    s3fs.S3FileSystem.clear_instance_cache()
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": proxy.endpoint})


def faults(stats: dict[str, int]) -> int:
    return sum(stats[k] for k in KINDS)


# ------------------------------------------------------------------------ forwarding


def test_s3fs_through_the_proxy_without_faults(s3: str, fault_proxy: FaultProxy) -> None:
    fs = proxied_fs(fault_proxy)
    fs.pipe(f"{BUCKET}/a.txt", b"hello proxy")
    assert fs.cat(f"{BUCKET}/a.txt") == b"hello proxy"
    assert fs.cat_file(f"{BUCKET}/a.txt", start=6, end=9) == b"pro"  # Range -> 206
    assert fs.info(f"{BUCKET}/a.txt")["size"] == 11  # HEAD

    big = os.urandom(12 * 2**20)  # 3 parts of <= 5 MiB: multipart upload
    fs.pipe_file(f"{BUCKET}/big.bin", big, chunksize=5 * 2**20)
    etag = boto3.client("s3").head_object(Bucket=BUCKET, Key="big.bin")["ETag"]
    assert etag.strip('"').endswith("-3")
    assert fs.cat(f"{BUCKET}/big.bin") == big
    with fs.open(f"{BUCKET}/big.bin", "rb", block_size=2**20) as f:
        f.seek(7_000_000)
        assert f.read(3_000_000) == big[7_000_000:10_000_000]

    assert sorted(fs.ls(BUCKET, refresh=True)) == [f"{BUCKET}/a.txt", f"{BUCKET}/big.bin"]
    fs.rm(f"{BUCKET}/big.bin")
    assert fs.ls(BUCKET, refresh=True) == [f"{BUCKET}/a.txt"]

    stats = fault_proxy.stats()
    assert stats["requests"] == stats["forwarded"] >= 15
    assert faults(stats) == stats["upstream_errors"] == 0
    fault_proxy.reset_stats()
    assert fault_proxy.stats()["requests"] == 0


class Stub(http.server.BaseHTTPRequestHandler):
    """A tiny HTTP/1.1 upstream for framing cases moto never produces."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, dict[str, str], bytes, tuple[str, int]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding") == "chunked":
            data = b""
            while size := int(self.rfile.readline(), 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        self.seen.append(
            (self.command, self.path, dict(self.headers), self._body(), self.client_address)
        )
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"one,", b"two,", b"three"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/until-close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"the body ends with the connection")
            self.close_connection = True
        elif self.path in ("/204", "/304"):
            self.send_response(int(self.path[1:]))
            self.send_header("ETag", '"x"')
            self.end_headers()
        else:
            body = b"echo:" + self.seen[-1][3]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            # an idle keep-alive connection the server closes without saying so
            self.close_connection = self.path == "/quiet-close"

    do_PUT = do_POST = do_HEAD = do_GET


@pytest.fixture
def stub_proxy() -> Iterator[FaultProxy]:
    Stub.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with FaultProxy(f"http://127.0.0.1:{server.server_address[1]}") as proxy:
            yield proxy
    finally:
        server.shutdown()
        server.server_close()


def test_http_framing_and_keep_alive(stub_proxy: FaultProxy) -> None:
    with requests.Session() as session:
        url = stub_proxy.endpoint
        r = session.put(f"{url}/up?x=1", data=iter([b"ab", b"", b"cde"]), headers={"Host": "h:9"})
        assert (r.status_code, r.content) == (200, b"echo:abcde")
        method, path, headers, body, _ = Stub.seen[-1]
        assert (method, path, headers["Host"], body) == ("PUT", "/up?x=1", "h:9", b"abcde")
        assert headers["Transfer-Encoding"] == "chunked"

        r = session.post(f"{url}/p", data=b"x" * 100_000, headers={"Expect": "100-continue"})
        assert r.content == b"echo:" + b"x" * 100_000
        r = session.head(f"{url}/h")
        assert (r.status_code, r.headers["Content-Length"], r.content) == (200, "5", b"")
        for code in (204, 304):
            assert session.get(f"{url}/{code}").status_code == code
        r = session.get(f"{url}/chunked")
        assert r.headers["Transfer-Encoding"] == "chunked" and r.content == b"one,two,three"
        # one client connection -> one upstream connection, reused for all of the above
        assert len({seen[4] for seen in Stub.seen}) == 1

        # the proxy's upstream connection goes stale: re-sent once on a fresh one, no 502
        assert session.get(f"{url}/quiet-close").content == b"echo:"
        assert session.get(f"{url}/after-stale").content == b"echo:"
        assert len({seen[4] for seen in Stub.seen}) == 2

        r = session.get(f"{url}/until-close")
        assert r.content == b"the body ends with the connection"
        assert r.headers["Connection"] == "close"
        assert session.get(f"{url}/after").content == b"echo:"
    with socket.create_connection(("127.0.0.1", stub_proxy.port), timeout=10) as s:
        s.sendall(b"GET /chunked HTTP/1.0\r\n\r\n")  # no chunked answer for HTTP/1.0
        response = http.client.HTTPResponse(s)
        response.begin()
        assert response.getheader("Transfer-Encoding") is None
        assert (response.read(), response.getheader("Connection")) == (b"one,two,three", "close")
    stats = stub_proxy.stats()
    assert (stats["requests"], stats["forwarded"], stats["upstream_errors"]) == (11, 11, 0)


def test_client_disconnects_and_garbage_are_harmless(
    stub_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    escaped: list[object] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    port = stub_proxy.port
    for raw in (
        b"",
        b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly part of it",
        b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /slow HTTP/1.1\r\nHost: a\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(raw)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"not http at all\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")
    idle = socket.create_connection(("127.0.0.1", port))  # left open: stop() must cut it
    assert requests.get(f"{stub_proxy.endpoint}/fine", timeout=10).content == b"echo:"
    time.sleep(0.2)
    started = time.monotonic()
    stub_proxy.stop()
    assert time.monotonic() - started < 2
    assert idle.recv(10) == b""
    idle.close()
    assert not escaped
    assert "Traceback" not in capfd.readouterr().err


# ---------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("kind", "status", "code"), [("slowdown", 503, "SlowDown"), ("internal", 500, "InternalError")]
)
def test_error_faults_answer_s3_xml_and_are_not_forwarded(
    s3: str, fault_proxy: FaultProxy, kind: str, status: int, code: str
) -> None:
    fault_proxy.configure(fraction=1.0, kinds=(kind,))
    with requests.Session() as session:
        for _ in range(2):  # the connection stays usable after an error answer
            r = session.get(f"{fault_proxy.endpoint}/{BUCKET}/nothing", timeout=10)
            assert r.status_code == status
            assert r.headers["Content-Type"] == "application/xml"
            assert int(r.headers["Content-Length"]) == len(r.content)
            assert r.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?><Error>')
            error = ET.fromstring(r.content)
            assert error.findtext("Code") == code and error.findtext("RequestId")
        assert session.put(f"{fault_proxy.endpoint}/{BUCKET}/w", data=b"v").status_code == status
        assert session.head(f"{fault_proxy.endpoint}/{BUCKET}/w").content == b""
    with pytest.raises(ClientError, match="404"):  # the faulted PUT never reached moto
        boto3.client("s3").head_object(Bucket=BUCKET, Key="w")
    assert fault_proxy.stats() == {
        **dict.fromkeys(("forwarded", *KINDS, "upstream_errors"), 0),
        "requests": 4,
        kind: 4,
    }


@pytest.mark.parametrize(
    ("kind", "seen"), [("drop", "RemoteDisconnected"), ("reset", "Connection reset by peer")]
)
def test_connection_faults(s3: str, fault_proxy: FaultProxy, kind: str, seen: str) -> None:
    fault_proxy.configure(fraction=1.0, kinds=(kind,))
    with pytest.raises(requests.ConnectionError, match=seen):
        requests.put(f"{fault_proxy.endpoint}/{BUCKET}/w", data=b"v" * 1000, timeout=10)
    fault_proxy.configure(fraction=0)
    with pytest.raises(ClientError, match="404"):
        boto3.client("s3").head_object(Bucket=BUCKET, Key="w")
    assert requests.get(f"{fault_proxy.endpoint}/{BUCKET}/w", timeout=10).status_code == 404
    stats = fault_proxy.stats()
    assert (stats["requests"], stats[kind], stats["forwarded"], faults(stats)) == (2, 1, 1, 1)


def test_down_refuses_connections_until_up(s3: str, fault_proxy: FaultProxy) -> None:
    port = fault_proxy.port
    idle = socket.create_connection(("127.0.0.1", port))
    idle.sendall(f"GET /{BUCKET} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    idle.settimeout(10)
    assert idle.recv(12) == b"HTTP/1.1 200"

    fault_proxy.down()
    with idle:
        while idle.recv(65536):  # the rest of the response, then EOF: the connection was cut
            pass
    for _ in range(3):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
    with pytest.raises(requests.ConnectionError, match="refused"):
        requests.get(fault_proxy.endpoint, timeout=5)

    fault_proxy.up()
    assert fault_proxy.endpoint == f"http://127.0.0.1:{port}"
    assert proxied_fs(fault_proxy).ls(BUCKET) == []


def test_unreachable_upstream_is_502() -> None:
    with FaultProxy(f"http://127.0.0.1:{free_port()}") as proxy:
        r = requests.get(f"{proxy.endpoint}/b/k", timeout=10)
        assert r.status_code == 502 and ET.fromstring(r.content).findtext("Code") == "BadGateway"
        assert proxy.stats()["upstream_errors"] == 1


def test_configure_validates() -> None:
    proxy = FaultProxy("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="fraction"):
        proxy.configure(fraction=1.5)
    with pytest.raises(ValueError, match="kinds"):
        proxy.configure(kinds=("slowdown", "timeout"))
    with pytest.raises(ValueError, match="kinds"):
        proxy.configure(kinds=())


def test_s3fs_retries_through_mixed_faults(s3: str, s3_server: str) -> None:
    """30 put/get round trips with 30% of all requests faulted (every kind): botocore (and
    s3fs, for SlowDown and dropped connections) retry each kind, so every round trip
    completes with the right bytes. Sequential requests: the seed fixes which ones fail."""
    with FaultProxy(s3_server, fraction=0.3, kinds=KINDS, seed=2024) as proxy:
        fs = proxied_fs(proxy)
        for i in range(30):
            data = b"payload %d;" % i * (i + 1)
            fs.pipe_file(f"{BUCKET}/obj{i}", data)
            assert fs.cat_file(f"{BUCKET}/obj{i}") == data
        stats = proxy.stats()
        assert all(stats[k] > 0 for k in KINDS), stats
        assert stats["requests"] == stats["forwarded"] + faults(stats)
        proxy.configure(fraction=0)
        assert len(fs.ls(BUCKET, refresh=True)) == 30
