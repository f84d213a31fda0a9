//! The simulated framebuffer's pixels, generated on the fly.
//!
//! A simulated framebuffer is never held in memory: page `p` with content key `k`
//! and generation `g` is 512 little-endian u64 words,
//!
//! ```text
//! word 0      = k
//! word 1      = g
//! word w >= 2 = seed(k, g, p, w mod 8) ^ (w × 0x9e3779b97f4a7c15)
//! seed(k, g, p, j) = mix(base(k, g) + (8 p + j) × 0x9e3779b97f4a7c15)
//! base(k, g)  = k ^ rotl(g × 0xd6e8feb86659fd93, 17)
//! mix(z)      = z' ^ (z' >> 31)  where z' = (z ^ (z >> 30)) × 0xbf58476d1ce4e5b9
//! ```
//!
//! (all arithmetic wrapping mod 2^64). Word 0 and 1 make a page's bytes tell which
//! `(k, g)` generated them, so a loader can recognise generated pages
//! ([`classify`]) and represent them by 16 bytes instead of 4096.
//! Eight mixed seeds per page and one xor per word: generating and recognising a
//! page run at memory speed (the loops vectorise), so the simulated device does
//! not dominate a migration benchmark of the code around it.

use crate::types::PAGE_SIZE;

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
const GEN_MUL: u64 = 0xd6e8_feb8_6659_fd93;
const MIX_MUL: u64 = 0xbf58_476d_1ce4_e5b9;
/// Seeds per page; word `w` uses seed `w mod SEEDS`.
const SEEDS: usize = 8;
const SEEDS_U64: u64 = 8;
/// `w mod SEEDS` is `w & SEED_MASK`.
const SEED_MASK: u64 = 7;
/// Bytes covered by one round of the seeds.
const SPAN: usize = SEEDS * 8;

#[inline(always)]
fn base(key: u64, gen: u64) -> u64 {
    key ^ gen.wrapping_mul(GEN_MUL).rotate_left(17)
}

#[inline(always)]
fn mix(z: u64) -> u64 {
    let z = (z ^ z.wrapping_shr(30)).wrapping_mul(MIX_MUL);
    z ^ z.wrapping_shr(31)
}

/// The page's eight seeds.
#[inline(always)]
fn seeds(key: u64, gen: u64, page: u64) -> [u64; SEEDS] {
    let b = base(key, gen);
    let first = page.wrapping_mul(SEEDS_U64);
    let mut s = [0u64; SEEDS];
    for (j, v) in (0u64..).zip(s.iter_mut()) {
        *v = mix(b.wrapping_add(first.wrapping_add(j).wrapping_mul(GOLDEN)));
    }
    s
}

/// `(w + j) × GOLDEN` for the eight words of the span starting at word `w`.
#[inline(always)]
fn span_products(w: u64) -> [u64; SEEDS] {
    let mut m = [0u64; SEEDS];
    for (p, j) in m.iter_mut().zip(0u64..) {
        *p = w.wrapping_add(j).wrapping_mul(GOLDEN);
    }
    m
}

/// What a span's products grow by from one span to the next.
const SPAN_STEP: u64 = GOLDEN.wrapping_mul(SEEDS_U64);

/// Word `w` (2..512) from the page's seeds.
#[inline(always)]
fn body_word(s: &[u64; SEEDS], w: u64) -> u64 {
    let j = usize::try_from(w & SEED_MASK).unwrap_or(0);
    s.get(j).copied().unwrap_or(0) ^ w.wrapping_mul(GOLDEN)
}

/// Word `w` (0..512) of page `page` with content `(key, gen)`.
pub fn word(key: u64, gen: u64, page: u64, w: u64) -> u64 {
    page_word(key, gen, &seeds(key, gen, page), w)
}

/// Word `w` of a page whose seeds are `s`.
#[inline(always)]
fn page_word(key: u64, gen: u64, s: &[u64; SEEDS], w: u64) -> u64 {
    match w {
        0 => key,
        1 => gen,
        _ => body_word(s, w),
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
    let s = seeds(key, gen, page);
    let at = |pos: usize| page_word(key, gen, &s, u64::try_from(pos >> 3).unwrap_or(0));
    let mut pos = start;
    // Header words and bytes before the first whole span, one word at a time.
    while !rest.is_empty() && (!pos.is_multiple_of(SPAN) || pos < SPAN || rest.len() < SPAN) {
        let bytes = at(pos).to_le_bytes();
        let within = pos & 7;
        let n = 8usize.saturating_sub(within).min(rest.len());
        let (head, tail) = rest.split_at_mut(n);
        // Byte by byte: a variable-length copy_from_slice here is a call to
        // memcpy for every header word of every page.
        for (d, s) in head.iter_mut().zip(bytes.iter().skip(within)) {
            *d = *s;
        }
        rest = tail;
        pos = pos.saturating_add(n);
    }
    // Whole spans: the hot loop, eight words per step, additions and xors only.
    let mut w = u64::try_from(pos >> 3).unwrap_or(0);
    let mut m = span_products(w);
    let mut spans = rest.chunks_exact_mut(SPAN);
    for span in &mut spans {
        for ((c, seed), p) in span.chunks_exact_mut(8).zip(&s).zip(&m) {
            c.copy_from_slice(&(seed ^ p).to_le_bytes());
        }
        for p in &mut m {
            *p = p.wrapping_add(SPAN_STEP);
        }
        w = w.wrapping_add(SEEDS_U64);
    }
    let mut tail = spans.into_remainder();
    let mut pos = usize::try_from(w).unwrap_or(0).saturating_mul(8);
    while !tail.is_empty() {
        let bytes = at(pos).to_le_bytes();
        let n = tail.len().min(8);
        let (head, t) = tail.split_at_mut(n);
        for (d, s) in head.iter_mut().zip(bytes) {
            *d = s;
        }
        tail = t;
        pos = pos.saturating_add(n);
    }
}

/// The `(key, gen)` that generated `bytes` as page `page`, if any: `bytes` must be a
/// whole page equal to the generator's output for its own word 0 and word 1.
pub fn classify(page: u64, bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() != PAGE_SIZE {
        return None;
    }
    let word_at = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
    let (head, body) = bytes.split_at_checked(SPAN)?;
    let key = word_at(head.get(..8)?);
    let gen = word_at(head.get(8..16)?);
    let s = seeds(key, gen, page);
    let mut diff = 0u64;
    for (c, w) in head.chunks_exact(8).zip(0u64..).skip(2) {
        diff |= word_at(c) ^ body_word(&s, w);
    }
    // Branch-free within each 512-byte block so the comparison vectorises.
    let mut m = span_products(SEEDS_U64);
    for block in body.chunks(512) {
        for span in block.chunks_exact(SPAN) {
            for ((c, seed), p) in span.chunks_exact(8).zip(&s).zip(&m) {
                diff |= word_at(c) ^ seed ^ p;
            }
            for p in &mut m {
                *p = p.wrapping_add(SPAN_STEP);
            }
        }
        if diff != 0 {
            return None;
        }
    }
    (diff == 0).then_some((key, gen))
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
