#!/usr/bin/env bash
# Prepare everything the real-kernel VM harness needs (idempotent, cached).
#
#   tests/kernel/setup.sh
#
# - installs the host packages it needs with apt-get, only if missing;
# - downloads (apt-get download) the Debian bookworm 6.12 kernel image, headers,
#   kbuild and source packages into tests/kernel/cache/debs/;
# - unpacks them with dpkg -x into the cache (never into /);
# - builds samples/vfio-mdev/mtty.c out of tree against the unpacked headers;
# - decompresses vfio, vfio_iommu_type1, mdev and their dependencies (from each
#   module's .modinfo depends=, as depmod would: the image ships no modules.dep).
#
# Result: tests/kernel/cache/out/ with vmlinuz, modules/*.ko + modules/load-order,
# busybox, uapi/linux/vfio.h and kernel.env (the versions used).
#
# Exit status: 0 ready; 77 skipped because package downloads are unreachable;
# anything else is a real failure.
#
# Environment:
#   MDEVMIG_KERNEL_CACHE    cache dir (default: tests/kernel/cache)
#   MDEVMIG_KERNEL_ABI      force a kernel, e.g. 6.12.117+deb12 (default: the one
#                           already cached, else the newest 6.12.*+deb12 apt knows)
#   MDEVMIG_KERNEL_REFRESH=1  re-pick the newest kernel even if one is cached
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${MDEVMIG_KERNEL_CACHE:-$HERE/cache}
OUT=$CACHE/out
SKIP_STATUS=77
HOST_PKGS=(qemu-system-x86 busybox-static cpio xz-utils gcc-12 make libc6-dev binutils)
WANT_MODULES=(vfio vfio_iommu_type1 mdev)

log() { echo "[kernel-setup] +${SECONDS}s $*" >&2; }
die() {
	echo "[kernel-setup] ERROR: $*" >&2
	exit 1
}
skip() {
	echo "[kernel-setup] SKIP: package downloads are unreachable ($*)." >&2
	echo "[kernel-setup] SKIP: real-kernel VM tests cannot be prepared; exiting with status $SKIP_STATUS." >&2
	exit "$SKIP_STATUS"
}
trap 'rc=$?; if [ $rc -ne 0 ] && [ $rc -ne '"$SKIP_STATUS"' ]; then echo "[kernel-setup] FAILED (status $rc)" >&2; fi' EXIT

[ "$(uname -m)" = x86_64 ] || die "this harness needs an x86_64 host (got $(uname -m))"
command -v apt-get >/dev/null || die "apt-get not found: this harness needs a Debian host"
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 # serialise concurrent setups/runs sharing the cache

NET_ERR_RE='Could not resolve|Temporary failure|Unable to connect|Could not connect|Connection (timed out|refused|failed)|Network is unreachable|No route to host|Cannot initiate the connection|Unable to fetch some archives|Failed to fetch|Some index files failed to download'
APT_LOG=$CACHE/apt.log
UPDATED=0

# apt_try <cmd...>: run an apt command; 0 ok, 2 network error, 1 other error.
apt_try() {
	if "$@" >"$APT_LOG" 2>&1; then
		return 0
	fi
	if grep -Eq "$NET_ERR_RE" "$APT_LOG"; then
		return 2
	fi
	return 1
}

apt_update_once() {
	[ "$UPDATED" = 1 ] && return 0
	UPDATED=1
	log "apt-get update"
	local rc=0
	apt_try $SUDO apt-get update || rc=$?
	if [ $rc = 2 ]; then
		cat "$APT_LOG" >&2
		skip "apt-get update could not reach the package mirrors"
	elif [ $rc != 0 ]; then
		cat "$APT_LOG" >&2
		die "apt-get update failed"
	fi
}

# apt_do <what> <cmd...>: run with one apt-get update + retry on failure.
apt_do() {
	local what=$1 rc=0
	shift
	apt_try "$@" || rc=$?
	if [ $rc != 0 ] && [ "$UPDATED" = 0 ]; then
		apt_update_once
		rc=0
		apt_try "$@" || rc=$?
	fi
	if [ $rc = 2 ]; then
		cat "$APT_LOG" >&2
		skip "$what failed with a network error"
	elif [ $rc != 0 ]; then
		cat "$APT_LOG" >&2
		die "$what failed"
	fi
}

