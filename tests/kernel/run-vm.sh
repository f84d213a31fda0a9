#!/usr/bin/env bash
# Boot the Debian 6.12 kernel under qemu (TCG) with vfio, vfio_iommu_type1, mdev
# and mtty loaded, and run one guest script in it.
#
#   tests/kernel/run-vm.sh <static-binary> <guest-script> [extra-file...]
#
# In the guest: <static-binary> is /bin/mdevmig, <guest-script> is /test.sh (run by
# busybox sh, cwd /tmp), each extra file is /bin/<its name>, and guest-lib.sh is
# /guest-lib.sh. /init prints "MDEVMIG-VM-RESULT: PASS" or "... FAIL <reason>",
# the guest dmesg, then powers off.
#
# Exit status: 0 PASS and a clean kernel log; 1 the guest test failed; 2 usage or
# bad input; 3 the VM did not boot, crashed or timed out; 4 the test passed but
# the kernel logged WARNING:/BUG:/Oops/Call Trace; 77 skipped (setup.sh could not
# download the kernel packages).
#
# Environment:
#   MDEVMIG_VM_TIMEOUT   seconds before the VM is killed (default 120)
#   MDEVMIG_VM_LOG       console log path (default tests/kernel/cache/logs/<script>-<time>.log)
#   MDEVMIG_VM_APPEND    extra kernel command line arguments
#   MDEVMIG_VM_MEM       guest memory in MiB (default 512)
#   MDEVMIG_VM_VERBOSE=1 print the whole console log, not just the test output
#   MDEVMIG_KERNEL_CACHE see setup.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${MDEVMIG_KERNEL_CACHE:-$HERE/cache}
OUT=$CACHE/out
TIMEOUT=${MDEVMIG_VM_TIMEOUT:-120}
MEM=${MDEVMIG_VM_MEM:-512}

say() { echo "[run-vm] $*" >&2; }
usage() {
	echo "usage: $0 <static-binary> <guest-script> [extra-file...]" >&2
	exit 2
}
bad() {
	echo "[run-vm] ERROR: $*" >&2
	exit 2
}

