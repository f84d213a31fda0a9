//! [`XeModel`]: a simulated Xe VF for the broker's `sim` backend.
//!
//! # State
//!
//! VRAM is one `(key, generation)` pair per 4 KiB page, its bytes generated on
//! demand ([`crate::pagegen`]), so `xe-vf-1g` costs 4 MiB per copy of the state;
//! pages whose bytes are not a generated page are kept verbatim up to
//! [`RAW_STORE_CAP`] in all and as SHA-256 digests beyond. GGTT (one PTE per 4 KiB
//! of the VF's GGTT range, per tile), MMIO (four scratch registers per GT) and the
//! GuC state blob (per GT, 16 to 48 KiB) are held as bytes. Everything follows from
//! [`SimOptions::seed`].
//!
//! # Saving
//!
//! [`begin_save`](SimModel::begin_save) fixes a snapshot. The stream is
//!
//! ```text
//! descriptor | VRAM chunks of the snapshot, tile by tile, ascending
//! | round re-sends: per pre-copy round, one 4 KiB VRAM packet per page dirtied
//!   since the round before (or begin_save), its content at that round  ...  <- precopy_len
//! | final re-sends: one 4 KiB VRAM packet per page dirtied since the last round
//!   (its content at stop)
//! | per GT in id order: GuC, GGTT (primary GTs), MMIO | trailer
//! ```
//!
//! Everything after [`precopy_len`](SimModel::precopy_len) is fixed at the first
//! read past it (the device has stopped). The driver itself has no pre-copy
//! (`xe-vfio-pci` offers `VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P` only) and
//! sends, per GT, GuC, GGTT, MMIO and then VRAM; the simulated device moves VRAM
//! first and re-sends dirtied pages to model a pre-copy-capable producer, which the
//! kernel's restore path accepts (it applies VRAM packets in order, anywhere inside
//! the VF's VRAM) and so does [`crate::StreamValidator`].
//!
//! While the device runs the guest dirties pages: [`PAGES_PER_ROUND`] per
//! [`guest_activity`](SimModel::guest_activity) round, which the broker's
//! simulated device runs at the spec's `dirty-rate=` (default 0: a guest that
//! touches nothing, so a save that is abandoned leaves the state exactly as it
//! was). `dirty=N` (a sim option next to the configuration attributes, default 0)
//! also dirties N pages at `begin_save`, for tests that want re-sends at a
//! fixed place in the stream. The stream's length varies with the seed through
//! the GuC blobs' sizes.
//!
//! # Pre-copy rounds
//!
//! Pre-copy yields data in several rounds, the way mlx5 does: once the reader has
//! read everything up to `precopy_len` (and got ENOMSG), asking for precopy info
//! calls [`next_precopy_round`](SimModel::next_precopy_round), which appends one
//! 4 KiB VRAM re-send per page dirtied since the last round, with the page's
//! current content, clears the dirty set and moves `precopy_len` to the new end.
//! [`dirty_bytes`](SimModel::dirty_bytes) is the pages dirty now times 4120 bytes
//! (header and page), what the next round or the stop-copy part would re-send.
//!
//! The stream stays within [`Config::max_stream_len`], the bound the plugin
//! declares: its re-send allowance ([`Config::resend_allowance`]) keeps room for
//! the stop-copy part to re-send every page once, and rounds together may use the
//! rest, `resend_allowance - pages × 4120` bytes. A round that would pass that adds
//! nothing and leaves the pages dirty, like a real device whose dirty tracking is
//! exhausted: the VMM then sees `dirty_bytes` not going down and stops the guest.
//!
//! # The length estimate
//!
//! [`raw_len`](SimModel::raw_len) is MIG_DATA_SIZE. A device with no save in
//! progress only estimates it, deliberately wrong by [`estimate_error`]: **even
//! seeds over-estimate, odd seeds under-estimate**, by
//! `4 KiB × (1 + (mix(seed) mod 16))`. While a save is in progress (`begin_save`
//! called, the stop-copy part not yet fixed) the device knows what it has left and
//! `raw_len` is exact: the stream up to `precopy_len`, a re-send per page dirty
//! now, the small resources and the trailer. (The driver's own
//! estimate, `xe_sriov_pf_migration_size`, also misses: it counts one header per
//! resource, not per VRAM chunk, and neither the descriptor nor the trailer.) The
//! stream ends where `read_raw` returns 0.
//!
//! # Loading
//!
//! [`load_data`](SimModel::load_data) runs the bytes, in any split, through a
//! [`StreamValidator`] configured as this device and applies accepted packets to a
//! pending copy of the state: VRAM pages written, GGTT, MMIO and GuC replaced.
//! [`end_load`](SimModel::end_load) fails (and the old state stays) unless the
//! validator accepts the end of the stream, i.e. the trailer came.
//!
//! # Digest
//!
//! ```text
//! SHA-256( "mdevmig-xe-state/1" 00 ‖ u8 len(type) ‖ type ‖ u8 tiles ‖ u8 gts
//!        ‖ u16 devid ‖ u8 revid
//!        ‖ per tile: u64 len ‖ GGTT   ‖ per GT: MMIO (16) ‖ u64 len ‖ GuC
//!        ‖ u64 pages ‖ per page: 01 ‖ key ‖ gen            (a generated page)
//!                               | 02 ‖ SHA-256(page bytes) (any other page) )
//! ```
//!
//! A page counts as generated exactly when its bytes equal the generator's output
//! for its own words 0 and 1, so equal bytes give equal digest elements, and a
//! load that delivers other bytes changes the digest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::{SimOptions, VendorError};
use sha2::{Digest, Sha256};

