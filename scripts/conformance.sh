#!/usr/bin/env bash
# `make conformance`: critest (Kubernetes' CRI validation suite) against containerd's runc-v2
# shim, ours standing in for it (on 1.6, a second daemon whose PATH has ours as
# containerd-shim-runc-v2), ours in the OCI mode and ours in the host mode (a safe subset),
# with the CRI plugin and a pod network, on containerd 1.6 and 2.3; see
# integration/src/bin/conformance.rs.
# Builds critest offline first (scripts/critest.sh). Writes target/conformance/. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/host.sh
require_root conformance
install_missing containerd=containerd runc=runc /bin/busybox=busybox-static cc=gcc \
    /usr/lib/cni/bridge=containernetworking-plugins iptables=iptables ip=iproute2
bash scripts/test-prereqs.sh
tools=$(bash scripts/critest.sh)
cargo build --workspace --locked -q
target="${CARGO_TARGET_DIR:-$PWD/target}"
# On the machine's containerd (Debian's 1.6) and on 2.3.4, built from the vendored release
# archive (scripts/containerd-2.3.sh, cached): CONFORMANCE_VERSIONS picks (default "1.6 2.3").
status=0
for version in ${CONFORMANCE_VERSIONS:-1.6 2.3}; do
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
exit "$status"
