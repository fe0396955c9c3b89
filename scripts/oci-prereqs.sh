#!/usr/bin/env bash
# What the OCI mode's tests (integration/tests/oci.rs) need of this machine, checked before
# `make test` and `make test-matrix` (run as root):
#
# - runc and crun (Debian's packages) and busybox-static (the test image's one binary);
# - a cgroup layout crun accepts. crun 1.8 refuses a *hybrid* machine (v1 hierarchies plus a
#   cgroup2 mount) whose cgroup2 mount holds controllers: "cgroups in hybrid mode not
#   supported, drop all controllers from cgroupv2". A controller lands there when no v1
#   hierarchy is mounted for it (the development VMs have hugetlb so). Each such controller
#   is mounted as a v1 hierarchy under /sys/fs/cgroup, as systemd's hybrid layout has it;
#   nothing else changes, and a v2-only or complete v1 machine is left alone.
set -euo pipefail

missing=()
for tool in runc crun; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -x /bin/busybox ] || missing+=(busybox-static)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "The OCI mode's tests need: ${missing[*]}. Install them: apt-get install -y ${missing[*]}" >&2
    exit 1
fi

unified=/sys/fs/cgroup/unified
if [ "$(id -u)" -eq 0 ] && [ -f "$unified/cgroup.controllers" ]; then
    for controller in $(cat "$unified/cgroup.controllers"); do
        dir="/sys/fs/cgroup/$controller"
        if ! mountpoint -q "$dir"; then
            echo "oci-prereqs: mounting cgroup v1 $controller at $dir (crun refuses a hybrid machine whose cgroup2 holds controllers)"
            mkdir -p "$dir"
            mount -t cgroup -o "$controller" cgroup "$dir"
        fi
    done
fi