use crate::codes;
use crate::format::{
    encode_descriptor, trailer, Header, PacketType, HEADER_LEN, HEADER_LEN_U64, MMIO_LEN, PAGE_SIZE,
    PAGE_SIZE_U64,
};
use crate::pagegen;
use crate::profile::{Config, XeType};
use crate::validate::{PacketSink, StreamValidator};

/// Pages the simulated guest writes per activity round.
pub const PAGES_PER_ROUND: u32 = 8;
/// Sim option: pages the guest dirties while a save's pre-copy runs.
pub const SIM_DIRTY_KEY: &str = "dirty";
/// Bytes of non-generated VRAM pages a device keeps verbatim; beyond, only their
/// digests (such a device keeps its digest but cannot be saved again).
pub const RAW_STORE_CAP: u64 = 64 << 20;
/// Bytes of one re-sent page in the stream.
const RESEND_LEN: u64 = HEADER_LEN_U64 + PAGE_SIZE_U64;

/// splitmix64's finaliser.
fn mix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ z.wrapping_shr(30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ z.wrapping_shr(27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ z.wrapping_shr(31)
}

/// A deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next().checked_rem(n).unwrap_or(0)
    }

    fn bytes(&mut self, len: u64) -> Vec<u8> {
        let len = usize::try_from(len).unwrap_or(0);
        let mut out = Vec::with_capacity(len.saturating_add(8));
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// How far the length estimate of a `device_type` device seeded `seed` is off:
/// positive (an over-estimate) for even seeds, negative for odd seeds, 4 to 64 KiB.
pub fn estimate_error(device_type: &str, seed: u64) -> i64 {
    let salt = device_type.bytes().fold(0u64, |h, b| mix(h ^ u64::from(b)));
    let pages = 1u64.saturating_add(mix(seed ^ salt) & 15);
    let bytes = i64::try_from(pages.saturating_mul(PAGE_SIZE_U64)).unwrap_or(0);
    if seed.is_multiple_of(2) {
        bytes
    } else {
        bytes.saturating_neg()
    }
}

/// A page that is not a generated page.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Raw {
    digest: [u8; 32],
    bytes: Option<Arc<Vec<u8>>>,
}

/// A page's content.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Page {
    Gen(u64, u64),
    Raw(Raw),
}

/// The VF's VRAM over all tiles, page `tile × pages_per_tile + p`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Vram {
    keys: Vec<u64>,
    gens: Vec<u64>,
    raw: BTreeMap<u64, Raw>,
    raw_bytes: u64,
}

