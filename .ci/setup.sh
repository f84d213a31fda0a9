#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain. Idempotent; safe on a
# fresh machine (root, Debian) and a no-op where everything is present.
set -euo pipefail
need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The clean-room reader in spec/reference/ verifies Ed25519 with it.
python3 -c 'import cryptography' >/dev/null 2>&1 || need+=(python3 python3-cryptography)
# The hostile-host tests plant files as a second user with setpriv.
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The QMP service's tests and qmp-shell use the real client (serve/tests/qmp.sh).
if ! python3 -c 'import qemu.qmp' >/dev/null 2>&1; then
    echo "setup: installing qemu.qmp 0.0.6"
    python3 -m pip --version >/dev/null 2>&1 || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    }
    python3 -m pip install --quiet qemu.qmp==0.0.6 \
        || python3 -m pip install --quiet --break-system-packages qemu.qmp==0.0.6
fi
