//! A framebuffer as the simulator keeps it: one generation number per page, plus
//! exceptions for pages whose bytes did not come from this device's generator.
//!
//! | page kind  | kept as                 | re-saveable | digest element                 |
//! |------------|-------------------------|-------------|--------------------------------|
//! | generated with the device key, generation < 2^32 | `gens[p]` (4 bytes) | yes | `01 ‖ key ‖ gen` |
//! | generated with another key or generation         | `(key, gen)` (16 bytes) | yes | `01 ‖ key ‖ gen` |
//! | other bytes, while at most 64 MiB of them        | the 4096 bytes | yes | `02 ‖ SHA-256(bytes)` |
//! | other bytes beyond 64 MiB                        | SHA-256 only | **no** | `02 ‖ SHA-256(bytes)` |
//!
//! Whether a page is "generated" is decided from its bytes alone
//! ([`fbgen::classify`]), so two framebuffers with equal bytes have equal digest
//! elements page for page, whichever way they were built.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::fbgen;
use crate::types::{GpuType, PAGE_SIZE};

/// Most bytes of non-generated pages a framebuffer keeps; beyond it pages are kept
/// as digests only and the device cannot be saved again.
pub const STORE_CAP: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Special {
    Generated { key: u64, gen: u64 },
    Bytes(Box<[u8]>),
    Opaque([u8; 32]),
}

/// A framebuffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fb {
    key: u64,
    gens: Vec<u32>,
    special: BTreeMap<u32, Special>,
    stored: usize,
}

impl Fb {
    /// A framebuffer of `ty` whose every page is generation 0 of `key`.
    pub fn new(ty: GpuType, key: u64) -> Self {
        let pages = usize::try_from(ty.fb_pages()).unwrap_or(0);
        Self {
            key,
            gens: vec![0; pages],
            special: BTreeMap::new(),
            stored: 0,
        }
    }

    fn forget(&mut self, page: u32) {
        if let Some(Special::Bytes(b)) = self.special.remove(&page) {
            self.stored = self.stored.saturating_sub(b.len());
        }
    }

    /// The guest wrote page `page`: its generation moves on.
    pub fn touch(&mut self, page: u32) {
        self.forget(page);
        if let Some(g) = usize::try_from(page).ok().and_then(|p| self.gens.get_mut(p)) {
            *g = g.wrapping_add(1);
        }
    }

    /// Sets page `page` to `bytes` (a whole page). Page 0 of a framebuffer being
    /// loaded sets the device key (`first` is true for it).
    pub fn set_page(&mut self, page: u32, bytes: &[u8], first: bool) {
        if first {
            if let Some(w) = bytes.first_chunk::<8>() {
                self.key = u64::from_le_bytes(*w);
            }
        }
        self.forget(page);
        let Some(slot) = usize::try_from(page).ok().and_then(|p| self.gens.get_mut(p)) else {
            return;
        };
        let special = match fbgen::classify(u64::from(page), bytes) {
            Some((key, gen)) => match u32::try_from(gen) {
                Ok(g) if key == self.key => {
                    *slot = g;
                    return;
                }
                _ => Special::Generated { key, gen },
            },
            None if self.stored.saturating_add(bytes.len()) <= STORE_CAP => {
                self.stored = self.stored.saturating_add(bytes.len());
                Special::Bytes(bytes.into())
            }
            None => Special::Opaque(Sha256::digest(bytes).into()),
        };
        *slot = 0;
        self.special.insert(page, special);
    }

    /// Fills `out` with page `page` from byte `start`; false if the page is kept as
    /// a digest only.
    pub fn fill(&self, page: u32, start: usize, out: &mut [u8]) -> bool {
        let p = u64::from(page);
        match self.special.get(&page) {
            None => {
                let gen = usize::try_from(page)
                    .ok()
                    .and_then(|i| self.gens.get(i))
                    .copied()
                    .unwrap_or(0);
                fbgen::fill(self.key, u64::from(gen), p, start, out);
                true
            }
            Some(Special::Generated { key, gen }) => {
                fbgen::fill(*key, *gen, p, start, out);
                true
            }
            Some(Special::Bytes(b)) => {
                let src = b.get(start..).unwrap_or(&[]);
                let n = src.len().min(out.len());
                if let (Some(d), Some(s)) = (out.get_mut(..n), src.get(..n)) {
                    d.copy_from_slice(s);
                }
                true
            }
            Some(Special::Opaque(_)) => false,
        }
    }

    /// True when every page's bytes are known (the device can be saved).
    pub fn resavable(&self) -> bool {
        !self.special.values().any(|s| matches!(s, Special::Opaque(_)))
    }

    /// Feeds the digest elements of every page to `h`.
    pub fn digest_into(&self, h: &mut Sha256) {
        for (i, gen) in self.gens.iter().enumerate() {
            let page = u32::try_from(i).unwrap_or(u32::MAX);
            match self.special.get(&page) {
                None => generated_element(h, self.key, u64::from(*gen)),
                Some(Special::Generated { key, gen }) => generated_element(h, *key, *gen),
                Some(Special::Bytes(b)) => {
                    h.update([2u8]);
                    h.update(Sha256::digest(b));
                }
                Some(Special::Opaque(d)) => {
                    h.update([2u8]);
                    h.update(d);
                }
            }
        }
    }
}

fn generated_element(h: &mut Sha256, key: u64, gen: u64) {
    h.update([1u8]);
    h.update(key.to_le_bytes());
    h.update(gen.to_le_bytes());
}

/// A page's bytes for tests and the dirty section: `None` if kept as a digest only.
pub(crate) fn page_bytes(fb: &Fb, page: u32) -> Option<Vec<u8>> {
    let mut v = vec![0u8; PAGE_SIZE];
    fb.fill(page, 0, &mut v).then_some(v)
}
