//! Differential test of `mdevmig_sha2x` against the `sha2` crate: an arbitrary
//! batch of 0..=40 messages of arbitrary lengths, hashed by every engine
//! (`Engine::Sha2`, `Engine::ShaNi`, `Engine::Avx512` through
//! `Engine::digest_into`), by `digest_batch` and, pair by pair, by `digest2`;
//! every digest must be FIPS 180-4 SHA-256 as the `sha2` crate computes it.
//!
//! Input scheme (the messages are the input's own bytes):
//!
//! ```text
//! byte 0       out mode: how many output slots there are for n messages
//!                bits 0-1 = 0 or 1: n;  2: n - 1 - k (at least 0);  3: n + 1 + k,
//!                with k = (byte 0 >> 2) % 17, so outputs can be fewer or more
//!                than messages
//! byte 1       n = byte 1 % 41 messages
//! then n x 4   per message: start (u16 LE), len (u16 LE); the message is
//!              input[start..start + len] of the WHOLE input (header included),
//!              start taken modulo input length + 1 and len cut at the input's
//!              end; missing table bytes read as zero. Messages may overlap, so
//!              a few KiB of input give forty messages of a few KiB each.
//! ```
//!
//! Every engine and `digest_batch` get `msgs` and an `out` of the chosen length,
//! pre-filled with a marker: `out[i]` for `i < min(n, out.len())` must be the
//! digest of `msgs[i]`, and every slot after it must still hold the marker.
//!
//! Which engines this really exercises depends on the CPU that runs it: an
//! engine the CPU lacks (`Engine::available` is false: SHA-NI needs the `sha`
//! flag, `sha_ni` in /proc/cpuinfo; AVX-512 needs `avx512f` and `avx512bw`)
//! falls back to `sha2` and compares `sha2` with itself. The target says which
//! engines run natively once, on stderr, when it starts.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use mdevmig_sha2x::{digest2, digest_batch, Digest32, Engine};
use sha2::{Digest, Sha256};

/// Most messages in one batch: more than two groups of sixteen AVX-512 lanes.
const MAX_MESSAGES: usize = 40;

/// What an output slot holds before a call; no SHA-256 digest is expected to
/// equal it, and a slot past `min(msgs, out)` must still hold it afterwards.
const MARKER: Digest32 = [0xA5; 32];

const ENGINES: [Engine; 3] = [Engine::Sha2, Engine::ShaNi, Engine::Avx512];

fn report_engines() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for e in ENGINES {
            let how = if e.available() {
                "exercised natively"
            } else {
                "NOT exercised (this CPU lacks it; its calls ran the sha2 fallback)"
            };
            eprintln!("sha2x_differential: {} engine {how}", e.name());
        }
        eprintln!(
            "sha2x_differential: the process engine (digest_batch) is {}",
            mdevmig_sha2x::engine().name()
        );
    });
}

fn u16_at(data: &[u8], at: usize) -> usize {
    let b = |i: usize| usize::from(data.get(at + i).copied().unwrap_or(0));
    b(0) | b(1) << 8
}

/// The batch the input describes, and how many output slots to give it.
fn parse(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let sel = data.first().copied().unwrap_or(0);
    let n = usize::from(data.get(1).copied().unwrap_or(0)) % (MAX_MESSAGES + 1);
    let msgs: Vec<&[u8]> = (0..n)
        .map(|i| {
            let entry = 2 + 4 * i;
            let start = u16_at(data, entry) % (data.len() + 1);
            let len = u16_at(data, entry + 2).min(data.len() - start);
            &data[start..start + len]
        })
        .collect();
    let k = usize::from(sel >> 2) % 17;
    let out_len = match sel & 3 {
        0 | 1 => n,
        2 => n.saturating_sub(1 + k),
        _ => n + 1 + k,
    };
    (msgs, out_len)
}

/// `out` after a call that had `msgs`: the digests where both exist, the
/// marker after them.
fn check(what: &str, msgs: &[&[u8]], expected: &[Digest32], out: &[Digest32]) {
    for (i, d) in out.iter().enumerate() {
        match expected.get(i) {
            Some(want) => assert_eq!(
                d,
                want,
                "{what}: output {i} of {} (message {} bytes, {} messages)",
                out.len(),
                msgs[i].len(),
                msgs.len()
            ),
            None => assert_eq!(
                *d,
                MARKER,
                "{what}: output {i} of {} written with only {} messages",
                out.len(),
                msgs.len()
            ),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    report_engines();
    let (msgs, out_len) = parse(data);
    let expected: Vec<Digest32> = msgs.iter().map(|m| Sha256::digest(m).into()).collect();

    for e in ENGINES {
        let mut out = vec![MARKER; out_len];
        e.digest_into(&msgs, &mut out);
        check(e.name(), &msgs, &expected, &out);
    }
    let mut out = vec![MARKER; out_len];
    digest_batch(&msgs, &mut out);
    check("digest_batch", &msgs, &expected, &out);

    // digest2 on every adjacent pair, both ways round, and on a message with
    // itself (lengths differ by anything, so one stream often runs on alone).
    for (i, pair) in msgs.windows(2).enumerate() {
        let (a, b) = (pair[0], pair[1]);
        let (ea, eb) = (expected[i], expected[i + 1]);
        assert_eq!(digest2(a, b), (ea, eb), "digest2 of messages {i} and {}", i + 1);
        assert_eq!(digest2(b, a), (eb, ea), "digest2 of messages {} and {i}", i + 1);
    }
    if let (Some(m), Some(d)) = (msgs.first(), expected.first()) {
        assert_eq!(digest2(m, m), (*d, *d), "digest2 of message 0 with itself");
        assert_eq!(
            digest2(m, &[]),
            (*d, Sha256::digest([]).into()),
            "digest2 with an empty message"
        );
    }
});
