#!/usr/bin/env bash
# `make shim`: the shim as we ship it, at target/shim/containerd-shim-sample-v2.
#
# Cargo profile `shim` (small code, whole-program LTO) plus two flags for the final link
# only, which is why this is `cargo rustc` and not `cargo build`:
#   -C target-feature=+crt-static   glibc linked in: no ld.so, no libc.so mapped at run time
#   -C relocation-model=static      a fixed-address executable: no start-up relocations
# Together they take a running shim from about 5 MiB of resident memory to under 3 MiB
# (bench/RESULTS.md). The dependencies are built as usual; only the binary is static. The
# shim calls no glibc function that needs NSS or dlopen (users and groups are numeric in
# an OCI spec), so the usual caveats of static glibc do not apply.
set -euo pipefail
cd "$(dirname "$0")/.."
# cargo's progress goes to stderr; stdout is only the path, for the scripts that call this.
cargo rustc --profile shim --locked -p containerd-shim-sample-v2 \
    --bin containerd-shim-sample-v2 -- -C target-feature=+crt-static -C relocation-model=static
echo "${CARGO_TARGET_DIR:-$PWD/target}/shim/containerd-shim-sample-v2"
