#!/usr/bin/env bash
# What the tests need of this machine, before `make test`, `make test-matrix`, `make bench`
# and `make conformance`, so that the README's test command works on a fresh machine:
#
# - as root, the packages a fresh Debian or Ubuntu machine lacks: containerd (with ctr),
#   protoc (containerd-client's build script), runc and crun (the OCI mode's tests),
#   busybox-static (the test image's one binary), gcc (cargo links through cc). Without
#   root, nothing is installed: the integration tests need root anyway, and say so;
# - a cgroup layout crun accepts. crun 1.8 refuses a *hybrid* machine (v1 hierarchies plus a
#   cgroup2 mount) whose cgroup2 mount holds controllers: "cgroups in hybrid mode not
#   supported, drop all controllers from cgroupv2". A controller lands there when no v1
#   hierarchy is mounted for it (the development VMs have hugetlb so). Each such controller
#   is mounted as a v1 hierarchy under /sys/fs/cgroup, as systemd's hybrid layout has it;
#   nothing else changes, and a v2-only or complete v1 machine is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/host.sh

needed=(containerd=containerd ctr=containerd protoc=protobuf-compiler runc=runc crun=crun
    /bin/busybox=busybox-static cc=gcc)
if [ "$(id -u)" -eq 0 ]; then
    install_missing "${needed[@]}"
else
    missing=()
    for pair in "${needed[@]}"; do
        command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "The tests need: ${missing[*]}. Run make test as root (it installs them), or: apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

unified=/sys/fs/cgroup/unified
if [ "$(id -u)" -eq 0 ] && [ -f "$unified/cgroup.controllers" ]; then
    for controller in $(cat "$unified/cgroup.controllers"); do
        dir="/sys/fs/cgroup/$controller"
        if ! mountpoint -q "$dir"; then
            echo "test-prereqs: mounting cgroup v1 $controller at $dir (crun refuses a hybrid machine whose cgroup2 holds controllers)"
            mkdir -p "$dir"
            mount -t cgroup -o "$controller" cgroup "$dir"
        fi
    done
fi

# CRIU 4.2 for the checkpoint tests, built once from the vendored source (scripts/criu.sh):
# here, so that its build (a minute the first time) is not inside a test. Where it cannot
# be built or `criu check` fails, the checkpoint tests say so (SAMPLE_SHIM_SKIP_CRIU=1
# skips them).
if [ "$(id -u)" -eq 0 ]; then
    bash scripts/criu.sh >/dev/null || echo "test-prereqs: no working CRIU here (scripts/criu.sh failed): the checkpoint tests will fail unless SAMPLE_SHIM_SKIP_CRIU=1" >&2
fi
