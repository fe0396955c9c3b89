#!/usr/bin/env bash
# Fetches the containerd versions of the CI matrix from Debian's own archive, without
# upgrading anything on this machine, and prints one line per version: "<label> <root>",
# where <root>/usr/bin holds that version's containerd and ctr.
#
#   1.6  Debian 12 (bookworm): the machine's own package, already installed
#   1.7  Debian 13 (trixie):   apt-get download containerd/trixie, unpacked with dpkg-deb -x
#   2.1  Debian unstable (sid): apt-get download containerd/sid, unpacked with dpkg-deb -x
#
# The trixie and sid suites are added with pin priority 1, so apt never installs from them
# on its own, from the Debian archive this machine's apt already uses (its mirror or
# proxy). Unpacked trees are cached in $SHIM_MATRIX_CACHE (default /var/cache/shim-matrix).
# Run as root.
set -euo pipefail

cache=${SHIM_MATRIX_CACHE:-/var/cache/shim-matrix}
sources=/etc/apt/sources.list.d/shim-matrix.sources
mkdir -p "$cache"

# debian_archive: the URI this machine's apt fetches its own Debian release from (the
# repository serving `<codename> main`), asked of apt itself, so both source formats
# (sources.list lines and deb822 .sources files) and any mirror or proxy count. Prints
# nothing on a machine that is not Debian or has no such repository.
debian_archive() {
    local codename
    codename=$(. /etc/os-release 2>/dev/null && [ "${ID:-}" = debian ] &&
        echo "${VERSION_CODENAME:-}") || true
    [ -n "$codename" ] || return 0
    # --no-release-info: also the repositories `apt-get update` has not fetched yet.
    apt-get indextargets --no-release-info \
        --format '$(TARGET_OF) $(IDENTIFIER) $(RELEASE) $(COMPONENT) $(REPO_URI)' |
        awk -v release="$codename" '$1 == "deb" && $2 == "Packages" && $3 == release &&
            $4 == "main" && !found { print $5; found = 1 }' || true
}

if [ ! -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debian-archive-keyring >&2
fi
archive=$(debian_archive)
if [ -z "$archive" ]; then
    archive=http://deb.debian.org/debian
    echo "containerd-matrix: no Debian archive found in this machine's apt sources;" \
        "fetching trixie and sid from $archive" >&2
fi
wanted="Types: deb
URIs: $archive
Suites: trixie sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
# (Re)written when missing or different: a machine moved behind another mirror follows.
if [ ! -f "$sources" ] || [ "$(cat "$sources")" != "$wanted" ]; then
    printf '%s\n' "$wanted" >"$sources"
    cat >/etc/apt/preferences.d/shim-matrix <<PINS
Package: *
Pin: release n=trixie
Pin-Priority: 1

Package: *
Pin: release n=sid
Pin-Priority: 1
PINS
    apt-get update -q >&2
fi

echo "1.6 /"
for suite in trixie sid; do
    debs=$(mktemp -d)
    chmod 777 "$debs" # apt downloads as the unprivileged _apt user
    (cd "$debs" && apt-get download -q "containerd/$suite" >&2)
    deb=$(ls "$debs"/containerd_*.deb)
    version=$(dpkg-deb -f "$deb" Version)
    root="$cache/$version"
    if [ ! -x "$root/usr/bin/containerd" ]; then
        rm -rf "$root"
        dpkg-deb -x "$deb" "$root"
    fi
    rm -rf "$debs"
    label=$(echo "$version" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
    echo "$label $root"
done
