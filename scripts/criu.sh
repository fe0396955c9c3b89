#!/usr/bin/env bash
# Builds CRIU 4.2 from the vendored source, offline, and prints the directory that holds the
# `criu` binary: runc finds criu on its PATH, so the tests put that directory first on the
# PATH of the containerd they start (its shims and their runc inherit it), for ours and for
# containerd's runc-v2 alike. Debian 12's criu 3.17 fails `criu check` on these machines'
# kernel (vDSO bounds); the newer suites' packages need glibc 2.38.
#
# The archive is ../shared/vendor/criu-4.2.tar.xz (or $CRIU_ARCHIVE): `git archive` of
# checkpoint-restore/criu at tag v4.2. The build (about 20 s) is cached in
# $SHIM_MATRIX_CACHE (default /var/cache/shim-matrix), keyed by the archive's hash. Then
# `criu check` runs: its verdict is the last line on stderr, and the exit status says
# whether checkpoints can work here. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${SHIM_MATRIX_CACHE:-/var/cache/shim-matrix}
archive="${CRIU_ARCHIVE:-}"
if [ -z "$archive" ]; then
    for candidate in ../shared/vendor/criu-4.2.tar.xz third_party/criu-4.2.tar.xz; do
        if [ -f "$candidate" ]; then archive="$candidate"; break; fi
    done
fi
if [ -z "$archive" ] || [ ! -f "$archive" ]; then
    echo "criu: no criu-4.2.tar.xz (looked in ../shared/vendor and third_party; set CRIU_ARCHIVE)" >&2
    exit 1
fi
hash=$(sha256sum "$archive" | cut -c1-16)
dir="$cache/criu-4.2-$hash"
if [ ! -x "$dir/criu" ]; then
    deps="libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler libnl-3-dev
        libnet1-dev libcap-dev pkg-config python3-protobuf libbsd-dev libgnutls28-dev
        libnftables-dev uuid-dev libdrm-dev make gcc"
    missing=""
    for dep in $deps; do
        dpkg -s "$dep" >/dev/null 2>&1 || missing="$missing $dep"
    done
    if [ -n "$missing" ]; then
        echo "criu: installing$missing" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "criu: building CRIU 4.2 (about 20 s)" >&2
    tar -xJf "$archive" -C "$work"
    make -C "$work"/criu-4.2 -j"$(nproc)" criu >"$work/build.log" 2>&1 ||
        { tail -30 "$work/build.log" >&2; exit 1; }
    mkdir -p "$dir"
    install -m 0755 "$work"/criu-4.2/criu/criu "$dir/criu.new"
    mv "$dir/criu.new" "$dir/criu"
fi
"$dir/criu" check >&2 || { echo "criu: \`criu check\` fails on this machine" >&2; exit 3; }
echo "$dir"
