//! A simulated vGPU's whole state ([`DevState`]), shared by the simulator
//! (`sim`, which runs and saves it) and the loader (`load`, which rebuilds it
//! from a raw stream), so that neither imports the other's internals.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::fb::{self, Fb};
use crate::record::{self, RecordHeader, Section};
use crate::sections::{
    display_bytes, encode_fb_dirty, Context, Ctx3, Ctx3Queue, Encoder, Regs, Telemetry, MAX_CONTEXTS,
    RC_STATE_LEN, SCRATCH_LEN,
};
use crate::types::{Config, GpuType};

/// A deterministic generator for the small sections (splitmix64).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ z.wrapping_shr(30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ z.wrapping_shr(27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ z.wrapping_shr(31)
    }

    /// A value in `0..n` (0 when n is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next().checked_rem(n).unwrap_or(0)
    }

    pub(crate) fn below32(&mut self, n: u32) -> u32 {
        u32::try_from(self.below(u64::from(n))).unwrap_or(0)
    }

    /// A non-zero 4 KiB-aligned address below 2^44.
    pub(crate) fn address(&mut self) -> u64 {
        self.below(0xffff_ffff).saturating_add(1).wrapping_shl(12)
    }

    pub(crate) fn bytes(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            for (d, s) in chunk.iter_mut().zip(v) {
                *d = s;
            }
        }
    }
}

/// A device's whole state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DevState {
    pub fb: Fb,
    pub regs: Regs,
    pub telemetry: Telemetry,
    pub ctx3: Ctx3,
    pub encoder: Option<Encoder>,
}

impl DevState {
    /// The state of a device of `ty`, configured `config`, built from `seed`.
    pub(crate) fn seeded(ty: GpuType, config: Config, seed: u64) -> Self {
        let mut rng = Rng(seed ^ 0x5349_4d47_5055_0001);
        let ctx_count = 1u32.saturating_add(rng.below32(16));
        let mut contexts = [Context::default(); MAX_CONTEXTS];
        for c in contexts.iter_mut().take(usize::try_from(ctx_count).unwrap_or(0)) {
            *c = Context {
                state: 1u32.saturating_add(rng.below32(2)),
                priority: rng.below32(4),
                ring_base: rng.address(),
                page_table: rng.address(),
            };
        }
        let display_mode = (0u32..=3)
            .rev()
            .find(|m| display_bytes(*m, config.heads).is_some_and(|b| b <= ty.fb_len()))
            .unwrap_or(0);
        let fence_submitted = 1000u64.saturating_add(rng.below(1_000_000));
        let mut scratch = [0u8; SCRATCH_LEN];
        rng.bytes(&mut scratch);
        let regs = Regs {
            fb_pages: ty.fb_pages(),
            heads: config.heads,
            ctx_count,
            ring_size: 4096,
            ring_head: rng.below32(4096),
            ring_tail: rng.below32(4096),
            power_state: 0,
            display_mode,
            irq_mask: rng.below32(16),
            fence_submitted,
            fence_completed: fence_submitted.saturating_sub(rng.below(8)),
            contexts,
            scratch,
        };
        let telemetry = Telemetry {
            temp_mc: 30_000u32.saturating_add(rng.below32(40_000)),
            power_mw: rng.below32(300_000),
            clock_mhz: 300u32.saturating_add(rng.below32(2000)),
            frames: rng.below(1_000_000),
            busy_ns: rng.below(1 << 40),
        };
        let mut ctx3 = Ctx3::reset(config);
        if config.ctx3 {
            ctx3.queue_count = 1u32.saturating_add(rng.below32(8));
            for q in ctx3
                .queues
                .iter_mut()
                .take(usize::try_from(ctx3.queue_count).unwrap_or(0))
            {
                let len = 16u32.wrapping_shl(rng.below32(7));
                *q = Ctx3Queue {
                    len,
                    head: rng.below32(len),
                    tail: rng.below32(len),
                    priority: rng.below32(4),
                    base: rng.address(),
                };
            }
        }
        let encoder = config.encoder.then(|| {
            let mut rc_state = [0u8; RC_STATE_LEN];
            rng.bytes(&mut rc_state);
            Encoder {
                active: 1,
                codec: 1u32.saturating_add(rng.below32(3)),
                width: 1920,
                height: 1080,
                bitrate_kbps: 8000,
                gop: 60,
                frame_num: rng.below(1 << 32),
                session_id: rng.next() | 1,
                rc_state,
            }
        });
        Self {
            fb: Fb::new(ty, seed),
            regs,
            telemetry,
            ctx3,
            encoder,
        }
    }

