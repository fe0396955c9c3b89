# Sourced by demo.sh and bench.sh: both start a containerd, so both run as root and install
# what a fresh Debian or Ubuntu machine lacks.

# require_root TARGET: stops with exit code 2 and a hint unless this runs as root.
require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "make $1 starts containerd and must run as root (try: sudo make $1)" >&2
        exit 2
    fi
}

# install_missing COMMAND=PACKAGE...: installs each PACKAGE whose COMMAND (a name on PATH
# or an absolute path) is absent.
install_missing() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "==> installing ${missing[*]}"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}
