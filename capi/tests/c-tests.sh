#!/usr/bin/env bash
# C tests of libmdevmig: builds the library, the validator and the CLI (for
# keys), compiles capi/examples/minivmm.c and capi/tests/abi_test.c with
# AddressSanitizer and UndefinedBehaviorSanitizer against the shared library,
# the static library and an installed copy (pkg-config), and runs them. Fails on
# a non-zero exit or any sanitizer report.
#
# usage: bash capi/tests/c-tests.sh    (CARGO_TARGET_DIR is honored, default target/;
#                                       C_TESTS_VERBOSE=1 prints every output line)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$root/$target ;; esac
lib=$target/debug
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
step() { echo; echo "--- $* ($(($(date +%s) - start))s)"; }

step "build: libmdevmig, mdevmig-validator, the CLI"
cargo build -p mdevmig-capi
cargo build -p mdevmig --bin mdevmig-validator
cargo build -p mdevmig-cli
validator=$lib/mdevmig-validator

step "keys"
"$lib/mdevmig" keygen --out "$work/site"
"$lib/mdevmig" keygen --out "$work/other" # a key the destinations do not trust
key=$work/site.key trust=$work/site.pub other=$work/other.pub

step "compile (cc: $(cc --version | head -n 1))"
cflags=(-fsanitize=address,undefined -fno-omit-frame-pointer -g -Wall -Wextra -Werror -I"$root/capi/include")
shared=(-L"$lib" -lmdevmig -Wl,-rpath,"$lib" -lpthread)
# libmdevmig.a and what it needs (rustc --print native-static-libs).
static=("$lib/libmdevmig.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl)
for prog in examples/minivmm tests/abi_test; do
    name=$(basename "$prog")
    cc "${cflags[@]}" "capi/$prog.c" "${shared[@]}" -o "$work/$name"
    cc "${cflags[@]}" "capi/$prog.c" "${static[@]}" -o "$work/$name-static"
    echo "$name, $name-static"
done
if ldd "$work/minivmm-static" | grep -q libmdevmig; then
    echo "minivmm-static links libmdevmig.so, not libmdevmig.a" >&2
    exit 1
fi

step "install into a temporary prefix; compile minivmm with pkg-config"
bash capi/install.sh --profile debug "$work/prefix"
export PKG_CONFIG_PATH=$work/prefix/lib/pkgconfig
if command -v pkg-config >/dev/null 2>&1; then
    flags=$(pkg-config --cflags --libs mdevmig)
    libdir=$(pkg-config --variable=libdir mdevmig)
    echo "pkg-config --cflags --libs mdevmig: $flags"
else
    flags="-I$work/prefix/include -L$work/prefix/lib -lmdevmig" libdir=$work/prefix/lib
    echo "SKIP pkg-config is not installed: compiling with $flags"
fi
# shellcheck disable=SC2086 # word splitting of the flags is intended
cc "${cflags[@]}" capi/examples/minivmm.c $flags -Wl,-rpath,"$libdir" -o "$work/minivmm-installed"
ldd "$work/minivmm-installed" | grep "libmdevmig.so => $work/prefix/lib/"

# Sanitizers: any report fails the run. No LeakSanitizer suppressions: with
# these programs LSan finds nothing in Rust's one-time allocations (the handle
# table and thread-locals stay reachable or are freed at thread exit), and the
# library's own leaks must stay visible. abi_test also checks, in child
# processes whose reports it captures, that a call refused for a null
# out-pointer allocates nothing.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
sanitizer='ERROR: (Address|Leak|Thread|Memory)Sanitizer|SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:'
failed=0

# run WANT LABEL SHOW CMD...: runs CMD (its stdout and stderr kept), wants exit
# status WANT and no sanitizer report, and prints the lines of its output that
# match SHOW (all of them with C_TESTS_VERBOSE=1, or on failure).
n=0
run() {
    local want=$1 label=$2 show=$3 status=0 t0 secs
    shift 3
    n=$((n + 1))
    t0=$(date +%s%N)
    "$@" >"$work/run$n.out" 2>"$work/run$n.err" || status=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    if [ "$status" -ne "$want" ] || grep -qE "$sanitizer" "$work/run$n.err" "$work/run$n.out"; then
        echo "FAIL $label: exit $status (want $want) in ${secs}s; $*"
        sed 's/^/     | /' "$work/run$n.out" "$work/run$n.err"
        failed=$((failed + 1))
        return 0
    fi
    echo "ok   $label: exit $status in ${secs}s"
    if [ "${C_TESTS_VERBOSE:-0}" = 1 ]; then
        sed 's/^/     | /' "$work/run$n.out" "$work/run$n.err"
    else
        grep -E "$show" "$work/run$n.out" | sed 's/^/     | /' || true
    fi
}
# What a minivmm run shows: its rounds, downtime, verdict.
vmm='^(source flags|pre-copy|rounds|downtime|MATCH|MISMATCH|digests|destination refused)'
# A refusal must name its code.
refusal() { grep -q "^destination refused the stream: $1" "$work/run$n.out" || {
    echo "FAIL the refusal above is not $1"
    failed=$((failed + 1))
}; }

step "minivmm, shared library"
run 0 "Xe VF 64M, guest dirtying 8 MiB/s, PRE_COPY rounds, sandboxed validator" "$vmm" \
    "$work/minivmm" sim:xe/xe-vf-64m,seed=1,dirty-rate=8M sim:xe/xe-vf-64m,seed=2 "$key" "$trust" "$validator"
run 0 "simgpu vgpu-64m, guest dirtying 4 MiB/s" "$vmm" \
    "$work/minivmm" sim:simgpu/vgpu-64m,seed=1,dirty-rate=4M sim:simgpu/vgpu-64m,seed=2 "$key" "$trust"
run 0 "mtty-2, sandboxed validator" "$vmm" \
    "$work/minivmm" sim:mtty/mtty-2,seed=1 sim:mtty/mtty-2,seed=2 "$key" "$trust" "$validator"
run 0 "vgpu-64m without PRE_COPY (flags=1): STOP_COPY only" "$vmm" \
    "$work/minivmm" sim:simgpu/vgpu-64m,seed=3,flags=1 sim:simgpu/vgpu-64m,seed=4 "$key" "$trust"
run 0 "mtty-2 with a 1 KiB budget" "$vmm" \
    "$work/minivmm" -b 1K sim:mtty/mtty-2,seed=5 sim:mtty/mtty-2,seed=6 "$key" "$trust"
run 1 "refused: incompatible, mtty-2 -> mtty-1" "$vmm" \
    "$work/minivmm" sim:mtty/mtty-2,seed=1 sim:mtty/mtty-1,seed=2 "$key" "$trust"
refusal compat.type_mismatch
run 1 "refused: the destination trusts another key" "$vmm" \
    "$work/minivmm" sim:mtty/mtty-2,seed=1 sim:mtty/mtty-2,seed=2 "$key" "$other" "$validator"
refusal auth.untrusted_key
run 2 "usage error" '^$' "$work/minivmm" only-one-argument

step "minivmm, static library and installed copy"
run 0 "static: Xe VF 64M, guest dirtying 8 MiB/s, sandboxed validator" "$vmm" \
    "$work/minivmm-static" sim:xe/xe-vf-64m,seed=3,dirty-rate=8M sim:xe/xe-vf-64m,seed=4 "$key" "$trust" "$validator"
run 0 "installed (pkg-config): mtty-2, the installed validator" "$vmm" \
    "$work/minivmm-installed" sim:mtty/mtty-2,seed=7 sim:mtty/mtty-2,seed=8 "$key" "$trust" \
    "$work/prefix/bin/mdevmig-validator"

abi='^(FAIL|XFAIL|XPASS|abi_test:)'
step "abi_test, shared library"
run 0 "abi_test (shared)" "$abi" "$work/abi_test" "$key" "$trust" "$other" "$validator"
step "abi_test, static library"
run 0 "abi_test (static)" '^(FAIL|XPASS|abi_test:)' "$work/abi_test-static" "$key" "$trust" "$other" "$validator"

step "done in $(($(date +%s) - start))s: $n runs, $failed failed"
[ "$failed" -eq 0 ]
