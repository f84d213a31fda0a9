#!/usr/bin/env bash
# Installs libmdevmig under PREFIX from a finished build:
#
#   PREFIX/lib/libmdevmig.so, PREFIX/lib/libmdevmig.a
#   PREFIX/include/mdevmig.h
#   PREFIX/lib/pkgconfig/mdevmig.pc
#   PREFIX/bin/mdevmig-validator      (the sandboxed vendor validator)
#
# usage: capi/install.sh [--profile release|debug] PREFIX
# Build first (CARGO_TARGET_DIR is honored, default target/):
#   cargo build --release -p mdevmig-capi && cargo build --release -p mdevmig --bin mdevmig-validator
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
profile=release
if [ "${1:-}" = --profile ]; then
    profile=${2:?--profile needs release or debug}
    shift 2
fi
if [ $# -ne 1 ]; then
    echo "usage: capi/install.sh [--profile release|debug] PREFIX" >&2
    exit 2
fi
prefix=$(mkdir -p "$1" && cd "$1" && pwd)
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$root/$target ;; esac
from=$target/$profile
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/capi/Cargo.toml" | head -n 1)

for f in libmdevmig.so libmdevmig.a mdevmig-validator; do
    if [ ! -f "$from/$f" ]; then
        echo "capi/install.sh: $from/$f is missing; build it first (see the top of this script)" >&2
        exit 1
    fi
done
install -d "$prefix/lib/pkgconfig" "$prefix/include" "$prefix/bin"
install -m 0755 "$from/libmdevmig.so" "$prefix/lib/"
install -m 0644 "$from/libmdevmig.a" "$prefix/lib/"
install -m 0644 "$root/capi/include/mdevmig.h" "$prefix/include/"
install -m 0755 "$from/mdevmig-validator" "$prefix/bin/"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" "$root/capi/mdevmig.pc.in" \
    > "$prefix/lib/pkgconfig/mdevmig.pc"
chmod 0644 "$prefix/lib/pkgconfig/mdevmig.pc"
echo "libmdevmig $version ($profile) installed under $prefix"
