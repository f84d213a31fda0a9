//! Simulated VRAM page contents, generated on demand.
//!
//! Page `p` (device-wide page number) with content key `k` and generation `g` is
//! 512 little-endian u64 words:
//!
//! ```text
//! word 0      = k
//! word 1      = g
//! word w >= 2 = s[w mod 8] ^ (w × 0x9e3779b97f4a7c15)
//! s[j]        = mix(k ^ rotl(g × 0xd6e8feb86659fd93, 23) + (8 p + j) × 0x9e3779b97f4a7c15)
//! mix(z)      = splitmix64's finaliser
//! ```
//!
//! Words 0 and 1 name the `(k, g)` that generated the page, so a loader can tell
//! from a page's bytes alone whether it is a generated page ([`classify`]) and keep
//! it as 16 bytes: content is a pure function of `(k, g, p)`.

use crate::format::PAGE_SIZE;

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
const GEN_MUL: u64 = 0xd6e8_feb8_6659_fd93;
const WORDS: usize = PAGE_SIZE / 8;

fn mix(z: u64) -> u64 {
    let z = (z ^ z.wrapping_shr(30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ z.wrapping_shr(27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ z.wrapping_shr(31)
}

fn seeds(key: u64, gen: u64, page: u64) -> [u64; 8] {
    let base = key ^ gen.wrapping_mul(GEN_MUL).rotate_left(23);
    let first = page.wrapping_mul(8);
    let mut s = [0u64; 8];
    for (j, v) in (0u64..).zip(s.iter_mut()) {
        *v = mix(base.wrapping_add(first.wrapping_add(j).wrapping_mul(GOLDEN)));
    }
    s
}

/// Writes the whole page into `out` (exactly [`PAGE_SIZE`] bytes).
fn whole(key: u64, gen: u64, page: u64, out: &mut [u8; PAGE_SIZE]) {
    let s = seeds(key, gen, page);
    let mut w = 0u64;
    for span in out.chunks_exact_mut(64) {
        for (c, seed) in span.chunks_exact_mut(8).zip(&s) {
            c.copy_from_slice(&(seed ^ w.wrapping_mul(GOLDEN)).to_le_bytes());
            w = w.wrapping_add(1);
        }
    }
    if let Some(h) = out.get_mut(..16) {
        h.copy_from_slice(&[key.to_le_bytes(), gen.to_le_bytes()].concat());
    }
}

/// Fills `out` with page `page`'s bytes from byte `start` of the page on; bytes past
/// the page's end are left alone. Returns the bytes written.
pub fn fill(key: u64, gen: u64, page: u64, start: usize, out: &mut [u8]) -> usize {
    let n = PAGE_SIZE.saturating_sub(start).min(out.len());
    if start == 0 {
        if let Some(dst) = out.first_chunk_mut::<PAGE_SIZE>() {
            whole(key, gen, page, dst);
            return PAGE_SIZE;
        }
    }
    let mut buf = [0u8; PAGE_SIZE];
    whole(key, gen, page, &mut buf);
    if let (Some(d), Some(s)) = (out.get_mut(..n), buf.get(start..start.saturating_add(n))) {
        d.copy_from_slice(s);
    }
    n
}

/// The `(key, gen)` that generated `bytes` as page `page`, if `bytes` is exactly such
/// a page.
pub fn classify(page: u64, bytes: &[u8]) -> Option<(u64, u64)> {
    let bytes: &[u8; PAGE_SIZE] = bytes.try_into().ok()?;
    let key = u64::from_le_bytes(*bytes.first_chunk::<8>()?);
    let gen = u64::from_le_bytes(*bytes.get(8..16)?.first_chunk::<8>()?);
    let mut buf = [0u8; PAGE_SIZE];
    whole(key, gen, page, &mut buf);
    (buf == *bytes).then_some((key, gen))
}

/// Words per page (for documentation and tests).
pub const PAGE_WORDS: usize = WORDS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_at_any_offset_matches_the_whole_page_and_classify_recognises_it() {
        let mut page = vec![0u8; PAGE_SIZE];
        assert_eq!(fill(7, 3, 11, 0, &mut page), PAGE_SIZE);
        assert_eq!(page[..8], 7u64.to_le_bytes());
        for start in [0, 1, 7, 8, 17, 4000, 4095] {
            for len in [0, 1, 9, 64, 5000] {
                let mut out = vec![0xaau8; len];
                let n = fill(7, 3, 11, start, &mut out);
                assert_eq!(n, len.min(PAGE_SIZE - start));
                assert_eq!(&out[..n], &page[start..start + n]);
                assert!(out[n..].iter().all(|b| *b == 0xaa));
            }
        }
        assert_eq!(classify(11, &page), Some((7, 3)));
        assert_eq!(classify(12, &page), None);
        page[4095] ^= 1;
        assert_eq!(classify(11, &page), None);
        assert_eq!(classify(11, &page[..100]), None);
        assert_eq!(PAGE_WORDS, 512);
    }
}
