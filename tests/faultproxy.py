"""A fault-injecting HTTP/1.1 reverse proxy for the S3 protocol, for tests.

``FaultProxy`` sits in front of a real S3-protocol server (moto's ``ThreadedMotoServer``
in this suite) so storage-fault tests exercise the real s3fs/aiobotocore/botocore stack
against real TCP traffic instead of mocks::

    with FaultProxy("http://127.0.0.1:5000", fraction=0.2, seed=7) as proxy:
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": proxy.endpoint})
        ...
        proxy.configure(fraction=1.0, kinds=("reset",))
        proxy.down()  # connection refused (open connections cut) until proxy.up()
        print(proxy.stats())  # {"requests": ..., "forwarded": ..., "slowdown": ..., ...}

Forwarding: one thread per client connection, keep-alive on both sides (each client
connection owns one upstream ``http.client`` connection). Method, path+query, every
request header (including ``Host``) and the body are forwarded unchanged; a chunked
request body is decoded to find its end and re-sent chunked (one chunk plus its
trailers). Request bodies are buffered in memory (fine for tests: s3fs parts are
<= 50 MB). Responses are streamed back with status and headers; only the hop-by-hop
framing headers (``Connection``, ``Keep-Alive``, ``Transfer-Encoding``) are re-made by
the proxy for its own client connection (an HTTP/1.0 client gets a close-delimited body
instead of a chunked one). No body is sent for HEAD, 1xx, 204 or 304.
If a reused upstream connection turns out to be stale before any response arrives, the
request is re-sent once on a fresh connection; any other upstream failure answers 502.

Faults: each request, once read completely, draws from a seeded ``random.Random``: with
probability ``fraction`` it gets a fault of a kind chosen uniformly from ``kinds``
(``KINDS``): ``"slowdown"`` (503 S3 ``SlowDown`` XML error), ``"internal"`` (500
``InternalError``), ``"drop"`` (close the connection without a response) or ``"reset"``
(close with SO_LINGER 0: the client sees ECONNRESET). A faulted request is never
forwarded upstream, so a faulted write is never applied, not even partly. The fault
sequence is deterministic for a given seed and a given order of requests (concurrent
clients make that order, and thus which request gets which draw, vary).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import logging
import os
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from http.client import responses
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

__all__ = ["KINDS", "FaultProxy"]

log = logging.getLogger(__name__)

KINDS = ("slowdown", "internal", "drop", "reset")
_ERRORS = {  # kind -> (status, S3 error code, message)
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}
_FRAMING = {"connection", "keep-alive", "proxy-connection", "transfer-encoding"}
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_MAX_LINE = 65536


class _ClientGone(Exception):
    """The client closed its connection or sent something unparseable: stop serving it."""


@dataclass
class _Request:
    method: str
    target: str
    headers: http.client.HTTPMessage
    body: bytes
    keep: bool  # keep the client connection open after the response
    version: str = "HTTP/1.1"


@dataclass
class _Conn:
    sock: socket.socket
    upstream: http.client.HTTPConnection | None = None
    reused: bool = False  # the upstream connection has already served a request


class FaultProxy:
    """Fault-injecting reverse proxy on ``host:port`` (port 0: a free one) to ``upstream``."""

    def __init__(
        self,
        upstream: str,
        *,
        fraction: float = 0.0,
        kinds: Iterable[str] = KINDS,
        seed: int | None = 0,
        port: int = 0,
        host: str = "127.0.0.1",
        upstream_timeout: float = 60.0,
    ) -> None:
        url = urlsplit(upstream)
        self._upstream = (url.hostname or "127.0.0.1", url.port or 80)
        self._timeout = upstream_timeout
        self.host, self.port = host, port
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._listener: socket.socket | None = None
        self._conns: dict[socket.socket, _Conn] = {}
        self._threads: set[threading.Thread] = set()
        self._fraction, self._kinds = 0.0, KINDS
        self._targeted: list[list] = []  # [compiled "METHOD path" pattern, times left, kind]
        self.configure(fraction=fraction, kinds=kinds)
        self.reset_stats()

    # -- control --------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def configure(
        self, *, fraction: float | None = None, kinds: Iterable[str] | None = None
    ) -> None:
        """Change the fault fraction and/or kinds; applies to requests read from now on."""
        with self._lock:
            if fraction is not None:
                if not 0.0 <= fraction <= 1.0:
                    raise ValueError(f"fraction must be within [0, 1], not {fraction}")
                self._fraction = float(fraction)
            if kinds is not None:
                kinds = tuple(kinds)
                if not kinds or set(kinds) - set(KINDS):
                    raise ValueError(f"kinds must be a non-empty subset of {KINDS}, not {kinds}")
                self._kinds = kinds

    def fail(self, pattern: str, times: int, kind: str = "internal") -> None:
        """Fault the next ``times`` requests whose ``"METHOD /bucket/key?query"`` matches
        ``pattern`` (a regex, searched) with ``kind``, before any random fault."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        with self._lock:
            self._targeted.append([re.compile(pattern), int(times), kind])

    def stats(self) -> dict[str, int]:
        """Counts: ``requests`` read, ``forwarded`` (answered upstream), one per fault kind,
        and ``upstream_errors`` (answered 502)."""
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = dict.fromkeys(("requests", "forwarded", *KINDS, "upstream_errors"), 0)

    def start(self) -> FaultProxy:
        self.up()
        return self

    def stop(self) -> None:
        """Same as ``down()``: nothing listens or runs afterwards (``start()`` may follow)."""
        self.down()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def up(self) -> None:
        """Listen (again) on the same port; a no-op while listening."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.create_server((self.host, self.port), backlog=128)  # SO_REUSEADDR
            self.port = listener.getsockname()[1]
            self._listener = listener
            self._spawn(self._accept_loop, listener)

    def down(self, timeout: float = 2.0) -> None:
        """Stop listening and cut every open connection (client and upstream side), so the
        endpoint refuses connections until ``up()``; waits up to ``timeout`` s for threads."""
        with self._lock:
            listener, self._listener = self._listener, None
            if listener is not None:
                with contextlib.suppress(OSError):
                    listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
                listener.close()
            for conn in self._conns.values():
                for sock in (conn.sock, conn.upstream and conn.upstream.sock):
                    with contextlib.suppress(OSError, AttributeError):
                        sock.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    # -- serving ----------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: object) -> None:  # with the lock held
        thread = threading.Thread(target=self._run, args=(target, *args), daemon=True)
        self._threads.add(thread)
        thread.start()

    def _run(self, target: Callable[..., None], *args: object) -> None:
        try:
            target(*args)
        except Exception:  # never let a traceback escape a server thread
            log.debug("fault proxy thread failed", exc_info=True)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                with self._lock:
                    if self._listener is not listener:
                        return  # down()
                time.sleep(0.01)  # e.g. ECONNABORTED, EMFILE
                continue
            with self._lock:
                if self._listener is not listener:
                    sock.close()
                    return
                self._conns[sock] = _Conn(sock)
                self._spawn(self._serve, self._conns[sock])

    def _serve(self, conn: _Conn) -> None:
        rfile = conn.sock.makefile("rb")
        action = "close"
        try:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while (action := self._handle(conn, rfile)) == "keep":
                pass
        except (_ClientGone, OSError, http.client.HTTPException) as e:
            log.debug("client connection ended: %r", e)
        finally:
            with self._lock:
                self._conns.pop(conn.sock, None)
                if conn.upstream is not None:
                    conn.upstream.close()
                rfile.close()  # first: the makefile holds a reference to the socket
                if action == "reset":
                    with contextlib.suppress(OSError):
                        conn.sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                conn.sock.close()

    def _handle(self, conn: _Conn, rfile: io.BufferedReader) -> str:
        """Serve one request; returns ``"keep"``, ``"close"``, ``"drop"`` or ``"reset"``."""
        line = rfile.readline(_MAX_LINE + 1)
        if not line:
            return "close"
        if line in (b"\r\n", b"\n"):
            return "keep"  # tolerated stray CRLF between requests
        try:
            method, target, version = line.decode("latin-1").split()
            headers = http.client.parse_headers(rfile)
        except (ValueError, http.client.HTTPException):
            conn.sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return "close"
        tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
        keep = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
        if headers.get("Expect", "").lower() == "100-continue":
            conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        req = _Request(method, target, headers, self._read_body(rfile, headers), keep, version)

        with self._lock:
            self._stats["requests"] += 1
            kind = None
            for rule in self._targeted:
                if rule[1] > 0 and rule[0].search(f"{method} {target}"):
                    rule[1] -= 1
                    kind = rule[2]
                    break
            if kind is None and self._fraction and self._rng.random() < self._fraction:
                kind = self._rng.choice(self._kinds)
            if kind is not None:
                self._stats[kind] += 1
        if kind in ("drop", "reset"):
            return kind
        if kind is not None:
            self._s3_error(conn.sock, req, *_ERRORS[kind])
        else:
            self._forward(conn, req)
        return "keep" if req.keep else "close"

    @staticmethod
    def _read_body(rfile: io.BufferedReader, headers: http.client.HTTPMessage) -> bytes:
        """The body as it goes upstream: verbatim, or re-chunked if it came chunked."""

        def read(n: int) -> bytes:
            data = rfile.read(n)
            if len(data) != n:
                raise _ClientGone("connection closed within the request body")
            return data

        def number(text: bytes, base: int) -> int:
            try:
                return int(text, base)
            except ValueError:
                raise _ClientGone(f"bad body length {text!r}") from None

        if "chunked" not in headers.get("Transfer-Encoding", "").lower():
            return read(number(headers.get("Content-Length", "0").encode(), 10))
        chunks = []
        while n := number(rfile.readline(_MAX_LINE).split(b";")[0], 16):
            chunks.append(read(n))
            read(2)  # the CRLF after the chunk data
        trailers = []
        while (line := rfile.readline(_MAX_LINE)) not in (b"\r\n", b"\n", b""):
            trailers.append(line)
        data = b"".join(chunks)
        head = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        return head + b"0\r\n" + b"".join(trailers) + b"\r\n"

    def _forward(self, conn: _Conn, req: _Request) -> None:
        for attempt in (1, 2):
            if conn.upstream is None:
                conn.upstream = http.client.HTTPConnection(*self._upstream, timeout=self._timeout)
                conn.reused = False
            try:
                conn.upstream.putrequest(req.method, req.target, True, True)  # skip Host, A-E
                for name, value in req.headers.items():
                    conn.upstream.putheader(name, value)
                conn.upstream.endheaders(req.body or None)
                resp = conn.upstream.getresponse()
                break
            except (OSError, http.client.HTTPException) as e:
                stale = attempt == 1 and conn.reused and isinstance(e, _STALE)
                conn.upstream.close()
                conn.upstream = None
                if not stale:
                    with self._lock:
                        self._stats["upstream_errors"] += 1
                    error = f"upstream {self._upstream}: {e!r}"
                    return self._s3_error(conn.sock, req, 502, "BadGateway", error)
        conn.reused = True
        with self._lock:
            self._stats["forwarded"] += 1

        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _FRAMING]
        body = not (req.method == "HEAD" or resp.status < 200 or resp.status in (204, 304))
        chunked = body and resp.chunked and req.version != "HTTP/1.0"
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        elif body and resp.length is None:
            req.keep = False  # a close-delimited body (upstream's, or for an HTTP/1.0 client)
        self._reply(conn.sock, req, (resp.status, resp.reason), headers, None)
        while body and (data := resp.read1(65536)):
            conn.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        if chunked:
            conn.sock.sendall(b"0\r\n\r\n")
        resp.read()  # completes the exchange (HEAD, no body) so the connection can be reused

    @classmethod
    def _s3_error(
        cls, sock: socket.socket, req: _Request, status: int, code: str, msg: str
    ) -> None:
        rid = os.urandom(8).hex().upper()
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{escape(msg)}</Message><RequestId>{rid}</RequestId></Error>"
        ).encode()
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", rid)]
        cls._reply(sock, req, (status, responses[status]), headers, body)

    @staticmethod
    def _reply(
        sock: socket.socket,
        req: _Request,
        status: tuple[int, str],
        headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> None:
        """Send the status line and headers, then ``body`` with its Content-Length (None: the
        caller streams a body framed by ``headers``); never a body for HEAD."""
        lines = [f"HTTP/1.1 {status[0]} {status[1]}", *(f"{k}: {v}" for k, v in headers)]
        if body is not None:
            lines += [f"Date: {formatdate(usegmt=True)}", f"Content-Length: {len(body)}"]
        if not req.keep:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        sock.sendall(head if req.method == "HEAD" or body is None else head + body)
