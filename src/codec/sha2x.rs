//! Two SHA-256 digests at once on one core ("multi-buffer" hashing).
//!
//! A single SHA-256 stream cannot go faster than the latency of its round
//! instruction: with the x86 SHA extensions every `sha256rnds2` (two rounds)
//! waits for the previous one, which leaves the unit idle half the time on
//! current cores. Chunks of an envelope are hashed independently, so a worker
//! that has two chunks interleaves their rounds and fills those gaps: on the
//! 2-core AMD EPYC (Zen 3) this project is measured on, one core hashes two 1 MiB
//! chunks at 2.7 GB/s where the `sha2` crate hashes one at 1.57 GB/s (`mdevmig
//! bench` prints both figures).
//!
//! The output is plain SHA-256 (FIPS 180-4); nothing in the format changes.
//! [`digest2`] falls back to the `sha2` crate on CPUs without the extensions, and
//! the tests compare the two implementations on every length up to several
//! blocks, every split of lengths between the two streams, and large inputs.
//!
//! This is the crate's second `unsafe` module (after the VFIO ioctls): the
//! intrinsics are `unsafe` because they need CPU features, which are checked at
//! run time before the kernel is called; the kernel reads only whole `[u8; 64]`
//! blocks and writes only the two `[u32; 8]` states it is given.

use sha2::{Digest, Sha256};

use super::Digest32;

/// SHA-256 of `a` and of `b`, interleaved on this core when the CPU allows.
pub fn digest2(a: &[u8], b: &[u8]) -> (Digest32, Digest32) {
    #[cfg(target_arch = "x86_64")]
    if let Some(d) = shani::digest2(a, b) {
        return d;
    }
    (Sha256::digest(a).into(), Sha256::digest(b).into())
}

/// True when [`digest2`] interleaves (the CPU has the SHA extensions).
pub fn interleaved() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        shani::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
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

    use super::Digest32;

    const BLOCK: usize = 64;

    /// FIPS 180-4 §4.2.2.
    const K: [u32; 64] = [
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
    const H0: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse2")
            && std::arch::is_x86_feature_detected!("ssse3")
            && std::arch::is_x86_feature_detected!("sse4.1")
    }

    /// The final one or two blocks of a message: its last partial block, 0x80,
    /// zeros and the bit length (FIPS 180-4 §5.1.1).
    fn padding(rest: &[u8], total_len: usize) -> ([[u8; BLOCK]; 2], usize) {
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

    fn to_bytes(state: &[u32; 8]) -> Digest32 {
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
    #[inline(always)]
    unsafe fn load_state(s: &[u32; 8]) -> (__m128i, __m128i) {
        let p = s.as_ptr().cast::<__m128i>();
        // SAFETY: `s` is 32 readable bytes; loadu has no alignment requirement.
        let (dcba, efgh) = unsafe { (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1))) };
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(efgh, 0x1B);
        (_mm_alignr_epi8(cdab, efgh, 8), _mm_blend_epi16(efgh, cdab, 0xF0))
    }

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
        unsafe {
            store_state(sa, a0, c0);
            store_state(sb, a1, c1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u64) -> Vec<u8> {
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

    fn sha(d: &[u8]) -> Digest32 {
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

    fn hex(s: &[u8]) -> Digest32 {
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(s.chunks(2)) {
            *o = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
        }
        out
    }

    #[test]
    fn reports_whether_it_interleaves() {
        // Informational: the CI machine has the extensions, so the fast path is
        // the one the tests above exercised there.
        eprintln!("sha2x interleaved: {}", interleaved());
    }
}
