#!/usr/bin/env bash
# Build the smoke-test guest binaries into tests/kernel/cache/smoke/:
#   hello       static Rust hello (stand-in for /bin/mdevmig; C fallback without rustc)
#   vfio-probe  static C probe of the VFIO migration uAPI (needs setup.sh's uapi vfio.h)
#   mttyctl     static C tool for mtty register access / raw migration state (mtty-guest.sh)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${MDEVMIG_KERNEL_CACHE:-$HERE/../cache}
OUT=$CACHE/smoke
mkdir -p "$OUT"
UAPI=$CACHE/out/uapi
[ -f "$UAPI/linux/vfio.h" ] || { echo "build.sh: $UAPI/linux/vfio.h missing: run tests/kernel/setup.sh first" >&2; exit 1; }

if [ ! -x "$OUT/vfio-probe" ] || [ "$HERE/vfio-probe.c" -nt "$OUT/vfio-probe" ] || [ "$UAPI/linux/vfio.h" -nt "$OUT/vfio-probe" ]; then
	# -I puts the 6.12 <linux/vfio.h> ahead of the host's older one; the rest of
	# <linux/...> still comes from the host's linux-libc-dev.
	cc -static -O2 -Wall -Werror -D__user= -I "$UAPI" -o "$OUT/vfio-probe" "$HERE/vfio-probe.c"
fi
if [ ! -x "$OUT/mttyctl" ] || [ "$HERE/mttyctl.c" -nt "$OUT/mttyctl" ] || [ "$UAPI/linux/vfio.h" -nt "$OUT/mttyctl" ]; then
	cc -static -O2 -Wall -Werror -D__user= -I "$UAPI" -o "$OUT/mttyctl" "$HERE/mttyctl.c"
fi
if [ ! -x "$OUT/hello" ] || [ "$HERE/hello.rs" -nt "$OUT/hello" ]; then
	if command -v rustc >/dev/null; then
		rustc -O -C target-feature=+crt-static -o "$OUT/hello" "$HERE/hello.rs"
	else
		printf '#include <stdio.h>\nint main(void){puts("hello from a static C binary in the guest");return 0;}\n' |
			cc -static -O2 -x c -o "$OUT/hello" -
	fi
fi
echo "$OUT/hello $OUT/vfio-probe $OUT/mttyctl"