# ---------------------------------------------------------------- host packages
missing=()
for p in "${HOST_PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing host packages: ${missing[*]}"
	apt_do "apt-get install ${missing[*]}" \
		env DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
BUSYBOX=$(command -v busybox || true)
[ -x /bin/busybox ] && BUSYBOX=/bin/busybox
[ -n "$BUSYBOX" ] || die "busybox not found after installing busybox-static"
if LC_ALL=C readelf -d "$BUSYBOX" 2>/dev/null | grep -q NEEDED; then
	die "$BUSYBOX is dynamically linked; need busybox-static"
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found"

# ------------------------------------------------------------ fast path (cached)
SELF_HASH=$(sha256sum <"$HERE/setup.sh" | cut -c1-16)
if [ -z "${MDEVMIG_KERNEL_REFRESH:-}" ] && [ -f "$OUT/READY" ] &&
	[ "$(cat "$OUT/READY")" = "$SELF_HASH ${MDEVMIG_KERNEL_ABI:-}" ]; then
	log "cache ready: $(grep '^KERNEL_RELEASE=' "$OUT/kernel.env" | cut -d= -f2) ($OUT)"
	exit 0
fi
rm -f "$OUT/READY"

# --------------------------------------------------------------- pick a kernel
pkgs_for() { # $1 = abi like 6.12.117+deb12
	echo "linux-image-$1-amd64-unsigned linux-headers-$1-amd64 linux-headers-$1-common linux-kbuild-$1"
}
known_abis() {
	apt-cache pkgnames linux-image-6.12. 2>/dev/null |
		sed -nE 's/^linux-image-(6\.12\.[0-9]+\+deb12)-amd64-unsigned$/\1/p' | sort -Vr
}

ABI=${MDEVMIG_KERNEL_ABI:-}
PKGVER=
if [ -z "$ABI" ] && [ -z "${MDEVMIG_KERNEL_REFRESH:-}" ] && [ -f "$CACHE/VERSION" ]; then
	read -r ABI PKGVER <"$CACHE/VERSION" || true
	# keep using the cached kernel only if its .debs are all still here
	for p in $(pkgs_for "$ABI") linux-source-6.12; do
		ls "$CACHE/debs/${p}_${PKGVER}_"*.deb >/dev/null 2>&1 || { ABI= && PKGVER= && break; }
	done
fi
if [ -z "$ABI" ] || [ -z "$PKGVER" ]; then
	abis=$(known_abis)
	if [ -z "$abis" ]; then
		apt_update_once
		abis=$(known_abis)
	fi
	[ -n "${MDEVMIG_KERNEL_ABI:-}" ] && abis=$MDEVMIG_KERNEL_ABI
	[ -n "$abis" ] || die "apt knows no linux-image-6.12.*+deb12-amd64-unsigned package (is bookworm-security in sources.list?)"
	srcvers=$(apt-cache madison linux-source-6.12 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}')
	for a in $abis; do
		# image, headers x2 and kbuild must all have the same candidate version,
		# and linux-source-6.12 must exist at that version (one apt-cache call)
		# shellcheck disable=SC2046 # pkgs_for prints a word list
		cands=$(LC_ALL=C apt-cache policy $(pkgs_for "$a") 2>/dev/null | awk '/Candidate:/ {print $2}')
		v=$(head -n1 <<<"$cands")
		if [ "$(wc -l <<<"$cands")" = 4 ] && [ "$(sort -u <<<"$cands" | wc -l)" = 1 ] &&
			[ "$v" != "(none)" ] && grep -qxF "$v" <<<"$srcvers"; then
			ABI=$a
			PKGVER=$v
			break
		fi
		log "skipping $a: image/headers/kbuild/linux-source-6.12 not all available at one version"
	done
	[ -n "$PKGVER" ] || die "no 6.12.*+deb12 kernel with matching image/headers/kbuild/source packages (tried: $(tr "\n" " " <<<"$abis"))"
fi
KREL=$ABI-amd64
log "kernel $KREL, package version $PKGVER"

# -------------------------------------------------------------------- download
mkdir -p "$CACHE/debs"
need=()
for p in $(pkgs_for "$ABI") linux-source-6.12; do
	ls "$CACHE/debs/${p}_${PKGVER}_"*.deb >/dev/null 2>&1 || need+=("$p=$PKGVER")
