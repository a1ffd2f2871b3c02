"""Make the emulated cluster's Service names resolvable in a host process.

Pods get a bind-mounted /etc/hosts, but the test process (or the operator's
host-side clients) cannot. `install(hosts_file)` patches `socket.getaddrinfo`,
`socket.gethostbyname` and `socket.gethostbyname_ex` so that names listed in
the kubelet-maintained hosts file (``<svc>.<ns>``, ``<svc>.<ns>.svc``,
``<svc>.<ns>.svc.cluster.local``) resolve to the backing pod's 127.B.x.y
address.  asyncio, tornado (distributed) and aiohttp all resolve through
`socket.getaddrinfo`, so they are covered.  Other names fall through unchanged.

For subprocesses, put `tests/kube/cluster/hostshim` on PYTHONPATH and set
KUBE_EMU_HOSTS=<hosts file> (see ``EmulatedCluster.env()``).
"""

from __future__ import annotations

import os
import socket
import threading

_lock = threading.Lock()
_state: dict = {"path": None, "mtime": None, "map": {}, "orig": None}


def _table() -> dict[str, str]:
    path = _state["path"]
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return {}
    if mtime != _state["mtime"]:
        table: dict[str, str] = {}
        try:
            with open(path) as f:
                for line in f:
                    parts = line.split("#", 1)[0].split()
                    for name in parts[1:]:
                        table.setdefault(name.lower(), parts[0])
        except OSError:
            return _state["map"]
        _state["map"], _state["mtime"] = table, mtime
    return _state["map"]


def lookup(name: str) -> str | None:
    if not isinstance(name, str) or _state["path"] is None:
        return None
    with _lock:
        return _table().get(name.lower().rstrip("."))


def install(hosts_file: str) -> None:
    if _state["orig"] is None:
        orig = (socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex)
        _state["orig"] = orig

        def getaddrinfo(host, *args, **kwargs):
            ip = lookup(host) if isinstance(host, str) else None
            return orig[0](ip or host, *args, **kwargs)

        def gethostbyname(host):
            return lookup(host) or orig[1](host)

        def gethostbyname_ex(host):
            ip = lookup(host)
            return (host, [], [ip]) if ip else orig[2](host)

        socket.getaddrinfo = getaddrinfo
        socket.gethostbyname = gethostbyname
        socket.gethostbyname_ex = gethostbyname_ex
    _state["path"], _state["mtime"], _state["map"] = hosts_file, None, {}


def uninstall() -> None:
    if _state["orig"] is not None:
        socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex = _state["orig"]
        _state["orig"] = None
    _state["path"] = None
