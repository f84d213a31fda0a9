//! The simulated framebuffer's pixels, generated on the fly.
//!
//! A simulated framebuffer is never held in memory: page `p` with content key `k`
//! and generation `g` is 512 little-endian u64 words,
//!
//! ```text
//! word 0      = k
//! word 1      = g
//! word w >= 2 = mix(base(k, g) + (512 p + w) × 0x9e3779b97f4a7c15)
//! base(k, g)  = k ^ rotl(g × 0xd6e8feb86659fd93, 17)
//! mix(z)      = z' ^ (z' >> 31)  where z' = (z ^ (z >> 30)) × 0xbf58476d1ce4e5b9
//! ```
//!
//! (all arithmetic wrapping mod 2^64). Word 0 and 1 make a page's bytes tell which
//! `(k, g)` generated them, so a loader can recognise generated pages
//! ([`classify`]) and represent them by 16 bytes instead of 4096.
//! Generation is one multiply per 8 bytes and streams at several GB/s.

use crate::types::PAGE_SIZE;

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
const GEN_MUL: u64 = 0xd6e8_feb8_6659_fd93;
const MIX_MUL: u64 = 0xbf58_476d_1ce4_e5b9;
/// Words in a page.
const WORDS_PER_PAGE: u64 = 512;

#[inline(always)]
fn base(key: u64, gen: u64) -> u64 {
    key ^ gen.wrapping_mul(GEN_MUL).rotate_left(17)
}

#[inline(always)]
fn mix(z: u64) -> u64 {
    let z = (z ^ z.wrapping_shr(30)).wrapping_mul(MIX_MUL);
    z ^ z.wrapping_shr(31)
}

/// The starting `z` of global word `page * 512 + w`.
#[inline(always)]
fn z_at(key: u64, gen: u64, page: u64, w: u64) -> u64 {
    let index = page.wrapping_mul(WORDS_PER_PAGE).wrapping_add(w);
    base(key, gen).wrapping_add(index.wrapping_mul(GOLDEN))
}

/// Word `w` (0..512) of page `page` with content `(key, gen)`.
pub fn word(key: u64, gen: u64, page: u64, w: u64) -> u64 {
    match w {
        0 => key,
        1 => gen,
        _ => mix(z_at(key, gen, page, w)),
    }
}

/// Fills `out` with the bytes of page `page` (content `(key, gen)`) from byte
/// `start` of the page on. Bytes past the end of the page are left alone.
pub fn fill(key: u64, gen: u64, page: u64, start: usize, out: &mut [u8]) {
    let room = PAGE_SIZE.saturating_sub(start);
    let len = out.len().min(room);
    let Some(mut rest) = out.get_mut(..len) else {
        return;
    };
    let mut pos = start;
    // Header words and unaligned bytes, one word at a time.
    while !rest.is_empty() && (pos & 7 != 0 || pos < 16 || rest.len() < 8) {
        let w = u64::try_from(pos >> 3).unwrap_or(0);
        let bytes = word(key, gen, page, w).to_le_bytes();
        let within = pos & 7;
        let n = 8usize.saturating_sub(within).min(rest.len());
        let (head, tail) = rest.split_at_mut(n);
        if let Some(src) = bytes.get(within..within.saturating_add(n)) {
            head.copy_from_slice(src);
        }
        rest = tail;
        pos = pos.saturating_add(n);
    }
    if rest.is_empty() {
        return;
    }
    // Aligned body: the hot loop.
    let mut z = z_at(key, gen, page, u64::try_from(pos >> 3).unwrap_or(0));
    let mut chunks = rest.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&mix(z).to_le_bytes());
        z = z.wrapping_add(GOLDEN);
    }
    let tail = chunks.into_remainder();
    let n = tail.len();
    if let Some(src) = mix(z).to_le_bytes().get(..n) {
        tail.copy_from_slice(src);
    }
}

/// The `(key, gen)` that generated `bytes` as page `page`, if any: `bytes` must be a
/// whole page equal to the generator's output for its own word 0 and word 1.
pub fn classify(page: u64, bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() != PAGE_SIZE {
        return None;
    }
    let word_at = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
    let (head, body) = bytes.split_at_checked(16)?;
    let key = word_at(head.get(..8)?);
    let gen = word_at(head.get(8..)?);
    let mut z = z_at(key, gen, page, 2);
    // Branch-free within blocks of 16 words so the comparison pipelines.
    for block in body.chunks(128) {
        let mut diff = 0u64;
        for c in block.chunks_exact(8) {
            diff |= word_at(c) ^ mix(z);
            z = z.wrapping_add(GOLDEN);
        }
        if diff != 0 {
            return None;
        }
    }
    Some((key, gen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_agrees_with_word_at_every_offset() {
        let mut page = vec![0u8; PAGE_SIZE];
        fill(7, 3, 11, 0, &mut page);
        for (w, c) in page.chunks_exact(8).enumerate() {
            assert_eq!(
                u64::from_le_bytes(c.try_into().unwrap()),
                word(7, 3, 11, u64::try_from(w).unwrap())
            );
        }
        for start in [0, 1, 7, 8, 15, 16, 17, 100, 4088, 4095] {
            for len in [0, 1, 5, 8, 9, 64, 4096] {
                let mut out = vec![0xaau8; len];
                fill(7, 3, 11, start, &mut out);
                let n = len.min(PAGE_SIZE - start);
                assert_eq!(&out[..n], &page[start..start + n], "start {start} len {len}");
                assert!(out[n..].iter().all(|b| *b == 0xaa));
            }
        }
        assert_eq!(classify(11, &page), Some((7, 3)));
        assert_eq!(classify(12, &page), None);
        page[4095] ^= 1;
        assert_eq!(classify(11, &page), None);
    }
}
