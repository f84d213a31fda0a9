//! Many SHA-256 digests at once on one core ("multi-buffer" hashing).
//!
//! A single SHA-256 stream cannot go faster than its round function's
//! dependency chain allows. Independent messages can be interleaved instead: in
//! mdevmig, the crate this one was written for, every chunk of a migration
//! envelope is signed over the SHA-256 of its data alone, so a hashing worker
//! holds several chunks and hashes them together. This crate does that with one
//! of three engines ([`Engine`]), picked once per process ([`engine`]):
//!
//! * **SHA-NI pairs** ([`digest2`]): every `sha256rnds2` (two rounds) waits for
//!   the previous one, which leaves the unit idle half the time on AMD cores; two
//!   streams' rounds interleaved fill those gaps. On a 2-core AMD EPYC (Zen 3)
//!   one core hashes two 1 MiB messages at 2.7 GB/s where the `sha2` crate hashes
//!   one at 1.57 GB/s. On Intel cores the round instruction is bound to one
//!   port and pairs gain only 1.2x.
//! * **AVX-512, sixteen lanes**: the round function in 512-bit integer
//!   operations (rotates and three-input logic are single instructions), one
//!   message per 32-bit lane. On a 2-core Xeon (model 207) one core hashes
//!   sixteen 1 MiB messages at 2.75 GB/s against 1.33 GB/s for `sha2` and 1.67
//!   for SHA-NI pairs.
//! * **`sha2`**, one message after another, where neither is available.
//!
//! When a CPU has both SHA-NI and AVX-512 (Intel since Ice Lake, AMD since Zen
//! 4), a one-time calibration of well under a millisecond picks the faster;
//! [`ENGINE_ENV`] overrides the choice. mdevmig's `bench` command prints the
//! chosen engine's rate. [`digest_batch`] hashes a batch with the process's
//! engine; [`Engine::digest_into`] with a given one.
//!
//! The output is plain SHA-256 (FIPS 180-4). The tests compare every engine
//! with the `sha2` crate on every length up to 200 bytes and from 256 to 600
//! (in the first, a middle and the last lane of a sixteen-message batch, next
//! to lanes of other lengths), on batches of every size up to 17, on outputs
//! shorter and longer than the batch, and on inputs of 1 MiB;
//! `reports_the_engines` prints which engines this CPU ran natively. The fuzz
//! target `sha2x_differential` (in the repository's `fuzz/` directory)
//! compares every engine with the `sha2` crate on arbitrary batches of
//! arbitrary lengths.
//!
//! This crate depends on nothing but `sha2`. Its `unsafe` code is the two
//! x86-64 kernel modules: the intrinsics are `unsafe` because they need CPU
//! features, which are checked at run time before a kernel is called (a kernel
//! is reachable only through a `Features` token that detection makes); the
//! kernels read only whole `[u8; 64]` blocks and write only the states they are
//! given. On other architectures only the `sha2` engine exists.

#![deny(
    missing_docs,
    unsafe_code,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Digest32 = [u8; 32];

/// SHA-256 of `a` and of `b`, interleaved on this core when the CPU allows.
pub fn digest2(a: &[u8], b: &[u8]) -> (Digest32, Digest32) {
    #[cfg(target_arch = "x86_64")]
    if let Some(d) = shani::digest2(a, b) {
        return d;
    }
    (Sha256::digest(a).into(), Sha256::digest(b).into())
}

/// How a core hashes a batch of independent messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The `sha2` crate, one message after another.
    Sha2,
    /// SHA-NI, two messages' rounds interleaved ([`digest2`]).
    ShaNi,
    /// Sixteen messages in the lanes of AVX-512 registers.
    Avx512,
}

/// Below this many messages the AVX-512 engine leaves too many lanes idle to
/// beat SHA-NI pairs (16 lanes: 2.75 GB/s per core, pairs: 1.67 GB/s on the
/// Xeon where both were measured, so the break-even is ten).
const AVX512_MIN_MESSAGES: usize = 10;

/// Environment variable that forces an engine (`sha2`, `shani` or `avx512`);
/// an engine the CPU lacks is ignored.
pub const ENGINE_ENV: &str = "MDEVMIG_SHA256_ENGINE";

impl Engine {
    /// Messages the engine hashes at once on one core.
    pub fn lanes(self) -> usize {
        match self {
            Engine::Sha2 => 1,
            Engine::ShaNi => 2,
            Engine::Avx512 => 16,
        }
    }