done
if [ ${#need[@]} -gt 0 ]; then
	log "downloading ${need[*]}"
	(cd "$CACHE/debs" && apt_do "apt-get download" \
		apt-get -o APT::Sandbox::User=root download "${need[@]}")
fi
echo "$ABI $PKGVER" >"$CACHE/VERSION"
deb() { ls "$CACHE/debs/${1}_${PKGVER}_"*.deb | head -n1; }

# ---------------------------------------------------------------- mtty source
# Only samples/vfio-mdev/mtty.c (and the Makefile, for its version) is needed from
# the source tarball; xz-decompressing it takes ~10 s, so it runs in the background
# while the other packages are unpacked.
SRC=$CACHE/src-$PKGVER
SRC_PID=
if [ ! -f "$SRC/mtty.c" ]; then
	log "extracting samples/vfio-mdev/mtty.c from linux-source-6.12 (background)"
	rm -rf "$SRC.tmp"
	mkdir -p "$SRC.tmp"
	(dpkg-deb --fsys-tarfile "$(deb linux-source-6.12)" |
		tar -xO ./usr/src/linux-source-6.12.tar.xz |
		tar -xJ -C "$SRC.tmp" --strip-components=1 \
			linux-source-6.12/Makefile linux-source-6.12/samples/vfio-mdev/mtty.c) \
		>"$CACHE/src-extract.log" 2>&1 &
	SRC_PID=$!
fi

# ---------------------------------------------------------------------- unpack
ROOT=$CACHE/root
if [ ! -f "$ROOT/.unpacked-$ABI-$PKGVER" ]; then
	log "unpacking image/headers/kbuild with dpkg -x into $ROOT"
	rm -rf "$ROOT"
	mkdir -p "$ROOT"
	for p in $(pkgs_for "$ABI"); do
		dpkg -x "$(deb "$p")" "$ROOT"
	done
	touch "$ROOT/.unpacked-$ABI-$PKGVER"
fi
HDR=$ROOT/usr/src/linux-headers-$KREL
COMMON=$ROOT/usr/src/linux-headers-$ABI-common
[ -f "$HDR/Makefile" ] && [ -d "$COMMON" ] || die "headers not found under $ROOT/usr/src"
# The headers Makefile includes /usr/src/linux-headers-...-common: point it here.
sed -i -E "s#^include .*/linux-headers-[^/]*-common/Makefile\$#include $COMMON/Makefile#" "$HDR/Makefile"
grep -qF "include $COMMON/Makefile" "$HDR/Makefile" || die "could not fix $HDR/Makefile: $(cat "$HDR/Makefile")"
MODDIR=$ROOT/lib/modules/$KREL
[ -d "$MODDIR" ] || MODDIR=$ROOT/usr/lib/modules/$KREL
# The image package ships no modules.dep (its postinst runs depmod); modules.order
# gives every module's path and each module's own .modinfo "depends=" its
# dependencies (what depmod computes, without decompressing ~4000 modules).
[ -f "$MODDIR/modules.order" ] || die "modules.order not found for $KREL"
VMLINUZ=$ROOT/boot/vmlinuz-$KREL
[ -f "$VMLINUZ" ] || die "kernel image $VMLINUZ not found"

if [ -n "$SRC_PID" ]; then
	wait "$SRC_PID" || { cat "$CACHE/src-extract.log" >&2; die "extracting linux-source-6.12 failed"; }
	[ -f "$SRC.tmp/samples/vfio-mdev/mtty.c" ] || die "mtty.c not found in linux-source-6.12"
	# The source tree's Makefile must be the same release as the headers.
	srcver=$(awk -F' = ' '/^VERSION =/{v=$2} /^PATCHLEVEL =/{p=$2} /^SUBLEVEL =/{s=$2} END{print v"."p"."s}' "$SRC.tmp/Makefile")
	[ "$srcver" = "${ABI%%+*}" ] || die "linux-source is $srcver but headers are ${ABI%%+*}"
	cp "$SRC.tmp/samples/vfio-mdev/mtty.c" "$SRC.tmp/mtty.c"
	echo "$srcver" >"$SRC.tmp/SOURCE_VERSION"
	rm -rf "$SRC" && mv "$SRC.tmp" "$SRC"
fi

# ------------------------------------------------------------------ build mtty
BUILD=$CACHE/mtty-build
rm -rf "$BUILD"
mkdir -p "$BUILD"
cp "$SRC/mtty.c" "$BUILD/"
echo 'obj-m := mtty.o' >"$BUILD/Kbuild"
log "building mtty.ko (log: $BUILD/build.log)"
if ! make -C "$HDR" M="$BUILD" CONFIG_DEBUG_INFO_BTF_MODULES= -j"$(nproc)" modules >"$BUILD/build.log" 2>&1; then
	tail -n 40 "$BUILD/build.log" >&2
	die "building mtty.ko failed"
fi
[ -f "$BUILD/mtty.ko" ] || die "mtty.ko was not produced"
modinfo_field() { # $1 = field, $2 = .ko: the value of a .modinfo field
	tr '\0' '\n' <"$2" | sed -n "s/^$1=//p" | head -n1
}
vermagic=$(modinfo_field vermagic "$BUILD/mtty.ko")
case "$vermagic" in "$KREL "*) ;; *) die "mtty.ko vermagic '$vermagic' does not match $KREL" ;; esac
mtty_deps=$(modinfo_field depends "$BUILD/mtty.ko" | tr ',' ' ')
[ -n "$mtty_deps" ] || die "mtty.ko has no depends= (expected mdev,vfio)"