    /// The records after `fb`, for state `version`, with `dirty` pages.
    pub(crate) fn tail(&self, ty: GpuType, version: u32, config: Config, dirty: &BTreeSet<u32>) -> Vec<u8> {
        let mut out = Vec::new();
        for section in record::sections_of(version, config) {
            let data = match section {
                Section::Fb => continue,
                Section::FbDirty => {
                    let pages: Vec<(u32, Vec<u8>)> = dirty
                        .iter()
                        .filter_map(|p| fb::page_bytes(&self.fb, *p).map(|b| (*p, b)))
                        .collect();
                    encode_fb_dirty(ty, pages.iter().map(|(p, b)| (*p, b.as_slice())))
                }
                Section::Regs => self.regs.encode(),
                Section::Telemetry => self.telemetry.encode(),
                Section::Ctx3 => self.ctx3.encode(),
                Section::Encoder => self.encoder.clone().unwrap_or_else(Encoder::idle).encode(),
            };
            let len = u64::try_from(data.len()).unwrap_or(0);
            out.extend_from_slice(&RecordHeader::for_section(section, len).encode());
            out.extend_from_slice(&data);
        }
        out
    }

    pub(crate) fn digest(&self, ty: GpuType) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"mdevmig-simgpu-state/1\0");
        let name = ty.name().as_bytes();
        h.update([u8::try_from(name.len()).unwrap_or(u8::MAX)]);
        h.update(name);
        h.update(self.regs.encode());
        h.update(self.ctx3.encode());
        match &self.encoder {
            None => h.update([0u8]),
            Some(e) => {
                h.update([1u8]);
                h.update(e.encode());
            }
        }
        h.update(ty.fb_pages().to_le_bytes());
        self.fb.digest_into(&mut h);
        h.finalize().into()
    }

    /// One round of guest work on the small sections.
    pub(crate) fn step(&mut self, tick: u64) {
        let r = &mut self.regs;
        let mask = r.ring_size.saturating_sub(1);
        r.ring_tail = r.ring_tail.wrapping_add(3) & mask;
        r.ring_head = r.ring_head.wrapping_add(2) & mask;
        r.fence_submitted = r.fence_submitted.wrapping_add(1);
        r.fence_completed = r.fence_submitted.saturating_sub(tick & 3);
        let at = usize::try_from(tick.checked_rem(1984).unwrap_or(0)).unwrap_or(0);
        if let Some(b) = r.scratch.get_mut(at) {
            *b = b.wrapping_add(1);
        }
        let t = &mut self.telemetry;
        t.frames = t.frames.wrapping_add(1);
        t.busy_ns = t.busy_ns.wrapping_add(16_666_667);
        t.temp_mc =
            40_000u32.saturating_add(u32::try_from(tick.checked_rem(30_000).unwrap_or(0)).unwrap_or(0));
        let n = u64::from(self.ctx3.queue_count.min(8));
        if let Some(q) = tick
            .checked_rem(n)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.ctx3.queues.get_mut(i))
        {
            q.tail = q.tail.wrapping_add(1) & q.len.saturating_sub(1);
        }
        if let Some(e) = self.encoder.as_mut().filter(|e| e.active == 1) {
            e.frame_num = e.frame_num.wrapping_add(1);
            let at = usize::try_from(tick.checked_rem(208).unwrap_or(0)).unwrap_or(0);
            if let Some(b) = e.rc_state.get_mut(at) {
                *b = b.wrapping_add(1);
            }
        }
    }
}
