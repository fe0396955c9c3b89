#!/usr/bin/env bash
# `make critest`: builds critest (Kubernetes' CRI validation suite) and crictl from
# cri-tools 1.36.0 with its vendored dependencies, offline, into target/cri-tools/, with
# ginkgo (the runner of critest --parallel).
# The source archive is ../shared/vendor/cri-tools-1.36.0.tar.xz (or $CRI_TOOLS_ARCHIVE);
# Go 1.26 is Debian's golang-1.26-go. Nothing is fetched: GOPROXY=off, -mod=vendor.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/host.sh
out="${CARGO_TARGET_DIR:-$PWD/target}/cri-tools"
archive="${CRI_TOOLS_ARCHIVE:-}"
if [ -z "$archive" ]; then
    for candidate in ../shared/vendor/cri-tools-1.36.0.tar.xz third_party/cri-tools-1.36.0.tar.xz; do
        if [ -f "$candidate" ]; then archive="$candidate"; break; fi
    done
fi
if [ -z "$archive" ] || [ ! -f "$archive" ]; then
    echo "critest: no cri-tools-1.36.0.tar.xz (looked in ../shared/vendor and third_party; set CRI_TOOLS_ARCHIVE)" >&2
    exit 1
fi
if [ -x "$out/critest" ] && [ -x "$out/crictl" ] && [ -x "$out/ginkgo" ] &&
    [ "$out/critest" -nt "$archive" ]; then
    echo "$out"
    exit 0
fi
go=/usr/lib/go-1.26/bin/go
if [ ! -x "$go" ] && [ "$(id -u)" -eq 0 ]; then
    # Go 1.26 is in Debian unstable: the matrix script adds it to apt, at pin priority 1.
    bash scripts/containerd-matrix.sh >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends golang-1.26-go >&2
fi
[ -x "$go" ] || { echo "critest: Go 1.26 missing: apt-get install -y golang-1.26-go" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xJf "$archive" -C "$work"
mkdir -p "$out"
(
    cd "$work"/cri-tools-1.36.0
    export PATH="/usr/lib/go-1.26/bin:$PATH" GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local \
        CGO_ENABLED=0 GOCACHE="$work/cache" GOPATH="$work/gopath"
    "$go" build -o "$out/crictl" ./cmd/crictl
    # ginkgo's runner (vendored): critest --parallel N runs its specs in N processes through it.
    "$go" build -o "$out/ginkgo" github.com/onsi/ginkgo/v2/ginkgo
    "$go" test -c -o "$out/critest" ./cmd/critest
) >&2
echo "$out"
