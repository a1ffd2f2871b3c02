"""Put this directory on PYTHONPATH (with KUBE_EMU_HOSTS set) to make the
emulated cluster's service names resolvable in a host-side Python subprocess."""

import os as _os

if _os.environ.get("KUBE_EMU_HOSTS"):
    import importlib.util as _ilu

    _path = _os.path.join(
        _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "resolver.py"
    )
    _spec = _ilu.spec_from_file_location("_kube_emu_resolver", _path)
    _mod = _ilu.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
    _mod.install(_os.environ["KUBE_EMU_HOSTS"])