    /// Short name, as [`ENGINE_ENV`] spells it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sha2 => "sha2",
            Engine::ShaNi => "shani",
            Engine::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the engine.
    pub fn available(self) -> bool {
        match self {
            Engine::Sha2 => true,
            #[cfg(target_arch = "x86_64")]
            Engine::ShaNi => shani::available(),
            #[cfg(target_arch = "x86_64")]
            Engine::Avx512 => avx512::available(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// `out[i]` = SHA-256 of `msgs[i]`, for `i` up to the shorter of the two;
    /// an engine the CPU lacks hashes with `sha2`.
    pub fn digest_into(self, msgs: &[&[u8]], out: &mut [Digest32]) {
        // Equal lengths, so that the groups below line up.
        let n = msgs.len().min(out.len());
        let (Some(msgs), Some(out)) = (msgs.get(..n), out.get_mut(..n)) else {
            return;
        };
        match self {
            #[cfg(target_arch = "x86_64")]
            Engine::Avx512 => {
                if let Some(cpu) = avx512::Features::detect() {
                    for (m, o) in msgs.chunks(avx512::LANES).zip(out.chunks_mut(avx512::LANES)) {
                        avx512::digest16(cpu, m, o);
                    }
                    return;
                }
            }
            #[cfg(target_arch = "x86_64")]
            Engine::ShaNi if shani::available() => {
                for (m, o) in msgs.chunks(2).zip(out.chunks_mut(2)) {
                    if let ([a, b], [da, db]) = (m, &mut *o) {
                        (*da, *db) = digest2(a, b);
                    } else {
                        for (m, o) in m.iter().zip(o.iter_mut()) {
                            *o = Sha256::digest(m).into();
                        }
                    }
                }
                return;
            }
            _ => {}
        }
        for (m, o) in msgs.iter().zip(out.iter_mut()) {
            *o = Sha256::digest(m).into();
        }
    }
}

/// The engine this process hashes batches with: [`ENGINE_ENV`] if set to an
/// engine the CPU has, else the faster of those it has, timed once on first
/// use (well under a millisecond).
pub fn engine() -> Engine {
    static CHOSEN: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let forced = std::env::var(ENGINE_ENV).ok().and_then(|v| {
            [Engine::Sha2, Engine::ShaNi, Engine::Avx512]
                .into_iter()
                .find(|e| e.name() == v.trim() && e.available())
        });
        forced.unwrap_or_else(|| match (Engine::ShaNi.available(), Engine::Avx512.available()) {
            (true, true) => calibrate(),
            (false, true) => Engine::Avx512,
            (true, false) => Engine::ShaNi,
            (false, false) => Engine::Sha2,
        })
    })
}

/// Times SHA-NI pairs against AVX-512 lanes on sixteen 16 KiB messages (best
/// of three, alternating) and returns the faster. Intel cores run SHA-NI's
/// round instruction on one port, AMD's have fast SHA-NI and split 512-bit
/// operations: the winner differs by CPU, so it is measured, not guessed.
fn calibrate() -> Engine {
    let data: Vec<u8> = (0..16usize << 14)
        .map(|i| i.wrapping_mul(31).to_le_bytes()[0])
        .collect();
    let msgs: Vec<&[u8]> = data.chunks(1 << 14).collect();
    let mut out = vec![[0u8; 32]; msgs.len()];
    let mut best = [f64::MAX; 2];
    for _ in 0..3 {
        for (slot, e) in best.iter_mut().zip([Engine::ShaNi, Engine::Avx512]) {
            let t = std::time::Instant::now();
            e.digest_into(&msgs, &mut out);
            std::hint::black_box(&out);
            *slot = slot.min(t.elapsed().as_secs_f64());
        }
    }
    if best[1] < best[0] {
        Engine::Avx512
    } else {
        Engine::ShaNi
    }
}

/// `out[i]` = SHA-256 of `msgs[i]`, with this process's [`engine`]; too few
/// messages to fill AVX-512's lanes go to SHA-NI pairs, or to `sha2` on a CPU
/// without SHA-NI (one message in sixteen lanes is five times slower).
///
/// As with [`Engine::digest_into`], only the first `min(msgs.len(), out.len())`
/// outputs are written; the rest of `out` is left as it was.
///
/// ```
/// use mdevmig_sha2x::{digest_batch, Digest32};
/// use sha2::{Digest, Sha256};
///
/// let big = vec![0x5a; 100_000];
/// let msgs: [&[u8]; 3] = [b"abc", b"", &big];
/// let mut out: [Digest32; 4] = [[0xff; 32]; 4];
/// digest_batch(&msgs, &mut out);
/// for (m, d) in msgs.iter().zip(&out) {
///     assert_eq!(d[..], Sha256::digest(m)[..]);
/// }
/// assert_eq!(out[0][..4], [0xba, 0x78, 0x16, 0xbf]); // FIPS 180-2 appendix B.1, "abc"
/// assert_eq!(out[3], [0xff; 32]); // no message for it: untouched
/// ```
pub fn digest_batch(msgs: &[&[u8]], out: &mut [Digest32]) {
    engine_for(engine(), msgs.len()).digest_into(msgs, out);
}

/// The engine that hashes `n` messages best when the process uses `chosen`.
fn engine_for(chosen: Engine, n: usize) -> Engine {
    match chosen {
        Engine::Avx512 if n < AVX512_MIN_MESSAGES => {
            if Engine::ShaNi.available() {
                Engine::ShaNi
            } else {
                Engine::Sha2
            }
        }
        e => e,
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod shani {
    use core::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi64x,
        _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
        _mm_shuffle_epi8, _mm_storeu_si128,
    };

    /// A SHA-256 digest.
    pub type Digest32 = [u8; 32];

    /// Bytes in a SHA-256 block.
    pub(super) const BLOCK: usize = 64;

    /// FIPS 180-4 §4.2.2.
    pub(super) const K: [u32; 64] = [
        0x428a_2f98,
        0x7137_4491,
        0xb5c0_fbcf,
        0xe9b5_dba5,
        0x3956_c25b,
        0x59f1_11f1,
        0x923f_82a4,
        0xab1c_5ed5,
        0xd807_aa98,
        0x1283_5b01,
        0x2431_85be,
        0x550c_7dc3,
        0x72be_5d74,
        0x80de_b1fe,
        0x9bdc_06a7,
        0xc19b_f174,
        0xe49b_69c1,
        0xefbe_4786,
        0x0fc1_9dc6,
        0x240c_a1cc,
        0x2de9_2c6f,
        0x4a74_84aa,
        0x5cb0_a9dc,
        0x76f9_88da,
        0x983e_5152,
        0xa831_c66d,
        0xb003_27c8,
        0xbf59_7fc7,
        0xc6e0_0bf3,
        0xd5a7_9147,
        0x06ca_6351,
        0x1429_2967,
        0x27b7_0a85,
        0x2e1b_2138,
        0x4d2c_6dfc,
        0x5338_0d13,
        0x650a_7354,
        0x766a_0abb,
        0x81c2_c92e,
        0x9272_2c85,
        0xa2bf_e8a1,
        0xa81a_664b,
        0xc24b_8b70,
        0xc76c_51a3,
        0xd192_e819,
        0xd699_0624,
        0xf40e_3585,
        0x106a_a070,
        0x19a4_c116,
        0x1e37_6c08,
        0x2748_774c,
        0x34b0_bcb5,
        0x391c_0cb3,
        0x4ed8_aa4a,
        0x5b9c_ca4f,
        0x682e_6ff3,
        0x748f_82ee,
        0x78a5_636f,
        0x84c8_7814,
        0x8cc7_0208,
        0x90be_fffa,
        0xa450_6ceb,
        0xbef9_a3f7,
        0xc671_78f2,
    ];

    /// FIPS 180-4 §5.3.3.
    pub(super) const H0: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];

    /// Whether the CPU has every feature [`compress2`] is compiled for.
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse2")
            && std::arch::is_x86_feature_detected!("ssse3")
            && std::arch::is_x86_feature_detected!("sse4.1")
    }

