#!/usr/bin/env bash
# `make conformance`: critest (Kubernetes' CRI validation suite) against containerd's runc-v2
# shim, ours standing in for it (on 1.6, a second daemon whose PATH has ours as
# containerd-shim-runc-v2), ours in the OCI mode and ours in the host mode (a safe subset),
# with the CRI plugin and a pod network, on containerd 1.6 and 2.3; see
# integration/src/bin/conformance.rs. Then containerd's own suites on 2.3.4: its CRI suite
# for runc-v2, ours in the OCI mode and ours as runc-v2, and its client suite for runc-v2
# and ours installed as runc-v2; see integration/src/bin/containerd-suites.rs.
# Builds critest and containerd 2.3.4 offline first (scripts/critest.sh,
# scripts/containerd-2.3.sh). Writes target/conformance/, target/conformance-2.3/ and
# target/containerd-suites/. Run as root.
#
# CONFORMANCE_VERSIONS picks critest's containerd versions (default "1.6 2.3"; "" for none),
# CONTAINERD_SUITES containerd's suites (default "cri,client"; "" for none).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/host.sh
require_root conformance
install_missing containerd=containerd runc=runc /bin/busybox=busybox-static cc=gcc \
    /usr/lib/cni/bridge=containernetworking-plugins iptables=iptables ip=iproute2 \
    lsof=lsof strace=strace pkill=procps pidof=sysvinit-utils socat=socat openssl=openssl \
    unshare=util-linux
bash scripts/test-prereqs.sh
tools=$(bash scripts/critest.sh)
cargo build --workspace --locked -q
target="${CARGO_TARGET_DIR:-$PWD/target}"
# On the machine's containerd (Debian's 1.6) and on 2.3.4, built from the vendored release
# archive (scripts/containerd-2.3.sh, cached): CONFORMANCE_VERSIONS picks (default "1.6 2.3").
status=0
for version in ${CONFORMANCE_VERSIONS-1.6 2.3}; do
    case "$version" in
    1.6) env=() out="$target/conformance" ;;
    2.3)
        root=$(bash scripts/containerd-2.3.sh)
        env=(CONTAINERD_BIN="$root/usr/bin/containerd" CTR_BIN="$root/usr/bin/ctr"
            EXPECT_CONTAINERD_VERSION=2.3)
        out="$target/conformance-2.3"
        ;;
    *) echo "conformance: no containerd $version here (1.6 or 2.3)" >&2; exit 2 ;;
    esac
    echo "== critest on containerd $version" >&2
    env "${env[@]}" "$target/debug/conformance" --critest "$tools/critest" --out "$out" "$@" ||
        status=1
done
suites=${CONTAINERD_SUITES-cri,client}
if [ -n "$suites" ]; then
    root=$(bash scripts/containerd-2.3.sh)
    echo "== containerd's own suites ($suites) on containerd 2.3.4" >&2
    "$target/debug/containerd-suites" --bin "$root/usr/bin" --suites "$suites" \
        --out "$target/containerd-suites" || status=1
fi
exit "$status"
