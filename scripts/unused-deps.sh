#!/usr/bin/env bash
# `make lint`: fails when a workspace member declares a dependency its code never names.
#
# What cargo-machete does, in the few lines this workspace needs (machete itself is one
# more thing to build in CI). For each member of the root Cargo.toml's `members`:
#   1. list its [dependencies], [dev-dependencies] and [build-dependencies] (also the
#      `[target.'cfg(..)'.*]` and `[dependencies.name]` forms), in every way Cargo.toml
#      spells one: `name.workspace = true`, `name = "1"`, `name = { ... }`;
#   2. take the name the code uses: the key, `-` turned into `_` (with `package = "real"`
#      the key is the rename the code sees, so the key still is what to look for);
#   3. look for it in the member's src/, tests/, benches/, examples/ and build.rs, as
#      `name::`, `use name`, `name!` or `extern crate name` (`#[name::main]` is `name::`),
#      with `//` comments left out; doc comments count, as rustdoc resolves their links.
#
# A dependency that is needed without being named (only to turn on a feature of another
# crate, say) goes in the member's Cargo.toml the way cargo-machete reads it:
#   [package.metadata.cargo-machete]
#   ignored = ["name"]
# Like machete this is a text search: a local module with a dependency's name hides it.
set -euo pipefail
cd "$(dirname "$0")/.."

# The members, from `members = [...]` in the root Cargo.toml (one line or several).
mapfile -t members < <(
    awk '/^members[[:space:]]*=/ { on = 1 }
         on { print; if (/\]/) exit }' Cargo.toml |
        grep -o '"[^"]*"' | tr -d '"'
)
if [ "${#members[@]}" -eq 0 ]; then
    echo "unused-deps: no workspace members found in Cargo.toml" >&2
    exit 2
fi

# Prints "ignored name" for each name in the cargo-machete ignore list of the Cargo.toml
# $1, then "kind key package" for each of its dependencies.
dependencies() {
    awk '
    function unquote(s) { gsub(/["[:space:]]/, "", s); return s }
    function add(kind, key) {
        if (!((kind, key) in seen)) { seen[kind, key] = 1; order[++n] = kind SUBSEP key }
        if (!((kind, key) in package)) package[kind, key] = key
    }
    function kind_of(header) {
        if (header ~ /dev-dependencies/) return "dev-dependencies"
        if (header ~ /build-dependencies/) return "build-dependencies"
        return "dependencies"
    }
    /^[[:space:]]*\[/ {
        header = $0
        sub(/^[[:space:]]*\[/, "", header); sub(/\][[:space:]]*(#.*)?$/, "", header)
        section = ""; table_key = ""; in_ignored = 0
        if (header ~ /(^|\.)(dev-|build-)?dependencies$/) {
            section = kind_of(header)
        } else if (match(header, /(^|\.)(dev-|build-)?dependencies\.[^.]+$/)) {
            # [dependencies.name]: the whole table is one dependency.
            section = kind_of(header)
            table_key = header; sub(/^.*dependencies\./, "", table_key)
            table_key = unquote(table_key)
            add(section, table_key)
        } else if (header == "package.metadata.cargo-machete") {
            section = "machete"
        }
        next
    }
    section == "" { next }
    section == "machete" {
        if ($0 ~ /^[[:space:]]*ignored[[:space:]]*=/) in_ignored = 1
        if (in_ignored) {
            line = $0; sub(/#.*/, "", line); sub(/^[^=]*=/, "", line)
            while (match(line, /"[^"]*"/)) {
                ignored[substr(line, RSTART + 1, RLENGTH - 2)] = 1
                line = substr(line, RSTART + RLENGTH)
            }
            if ($0 ~ /\]/) in_ignored = 0
        }
        next
    }
    table_key != "" {
        if (match($0, /^[[:space:]]*package[[:space:]]*=[[:space:]]*"[^"]*"/)) {
            value = substr($0, RSTART, RLENGTH); sub(/^[^"]*"/, "", value); sub(/"$/, "", value)
            package[section, table_key] = value
        }
        next
    }
    # A key line: `name = ...` or a dotted `name.sub = ...` (continuation lines of a
    # multi-line array start with a quote or a bracket, and do not match).
    match($0, /^[[:space:]]*"?[A-Za-z0-9_-]+"?(\.[A-Za-z0-9_-]+)?[[:space:]]*=/) {
        lhs = substr($0, RSTART, RLENGTH); sub(/=$/, "", lhs); lhs = unquote(lhs)
        key = lhs; sub(/\..*/, "", key)
        add(section, key)
        rest = substr($0, RSTART + RLENGTH)
        if (lhs == key ".package") {
            value = rest; sub(/^[^"]*"/, "", value); sub(/".*/, "", value)
            package[section, key] = value
        } else if (match(rest, /(^|[{,[:space:]])package[[:space:]]*=[[:space:]]*"[^"]*"/)) {
            value = substr(rest, RSTART, RLENGTH); sub(/^[^"]*"/, "", value); sub(/"$/, "", value)
            package[section, key] = value
        }
    }
    END {
        for (name in ignored) print "ignored", name
        for (i = 1; i <= n; i++) {
            split(order[i], parts, SUBSEP)
            print parts[1], parts[2], package[parts[1], parts[2]]
        }
    }' "$1"
}

status=0
for member in "${members[@]}"; do
    manifest="$member/Cargo.toml"
    # Every Rust file of the member, `//` comments cut off (not `///` or `//!`, and not
    # the `//` of `unix://` or `https://` in a string).
    sources=()
    for dir in src tests benches examples; do
        if [ -d "$member/$dir" ]; then
            mapfile -t -O "${#sources[@]}" sources < <(find "$member/$dir" -name '*.rs' | sort)
        fi
    done
    if [ -f "$member/build.rs" ]; then
        sources+=("$member/build.rs")
    fi
    if [ "${#sources[@]}" -eq 0 ]; then
        echo "unused-deps: $member has no Rust sources" >&2
        status=1
        continue
    fi
    code=$(sed -E 's#(^|[^:/])//([^/!].*)?$#\1#' "${sources[@]}")

    declare -A skip=()
    unused=()
    checked=0
    while read -r kind key package; do
        if [ "$kind" = ignored ]; then
            skip[$key]=1
            continue
        fi
        if [ -n "${skip[$key]:-}" ]; then
            continue
        fi
        checked=$((checked + 1))
        name=${key//-/_}
        pattern="(?<![\\w:])(?:::)?$name(?:::|!)|\\buse\\s+(?:::)?$name\\b|\\bextern\\s+crate\\s+$name\\b"
        if ! grep -qP "$pattern" <<<"$code"; then
            if [ "$package" != "$key" ]; then
                unused+=("$key (package $package, $kind)")
            else
                unused+=("$key ($kind)")
            fi
        fi
    done < <(dependencies "$manifest")

    if [ "${#unused[@]}" -gt 0 ]; then
        echo "$manifest: declared but never used in $member's code:"
        printf '  %s\n' "${unused[@]}"
        status=1
    else
        echo "$manifest: all $checked dependencies are used${skip[*]:+ (${#skip[@]} ignored)}"
    fi
    unset skip
done
if [ "$status" -ne 0 ]; then
    echo "Remove them, or, when a dependency is needed without being named, list it under" \
        "[package.metadata.cargo-machete] ignored = [...] with a comment saying why." >&2
fi
exit "$status"
