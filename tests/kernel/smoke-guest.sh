# Smoke test of the harness itself (runs in the VM). Needs /bin/vfio-probe (extra file).
. /guest-lib.sh

echo "mdev types: $(ls /sys/class/mdev_bus/mtty/mdev_supported_types | tr "\n" " ")"
check "/bin/mdevmig runs" /bin/mdevmig

u2=$(mdev_create mtty-2) || fail "create mtty-2"
u1=$(mdev_create mtty-1) || fail "create mtty-1"
[ "$(mdev_type "$u2")" = mtty-2 ] || fail "type of $u2 is $(mdev_type "$u2")"
[ "$(mdev_type "$u1")" = mtty-1 ] || fail "type of $u1 is $(mdev_type "$u1")"
g2=$(mdev_group "$u2") || fail "group of $u2"
g1=$(mdev_group "$u1") || fail "group of $u1"
echo "mtty-2 $u2 group $g2"
echo "mtty-1 $u1 group $g1"
[ "$g1" != "$g2" ] || fail "both mdevs in group $g1"

echo "/sys/bus/mdev/devices:"
ls -l /sys/bus/mdev/devices
echo "/dev/vfio:"
ls -l /dev/vfio
for u in "$u2" $u1; do
	d=$(mdev_group_dev "$u") || fail "no /dev/vfio node for $u"
	echo "$u -> $d"
done

if [ -x /bin/vfio-probe ]; then
	check "vfio-probe mtty-2" /bin/vfio-probe "$g2" "$u2" 96
	check "vfio-probe mtty-1" /bin/vfio-probe "$g1" "$u1" 60
else
	echo "(no /bin/vfio-probe: skipping the uAPI probe)"
fi

check "remove mtty-2" mdev_remove "$u2"
check "remove mtty-1" mdev_remove "$u1"
[ -z "$(mdev_list)" ] || fail "mdevs left: $(mdev_list)"
[ ! -e "/dev/vfio/$g2" ] || fail "/dev/vfio/$g2 still present after remove"
echo "smoke: all checks passed"
