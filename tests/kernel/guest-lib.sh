# Helpers for guest scripts run by tests/kernel/run-vm.sh (busybox sh, inside the VM).
# Use:  . /guest-lib.sh
#
#   uuid=$(mdev_create mtty-2)     create an mdev (type mtty-1 or mtty-2, or 1/2) with a fresh uuid
#   group=$(mdev_group "$uuid")    its IOMMU group number; the group node is /dev/vfio/$group
#   mdev_remove "$uuid"            remove it
#   mdev_list                      uuids of all mdevs
#   new_uuid                       a fresh random uuid
#   fail "reason"                  record the reason (shown in the result line) and exit 1
#   check "what" cmd args...       run cmd; fail "what" if it exits non-zero

MTTY_PARENT=/sys/class/mdev_bus/mtty
MDEV_DEVICES=/sys/bus/mdev/devices

fail() {
	echo "FAIL: $*"
	echo "$*" >/tmp/mdevmig-fail-reason
	exit 1
}

check() {
	_what=$1
	shift
	"$@" || fail "$_what (command: $*, status $?)"
}

# busybox has no uuidgen; the kernel hands out a fresh random (v4) uuid per read.
new_uuid() {
	cat /proc/sys/kernel/random/uuid
}

# mdev_create TYPE: TYPE is mtty-1, mtty-2, 1 or 2. Prints the new uuid.
mdev_create() {
	_t=${1:?mdev_create needs a type (mtty-1 or mtty-2)}
	case "$_t" in mtty-*) ;; *) _t=mtty-$_t ;; esac
	_dir=$MTTY_PARENT/mdev_supported_types/$_t
	[ -d "$_dir" ] || {
		echo "mdev_create: no mdev type $_t (have: $(ls $MTTY_PARENT/mdev_supported_types 2>/dev/null))" >&2
		return 1
	}
	_u=$(new_uuid)
	echo "$_u" >"$_dir/create" || {
		echo "mdev_create: writing $_u to $_dir/create failed (available_instances: $(cat "$_dir/available_instances"))" >&2
		return 1
	}
	[ -e "$MDEV_DEVICES/$_u" ] || {
		echo "mdev_create: $MDEV_DEVICES/$_u did not appear" >&2
		return 1
	}
	echo "$_u"
}

# mdev_group UUID: prints the IOMMU group number of the mdev.
mdev_group() {
	_l=$(readlink "$MDEV_DEVICES/${1:?mdev_group needs a uuid}/iommu_group") || {
		echo "mdev_group: $1 has no iommu_group" >&2
		return 1
	}
	basename "$_l"
}

# mdev_group_dev UUID: prints /dev/vfio/<group> once the node exists (waits up to 2 s).
mdev_group_dev() {
	_g=$(mdev_group "$1") || return 1
	_i=0
	while [ ! -c "/dev/vfio/$_g" ] && [ $_i -lt 20 ]; do
		sleep 0.1
		_i=$((_i + 1))
	done
	[ -c "/dev/vfio/$_g" ] || {
		echo "mdev_group_dev: /dev/vfio/$_g missing" >&2
		return 1
	}
	echo "/dev/vfio/$_g"
}

# mdev_type UUID: prints the type name (mtty-1 / mtty-2).
mdev_type() {
	basename "$(readlink "$MDEV_DEVICES/${1:?}/mdev_type")"
}

# mdev_remove UUID
mdev_remove() {
	[ -e "$MDEV_DEVICES/${1:?mdev_remove needs a uuid}" ] || {
		echo "mdev_remove: no mdev $1" >&2
		return 1
	}
	echo 1 >"$MDEV_DEVICES/$1/remove" || return 1
	[ ! -e "$MDEV_DEVICES/$1" ] || {
		echo "mdev_remove: $1 still present" >&2
		return 1
	}
}

mdev_list() {
	ls "$MDEV_DEVICES" 2>/dev/null
}