impl Vram {
    fn seeded(pages: u64, key: u64, seed: u64) -> Self {
        let n = usize::try_from(pages).unwrap_or(0);
        Vram {
            keys: vec![key; n],
            gens: (0..pages).map(|p| mix(seed ^ p.wrapping_mul(0x51)) & 3).collect(),
            raw: BTreeMap::new(),
            raw_bytes: 0,
        }
    }

    fn pages(&self) -> u64 {
        u64::try_from(self.keys.len()).unwrap_or(0)
    }

    fn page(&self, p: u64) -> Page {
        if let Some(r) = self.raw.get(&p) {
            return Page::Raw(r.clone());
        }
        let i = usize::try_from(p).unwrap_or(usize::MAX);
        Page::Gen(
            self.keys.get(i).copied().unwrap_or(0),
            self.gens.get(i).copied().unwrap_or(0),
        )
    }

    fn set_generated(&mut self, p: u64, key: u64, gen: u64) {
        let i = usize::try_from(p).unwrap_or(usize::MAX);
        if let (Some(k), Some(g)) = (self.keys.get_mut(i), self.gens.get_mut(i)) {
            *k = key;
            *g = gen;
        }
        if let Some(old) = self.raw.remove(&p) {
            if old.bytes.is_some() {
                self.raw_bytes = self.raw_bytes.saturating_sub(PAGE_SIZE_U64);
            }
        }
    }

    fn set_raw(&mut self, p: u64, bytes: &[u8]) {
        self.set_generated(p, 0, 0);
        let keep = self.raw_bytes.saturating_add(PAGE_SIZE_U64) <= RAW_STORE_CAP;
        if keep {
            self.raw_bytes = self.raw_bytes.saturating_add(PAGE_SIZE_U64);
        }
        let raw = Raw {
            digest: Sha256::digest(bytes).into(),
            bytes: keep.then(|| Arc::new(bytes.to_vec())),
        };
        self.raw.insert(p, raw);
    }

    /// Stores page `p` as loaded from `bytes` (a whole page).
    fn store(&mut self, p: u64, bytes: &[u8]) {
        match pagegen::classify(p, bytes) {
            Some((key, gen)) => self.set_generated(p, key, gen),
            None => self.set_raw(p, bytes),
        }
    }

    /// The guest writes page `p`.
    fn touch(&mut self, p: u64, key: u64, tick: u64) {
        match self.page(p) {
            Page::Gen(k, g) => self.set_generated(p, k, g.wrapping_add(1)),
            Page::Raw(_) => self.set_generated(p, key, tick | (1 << 40)),
        }
    }

    fn digest_into(&self, h: &mut Sha256) {
        h.update(self.pages().to_le_bytes());
        for (p, (k, g)) in (0u64..).zip(self.keys.iter().zip(&self.gens)) {
            match self.raw.get(&p) {
                Some(r) => {
                    h.update([2u8]);
                    h.update(r.digest);
                }
                None => {
                    h.update([1u8]);
                    h.update(k.to_le_bytes());
                    h.update(g.to_le_bytes());
                }
            }
        }
    }
}

/// Fills `out` with `page`'s bytes (device page number `p`) from byte `start` of
/// the page; 0 when the page's bytes are no longer known.
fn fill_page(page: &Page, p: u64, start: usize, out: &mut [u8]) -> usize {
    match page {
        Page::Gen(k, g) => pagegen::fill(*k, *g, p, start, out),
        Page::Raw(Raw { bytes: Some(b), .. }) => {
            let src = b.get(start..).unwrap_or(&[]);
            let n = src.len().min(out.len());
            if let (Some(d), Some(s)) = (out.get_mut(..n), src.get(..n)) {
                d.copy_from_slice(s);
            }
            n
        }
        Page::Raw(Raw { bytes: None, .. }) => 0,
    }
}

/// A device's whole state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct DevState {
    vram: Vram,
    ggtt: Vec<Vec<u8>>,
    mmio: Vec<[u8; 16]>,
    guc: Vec<Vec<u8>>,
}

