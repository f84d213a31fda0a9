#!/usr/bin/env bash
# Check that run-vm.sh / setup.sh report failures loudly with the documented statuses:
# guest failure -> 1, VM timeout -> 3, VM that never reaches /init -> 3,
# kernel WARNING -> 4, unreachable downloads (empty cache) -> 77, smoke test -> 0.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$HERE/setup.sh" || exit $?
"$HERE/smoke/build.sh" >/dev/null || exit 1
BIN=$HERE/cache/smoke/hello
pass=0 failn=0
expect() { # expect <status> <name> <command...>
	local want=$1 name=$2 rc=0
	shift 2
	"$@" >"$T/out" 2>&1 || rc=$?
	if [ "$rc" = "$want" ]; then
		echo "ok   $name (status $rc): $(grep -E 'ERROR|VM FAILURE|TEST FAILED|NOT CLEAN|SKIP:|RESULT: PASS' "$T/out" | tail -n1)"
		pass=$((pass + 1))
	else
		echo "FAIL $name: status $rc, expected $want"
		sed 's/^/    /' "$T/out" | tail -n 30
		failn=$((failn + 1))
	fi
}
printf '. /guest-lib.sh\nfail "deliberate failure"\n' >"$T/fail.sh"
printf 'sleep 1000\n' >"$T/hang.sh"
printf 'echo "<4>WARNING: CPU: 0 PID: 1 at selftest (deliberate)" >/dev/kmsg\n' >"$T/warn.sh"
printf 'true\n' >"$T/ok.sh"
printf 'Acquire::http::Proxy "http://127.0.0.1:9/";\nAcquire::Retries "0";\n' >"$T/apt.conf"

expect 0 smoke "$HERE/run-smoke.sh"
expect 1 guest-failure "$HERE/run-vm.sh" "$BIN" "$T/fail.sh"
expect 3 timeout env MDEVMIG_VM_TIMEOUT=20 "$HERE/run-vm.sh" "$BIN" "$T/hang.sh"
expect 3 no-init env MDEVMIG_VM_APPEND=rdinit=/nonexistent "$HERE/run-vm.sh" "$BIN" "$T/ok.sh"
expect 4 kernel-warning "$HERE/run-vm.sh" "$BIN" "$T/warn.sh"
expect 2 dynamic-binary "$HERE/run-vm.sh" /bin/ls "$T/ok.sh"
expect 77 downloads-unreachable env APT_CONFIG="$T/apt.conf" MDEVMIG_KERNEL_CACHE="$T/cache" "$HERE/setup.sh"
echo "selftest: $pass passed, $failn failed"
[ $failn = 0 ]
