#!/usr/bin/env bash
# Prove the harness: setup, build the smoke binaries, boot the VM and run smoke-guest.sh
# (creates mtty-2 + mtty-1 mdevs, checks /dev/vfio nodes, runs vfio-probe on both).
# Exit status as run-vm.sh (0 pass, 77 skipped: kernel packages unreachable).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${MDEVMIG_KERNEL_CACHE:-$HERE/cache}
rc=0
"$HERE/setup.sh" || rc=$?
[ $rc = 0 ] || exit $rc
"$HERE/smoke/build.sh" >/dev/null
exec "$HERE/run-vm.sh" "$CACHE/smoke/hello" "$HERE/smoke-guest.sh" "$CACHE/smoke/vfio-probe"