impl DevState {
    fn seeded(config: Config, seed: u64) -> Self {
        let mut rng = Rng(seed ^ 0x5845_5f56_465f_0001);
        let key = rng.next();
        let pages = config.pages_per_tile().saturating_mul(u64::from(config.tiles));
        let ggtt = (0..config.tiles)
            .map(|_| {
                let base = rng.below(1 << 20);
                (0..config.ggtt_len() / 8)
                    .flat_map(|i| (base.wrapping_add(i).wrapping_shl(12) | 0b11).to_le_bytes())
                    .collect()
            })
            .collect();
        let mmio = (0..config.gt_count())
            .map(|_| {
                let mut r = [0u8; 16];
                r.copy_from_slice(&rng.bytes(MMIO_LEN));
                r
            })
            .collect();
        let guc = (0..config.gt_count())
            .map(|_| {
                let dwords = 4096u64.saturating_add(rng.below(8192));
                rng.bytes(dwords.saturating_mul(4))
            })
            .collect();
        DevState {
            vram: Vram::seeded(pages, key, seed),
            ggtt,
            mmio,
            guc,
        }
    }

    fn digest(&self, config: Config) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"mdevmig-xe-state/1\0");
        let name = config.ty.name().as_bytes();
        h.update([u8::try_from(name.len()).unwrap_or(u8::MAX)]);
        h.update(name);
        h.update([config.tiles, config.gts]);
        h.update(config.devid.to_le_bytes());
        h.update([config.revid]);
        for g in &self.ggtt {
            h.update(u64::try_from(g.len()).unwrap_or(0).to_le_bytes());
            h.update(g);
        }
        for (m, g) in self.mmio.iter().zip(&self.guc) {
            h.update(m);
            h.update(u64::try_from(g.len()).unwrap_or(0).to_le_bytes());
            h.update(g);
        }
        self.vram.digest_into(&mut h);
        h.finalize().into()
    }
}

/// A payload in the served stream.
#[derive(Debug, Clone)]
enum Body {
    Bytes(Arc<Vec<u8>>),
    /// Snapshot VRAM from this device page on.
    Vram(u64),
    /// One page, as it was when the tail was fixed.
    Page(u64, Page),
}

/// One packet of the served stream.
#[derive(Debug, Clone)]
struct Segment {
    start: u64,
    header: [u8; HEADER_LEN],
    len: u64,
    body: Body,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start.saturating_add(HEADER_LEN_U64).saturating_add(self.len)
    }
}

/// A save in progress.
#[derive(Debug)]
struct Save {
    snap: Vram,
    segs: Vec<Segment>,
    precopy_len: u64,
    dirty: BTreeSet<u64>,
    /// Stream bytes of the re-sends pre-copy rounds appended.
    round_bytes: u64,
    tail_fixed: bool,
}

/// Applies accepted packets to a pending state.
#[derive(Debug)]
struct Applier {
    config: Config,
    pending: DevState,
    buf: Vec<u8>,
    page: Vec<u8>,
    page_no: u64,
}

impl PacketSink for Applier {
    fn packet(&mut self, h: &Header) -> Result<(), VendorError> {
        self.buf.clear();
        self.page.clear();
        if h.ty == PacketType::VRAM {
            let tile_first = u64::from(h.tile_id).saturating_mul(self.config.pages_per_tile());
            self.page_no = tile_first.saturating_add(h.offset / PAGE_SIZE_U64);
        }
        Ok(())
    }

    fn payload(&mut self, h: &Header, _at: u64, mut data: &[u8]) -> Result<(), VendorError> {
        match h.ty {
            PacketType::DESCRIPTOR => {}
            PacketType::VRAM => {
                while !data.is_empty() {
                    let want = PAGE_SIZE.saturating_sub(self.page.len()).min(data.len());
                    let (take, rest) = data.split_at(want);
                    self.page.extend_from_slice(take);
                    data = rest;
                    if self.page.len() == PAGE_SIZE {
                        self.pending.vram.store(self.page_no, &self.page);
                        self.page_no = self.page_no.saturating_add(1);
                        self.page.clear();
                    }
                }
            }
            // Bounded by the validator: GGTT is the table's size, GuC at most 8 MiB.
            _ => self.buf.extend_from_slice(data),
        }
        Ok(())
    }

