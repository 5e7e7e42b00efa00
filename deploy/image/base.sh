#!/usr/bin/env bash
# A local stand-in for python:3.11-slim, for hosts that reach Debian's mirrors but no image registry: Debian bookworm
# (minbase) with its Python 3.11, pip, `python` on PATH and pip allowed to install system-wide (as in python:3.11-slim).
# It also trusts the host's own CA certificates (EXTRA_CA_DIR, default /usr/local/share/ca-certificates), so pip
# inside an image build works behind the same TLS-inspecting proxy the host goes through.
#   deploy/image/base.sh [IMAGE]        # default localhost/mel-base:3.11-bookworm; needs root, debootstrap, podman
set -euo pipefail
IMAGE=${1:-localhost/mel-base:3.11-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d /var/tmp/mel-base.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
  bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log"; exit 1; }
rm -f "$ROOTFS.log" "$ROOTFS"/usr/lib/python3.*/EXTERNALLY-MANAGED
EXTRA_CA_DIR=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
if compgen -G "$EXTRA_CA_DIR/*.crt" >/dev/null; then
  cp "$EXTRA_CA_DIR"/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
  chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1
fi
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin
tar -C "$ROOTFS" -c . | podman import -q --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE" >/dev/null
echo "$IMAGE"
