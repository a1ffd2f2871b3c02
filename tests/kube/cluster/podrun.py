"""Pod process launcher, run as:  unshare --mount --uts -- python -I -S podrun.py SPEC.json

Runs inside the pod's private mount + UTS namespace: overlays missing parent
directories, bind-mounts the pod's volumes and its /etc/hosts, sets the
hostname, then exec()s the container command (same pid, so the kubelet's
signals and PDEATHSIG reach the real process).
"""

import ctypes
import json
import os
import sys

MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384
libc = ctypes.CDLL("libc.so.6", use_errno=True)


def mount(src, dst, fstype, flags, data):
    rc = libc.mount(
        src.encode() if src else None,
        dst.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} -> {dst}: {os.strerror(err)}")


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    overlaid = set()

    def ensure(dst, is_dir):
        """Create a missing path inside an overlay of its nearest existing parent, so the
        host's filesystem is not touched (the kubelet pre-creates paths directly under /)."""
        if os.path.lexists(dst):
            return
        anc = os.path.dirname(dst.rstrip("/")) or "/"
        while not os.path.isdir(anc):
            anc = os.path.dirname(anc) or "/"
        if anc != "/" and anc not in overlaid:
            key = anc.strip("/").replace("/", "_")
            upper = os.path.join(spec["overlay_dir"], key, "upper")
            work = os.path.join(spec["overlay_dir"], key, "work")
            os.makedirs(upper, exist_ok=True)
            os.makedirs(work, exist_ok=True)
            mount("overlay", anc, "overlay", 0, f"lowerdir={anc},upperdir={upper},workdir={work}")
            overlaid.add(anc)
        if is_dir:
            os.makedirs(dst, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            open(dst, "a").close()

    # Pin every source before mounting anything: a volume mounted over /tmp (an emptyDir,
    # say) must not hide the sources of later mounts, nor the emulator's own host paths
    # (its state dir, the checkout and its venv) when they live under that volume.
    pinned = {}
    for path in [m["src"] for m in spec["mounts"]] + spec.get("keep_visible", []):
        if path not in pinned and os.path.exists(path):
            pinned[path] = os.open(path, os.O_PATH)

    def src(path):
        return f"/proc/self/fd/{pinned[path]}"

    for m in spec["mounts"]:
        ensure(m["dst"], os.path.isdir(m["src"]))
    ensure(spec["cwd"], True)
    for m in spec["mounts"]:
        mount(src(m["src"]), m["dst"], None, MS_BIND | MS_REC, None)
        if m.get("readOnly"):
            mount(None, m["dst"], None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
    dsts = [m["dst"].rstrip("/") for m in spec["mounts"]]
    for path in spec.get("keep_visible", []):
        if path in pinned and any(path.startswith(d + "/") for d in dsts):
            os.makedirs(path, exist_ok=True)
            mount(src(path), path, None, MS_BIND | MS_REC, None)
    name = spec["hostname"].encode()[:63]
    libc.sethostname(name, len(name))
    os.chdir(spec["cwd"])
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as e:
        print(
            f"kube-emu: failed to start container process {argv[0]!r}: {e}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(127)


if __name__ == "__main__":
    main()
