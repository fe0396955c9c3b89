#!/usr/bin/env bash
# `make bench`: builds the shim (`make shim`) and runs integration/src/bin/bench.rs, which
# measures our shim and containerd's containerd-shim-runc-v2 side by side in one private
# containerd (2.3.4 by default, see below).
# QUICK=1 runs a small smoke version and writes to target/bench-quick/ instead of bench/.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/host.sh
require_root bench
# runc's tasks need a root filesystem: busybox-static's. The OCI mode's rows run runc and
# crun, under both shims.
install_missing containerd=containerd protoc=protobuf-compiler /bin/busybox=busybox-static \
    runc=runc crun=crun
bash scripts/test-prereqs.sh

# Our shim as we ship it (static, profile `shim`), the benchmark itself in release.
# The headline is containerd 2.3 (built from the vendored archive, cached), with its own
# runc-v2 in the other column; BENCH_CONTAINERD=1.6 measures against the machine's
# containerd and Debian's runc-v2 instead.
if [ "${BENCH_CONTAINERD:-2.3}" = 2.3 ]; then
    root=$(bash scripts/containerd-2.3.sh)
    export CONTAINERD_BIN="$root/usr/bin/containerd" CTR_BIN="$root/usr/bin/ctr"
fi

# CRIU for the checkpoint rows, first on the daemons' PATH (runc runs the `criu` it finds).
criu=$(bash scripts/criu.sh)
export PATH="$criu:$PATH"

export SHIM_BIN
SHIM_BIN=$(bash scripts/build-shim.sh)
cargo build --release --locked -q -p integration --bin bench
bench="${CARGO_TARGET_DIR:-$PWD/target}/release/bench"
if [ "${QUICK:-}" = 1 ]; then
    "$bench" --quick --out "${CARGO_TARGET_DIR:-$PWD/target}/bench-quick"
else
    "$bench" --out bench
fi
