#!/usr/bin/env bash
# Builds containerd 2.3.4 from the vendored release archive, offline, and prints the root of
# the tree it built ("<root>/usr/bin" holds containerd, ctr and containerd's own runc shim,
# as the matrix's other versions), for scripts/containerd-matrix.sh. Also builds containerd's
# own test suites beside them: cri-integration.test (its CRI suite, `integration/`) and
# client-integration.test (`integration/client`), with the failpoint tools they use:
# containerd-shim-runc-fp-v1 (its runc shim with failpoints, the CRI suite's handler
# `runc-fp`), cni-bridge-fp (CNI's bridge with failpoints) and runc-fp (runc with failpoints,
# the client suite's). ctrd-cri-suite is a link to the daemon: the CRI suite restarts its
# daemon with `pkill -x <name>`, and that name hits nothing else.
#
# The archive is ../shared/vendor/containerd-2.3.4.tar.xz (or $CONTAINERD_ARCHIVE): `git
# archive` of tag v2.3.4 with its vendor/. Go 1.26 is Debian's golang-1.26-go (sid, which
# the matrix script adds to apt at pin priority 1). Nothing is fetched: GOPROXY=off,
# -mod=vendor. The build is cached in $SHIM_MATRIX_CACHE (default /var/cache/shim-matrix),
# keyed by the archive's hash: a few minutes the first time, nothing after. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${SHIM_MATRIX_CACHE:-/var/cache/shim-matrix}
archive="${CONTAINERD_ARCHIVE:-}"
if [ -z "$archive" ]; then
    for candidate in ../shared/vendor/containerd-2.3.4.tar.xz third_party/containerd-2.3.4.tar.xz; do
        if [ -f "$candidate" ]; then archive="$candidate"; break; fi
    done
fi
if [ -z "$archive" ] || [ ! -f "$archive" ]; then
    echo "containerd-2.3: no containerd-2.3.4.tar.xz (looked in ../shared/vendor and third_party;" \
        "set CONTAINERD_ARCHIVE)" >&2
    exit 1
fi
hash=$(sha256sum "$archive" | cut -c1-16)
root="$cache/2.3.4-$hash"
bin="$root/usr/bin"
wanted="containerd ctr containerd-shim-runc-v2 cri-integration.test client-integration.test
    containerd-shim-runc-fp-v1 cni-bridge-fp runc-fp ctrd-cri-suite"
built=yes
for name in $wanted; do [ -x "$bin/$name" ] || built=no; done
if [ "$built" = yes ]; then
    echo "$root"
    exit 0
fi

go=/usr/lib/go-1.26/bin/go
if [ ! -x "$go" ]; then
    # Go 1.26 is in Debian unstable: the matrix script adds it to apt, at pin priority 1.
    bash scripts/containerd-matrix.sh >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends golang-1.26-go >&2
fi
[ -x "$go" ] || { echo "containerd-2.3: Go 1.26 missing: apt-get install -y golang-1.26-go" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xJf "$archive" -C "$work"
mkdir -p "$bin.tmp"
(
    cd "$work"/containerd-2.3.4
    export PATH="/usr/lib/go-1.26/bin:$PATH" GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local \
        GOCACHE="$cache/go-build" GOPATH="$work/gopath"
    tags="no_btrfs no_devmapper no_zfs"
    # The version ctr and the daemon report (a `git archive` has no tags to describe).
    ldflags="-X github.com/containerd/containerd/v2/version.Version=2.3.4 \
-X github.com/containerd/containerd/v2/version.Revision=db8809540e1a7a9da5d518876894933ff55692ab"
    "$go" build -tags "$tags" -ldflags "$ldflags" -o "$bin.tmp/containerd" ./cmd/containerd
    "$go" build -tags "$tags" -ldflags "$ldflags" -o "$bin.tmp/ctr" ./cmd/ctr
    "$go" build -tags "$tags" -ldflags "$ldflags" -o "$bin.tmp/containerd-shim-runc-v2" \
        ./cmd/containerd-shim-runc-v2
    "$go" test -c -tags "$tags" -o "$bin.tmp/cri-integration.test" ./integration
    "$go" test -c -tags "$tags" -o "$bin.tmp/client-integration.test" ./integration/client
    for tool in containerd-shim-runc-fp-v1 cni-bridge-fp runc-fp; do
        "$go" build -tags "$tags" -o "$bin.tmp/$tool" "./integration/failpoint/cmd/$tool"
    done
    ln -s containerd "$bin.tmp/ctrd-cri-suite"
) >&2
rm -rf "$bin"
mkdir -p "$root/usr"
mv "$bin.tmp" "$bin"
echo "$root"