    /// The final one or two blocks of a message: its last partial block, 0x80,
    /// zeros and the bit length (FIPS 180-4 §5.1.1).
    pub(super) fn padding(rest: &[u8], total_len: usize) -> ([[u8; BLOCK]; 2], usize) {
        let mut blocks = [[0u8; BLOCK]; 2];
        let (first, second) = blocks.split_at_mut(1);
        let (Some(first), Some(second)) = (first.first_mut(), second.first_mut()) else {
            return (blocks, 0);
        };
        // rest.len() < 64 (the remainder of as_chunks).
        if let Some(dst) = first.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        if let Some(b) = first.get_mut(rest.len()) {
            *b = 0x80;
        }
        let bits = u64::try_from(total_len)
            .unwrap_or(u64::MAX)
            .wrapping_mul(8)
            .to_be_bytes();
        // The length takes the last 8 bytes; it fits after 0x80 when rest < 56.
        let (last, n) = if rest.len() < BLOCK - 8 {
            (first, 1)
        } else {
            (second, 2)
        };
        if let Some(dst) = last.get_mut(BLOCK - 8..) {
            dst.copy_from_slice(&bits);
        }
        (blocks, n)
    }

    /// The digest of a final state: its words big-endian (FIPS 180-4 §6.2.2).
    pub(super) fn to_bytes(state: &[u32; 8]) -> Digest32 {
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// Proof that the CPU has what [`compress2`] is compiled for; only
    /// [`Features::detect`] makes one.
    #[derive(Clone, Copy)]
    struct Features(());

    impl Features {
        fn detect() -> Option<Self> {
            available().then_some(Features(()))
        }
    }

    /// Runs the kernel over `a` and `b`, pairing blocks while both have some and
    /// finishing the longer one alone (against a throwaway state).
    fn compress_pair(
        _cpu: Features,
        sa: &mut [u32; 8],
        a: &[[u8; BLOCK]],
        sb: &mut [u32; 8],
        b: &[[u8; BLOCK]],
    ) {
        let n = a.len().min(b.len());
        let (a_both, a_alone) = a.split_at(n);
        let (b_both, b_alone) = b.split_at(n);
        let mut scratch = H0;
        // SAFETY: a `Features` value exists only if detection found every
        // feature compress2 is compiled for.
        unsafe {
            compress2(sa, a_both, sb, b_both);
            if !a_alone.is_empty() {
                compress2(sa, a_alone, &mut scratch, a_alone);
            }
            if !b_alone.is_empty() {
                compress2(&mut scratch, b_alone, sb, b_alone);
            }
        }
    }

    /// Both digests, or `None` when the CPU lacks the extensions.
    pub(super) fn digest2(a: &[u8], b: &[u8]) -> Option<(Digest32, Digest32)> {
        let cpu = Features::detect()?;
        let (a_blocks, a_rest) = a.as_chunks::<BLOCK>();
        let (b_blocks, b_rest) = b.as_chunks::<BLOCK>();
        let (mut sa, mut sb) = (H0, H0);
        compress_pair(cpu, &mut sa, a_blocks, &mut sb, b_blocks);
        let (a_pad, a_n) = padding(a_rest, a.len());
        let (b_pad, b_n) = padding(b_rest, b.len());
        compress_pair(
            cpu,
            &mut sa,
            a_pad.get(..a_n).unwrap_or(&[]),
            &mut sb,
            b_pad.get(..b_n).unwrap_or(&[]),
        );
        Some((to_bytes(&sa), to_bytes(&sb)))
    }

    /// The SHA-NI state layout: (ABEF, CDGH) from H[0..8].
    ///
    /// # Safety
    /// The CPU has SSE4.1 (a [`Features`] token was made); the memory access is
    /// within `s`.
    #[inline(always)]
    unsafe fn load_state(s: &[u32; 8]) -> (__m128i, __m128i) {
        let p = s.as_ptr().cast::<__m128i>();
        // SAFETY: `s` is 32 readable bytes; loadu has no alignment requirement.
        let (dcba, efgh) = unsafe { (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1))) };
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(efgh, 0x1B);
        (_mm_alignr_epi8(cdab, efgh, 8), _mm_blend_epi16(efgh, cdab, 0xF0))
    }

    /// H[0..8] from the SHA-NI state layout.
    ///
    /// # Safety
    /// As [`load_state`].
    #[inline(always)]
    unsafe fn store_state(s: &mut [u32; 8], abef: __m128i, cdgh: __m128i) {
        let feba = _mm_shuffle_epi32(abef, 0x1B);
        let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
        let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
        let hgef = _mm_alignr_epi8(dchg, feba, 8);
        let p = s.as_mut_ptr().cast::<__m128i>();
        // SAFETY: `s` is 32 writable bytes; storeu has no alignment requirement.
        unsafe {
            _mm_storeu_si128(p, dcba);
            _mm_storeu_si128(p.add(1), hgef);
        }
    }

    /// Message words W[4i..4i+4] of a block, big-endian to native.
    ///
    /// # Safety
    /// The CPU has SSSE3 (a [`Features`] token was made) and `i < 4`.
    #[inline(always)]
    unsafe fn load_words(block: &[u8; BLOCK], i: usize, mask: __m128i) -> __m128i {
        // SAFETY: i < 4, so bytes 16i..16i+16 are inside the 64-byte block.
        unsafe { _mm_shuffle_epi8(_mm_loadu_si128(block.as_ptr().cast::<__m128i>().add(i)), mask) }
    }

    /// The next four message-schedule words from the previous sixteen.
    #[inline(always)]
    unsafe fn schedule(w0: __m128i, w1: __m128i, w2: __m128i, w3: __m128i) -> __m128i {
        let t1 = _mm_sha256msg1_epu32(w0, w1);
        let t2 = _mm_alignr_epi8(w3, w2, 4);
        _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), w3)
    }

    /// Four rounds of one stream with message words `w` and constants K[4i..].
    macro_rules! rounds4 {
        ($abef:ident, $cdgh:ident, $w:expr, $i:expr) => {{
            // SAFETY: $i < 16, so K[4i..4i+4] is inside the 64-entry table.
            let k = unsafe { _mm_loadu_si128(K.as_ptr().add(4 * $i).cast::<__m128i>()) };
            let t1 = _mm_add_epi32($w, k);
            $cdgh = _mm_sha256rnds2_epu32($cdgh, $abef, t1);
            $abef = _mm_sha256rnds2_epu32($abef, $cdgh, _mm_shuffle_epi32(t1, 0x0E));
        }};
    }

    /// Compresses `a` into `sa` and `b` into `sb` (same number of blocks), the
    /// two streams' rounds interleaved.
    ///
    /// # Safety
    /// The CPU must have the `sha`, `sse2`, `ssse3` and `sse4.1` features.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress2(sa: &mut [u32; 8], a: &[[u8; BLOCK]], sb: &mut [u32; 8], b: &[[u8; BLOCK]]) {
        let mask = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
        // SAFETY (all blocks below): the pointers come from the references above.
        let (mut a0, mut c0) = unsafe { load_state(sa) };
        let (mut a1, mut c1) = unsafe { load_state(sb) };
        for (x, y) in a.iter().zip(b) {
            let (sa0, sc0, sa1, sc1) = (a0, c0, a1, c1);
            let (mut x0, mut x1, mut x2, mut x3, mut x4);
            let (mut y0, mut y1, mut y2, mut y3, mut y4);
            // SAFETY: this function runs only with the CPU features checked
            // (its caller holds a `Features` token), and every `i` is below 4.
            unsafe {
                x0 = load_words(x, 0, mask);
                y0 = load_words(y, 0, mask);
                x1 = load_words(x, 1, mask);
                y1 = load_words(y, 1, mask);
                x2 = load_words(x, 2, mask);
                y2 = load_words(y, 2, mask);
                x3 = load_words(x, 3, mask);
                y3 = load_words(y, 3, mask);
            }
            rounds4!(a0, c0, x0, 0);
            rounds4!(a1, c1, y0, 0);
            rounds4!(a0, c0, x1, 1);
            rounds4!(a1, c1, y1, 1);
            rounds4!(a0, c0, x2, 2);
            rounds4!(a1, c1, y2, 2);
            rounds4!(a0, c0, x3, 3);
            rounds4!(a1, c1, y3, 3);
            // Rounds 16..64: W is a 5-register ring, as in the sha2 crate.
            macro_rules! step {
                ($p0:ident, $p1:ident, $p2:ident, $p3:ident, $p4:ident,
                 $q0:ident, $q1:ident, $q2:ident, $q3:ident, $q4:ident, $i:expr) => {{
                    // SAFETY: register-only intrinsics, CPU features checked.
                    $p4 = unsafe { schedule($p0, $p1, $p2, $p3) };
                    $q4 = unsafe { schedule($q0, $q1, $q2, $q3) };
                    rounds4!(a0, c0, $p4, $i);
                    rounds4!(a1, c1, $q4, $i);
                }};
            }
            step!(x0, x1, x2, x3, x4, y0, y1, y2, y3, y4, 4);
            step!(x1, x2, x3, x4, x0, y1, y2, y3, y4, y0, 5);
            step!(x2, x3, x4, x0, x1, y2, y3, y4, y0, y1, 6);
            step!(x3, x4, x0, x1, x2, y3, y4, y0, y1, y2, 7);
            step!(x4, x0, x1, x2, x3, y4, y0, y1, y2, y3, 8);
            step!(x0, x1, x2, x3, x4, y0, y1, y2, y3, y4, 9);
            step!(x1, x2, x3, x4, x0, y1, y2, y3, y4, y0, 10);
            step!(x2, x3, x4, x0, x1, y2, y3, y4, y0, y1, 11);
            step!(x3, x4, x0, x1, x2, y3, y4, y0, y1, y2, 12);
            step!(x4, x0, x1, x2, x3, y4, y0, y1, y2, y3, 13);
            step!(x0, x1, x2, x3, x4, y0, y1, y2, y3, y4, 14);
            step!(x1, x2, x3, x4, x0, y1, y2, y3, y4, y0, 15);
            a0 = _mm_add_epi32(a0, sa0);
            c0 = _mm_add_epi32(c0, sc0);
            a1 = _mm_add_epi32(a1, sa1);
            c1 = _mm_add_epi32(c1, sc1);
        }
        // SAFETY: `sa` and `sb` are the caller's state arrays; features checked.
        unsafe {
            store_state(sa, a0, c0);
            store_state(sb, a1, c1);
        }
    }
}

