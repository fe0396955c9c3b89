#!/usr/bin/env bash
# `make test-matrix`: the integration suite (the `ctr` scenarios and the `shim-demo`
# walkthrough) against every containerd of the matrix (see containerd-matrix.sh), then a
# summary table. CONTAINERD_VERSIONS picks versions (default: "1.6 1.7 2.1 2.3"; 2.3 is built
# from the vendored archive by containerd-2.3.sh). Run as root,
# after `cargo build --workspace`.
set -uo pipefail
cd "$(dirname "$0")/.."

only=" ${CONTAINERD_VERSIONS:-1.6 1.7 2.1 2.3} "
status=0
summary=()
matrix=$(bash scripts/containerd-matrix.sh) || exit 1
# containerd 2.3 is built from the vendored release archive (minutes, cached): only if wanted.
case "$only" in *" 2.3 "*) matrix+=$'\n'"2.3 $(bash scripts/containerd-2.3.sh)" || exit 1 ;; esac
while read -r label root; do
    case "$only" in *" $label "*) ;; *) continue ;; esac
    bin="${root%/}/usr/bin"
    version=$("$bin/containerd" --version | awk '{print $3}')
    echo "::group::integration tests against containerd $version"
    start=$(date +%s)
    # `--workspace --tests`, not `-p integration`: the same features as `make test`, so cargo
    # reuses its build instead of compiling the dependencies again (about 100 s on 2 cores).
    if CONTAINERD_BIN="$bin/containerd" CTR_BIN="$bin/ctr" EXPECT_CONTAINERD_VERSION="$label" \
        cargo test --workspace --tests --locked -q; then
        result=pass
    else
        result=FAIL
        status=1
    fi
    echo "::endgroup::"
    summary+=("$(printf '%-8s %-28s %-6s %ss' "$label" "$version" "$result" "$(($(date +%s) - start))")")
done <<<"$matrix"

echo
printf '%-8s %-28s %-6s %s\n' MATRIX CONTAINERD RESULT TIME
printf '%s\n' "${summary[@]}"
exit "$status"
