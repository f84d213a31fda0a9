#!/usr/bin/env bash
# Fuzz smoke test: installs cargo-fuzz if it is missing, seeds the corpora, builds
# every target and runs each for FUZZ_SECONDS seconds (default 20). Fails on any
# crash, leak, timeout or out-of-memory; the input that caused it is left in
# fuzz/artifacts/<target>/ (copy it to fuzz/regressions/<target>/ once fixed, and
# tests/mutation.rs replays it).
#
#   bash fuzz/smoke.sh                       # every target, 20 s each
#   FUZZ_SECONDS=600 bash fuzz/smoke.sh stream_reader policy
#
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass the
# sanitizer flags. FUZZ_TARGET_DIR sets cargo's target directory (default
# fuzz/target).
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-20}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
target_dir=()
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
    target_dir=(--target-dir "$FUZZ_TARGET_DIR")
fi

bash seed-corpus.sh
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build "${target_dir[@]}"

failed=()
for t in "${targets[@]}"; do
    echo "=== fuzz $t for ${secs}s"
    mkdir -p "artifacts/$t"
    # -malloc_limit_mb: no single allocation may exceed 64 MiB (the envelope's
    # largest buffer is one 16 MiB chunk); -timeout: an input taking 30 s is a hang.
    # envelope_header: room for the largest header the cap allows (8192 bytes).
    extra=()
    if [ "$t" = envelope_header ]; then
        extra=(-max_len=8448)
    fi
    if ! cargo fuzz run "${target_dir[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=64 \
        -print_final_stats=1 "${extra[@]}" >"artifacts/$t/smoke.log" 2>&1; then
        tail -40 "artifacts/$t/smoke.log"
        failed+=("$t")
    fi
    grep -E "^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ *DONE" "artifacts/$t/smoke.log" || true
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "smoke: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "smoke: ${#targets[@]} targets ran ${secs}s each without a crash"