[ $# -ge 2 ] || usage
BIN=$1
SCRIPT=$2
shift 2
[ -f "$BIN" ] || bad "binary not found: $BIN"
[ -f "$SCRIPT" ] || bad "guest script not found: $SCRIPT"
for f in "$@"; do [ -f "$f" ] || bad "extra file not found: $f"; done

# A dynamically linked binary cannot run in the initramfs (no libc there).
check_static() {
	local hdr
	hdr=$(head -c 4 "$1" | od -An -c | tr -d ' ')
	[ "$hdr" = '177ELF' ] || return 0
	if LC_ALL=C readelf -lW "$1" 2>/dev/null | grep -q 'Requesting program interpreter'; then
		bad "$1 is dynamically linked; build it static (Rust: RUSTFLAGS='-C target-feature=+crt-static', C: -static)"
	fi
}
check_static "$BIN"
for f in "$@"; do check_static "$f"; done

rc=0
"$HERE/setup.sh" || rc=$?
if [ $rc = 77 ]; then
	say "SKIP: kernel packages unavailable (setup.sh exited 77)"
	exit 77
elif [ $rc != 0 ]; then
	say "ERROR: setup.sh failed with status $rc"
	exit 3
fi
# shellcheck disable=SC1091
. "$OUT/kernel.env"

# ------------------------------------------------------------------ initramfs
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mdevmig-vm.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
R=$WORK/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,lib/modules}
cp "$OUT/busybox" "$R/bin/busybox"
cp "$OUT"/modules/*.ko "$OUT/modules/load-order" "$R/lib/modules/"
cp "$BIN" "$R/bin/mdevmig"
cp "$SCRIPT" "$R/test.sh"
cp "$HERE/guest-lib.sh" "$R/guest-lib.sh"
for f in "$@"; do cp "$f" "$R/bin/$(basename "$f")"; done
chmod 0755 "$R/bin/"* "$R/test.sh"
# The kernel opens /dev/console before /init runs.
if [ "$(id -u)" = 0 ]; then mknod -m 600 "$R/dev/console" c 5 1; fi

cat >"$R/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
echo "MDEVMIG-VM-INIT: $(uname -r) up $(cut -d' ' -f1 /proc/uptime)s"

finish() {
	echo "MDEVMIG-VM-DMESG-BEGIN"
	dmesg
	echo "MDEVMIG-VM-DMESG-END"
	echo "MDEVMIG-VM-RESULT: $*"
	sync
	poweroff -f
	sleep 10
}

for m in $(cat /lib/modules/load-order); do
	insmod "/lib/modules/$m" || finish "FAIL insmod $m failed"
done
[ -d /sys/class/mdev_bus/mtty ] || finish "FAIL mtty parent device missing after insmod"
[ -c /dev/vfio/vfio ] || finish "FAIL /dev/vfio/vfio missing after insmod"
echo "MDEVMIG-VM-MODULES: loaded $(cat /lib/modules/load-order | tr '\n' ' ')at $(cut -d' ' -f1 /proc/uptime)s"

cd /tmp
echo "MDEVMIG-VM-TEST-BEGIN"
sh /test.sh
rc=$?
echo "MDEVMIG-VM-TEST-END rc=$rc at $(cut -d' ' -f1 /proc/uptime)s"
if [ $rc = 0 ]; then
	finish "PASS"
elif [ -s /tmp/mdevmig-fail-reason ]; then
	finish "FAIL $(head -n1 /tmp/mdevmig-fail-reason) (test.sh exited $rc)"
else
	finish "FAIL test.sh exited $rc"
fi
EOF
chmod 0755 "$R/init"
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet >"$WORK/initramfs.cpio")

# ----------------------------------------------------------------------- boot
if [ -n "${MDEVMIG_VM_LOG:-}" ]; then
	LOG=$MDEVMIG_VM_LOG
else
	mkdir -p "$CACHE/logs"
	# keep the newest 100 logs
	find "$CACHE/logs" -name '*.log' -printf '%T@ %p\n' | sort -rn | tail -n +100 | cut -d' ' -f2- | xargs -r rm -f
	LOG=$CACHE/logs/$(basename "$SCRIPT" .sh)-$(date +%Y%m%d-%H%M%S)-$$.log
fi
mkdir -p "$(dirname "$LOG")"
say "booting $KERNEL_RELEASE: binary=$BIN test=$SCRIPT timeout=${TIMEOUT}s log=$LOG"
start=$(date +%s.%N)
qrc=0
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 \
	-accel tcg -cpu max -smp 1 -m "$MEM" -nographic -no-reboot -nic none \
	-kernel "$OUT/vmlinuz" -initrd "$WORK/initramfs.cpio" \
	-append "console=ttyS0 panic=-1 quiet ${MDEVMIG_VM_APPEND:-}" \
	</dev/null >"$LOG.raw" 2>&1 || qrc=$?
end=$(date +%s.%N)
# drop CRs and the terminal escapes the firmware prints before the kernel starts
tr -d '\r' <"$LOG.raw" | sed -E 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1b[c()][0-9A-B]?//g' >"$LOG"
rm -f "$LOG.raw"
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')

# ---------------------------------------------------------------------- judge
if [ "${MDEVMIG_VM_VERBOSE:-}" = 1 ]; then
	cat "$LOG"
else
	sed -n '/MDEVMIG-VM-INIT:/p; /^MDEVMIG-VM-MODULES/p; /^MDEVMIG-VM-TEST-BEGIN/,/^MDEVMIG-VM-TEST-END/p' "$LOG"
fi
# Kernel lines: the dumped dmesg plus timestamped console lines.
kernel_lines() {
	sed -n '/^MDEVMIG-VM-DMESG-BEGIN/,/^MDEVMIG-VM-DMESG-END/p' "$LOG"
	grep -E '^\[ *[0-9]+\.[0-9]+\]' "$LOG" || true
}
ISSUES=$(kernel_lines | grep -E 'WARNING:|BUG:|Oops|Call Trace|Kernel panic' | sort -u || true)
result=$(grep -ao 'MDEVMIG-VM-RESULT: .*' "$LOG" | tail -n1 || true)
boot=$(sed -n 's/^.*MDEVMIG-VM-INIT: .* up \([0-9.]*\)s$/\1/p' "$LOG" | head -n1)

fail_vm() {
	say "----- last 40 console lines ($LOG) -----"
	tail -n 40 "$LOG" >&2
	say "VM FAILURE: $*"
	exit 3
}
if [ $qrc = 124 ] || [ $qrc = 137 ]; then
	fail_vm "timed out after ${TIMEOUT}s (qemu killed); ${result:-no result marker}"
fi
if ! grep -aq 'MDEVMIG-VM-INIT:' "$LOG"; then
	fail_vm "the VM never reached /init (qemu exit status $qrc)"
fi
if [ -z "$result" ]; then
	[ -n "$ISSUES" ] && echo "$ISSUES" >&2
	fail_vm "no MDEVMIG-VM-RESULT line: guest crashed or powered off early (qemu exit status $qrc)"
fi
[ $qrc = 0 ] || say "note: qemu exited with status $qrc"
say "$result (boot to /init ${boot:-?}s guest time, VM wall time ${elapsed}s)"
if [ "$result" != "MDEVMIG-VM-RESULT: PASS" ]; then
	[ -n "$ISSUES" ] && { say "kernel problems:" && echo "$ISSUES" >&2; }
	say "TEST FAILED: ${result#MDEVMIG-VM-RESULT: } (log: $LOG)"
	exit 1
fi
if [ -n "$ISSUES" ]; then
	say "kernel problems:"
	echo "$ISSUES" >&2
	say "KERNEL LOG NOT CLEAN (WARNING/BUG/Oops/Call Trace) — see $LOG"
	exit 4
fi
say "OK (log: $LOG)"
