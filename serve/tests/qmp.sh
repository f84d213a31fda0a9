#!/usr/bin/env bash
# The QMP service against the real client: builds mdevmig once, then runs
# serve/tests/qmp/test_serve.py (qemu.qmp 0.0.6, unittest) in a temporary
# directory. Exits non-zero on any failure. Access-control tests need root.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --quiet -p mdevmig-cli
python3 -c 'import qemu.qmp' 2>/dev/null || {
    echo "qmp.sh: the qemu.qmp package is missing (bash .ci/setup.sh installs it)" >&2
    exit 1
}
work=$(mktemp -d /tmp/mdevmig-qmp.XXXXXX)
chmod 0711 "$work"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
export PYTHONDONTWRITEBYTECODE=1
set +e
MDEVMIG_BIN="$target/debug/mdevmig" QMP_TEST_DIR="$work" \
    python3 -m unittest -v serve/tests/qmp/test_serve.py 2>&1 | tee "$work/unittest.out"
status=${PIPESTATUS[0]}
set -e
# The plain closing line CI reads, from unittest's own summary.
python3 - "$work/unittest.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
ran = re.search(r"^Ran (\d+) tests?", text, re.M)
n = int(ran.group(1)) if ran else 0
bad = re.search(r"^FAILED \((.*)\)", text, re.M)
counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", bad.group(1))) if bad else {}
skipped = re.search(r"skipped=(\d+)", text)
skipped = int(skipped.group(1)) if skipped else 0
failed = counts.get("failures", 0) + counts.get("errors", 0)
print(f"qmp: {n - failed - skipped} passed, {failed} failed, {skipped} skipped")
PY
echo "qmp.sh: $(( $(date +%s) - start ))s"
exit "$status"