/// Sixteen SHA-256 streams at once in the lanes of AVX-512 registers.
///
/// SHA-NI's round instruction is tied to one execution port on Intel cores, so
/// interleaving two streams gains little there (1.2x measured on a 2-core
/// Xeon, model 207); the round function written in 512-bit integer operations
/// (rotates and three-input logic are single instructions in AVX-512) runs
/// sixteen independent messages on the vector ports instead.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use core::arch::x86_64::{
        __m512i, _mm512_add_epi32, _mm512_loadu_si512, _mm512_mask_blend_epi32, _mm512_ror_epi32,
        _mm512_set1_epi32, _mm512_set4_epi32, _mm512_shuffle_epi8, _mm512_shuffle_i32x4, _mm512_srli_epi32,
        _mm512_storeu_si512, _mm512_ternarylogic_epi32, _mm512_unpackhi_epi32, _mm512_unpackhi_epi64,
        _mm512_unpacklo_epi32, _mm512_unpacklo_epi64,
    };

    use super::shani::{padding, to_bytes, BLOCK, H0, K};
    /// A SHA-256 digest.
    pub type Digest32 = [u8; 32];

    /// Lanes in one register.
    pub(super) const LANES: usize = 16;

    /// Whether the CPU has every feature [`compress16`] is compiled for.
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
    }

    /// Proof that the CPU has what [`compress16`] is compiled for; only
    /// [`Features::detect`] makes one.
    #[derive(Clone, Copy)]
    pub(super) struct Features(());

    impl Features {
        pub(super) fn detect() -> Option<Self> {
            available().then_some(Features(()))
        }
    }

    /// One message's blocks: its whole blocks, then its one or two padding blocks.
    struct Lane<'a> {
        body: &'a [[u8; BLOCK]],
        pad: [[u8; BLOCK]; 2],
        pad_n: usize,
    }

    impl Lane<'_> {
        fn blocks(&self) -> usize {
            self.body.len().saturating_add(self.pad_n)
        }

        fn block(&self, i: usize) -> Option<&[u8; BLOCK]> {
            match i.checked_sub(self.body.len()) {
                None => self.body.get(i),
                Some(j) if j < self.pad_n => self.pad.get(j),
                Some(_) => None,
            }
        }
    }

    /// The digests of up to [`LANES`] messages (`out[i]` for `msgs[i]`).
    pub(super) fn digest16(_cpu: Features, msgs: &[&[u8]], out: &mut [Digest32]) {
        let lanes: Vec<Lane<'_>> = msgs
            .iter()
            .take(LANES)
            .map(|m| {
                let (body, rest) = m.as_chunks::<BLOCK>();
                let (pad, pad_n) = padding(rest, m.len());
                Lane { body, pad, pad_n }
            })
            .collect();
        let steps = lanes.iter().map(Lane::blocks).max().unwrap_or(0);
        let mut state = [[0u32; LANES]; 8];
        for (word, h) in state.iter_mut().zip(H0) {
            *word = [h; LANES];
        }
        // Every lane's whole blocks up to the shortest message's, in one run with
        // the state in registers (lanes without a message hash the first one's
        // blocks; their states are never read).
        let common = lanes.iter().map(|l| l.body.len()).min().unwrap_or(0);
        if let Some(first) = lanes.first().filter(|_| common > 0) {
            let bodies: [&[[u8; BLOCK]]; LANES] =
                core::array::from_fn(|i| lanes.get(i).map_or(first.body, |l| l.body));
            // SAFETY: a `Features` value exists only if detection found every
            // feature compress16_run is compiled for.
            unsafe { compress16_run(&mut state, &bodies, common) };
        }
        // The rest block by block: longer bodies, then each lane's padding.
        let zero = [0u8; BLOCK];
        for step in common..steps {
            let mut blocks = [&zero; LANES];
            let mut active: u16 = 0;
            for (i, lane) in lanes.iter().enumerate() {
                if let (Some(b), Some(slot)) = (lane.block(step), blocks.get_mut(i)) {
                    *slot = b;
                    active |= 1 << i;
                }
            }
            // SAFETY: as above, for compress16.
            unsafe { compress16(&mut state, &blocks, active) };
        }
        for (i, o) in out.iter_mut().enumerate().take(lanes.len()) {
            let mut s = [0u32; 8];
            for (w, word) in s.iter_mut().zip(&state) {
                *w = word.get(i).copied().unwrap_or(0);
            }
            *o = to_bytes(&s);
        }
    }

    macro_rules! xor3 {
        ($a:expr, $b:expr, $c:expr) => {
            _mm512_ternarylogic_epi32::<0x96>($a, $b, $c)
        };
    }

    /// The words of one block of each lane, big-endian to native, transposed:
    /// `w[t]` holds word t of every lane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn load16(blocks: [&[u8; BLOCK]; LANES]) -> [__m512i; 16] {
        // Reverses the bytes of every 32-bit word.
        let swap = _mm512_set4_epi32(0x0c0d_0e0f, 0x0809_0a0b, 0x0405_0607, 0x0001_0203);
        // SAFETY: each pointer comes from a reference to exactly 64 bytes; the
        // unaligned load has no alignment requirement.
        let r = blocks.map(|b| _mm512_shuffle_epi8(unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }, swap));
        transpose(&r)
    }

    /// The 64 rounds of one block in every lane: the state after it.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    #[allow(unused_assignments)] // the last rounds' schedule writes are dead
    fn block16(s: [__m512i; 8], w: [__m512i; 16]) -> [__m512i; 8] {
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = s;
        let mut w = w;
        // One round; `t` is a literal, so every index below is a constant and
        // the sixteen message words stay in registers.
        macro_rules! round {
            ($t:expr) => {{
                let wt = if $t < 16 {
                    w[$t & 15]
                } else {
                    let x15 = w[($t + 1) & 15];
                    let x2 = w[($t + 14) & 15];
                    let s0 = xor3!(
                        _mm512_ror_epi32::<7>(x15),
                        _mm512_ror_epi32::<18>(x15),
                        _mm512_srli_epi32::<3>(x15)
                    );
                    let s1 = xor3!(
                        _mm512_ror_epi32::<17>(x2),
                        _mm512_ror_epi32::<19>(x2),
                        _mm512_srli_epi32::<10>(x2)
                    );
                    let v = _mm512_add_epi32(
                        _mm512_add_epi32(w[$t & 15], s0),
                        _mm512_add_epi32(w[($t + 9) & 15], s1),
                    );
                    w[$t & 15] = v;
                    v
                };
                let kw = _mm512_add_epi32(
                    wt,
                    _mm512_set1_epi32(i32::from_ne_bytes(K[$t].to_ne_bytes())),
                );
                let big_s1 = xor3!(
                    _mm512_ror_epi32::<6>(e),
                    _mm512_ror_epi32::<11>(e),
                    _mm512_ror_epi32::<25>(e)
                );
                let ch = _mm512_ternarylogic_epi32::<0xCA>(e, f, g);
                let t1 = _mm512_add_epi32(_mm512_add_epi32(h, kw), _mm512_add_epi32(big_s1, ch));
                let big_s0 = xor3!(
                    _mm512_ror_epi32::<2>(a),
                    _mm512_ror_epi32::<13>(a),
                    _mm512_ror_epi32::<22>(a)
                );
                let maj = _mm512_ternarylogic_epi32::<0xE8>(a, b, c);
                let t2 = _mm512_add_epi32(big_s0, maj);
                h = g;
                g = f;
                f = e;
                e = _mm512_add_epi32(d, t1);
                d = c;
                c = b;
                b = a;
                a = _mm512_add_epi32(t1, t2);
            }};
        }
        round!(0);
        round!(1);
        round!(2);
        round!(3);
        round!(4);
        round!(5);
        round!(6);
        round!(7);
        round!(8);
        round!(9);
        round!(10);
        round!(11);
        round!(12);
        round!(13);
        round!(14);
        round!(15);
        round!(16);
        round!(17);
        round!(18);
        round!(19);
        round!(20);
        round!(21);
        round!(22);
        round!(23);
        round!(24);
        round!(25);
        round!(26);
        round!(27);
        round!(28);
        round!(29);
        round!(30);
        round!(31);
        round!(32);
        round!(33);
        round!(34);
        round!(35);
        round!(36);
        round!(37);
        round!(38);
        round!(39);
        round!(40);
        round!(41);
        round!(42);
        round!(43);
        round!(44);
        round!(45);
        round!(46);
        round!(47);
        round!(48);
        round!(49);
        round!(50);
        round!(51);
        round!(52);
        round!(53);
        round!(54);
        round!(55);
        round!(56);
        round!(57);
        round!(58);
        round!(59);
        round!(60);
        round!(61);
        round!(62);
        round!(63);
        let [s0, s1, s2, s3, s4, s5, s6, s7] = s;
        [
            _mm512_add_epi32(s0, a),
            _mm512_add_epi32(s1, b),
            _mm512_add_epi32(s2, c),
            _mm512_add_epi32(s3, d),
            _mm512_add_epi32(s4, e),
            _mm512_add_epi32(s5, f),
            _mm512_add_epi32(s6, g),
            _mm512_add_epi32(s7, h),
        ]
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn load_state(state: &[[u32; LANES]; 8]) -> [__m512i; 8] {
        // SAFETY: each row is 64 readable bytes; loadu has no alignment requirement.
        state.map(|row| unsafe { _mm512_loadu_si512(row.as_ptr().cast()) })
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn store_state(state: &mut [[u32; LANES]; 8], s: [__m512i; 8]) {
        for (row, v) in state.iter_mut().zip(s) {
            // SAFETY: each row is 64 writable bytes; storeu has no alignment requirement.
            unsafe { _mm512_storeu_si512(row.as_mut_ptr().cast(), v) };
        }
    }

    /// One block of each of sixteen messages into their states (`state[w][lane]`
    /// is word w of lane `lane`); lanes whose bit in `active` is clear keep their
    /// state.
    ///
    /// # Safety
    /// The CPU must have the `avx512f` and `avx512bw` features.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn compress16(state: &mut [[u32; LANES]; 8], blocks: &[&[u8; BLOCK]; LANES], active: u16) {
        let old = load_state(state);
        let new = block16(old, load16(*blocks));
        let mut out = old;
        for (o, (prev, next)) in out.iter_mut().zip(old.iter().zip(new)) {
            *o = _mm512_mask_blend_epi32(active, *prev, next);
        }
        store_state(state, out);
    }

    /// Blocks `0..n` of every lane's `bodies` (each has at least `n`) into the
    /// states, keeping them in registers from block to block.
    ///
    /// # Safety
    /// The CPU must have the `avx512f` and `avx512bw` features.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn compress16_run(state: &mut [[u32; LANES]; 8], bodies: &[&[[u8; BLOCK]]; LANES], n: usize) {
        const ZERO: [u8; BLOCK] = [0; BLOCK];
        let mut s = load_state(state);
        for i in 0..n {
            let blocks: [&[u8; BLOCK]; LANES] =
                core::array::from_fn(|l| bodies.get(l).and_then(|b| b.get(i)).unwrap_or(&ZERO));
            s = block16(s, load16(blocks));
        }
        store_state(state, s);
    }

    /// Rows of sixteen words to columns: `out[t]` holds word t of every row.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn transpose(r: &[__m512i; 16]) -> [__m512i; 16] {
        let [r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15] = *r;
        // t(2i), t(2i+1): rows 2i and 2i+1 interleaved by words.
        let t0 = _mm512_unpacklo_epi32(r0, r1);
        let t1 = _mm512_unpackhi_epi32(r0, r1);
        let t2 = _mm512_unpacklo_epi32(r2, r3);
        let t3 = _mm512_unpackhi_epi32(r2, r3);
        let t4 = _mm512_unpacklo_epi32(r4, r5);
        let t5 = _mm512_unpackhi_epi32(r4, r5);
        let t6 = _mm512_unpacklo_epi32(r6, r7);
        let t7 = _mm512_unpackhi_epi32(r6, r7);
        let t8 = _mm512_unpacklo_epi32(r8, r9);
        let t9 = _mm512_unpackhi_epi32(r8, r9);
        let t10 = _mm512_unpacklo_epi32(r10, r11);
        let t11 = _mm512_unpackhi_epi32(r10, r11);
        let t12 = _mm512_unpacklo_epi32(r12, r13);
        let t13 = _mm512_unpackhi_epi32(r12, r13);
        let t14 = _mm512_unpacklo_epi32(r14, r15);
        let t15 = _mm512_unpackhi_epi32(r14, r15);
        // u(4g + c): rows 4g..4g+4, columns c, c+4, c+8, c+12 in its four 128-bit lanes.
        let u0 = _mm512_unpacklo_epi64(t0, t2);
        let u1 = _mm512_unpackhi_epi64(t0, t2);
        let u2 = _mm512_unpacklo_epi64(t1, t3);
        let u3 = _mm512_unpackhi_epi64(t1, t3);
        let u4 = _mm512_unpacklo_epi64(t4, t6);
        let u5 = _mm512_unpackhi_epi64(t4, t6);
        let u6 = _mm512_unpacklo_epi64(t5, t7);
        let u7 = _mm512_unpackhi_epi64(t5, t7);
        let u8 = _mm512_unpacklo_epi64(t8, t10);
        let u9 = _mm512_unpackhi_epi64(t8, t10);
        let u10 = _mm512_unpacklo_epi64(t9, t11);
        let u11 = _mm512_unpackhi_epi64(t9, t11);
        let u12 = _mm512_unpacklo_epi64(t12, t14);
        let u13 = _mm512_unpackhi_epi64(t12, t14);
        let u14 = _mm512_unpacklo_epi64(t13, t15);
        let u15 = _mm512_unpackhi_epi64(t13, t15);
        // Column c: 128-bit lane k of u(4g + c) for g = 0..4, gathered in two steps.
        macro_rules! column4 {
            ($a:ident, $b:ident, $c:ident, $d:ident) => {{
                let v_lo = _mm512_shuffle_i32x4::<0x44>($a, $b);
                let v_hi = _mm512_shuffle_i32x4::<0xEE>($a, $b);
                let x_lo = _mm512_shuffle_i32x4::<0x44>($c, $d);
                let x_hi = _mm512_shuffle_i32x4::<0xEE>($c, $d);
                (
                    _mm512_shuffle_i32x4::<0x88>(v_lo, x_lo),
                    _mm512_shuffle_i32x4::<0xDD>(v_lo, x_lo),
                    _mm512_shuffle_i32x4::<0x88>(v_hi, x_hi),
                    _mm512_shuffle_i32x4::<0xDD>(v_hi, x_hi),
                )
            }};
        }
        let (w0, w4, w8, w12) = column4!(u0, u4, u8, u12);
        let (w1, w5, w9, w13) = column4!(u1, u5, u9, u13);
        let (w2, w6, w10, w14) = column4!(u2, u6, u10, u14);
        let (w3, w7, w11, w15) = column4!(u3, u7, u11, u15);
        [
            w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    pub(super) fn sha(d: &[u8]) -> Digest32 {
        Sha256::digest(d).into()
    }

    #[test]
    fn agrees_with_sha2_on_every_short_length_pair() {
        // Every length 0..=200 against a set of partner lengths covering empty,
        // one block, the 55/56 padding edge and several blocks.
        let long = data(300, 1);
        let other = data(300, 2);
        for la in 0..=200 {
            for lb in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 200, 257] {
                let (a, b) = (&long[..la], &other[..lb]);
                assert_eq!(digest2(a, b), (sha(a), sha(b)), "lengths {la} and {lb}");
                assert_eq!(digest2(b, a), (sha(b), sha(a)), "lengths {lb} and {la}");
            }
        }
    }

    #[test]
    fn agrees_with_sha2_on_large_and_uneven_inputs() {
        let a = data(1 << 20, 3);
        let b = data((1 << 20) + 77, 4);
        assert_eq!(digest2(&a, &b), (sha(&a), sha(&b)));
        assert_eq!(digest2(&a[..12_345], &b), (sha(&a[..12_345]), sha(&b)));
        assert_eq!(digest2(&a, &a), (sha(&a), sha(&a)));
        assert_eq!(digest2(&[], &[]), (sha(&[]), sha(&[])));
    }

    #[test]
    fn known_answers() {
        // FIPS 180-2 appendix B.1 and B.2.
        let abc = hex(b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let two_block = hex(b"248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
        let msg = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(digest2(b"abc", msg), (abc, two_block));
    }

    pub(super) fn hex(s: &[u8]) -> Digest32 {
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(s.chunks(2)) {
            *o = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
        }
        out
    }
}

#[cfg(test)]
mod engine_tests {
    use super::tests::{data, sha};
    use super::*;

    const ENGINES: [Engine; 3] = [Engine::Sha2, Engine::ShaNi, Engine::Avx512];

    fn check(e: Engine, msgs: &[&[u8]]) {
        let mut out = vec![[0u8; 32]; msgs.len()];
        e.digest_into(msgs, &mut out);
        for (i, (m, d)) in msgs.iter().zip(&out).enumerate() {
            assert_eq!(
                *d,
                sha(m),
                "{e:?}: message {i} of {}, length {}",
                msgs.len(),
                m.len()
            );
        }
    }

    #[test]
    fn every_engine_agrees_with_sha2_on_mixed_lengths() {
        // Lanes of different lengths finish at different blocks: every length
        // 0..=200 in one lane against lanes of fixed lengths around the padding
        // edges, at every lane position and with every batch size up to 17.
        let long = data(1000, 1);
        let fixed = [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 200, 257, 640, 999, 3, 64];
        // All lanes with whole blocks: the shared run goes through the
        // register-resident path (at least four blocks), the rest block by block.
        let multi = [
            256, 257, 311, 312, 320, 392, 449, 640, 999, 320, 256, 492, 383, 384, 447, 448,
        ];
        for e in ENGINES {
            one_lane_varies(e, &long, &fixed, 0..=200, [0, 7, 15]);
            one_lane_varies(e, &long, &multi, 256..=600, [0, 9, 15]);
            for n in 0..=17 {
                let msgs: Vec<&[u8]> = (0..n).map(|i| &long[i * 13..i * 13 + (i * 97) % 700]).collect();
                check(e, &msgs);
            }
            for n in 1..=17 {
                let msgs: Vec<&[u8]> = (0..n).map(|i| &long[i..i + 64 + (i * 97) % 700]).collect();
                check(e, &msgs);
            }
        }
    }

    /// Sixteen lanes of lengths `others`, except the lane at each of
    /// `positions`, which takes every length in `lens` (all from the tail of
    /// `long`, the others from its head).
    fn one_lane_varies(
        e: Engine,
        long: &[u8],
        others: &[usize; 16],
        lens: std::ops::RangeInclusive<usize>,
        positions: [usize; 3],
    ) {
        for len in lens {
            for pos in positions {
                let mut msgs: Vec<&[u8]> = others.iter().map(|&l| &long[..l]).collect();
                msgs[pos] = &long[long.len().saturating_sub(len)..];
                check(e, &msgs);
            }
        }
    }

    #[test]
    fn every_engine_agrees_with_sha2_on_large_inputs() {
        let big = data((1 << 20) + 77, 9);
        let msgs: Vec<&[u8]> = (0..16).map(|i| &big[i * 1000..]).collect();
        for e in ENGINES {
            check(e, &msgs);
            check(e, &[&big]);
        }
    }

    #[test]
    fn every_engine_gives_the_fips_answers() {
        let abc = tests::hex(b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let two = tests::hex(b"248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
        let msg: &[u8] = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        for e in ENGINES {
            let msgs: Vec<&[u8]> = (0..16)
                .map(|i| if i % 2 == 0 { &b"abc"[..] } else { msg })
                .collect();
            let mut out = vec![[0u8; 32]; 16];
            e.digest_into(&msgs, &mut out);
            for (i, d) in out.iter().enumerate() {
                assert_eq!(*d, if i % 2 == 0 { abc } else { two }, "{e:?} lane {i}");
            }
        }
    }

    #[test]
    fn every_engine_fills_exactly_the_shorter_of_messages_and_outputs() {
        let long = data(3000, 5);
        for e in ENGINES {
            for (n_msgs, n_out) in [(4, 3), (3, 4), (17, 5), (5, 17), (1, 2), (2, 1), (0, 3), (16, 16)] {
                let msgs: Vec<&[u8]> = (0..n_msgs).map(|i| &long[i * 7..i * 7 + 100 + i * 37]).collect();
                let mut out = vec![[0xAAu8; 32]; n_out];
                e.digest_into(&msgs, &mut out);
                for (i, d) in out.iter().enumerate() {
                    match msgs.get(i) {
                        Some(m) => assert_eq!(*d, sha(m), "{e:?} {n_msgs}/{n_out}: output {i}"),
                        None => assert_eq!(*d, [0xAA; 32], "{e:?} {n_msgs}/{n_out}: output {i} untouched"),
                    }
                }
            }
        }
    }

    #[test]
    fn small_batches_leave_avx512_for_pairs_or_sha2() {
        for n in 0..AVX512_MIN_MESSAGES {
            let e = engine_for(Engine::Avx512, n);
            assert_ne!(e, Engine::Avx512, "{n} messages");
            assert_eq!(e == Engine::ShaNi, Engine::ShaNi.available());
        }
        assert_eq!(engine_for(Engine::Avx512, AVX512_MIN_MESSAGES), Engine::Avx512);
        assert_eq!(engine_for(Engine::ShaNi, 1), Engine::ShaNi);
        // And whatever the batch, digest_batch gives SHA-256.
        let long = data(5000, 6);
        for n in [0usize, 1, 2, 9, 10, 16, 33] {
            let msgs: Vec<&[u8]> = (0..n).map(|i| &long[i..i + 64 * i + 3]).collect();
            let mut out = vec![[0u8; 32]; n];
            digest_batch(&msgs, &mut out);
            for (m, d) in msgs.iter().zip(&out) {
                assert_eq!(*d, sha(m));
            }
        }
    }

    #[test]
    fn reports_the_engines() {
        // An engine the CPU lacks falls back to `sha2`, so the tests above pass
        // without exercising it: say so where `cargo test` shows it.
        // Written to the process's stderr, not through `eprintln!`, which the
        // test harness captures and shows only on failure.
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        for e in ENGINES {
            let line = if e.available() {
                format!("sha2x: {} engine exercised natively\n", e.name())
            } else {
                format!(
                    "sha2x: {} engine NOT exercised: this CPU lacks it, so its tests ran the sha2 fallback\n",
                    e.name()
                )
            };
            let _ = err.write_all(line.as_bytes());
        }
        let _ = writeln!(err, "sha2x: chosen engine {}", engine().name());
    }
}