# ------------------------------------------------------------- modules + order
rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp/modules" "$OUT.tmp/uapi/linux"
declare -A MOD_PATH=() SEEN=()
while IFS= read -r path; do
	name=$(basename "$path")
	name=${name%%.ko*}
	MOD_PATH[${name//-/_}]=$path
done <"$MODDIR/modules.order"
unpack_module() { # $1 = path from modules.order, $2 = destination .ko
	local f
	for f in "$MODDIR/$1" "$MODDIR/$1.xz" "$MODDIR/$1.zst" "$MODDIR/$1.gz"; do
		[ -f "$f" ] || continue
		case "$f" in
		*.xz) xz -dc "$f" >"$2" ;;
		*.zst) zstd -qdc "$f" >"$2" ;;
		*.gz) gzip -dc "$f" >"$2" ;;
		*) cp "$f" "$2" ;;
		esac
		return 0
	done
	die "module file for $1 not found under $MODDIR"
}
ORDER=()
add_module() { # depth-first: dependencies before the module itself
	local n=${1//-/_} d
	[ -n "${SEEN[$n]:-}" ] && return 0
	[ -n "${MOD_PATH[$n]:-}" ] || die "module $n not in modules.order (built in? then drop it from WANT_MODULES)"
	SEEN[$n]=1
	unpack_module "${MOD_PATH[$n]}" "$OUT.tmp/modules/$n.ko"
	for d in $(modinfo_field depends "$OUT.tmp/modules/$n.ko" | tr ',' ' '); do add_module "$d"; done
	ORDER+=("$n")
}
for m in "${WANT_MODULES[@]}" $mtty_deps; do add_module "$m"; done
for n in "${ORDER[@]}"; do echo "$n.ko"; done >"$OUT.tmp/modules/load-order"
# strip debug info: keeps the initramfs small (550 KiB -> ~40 KiB)
strip --strip-debug -o "$OUT.tmp/modules/mtty.ko" "$BUILD/mtty.ko"
echo mtty.ko >>"$OUT.tmp/modules/load-order"

cp "$VMLINUZ" "$OUT.tmp/vmlinuz"
cp "$BUSYBOX" "$OUT.tmp/busybox"
cp "$COMMON/include/uapi/linux/vfio.h" "$OUT.tmp/uapi/linux/vfio.h"
cat >"$OUT.tmp/kernel.env" <<EOF
KERNEL_RELEASE=$KREL
KERNEL_PKG_VERSION=$PKGVER
KERNEL_PACKAGES="$(for p in $(pkgs_for "$ABI") linux-source-6.12; do printf '%s=%s ' "$p" "$PKGVER"; done)"
MTTY_SOURCE_VERSION=$(cat "$SRC/SOURCE_VERSION")
MODULE_LOAD_ORDER="$(tr '\n' ' ' <"$OUT.tmp/modules/load-order")"
QEMU_VERSION="$(qemu-system-x86_64 --version | head -n1)"
BUSYBOX_VERSION="$("$BUSYBOX" 2>&1 | head -n1)"
EOF
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "$SELF_HASH ${MDEVMIG_KERNEL_ABI:-}" >"$OUT/READY"
log "ready: $KREL ($PKGVER); modules: $(tr '\n' ' ' <"$OUT/modules/load-order")"
