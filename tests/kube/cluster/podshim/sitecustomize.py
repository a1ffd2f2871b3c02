"""Injected (via PYTHONPATH) into every Python process of an emulated pod.

Emulates the pod's own network identity on a shared host network: wildcard
binds ('' / 0.0.0.0 / passive getaddrinfo) go to the pod's 127.B.x.y address
and outgoing connections to loopback addresses originate from it, so servers
of different pods do not collide on ports (two schedulers can both use 8786)
and `distributed.utils.get_ip()` reports the pod IP like in a real pod.
"""

import os as _os

_POD_IP = _os.environ.get("KUBE_EMU_POD_IP")

if _POD_IP:
    import socket as _socket

    _orig_bind = _socket.socket.bind
    _orig_connect = _socket.socket.connect
    _orig_connect_ex = _socket.socket.connect_ex
    _orig_getaddrinfo = _socket.getaddrinfo
    _WILD = {"", "0.0.0.0", None}

    def _bind(self, address):
        if self.family == _socket.AF_INET and isinstance(address, tuple) and address[0] in _WILD:
            address = (_POD_IP, address[1])
        return _orig_bind(self, address)

    def _prebind(self, address):
        try:
            if (
                self.family == _socket.AF_INET
                and isinstance(address, tuple)
                and str(address[0]).startswith("127.")
                and self.getsockname()[1] == 0
            ):
                _orig_bind(self, (_POD_IP, 0))
        except OSError:
            pass

    def _connect(self, address):
        _prebind(self, address)
        return _orig_connect(self, address)

    def _connect_ex(self, address):
        _prebind(self, address)
        return _orig_connect_ex(self, address)

    def _getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if host in (None, "", "0.0.0.0", "::") and flags & _socket.AI_PASSIVE:
            return [
                r for r in _orig_getaddrinfo(_POD_IP, port, _socket.AF_INET, type, proto, flags)
            ]
        return _orig_getaddrinfo(host, port, family, type, proto, flags)

    _socket.socket.bind = _bind
    _socket.socket.connect = _connect
    _socket.socket.connect_ex = _connect_ex
    _socket.getaddrinfo = _getaddrinfo

# Chain to another sitecustomize further down the path, if any.
try:
    import importlib.util as _ilu
    import sys as _sys

    _here = _os.path.dirname(_os.path.abspath(__file__))
    for _p in _sys.path:
        if (
            _p
            and _os.path.abspath(_p) != _here
            and _os.path.exists(_os.path.join(_p, "sitecustomize.py"))
        ):
            _spec = _ilu.spec_from_file_location(
                "_chained_sitecustomize", _os.path.join(_p, "sitecustomize.py")
            )
            _mod = _ilu.module_from_spec(_spec)
            _spec.loader.exec_module(_mod)
            break
except Exception:
    pass
