#!/usr/bin/env bash
# `make demo`: the guided walkthrough on a fresh Debian or Ubuntu machine, as root.
# `make demo-pod` (`demo.sh pod`): the pod tour, over the CRI API.
# `make demo-pod-oci` (`demo.sh pod-oci`): the pod tour in real containers (the handler
# `sample-oci`: our shim in the OCI mode, with runc), in busybox and pause images made here.
#
# Installs containerd and protoc if absent, builds the shim (`make shim`) and shim-demo,
# starts a private containerd under a temporary directory with the shim first on its PATH
# (or uses the daemon named by CONTAINERD_ADDRESS), runs `shim-demo walkthrough --yes` (or
# `shim-demo pod --yes`), and stops and removes what it started. For the pod tour the
# private containerd runs its CRI plugin, with the runtime handler `sample` for our shim and
# the demo's tiny image as the sandbox image (no registry is needed), host network only.
# Extra arguments go to the tour (e.g. `make demo ARGS=--json`).
set -euo pipefail
cd "$(dirname "$0")/.."

tour=walkthrough
oci=no
if [ "${1:-}" = pod ]; then
    tour=pod
    shift
elif [ "${1:-}" = pod-oci ]; then
    tour=pod
    oci=yes
    shift
fi

. scripts/host.sh
require_root demo
install_missing containerd=containerd protoc=protobuf-compiler runc=runc /bin/busybox=busybox-static \
    cc=gcc

echo "==> building the shim and shim-demo (a cold build takes a few minutes)"
shim=$(bash scripts/build-shim.sh)
cargo build --release --locked -p shim-demo
demo="${CARGO_TARGET_DIR:-$PWD/target}/release/shim-demo"
if [ "$tour" = pod ]; then
    # The pause image (every pod's sandbox image) and busybox, made offline.
    cargo build --release --locked -p integration --bin sample-image
    sample_image="${CARGO_TARGET_DIR:-$PWD/target}/release/sample-image"
fi

# shim-demo keeps its FIFOs under /run/shim-demo (demo-cli/src/fifo.rs) and removes each
# task's directory when done, but not that root, which other runs may share. Remove it at
# the end if this run made it and it is empty.
fifo_root=/run/shim-demo
fifo_root_was_there=$([ -e "$fifo_root" ] && echo yes || echo no)
remove_fifo_root() {
    if [ "$fifo_root_was_there" = no ]; then
        rmdir "$fifo_root" 2>/dev/null || true
    fi
}

if [ -n "${CONTAINERD_ADDRESS:-}" ]; then
    echo "==> using the containerd at $CONTAINERD_ADDRESS"
    trap remove_fifo_root EXIT
    "$demo" --address "$CONTAINERD_ADDRESS" "$tour" --yes "$@"
    exit
fi

dir=$(mktemp -d /tmp/shim-demo.XXXXXX)
mkdir "$dir/bin"
ln -s "$shim" "$dir/bin/"
# containerd 2.x wants config version 3 for the CRI settings; 1.6 and 1.7 read version 2.
major=$(containerd --version | awk '{print $3}' | sed 's/^v//; s/[.].*//')
config_version=2
[ "$tour" = pod ] && [ "$major" -ge 2 ] && config_version=3
disabled='"io.containerd.grpc.v1.cri"'
[ "$tour" = pod ] && disabled='"io.containerd.nri.v1.nri"'
cat >"$dir/config.toml" <<TOML
version = $config_version
root = "$dir/root"
state = "$dir/state"
disabled_plugins = [$disabled]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
TOML
# The sandbox image: the pause image the OCI mode runs (the host mode runs its own pause).
image=localhost/sample-shim-test/pause:1
printf 'BinaryName = "runc"\n' >"$dir/sample-oci.toml"
# The host mode runs a pod only when its handler asks for it by name.
printf 'mode = "host"\n' >"$dir/sample-host.toml"
if [ "$tour" = pod ] && [ "$config_version" = 2 ]; then
    cat >>"$dir/config.toml" <<TOML
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$image"
  disable_cgroup = true
  disable_apparmor = true
  restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sample]
  runtime_type = "com.example.sample.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sample.options]
    ConfigPath = "$dir/sample-host.toml"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sample-oci]
  runtime_type = "com.example.sample.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sample-oci.options]
    ConfigPath = "$dir/sample-oci.toml"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "$dir/cni/bin"
  conf_dir = "$dir/cni/conf"
TOML
elif [ "$tour" = pod ]; then
    cat >>"$dir/config.toml" <<TOML
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "$image"
[plugins."io.containerd.cri.v1.runtime"]
  disable_cgroup = true
  disable_apparmor = true
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.sample]
  runtime_type = "com.example.sample.v2"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.sample.options]
    ConfigPath = "$dir/sample-host.toml"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.sample-oci]
  runtime_type = "com.example.sample.v2"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.sample-oci.options]
    ConfigPath = "$dir/sample-oci.toml"
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dir = "$dir/cni/bin"
  conf_dir = "$dir/cni/conf"
TOML
fi

echo "==> starting a private containerd in $dir"
PATH="$dir/bin:$PATH" containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
daemon=$!

# Stops what this script started, by pid: any shim of this daemon (found by its socket on
# the command line) with its task's process groups, then containerd.
stop() {
    for cmdline in /proc/[0-9]*/cmdline; do
        pid=${cmdline#/proc/}; pid=${pid%/cmdline}
        if tr '\0' ' ' <"$cmdline" 2>/dev/null | grep -q -- "-address $dir/containerd.sock "; then
            for stat in /proc/[0-9]*/stat; do
                read -r child _ _ ppid pgid _ <"$stat" 2>/dev/null || continue
                [ "$ppid" = "$pid" ] && kill -KILL -- "-$pgid" 2>/dev/null
            done
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    kill -TERM "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    # The CRI plugin's mounts (a pod's shm), should a tour have been cut short.
    { grep -o " $dir/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r point; do
        umount -l "$point" 2>/dev/null || true
    done
    rm -rf "$dir"
    # The namespace's parent cgroup, which a task's `/<namespace>/<id>` cgroup needs and
    # nobody removes (containerd's runc shim leaves it too): gone if empty, left alone if
    # another containerd's tasks are in it.
    for parent in /sys/fs/cgroup/*/default /sys/fs/cgroup/default /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/k8s.io; do
        [ -d "$parent" ] && rmdir "$parent" 2>/dev/null || true
    done
    # This daemon's FIFO directory, if an interrupted walkthrough left it: shim-demo names
    # it by the first 12 hex digits of the SHA-256 of the daemon's socket path.
    rm -rf "$fifo_root/$(printf %s "$dir/containerd.sock" | sha256sum | cut -c1-12)"
    remove_fifo_root
}
trap stop EXIT

for _ in $(seq 200); do
    ctr --address "$dir/containerd.sock" version >/dev/null 2>&1 && break
    sleep 0.1
done

tour_args=()
if [ "$tour" = pod ]; then
    for kind in --pause --busybox; do
        name=$("$sample_image" "$kind" "$dir/image.tar")
        ctr --address "$dir/containerd.sock" --namespace k8s.io images import "$dir/image.tar" >/dev/null
        [ "$kind" = --busybox ] && busybox_image=$name
    done
    [ "$oci" = yes ] && tour_args=(--handler sample-oci --image "$busybox_image")
fi

"$demo" --address "$dir/containerd.sock" "$tour" --yes "${tour_args[@]}" "$@"