    fn packet_end(&mut self, h: &Header) -> Result<(), VendorError> {
        let buf = std::mem::take(&mut self.buf);
        let slot = |v: &mut Vec<Vec<u8>>, i: u8| v.get_mut(usize::from(i)).map(|s| *s = buf.clone());
        match h.ty {
            PacketType::GGTT => {
                slot(&mut self.pending.ggtt, h.tile_id);
            }
            PacketType::GUC => {
                slot(&mut self.pending.guc, h.gt_id);
            }
            PacketType::MMIO => {
                if let (Some(m), Ok(b)) = (
                    self.pending.mmio.get_mut(usize::from(h.gt_id)),
                    <[u8; 16]>::try_from(buf.as_slice()),
                ) {
                    *m = b;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A simulated Xe VF.
pub struct XeModel {
    config: Config,
    seed: u64,
    key: u64,
    dirty_at_save: u64,
    tick: u64,
    saves: u64,
    live: DevState,
    save: Option<Save>,
    load: Option<StreamValidator<Applier>>,
}

impl std::fmt::Debug for XeModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XeModel")
            .field("config", &self.config)
            .field("seed", &self.seed)
            .field("tick", &self.tick)
            .finish_non_exhaustive()
    }
}

impl XeModel {
    /// A device of `ty` (any type, the hidden test type included); `opts.attributes`
    /// holds the configuration attributes and optionally `dirty=N`.
    pub fn new(ty: XeType, opts: &SimOptions) -> Result<Self, VendorError> {
        let mut attrs = opts.attributes.clone();
        let dirty = attrs.remove(SIM_DIRTY_KEY);
        // The broker's `versions=` sim option; Xe has one state version.
        attrs.remove("version");
        let config = Config::parse(ty, &attrs)?;
        let pages = config.pages_per_tile().saturating_mul(u64::from(config.tiles));
        let dirty_at_save = match dirty {
            None => 0,
            Some(v) => v.parse::<u64>().ok().filter(|n| *n <= pages).ok_or_else(|| {
                VendorError::new(
                    codes::ATTRIBUTE,
                    format!("sim option dirty={v:?} must be a page count up to {pages}"),
                )
            })?,
        };
        let live = DevState::seeded(config, opts.seed);
        Ok(XeModel {
            config,
            seed: opts.seed,
            key: live.vram.keys.first().copied().unwrap_or(0),
            dirty_at_save,
            tick: 0,
            saves: 0,
            live,
            save: None,
            load: None,
        })
    }

    /// The device's configuration.
    pub fn config(&self) -> Config {
        self.config
    }

    fn pages(&self) -> u64 {
        self.live.vram.pages()
    }

    /// Bytes of the precopy part: the descriptor and the VRAM first pass.
    fn precopy_bytes(&self) -> u64 {
        let c = self.config;
        let per_tile = c.vram_per_tile();
        let chunks = per_tile.div_ceil(c.ty.chunk().max(1));
        let vram = chunks
            .saturating_mul(HEADER_LEN_U64)
            .saturating_add(per_tile)
            .saturating_mul(u64::from(c.tiles));
        HEADER_LEN_U64
            .saturating_add(c.descriptor_len())
            .saturating_add(vram)
    }

    /// Bytes of GuC, GGTT, MMIO and the trailer.
    fn small_bytes(&self) -> u64 {
        let h = HEADER_LEN_U64;
        let len = |v: &Vec<u8>| u64::try_from(v.len()).unwrap_or(0).saturating_add(h);
        let ggtt: u64 = self.live.ggtt.iter().map(len).sum();
        let guc: u64 = self.live.guc.iter().map(len).sum();
        let mmio = h
            .saturating_add(MMIO_LEN)
            .saturating_mul(u64::from(self.config.gt_count()));
        ggtt.saturating_add(guc).saturating_add(mmio).saturating_add(h)
    }

    /// The exact length a save would have if its tail were fixed now.
    pub fn exact_len(&self) -> u64 {
        match &self.save {
            Some(s) if s.tail_fixed => s.segs.last().map(Segment::end).unwrap_or(0),
            Some(s) => s.precopy_len.saturating_add(
                u64::try_from(s.dirty.len())
                    .unwrap_or(0)
                    .saturating_mul(RESEND_LEN)
                    .saturating_add(self.small_bytes()),
            ),
            None => self
                .precopy_bytes()
                .saturating_add(self.dirty_at_save.saturating_mul(RESEND_LEN))
                .saturating_add(self.small_bytes()),
        }
    }

    fn push(segs: &mut Vec<Segment>, header: Header, body: Body) {
        let start = segs.last().map(Segment::end).unwrap_or(0);
        segs.push(Segment {
            start,
            header: header.encode(),
            len: header.size,
            body,
        });
    }

    fn begin(&mut self) {
        let c = self.config;
        let snap = self.live.vram.clone();
        let mut segs = Vec::new();
        let desc = encode_descriptor(u32::from(c.devid), u32::from(c.revid));
        let dlen = u64::try_from(desc.len()).unwrap_or(0);
        Self::push(
            &mut segs,
            Header::new(PacketType::DESCRIPTOR, 0, 0, 0, dlen),
            Body::Bytes(Arc::new(desc)),
        );
        for tile in 0..c.tiles {
            let mut at = 0u64;
            while at < c.vram_per_tile() {
                let n = c.ty.chunk().min(c.vram_per_tile().saturating_sub(at));
                let first = u64::from(tile)
                    .saturating_mul(c.pages_per_tile())
                    .saturating_add(at / PAGE_SIZE_U64);
                Self::push(
                    &mut segs,
                    Header::new(PacketType::VRAM, tile, c.primary_gt(tile), at, n),
                    Body::Vram(first),
                );
                at = at.saturating_add(n);
            }
        }
        let precopy_len = segs.last().map(Segment::end).unwrap_or(0);
        self.saves = self.saves.saturating_add(1);
        // The guest keeps running during pre-copy: it dirties pages.
        let pages = self.pages();
        let mut dirty = BTreeSet::new();
        let mut i = 0u64;
        while u64::try_from(dirty.len()).unwrap_or(0) < self.dirty_at_save && pages > 0 {
            let p = if i < self.dirty_at_save.saturating_mul(8) {
                mix(self.seed ^ self.saves.wrapping_shl(40) ^ i)
                    .checked_rem(pages)
                    .unwrap_or(0)
            } else {
                i.checked_rem(pages).unwrap_or(0)
            };
            dirty.insert(p);
            i = i.saturating_add(1);
        }
        for p in &dirty {
            self.live.vram.touch(*p, self.key, self.tick);
        }
        self.save = Some(Save {
            snap,
            segs,
            precopy_len,
            dirty,
            round_bytes: 0,
            tail_fixed: false,
        });
    }

    /// Stream bytes pre-copy rounds may use for re-sends over a whole save: the
    /// plugin's re-send allowance less one re-send of every page, which the
    /// stop-copy part may need.
    pub fn round_budget(&self) -> u64 {
        self.config
            .resend_allowance()
            .saturating_sub(self.pages().saturating_mul(RESEND_LEN))
    }

    /// Appends a 4 KiB VRAM packet re-sending device page `p` as `page`.
    fn push_resend(c: Config, segs: &mut Vec<Segment>, p: u64, page: Page) {
        let ppt = c.pages_per_tile().max(1);
        let tile = u8::try_from(p.checked_div(ppt).unwrap_or(0)).unwrap_or(0);
        let offset = p.checked_rem(ppt).unwrap_or(0).saturating_mul(PAGE_SIZE_U64);
        Self::push(
            segs,
            Header::new(PacketType::VRAM, tile, c.primary_gt(tile), offset, PAGE_SIZE_U64),
            Body::Page(p, page),
        );
    }

    fn fix_tail(&mut self) {
        let c = self.config;
        let Some(save) = self.save.as_mut() else {
            return;
        };
        if save.tail_fixed {
            return;
        }
        for p in &save.dirty {
            Self::push_resend(c, &mut save.segs, *p, self.live.vram.page(*p));
        }
        let bytes = |v: &[u8]| {
            (
                u64::try_from(v.len()).unwrap_or(0),
                Body::Bytes(Arc::new(v.to_vec())),
            )
        };
        for gt in 0..c.gt_count() {
            let tile = c.gt_tile(gt).unwrap_or(0);
            if let Some(g) = self.live.guc.get(usize::from(gt)) {
                let (n, b) = bytes(g);
                Self::push(&mut save.segs, Header::new(PacketType::GUC, tile, gt, 0, n), b);
            }
            if c.is_primary(gt) {
                if let Some(g) = self.live.ggtt.get(usize::from(tile)) {
                    let (n, b) = bytes(g);
                    Self::push(&mut save.segs, Header::new(PacketType::GGTT, tile, gt, 0, n), b);
                }
            }
            if let Some(m) = self.live.mmio.get(usize::from(gt)) {
                let (n, b) = bytes(m);
                Self::push(&mut save.segs, Header::new(PacketType::MMIO, tile, gt, 0, n), b);
            }
        }
        Self::push(
            &mut save.segs,
            Header::decode(&trailer()),
            Body::Bytes(Arc::new(Vec::new())),
        );
        save.tail_fixed = true;
    }

    /// Copies stream bytes at `off` from `seg` into `out`; the bytes written.
    fn copy(snap: &Vram, seg: &Segment, off: u64, out: &mut [u8]) -> usize {
        let rel = off.saturating_sub(seg.start);
        let in_header = usize::try_from(rel)
            .ok()
            .and_then(|r| seg.header.get(r..))
            .filter(|h| !h.is_empty());
        if let Some(h) = in_header {
            let n = h.len().min(out.len());
            if let (Some(d), Some(s)) = (out.get_mut(..n), h.get(..n)) {
                d.copy_from_slice(s);
            }
            return n;
        }
        let b = rel.saturating_sub(HEADER_LEN_U64);
        let left = usize::try_from(seg.len.saturating_sub(b)).unwrap_or(usize::MAX);
        let Some(out) = out.get_mut(..left.min(out.len())) else {
            return 0;
        };
        let in_page = usize::try_from(b % PAGE_SIZE_U64).unwrap_or(0);
        match &seg.body {
            Body::Bytes(v) => {
                let src = usize::try_from(b).ok().and_then(|b| v.get(b..)).unwrap_or(&[]);
                let n = src.len().min(out.len());
                if let (Some(d), Some(s)) = (out.get_mut(..n), src.get(..n)) {
                    d.copy_from_slice(s);
                }
                n
            }
            Body::Page(p, page) => fill_page(page, *p, in_page, out),
            Body::Vram(first) => {
                let mut p = first.saturating_add(b / PAGE_SIZE_U64);
                let mut start = in_page;
                let mut done = 0usize;
                while let Some(rest) = out.get_mut(done..).filter(|r| !r.is_empty()) {
                    let n = fill_page(&snap.page(p), p, start, rest);
                    if n == 0 {
                        break;
                    }
                    done = done.saturating_add(n);
                    p = p.saturating_add(1);
                    start = 0;
                }
                done
            }
        }
    }
}

impl SimModel for XeModel {
    fn raw_len(&self) -> u64 {
        let exact = self.exact_len();
        if self.save.as_ref().is_some_and(|s| !s.tail_fixed) {
            // A save in progress: the device knows what it has left.
            return exact;
        }
        let err = estimate_error(self.config.ty.name(), self.seed);
        match u64::try_from(err) {
            Ok(up) => exact.saturating_add(up),
            Err(_) => exact.saturating_sub(err.unsigned_abs()),
        }
    }

    fn read_raw(&mut self, offset: u64, buf: &mut [u8]) -> usize {
        if self.save.is_none() {
            self.begin();
        }
        let want_end = offset.saturating_add(u64::try_from(buf.len()).unwrap_or(u64::MAX));
        if self.save.as_ref().is_some_and(|s| want_end > s.precopy_len) {
            self.fix_tail();
        }
        let Some(save) = self.save.as_ref() else {
            return 0;
        };
        let mut done = 0usize;
        let mut off = offset;
        while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
            let i = save.segs.partition_point(|s| s.start <= off);
            let Some(seg) = i.checked_sub(1).and_then(|i| save.segs.get(i)) else {
                break;
            };
            if off >= seg.end() {
                break;
            }
            let n = Self::copy(&save.snap, seg, off, rest);
            if n == 0 {
                break;
            }
            done = done.saturating_add(n);
            off = off.saturating_add(u64::try_from(n).unwrap_or(0));
        }
        done
    }

    fn begin_save(&mut self) {
        self.begin();
    }

    fn precopy_len(&self) -> u64 {
        self.save
            .as_ref()
            .map(|s| s.precopy_len)
            .unwrap_or_else(|| self.precopy_bytes())
    }

    fn dirty_bytes(&self) -> u64 {
        self.save
            .as_ref()
            .filter(|s| !s.tail_fixed)
            .map(|s| {
                u64::try_from(s.dirty.len())
                    .unwrap_or(0)
                    .saturating_mul(RESEND_LEN)
            })
            .unwrap_or(0)
    }

    fn next_precopy_round(&mut self) {
        let c = self.config;
        let budget = self.round_budget();
        let Some(save) = self.save.as_mut().filter(|s| !s.tail_fixed) else {
            return;
        };
        let cost = u64::try_from(save.dirty.len())
            .unwrap_or(u64::MAX)
            .saturating_mul(RESEND_LEN);
        let Some(used) = save.round_bytes.checked_add(cost).filter(|u| *u <= budget) else {
            // Tracking exhausted: the pages stay dirty, dirty_bytes does not go
            // down, and the stop-copy part re-sends them.
            return;
        };
        for p in std::mem::take(&mut save.dirty) {
            Self::push_resend(c, &mut save.segs, p, self.live.vram.page(p));
        }
        save.round_bytes = used;
        save.precopy_len = save.segs.last().map(Segment::end).unwrap_or(save.precopy_len);
    }

    fn guest_activity(&mut self, rounds: u32) {
        let pages = self.pages();
        for _ in 0..rounds {
            self.tick = self.tick.wrapping_add(1);
            for j in 0..u64::from(PAGES_PER_ROUND) {
                let p = mix(self.seed ^ self.tick.wrapping_shl(16) ^ j)
                    .checked_rem(pages)
                    .unwrap_or(0);
                self.live.vram.touch(p, self.key, self.tick);
                if let Some(s) = self.save.as_mut().filter(|s| !s.tail_fixed) {
                    s.dirty.insert(p);
                }
            }
            for m in &mut self.live.mmio {
                if let Some(c) = m.first_chunk_mut::<4>() {
                    *c = u32::from_le_bytes(*c).wrapping_add(1).to_le_bytes();
                }
            }
            for g in &mut self.live.guc {
                if let Some(c) = g.first_chunk_mut::<4>() {
                    *c = u32::from_le_bytes(*c).wrapping_add(1).to_le_bytes();
                }
            }
        }
        // Activity after the stop-copy part was fixed: the device runs again.
        if self.save.as_ref().is_some_and(|s| s.tail_fixed) {
            self.save = None;
        }
    }

    fn begin_load(&mut self) {
        let sink = Applier {
            config: self.config,
            pending: self.live.clone(),
            buf: Vec::new(),
            page: Vec::with_capacity(PAGE_SIZE),
            page_no: 0,
        };
        self.load = Some(StreamValidator::with_sink(&self.config, sink));
    }

    fn load_data(&mut self, data: &[u8]) -> Result<(), VendorError> {
        match self.load.as_mut() {
            Some(v) => v.feed(data),
            None => Err(VendorError::new(
                codes::NOT_LOADING,
                "load data without a load in progress",
            )),
        }
    }

    fn end_load(&mut self) -> Result<(), VendorError> {
        let mut v = self
            .load
            .take()
            .ok_or_else(|| VendorError::new(codes::NOT_LOADING, "no load in progress"))?;
        v.finish()?;
        self.live = std::mem::take(&mut v.sink_mut().pending);
        self.save = None;
        Ok(())
    }

    fn abort_load(&mut self) {
        self.load = None;
    }

    fn digest(&mut self) -> [u8; 32] {
        self.live.digest(self.config)
    }
}
