#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ (git-ignored) for every fuzz target:
#   stream_reader    every spec/vectors/*.mdm and the saved streams in seeds/
#   envelope_header  the header (its first header_len bytes) of each of those
#   others           seeds/<target>/ (plugin states, policies, streamed-section
#                    vectors and record scripts, Xe packet streams; written by
#                    `cargo test --test mutation -- --ignored write_fuzz_seeds`;
#                    seeds/sha2x_differential/ holds hand-made message batches)
# and every committed crash regression in regressions/<target>/. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
targets=(envelope_header stream_reader policy plugin_mtty plugin_hisi_acc plugin_simgpu
    stream_reader_streamed xe_validator_splits sha2x_differential qmp_framer)
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
done

streams=(../spec/vectors/*.mdm seeds/stream_reader/*)
cp "${streams[@]}" corpus/stream_reader/
for f in "${streams[@]}"; do
    # header_len: u32 little-endian at offset 12; empty when the file is shorter.
    len=$({ od -An -tu4 --endian=little -j12 -N4 "$f" 2>/dev/null || true; } | tr -d ' \n')
    if [ -n "$len" ] && [ "$len" -le 8192 ]; then
        head -c "$len" "$f" >"corpus/envelope_header/$(basename "$f").hdr"
    fi
done

for t in "${targets[@]}"; do
    for d in "seeds/$t" "regressions/$t"; do
        if [ -d "$d" ] && [ -n "$(ls -A "$d")" ]; then
            cp "$d"/* "corpus/$t/"
        fi
    done
done
for t in "${targets[@]}"; do
    echo "seed-corpus: $t: $(find "corpus/$t" -type f | wc -l) inputs"
done
