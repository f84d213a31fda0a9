#!/usr/bin/env bash
# CI entry point for the real-kernel test: mdevmig against real mtty mdevs
# in a Debian 6.12 VM.
#
#   tests/kernel/ci.sh
#
# 1. setup.sh: host packages, kernel .debs, mtty.ko (cached in tests/kernel/cache/,
#    git-ignored; a clean clone downloads ~45 s, a warm cache takes ~0.1 s);
# 2. a static mdevmig (cargo, --target x86_64-unknown-linux-gnu, +crt-static), stripped;
# 3. a static libmdevmig.a (the same way) and capi/examples/minivmm.c linked
#    statically against it, stripped;
# 4. serve/examples/qmp-vmm.c (a VMM that passes its VFIO device fd to `mdevmig serve`
#    over QMP and gets the data fds back), static and stripped;
# 5. the static guest tools (smoke/build.sh: mttyctl, vfio-probe);
# 6. run-vm.sh <mdevmig> mtty-guest.sh <mttyctl> <minivmm> <qmp-vmm>: boots the VM,
#    runs every check, and fails if the kernel logged WARNING/BUG/Oops/Call Trace.
#
# Exit status: 0 all checks passed, or SKIPPED because the kernel packages could not
# be downloaded (setup.sh status 77: no network, loudly reported; set
# MDEVMIG_KERNEL_REQUIRED=1 to make that a failure too); anything else is a failure:
# 1 a check failed, 3 the VM did not boot/crashed/timed out, 4 the kernel log is not
# clean, other values a setup or build failure.
#
# Environment: CARGO_TARGET_DIR, CARGO (default cargo), MDEVMIG_KERNEL_REQUIRED=1, and
# everything run-vm.sh / setup.sh take (MDEVMIG_KERNEL_CACHE, MDEVMIG_VM_TIMEOUT, ...).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${MDEVMIG_KERNEL_CACHE:-$HERE/cache}
export MDEVMIG_KERNEL_CACHE=$CACHE
CARGO=${CARGO:-cargo}
TRIPLE=x86_64-unknown-linux-gnu

now() { date +%s.%N; }
T0=$(now)
TIMINGS=()
PHASE=
PHASE_T=
phase() { # phase NAME: end the running phase (recording its time), start NAME
	local t
	t=$(now)
	if [ -n "$PHASE" ]; then
		TIMINGS+=("$(awk -v a="$PHASE_T" -v b="$t" -v n="$PHASE" 'BEGIN{printf "%-22s %6.1f s", n, b-a}')")
	fi
	PHASE=$1
	PHASE_T=$t
	[ -n "$PHASE" ] && echo "[kernel-ci] ===== $PHASE" >&2
	return 0
}
report_timings() {
	phase ""
	echo "[kernel-ci] timings:" >&2
	for l in "${TIMINGS[@]}"; do echo "[kernel-ci]   $l" >&2; done
	awk -v a="$T0" -v b="$(now)" 'BEGIN{printf "[kernel-ci]   %-22s %6.1f s\n", "total", b-a}' >&2
}
banner() { # banner LINE...: a loud block on stderr
	echo "[kernel-ci] ################################################################" >&2
	for l in "$@"; do echo "[kernel-ci] ## $l" >&2; done
	echo "[kernel-ci] ################################################################" >&2
}
failed() { # failed STATUS WHAT
	report_timings
	banner "FAILED: $2" "real-kernel VM test did NOT pass (status $1)"
	exit "$1"
}
skipped() {
	report_timings
	if [ "${MDEVMIG_KERNEL_REQUIRED:-}" = 1 ]; then
		banner "FAILED: kernel packages unreachable and MDEVMIG_KERNEL_REQUIRED=1" "$1"
		exit 77
	fi
	banner "SKIPPED: the real-kernel VM test did NOT run" "$1" \
		"(exit 0: package downloads are unreachable from this machine)"
	exit 0
}

# ------------------------------------------------------------------------ setup
phase "setup (kernel, mtty)"
rc=0
"$HERE/setup.sh" || rc=$?
if [ $rc = 77 ]; then
	skipped "setup.sh could not download the Debian 6.12 kernel packages"
elif [ $rc != 0 ]; then
	failed 1 "setup.sh failed with status $rc"
fi

# ---------------------------------------------------------------- build mdevmig
phase "build static mdevmig"
command -v "$CARGO" >/dev/null || failed 1 "cargo not found"
mkdir -p "$CACHE/ci"
rc=0
# RUSTFLAGS applies to the target crates only because --target is given (proc-macros
# are built for the host without it); the binary comes out static-pie.
(cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
	"$CARGO" build --release --target "$TRIPLE" --bin mdevmig \
	--message-format=json-render-diagnostics >"$CACHE/ci/cargo.json") || rc=$?
