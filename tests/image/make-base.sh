#!/usr/bin/env bash
# A stand-in for python:3.11-slim, made from Debian's own packages, for machines that
# reach Debian's mirror but no image registry. Debian bookworm ships Python 3.11.
#
#   tests/image/make-base.sh [IMAGE]     (default localhost/sweep-base:3.11-bookworm)
#
# Like python:3.11-slim: `python` and `pip` on PATH (a venv at /opt/python, so pip may
# install into it: Debian marks its own Python externally managed), CA certificates,
# and useradd. The host's extra CA certificates are trusted too, so pip inside a build
# passes a TLS-inspecting proxy that only the host's store trusts. Needs root,
# debootstrap and podman. An image that exists already is kept (delete it to rebuild).
set -euo pipefail
IMAGE="${1:-localhost/sweep-base:3.11-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ENGINE="${ENGINE:-podman}"

if "$ENGINE" image exists "$IMAGE" 2>/dev/null; then
  echo "make-base: $IMAGE exists (delete it to rebuild)"
  exit 0
fi
for tool in debootstrap "$ENGINE"; do
  command -v "$tool" >/dev/null || { echo "make-base: $tool is not installed (apt-get install $tool)" >&2; exit 2; }
done

root="$(mktemp -d /var/tmp/sweep-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
t0=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root" "$MIRROR" > "$root.log" 2>&1 || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
chroot "$root" update-ca-certificates > /dev/null
chroot "$root" python3 -m venv /opt/python
ln -sf /opt/python/bin/python "$root/usr/local/bin/python"
# what python:3.11-slim leaves out too: package lists, docs, man pages, locales
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/locale/*

tar -C "$root" -c . | "$ENGINE" import \
  --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$IMAGE" > /dev/null
echo "make-base: $IMAGE built in $((SECONDS - t0)) s"
