#!/usr/bin/env bash
# `make conformance`: critest (Kubernetes' CRI validation suite) against containerd's runc-v2
# shim, ours standing in for it (on 1.6, a second daemon whose PATH has ours as
# containerd-shim-runc-v2), ours in the OCI mode and ours in the host mode (a safe subset),
# with the CRI plugin and a pod network; see integration/src/bin/conformance.rs.
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
"$target/debug/conformance" --critest "$tools/critest" --out "$target/conformance"