[ $rc = 0 ] || failed 1 "cargo build of the static mdevmig failed (status $rc)"
BIN=$(sed -n 's/.*"executable":"\([^"]*\/mdevmig\)".*/\1/p' "$CACHE/ci/cargo.json" | tail -n1)
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then failed 1 "cargo did not report the mdevmig executable"; fi
# debug info makes it ~18 MiB; the VM only needs the code
strip -o "$CACHE/ci/mdevmig" "$BIN" || failed 1 "strip $BIN"
echo "[kernel-ci] mdevmig: $BIN -> $CACHE/ci/mdevmig ($(stat -c %s "$CACHE/ci/mdevmig") bytes)" >&2

# ------------------------------------------------- libmdevmig.a and minivmm
phase "build static minivmm"
rc=0
(cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
	"$CARGO" build --release --target "$TRIPLE" -p mdevmig-capi \
	--message-format=json-render-diagnostics >"$CACHE/ci/cargo-capi.json") || rc=$?
[ $rc = 0 ] || failed 1 "cargo build of the static libmdevmig.a failed (status $rc)"
LIBA=$(sed -n 's/.*"filenames":\[[^]]*"\([^"]*\/libmdevmig\.a\)".*/\1/p' "$CACHE/ci/cargo-capi.json" | tail -n1)
if [ -z "$LIBA" ] || [ ! -f "$LIBA" ]; then failed 1 "cargo did not report libmdevmig.a"; fi
UAPI=$CACHE/out/uapi
[ -f "$UAPI/linux/vfio.h" ] || failed 1 "$UAPI/linux/vfio.h missing (setup.sh)"
# -I puts the 6.12 <linux/vfio.h> ahead of the host's (as smoke/build.sh does)
cc -static -O2 -Wall -Werror -D__user= -I "$UAPI" -I "$ROOT/capi/include" -o "$CACHE/ci/minivmm.dbg" \
	"$ROOT/capi/examples/minivmm.c" "$LIBA" -lpthread -ldl -lm ||
	failed 1 "compiling capi/examples/minivmm.c against $LIBA failed"
strip -o "$CACHE/ci/minivmm" "$CACHE/ci/minivmm.dbg" || failed 1 "strip minivmm"
rm -f "$CACHE/ci/minivmm.dbg"
echo "[kernel-ci] minivmm: $LIBA -> $CACHE/ci/minivmm ($(stat -c %s "$CACHE/ci/minivmm") bytes)" >&2

# ------------------------------------------------------------------- qmp-vmm
phase "build static qmp-vmm"
# plain POSIX sockets and the 6.12 uapi <linux/vfio.h>; no library
cc -static -O2 -Wall -Werror -D__user= -I "$UAPI" -o "$CACHE/ci/qmp-vmm.dbg" \
	"$ROOT/serve/examples/qmp-vmm.c" || failed 1 "compiling serve/examples/qmp-vmm.c failed"
strip -o "$CACHE/ci/qmp-vmm" "$CACHE/ci/qmp-vmm.dbg" || failed 1 "strip qmp-vmm"
rm -f "$CACHE/ci/qmp-vmm.dbg"
echo "[kernel-ci] qmp-vmm: $CACHE/ci/qmp-vmm ($(stat -c %s "$CACHE/ci/qmp-vmm") bytes)" >&2

# ------------------------------------------------------------------ guest tools
phase "build guest tools"
"$HERE/smoke/build.sh" >/dev/null || failed 1 "building the guest tools (smoke/build.sh) failed"
MTTYCTL=$CACHE/smoke/mttyctl

# ------------------------------------------------------------------------ VM
phase "VM: mtty-guest.sh"
rc=0
"$HERE/run-vm.sh" "$CACHE/ci/mdevmig" "$HERE/mtty-guest.sh" "$MTTYCTL" "$CACHE/ci/minivmm" \
	"$CACHE/ci/qmp-vmm" || rc=$?
case $rc in
0) ;;
77) skipped "run-vm.sh: kernel packages unavailable" ;;
1) failed 1 "a check in mtty-guest.sh failed (see the FAIL line above)" ;;
3) failed 3 "the VM did not boot, crashed or timed out" ;;
4) failed 4 "the test passed but the kernel logged WARNING/BUG/Oops/Call Trace" ;;
*) failed "$rc" "run-vm.sh exited with status $rc" ;;
esac

report_timings
banner "PASSED: mdevmig against real mtty mdevs in the $(grep '^KERNEL_RELEASE=' "$CACHE/out/kernel.env" | cut -d= -f2) VM"
