#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain. Idempotent; safe on a
# fresh machine (root, Debian) and a no-op where everything is present.
set -euo pipefail
need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
