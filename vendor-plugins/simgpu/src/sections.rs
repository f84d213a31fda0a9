//! The structured sections, decoded and re-encoded bit-exactly, and their checks.
//!
//! Every section is little-endian and starts with a 4-byte magic. `decode` checks
//! the exact length, the magic and that reserved bytes are zero, so that
//! `decode` followed by `encode` gives back the input for everything `decode`
//! accepts; `check` tests the values against the destination device (type and
//! configuration). The layouts are in `FORMAT.md` and in each type's docs.

use mdevmig_plugin_api::{Reader, Short, VendorError};

use crate::codes;
use crate::types::{Config, GpuType, PAGE_SIZE, PAGE_SIZE_U64};

/// `simgpu.regs` data length.
pub const REGS_LEN: usize = 4096;
/// `simgpu.telemetry` data length.
pub const TELEMETRY_LEN: usize = 64;
/// `simgpu.ctx3` data length.
pub const CTX3_LEN: usize = 272;
/// `simgpu.encoder` data length.
pub const ENCODER_LEN: usize = 256;
/// Bytes of the `simgpu.fb-dirty` header.
pub const FB_DIRTY_HEADER_LEN: usize = 16;

/// Context-table slots in `regs`.
pub const MAX_CONTEXTS: usize = 64;
/// Bytes of opaque scratch registers at the end of `regs`.
pub const SCRATCH_LEN: usize = 1984;
/// ctx3 queue slots.
pub const MAX_CTX3_QUEUES: usize = 8;
/// Bytes of opaque rate-control state in `encoder`.
pub const RC_STATE_LEN: usize = 208;

/// `simgpu.regs` magic.
pub const REGS_MAGIC: [u8; 4] = *b"SGRG";
/// `simgpu.telemetry` magic.
pub const TELEMETRY_MAGIC: [u8; 4] = *b"SGTM";
/// `simgpu.ctx3` magic.
pub const CTX3_MAGIC: [u8; 4] = *b"SGC3";
/// `simgpu.encoder` magic.
pub const ENCODER_MAGIC: [u8; 4] = *b"SGEN";
/// `simgpu.fb-dirty` magic.
pub const FB_DIRTY_MAGIC: [u8; 4] = *b"SGDT";

/// Defined `irq_mask` bits: vblank, fence, fault, hotplug.
pub const IRQ_MASK_DEFINED: u32 = 0xf;

/// Data length of `simgpu.fb-dirty` for `ty`: header, `capacity` u32 indices and
/// `capacity` pages.
pub fn fb_dirty_len(ty: GpuType) -> u64 {
    let per_page = PAGE_SIZE_U64.saturating_add(4);
    u64::from(ty.dirty_cap())
        .saturating_mul(per_page)
        .saturating_add(16)
}

fn short(section: &'static str) -> impl Fn(Short) -> VendorError {
    move |s| VendorError::new(codes::BAD_LENGTH, format!("{section}: {s}"))
}

fn err(code: &'static str, section: &str, what: impl std::fmt::Display) -> VendorError {
    VendorError::new(code, format!("{section}: {what}"))
}

/// Checks `data` is exactly `len` bytes and starts with `magic`; returns a reader
/// after the magic.
fn open<'a>(
    data: &'a [u8],
    len: usize,
    magic: [u8; 4],
    section: &'static str,
) -> Result<Reader<'a>, VendorError> {
    if data.len() != len {
        return Err(err(
            codes::BAD_LENGTH,
            section,
            format!("{} bytes, not {len}", data.len()),
        ));
    }
    let mut r = Reader::new(data);
    let got = *r.take_array::<4>("magic").map_err(short(section))?;
    if got != magic {
        return Err(err(
            codes::BAD_MAGIC,
            section,
            format!("magic {got:02x?}, not {magic:02x?}"),
        ));
    }
    Ok(r)
}

fn zero_u32(r: &mut Reader<'_>, section: &'static str, what: &'static str) -> Result<(), VendorError> {
    match r.u32_le(what).map_err(short(section))? {
        0 => Ok(()),
        v => Err(err(codes::RESERVED, section, format!("{what} is {v:#x}, not 0"))),
    }
}

fn zero_u64(r: &mut Reader<'_>, section: &'static str, what: &'static str) -> Result<(), VendorError> {
    match r.u64_le(what).map_err(short(section))? {
        0 => Ok(()),
        v => Err(err(codes::RESERVED, section, format!("{what} is {v:#x}, not 0"))),
    }
}

fn zero_bytes(bytes: &[u8], section: &'static str, what: &'static str) -> Result<(), VendorError> {
    match bytes.iter().position(|b| *b != 0) {
        None => Ok(()),
        Some(at) => Err(err(
            codes::RESERVED,
            section,
            format!("{what} byte {at} is not 0"),
        )),
    }
}

fn finish(r: &Reader<'_>, section: &'static str) -> Result<(), VendorError> {
    r.expect_empty(section)
        .map_err(|t| err(codes::BAD_LENGTH, section, t))
}

/// An address that must be non-zero and 4 KiB aligned.
fn page_address(a: u64) -> bool {
    a != 0 && a & 0xfff == 0
}

/// `x` is a power of two in `lo..=hi`.
fn pow2_in(x: u32, lo: u32, hi: u32) -> bool {
    x.is_power_of_two() && (lo..=hi).contains(&x)
}

// ---------------------------------------------------------------------------------
// regs

/// Display modes and their (width, height); 4 bytes per pixel, per head.
pub const DISPLAY_MODES: [(u32, u32); 5] = [(0, 0), (640, 480), (1280, 720), (1920, 1080), (3840, 2160)];

/// Framebuffer bytes mode `mode` needs on `heads` heads, if the mode is defined.
pub fn display_bytes(mode: u32, heads: u32) -> Option<u64> {
    let (w, h) = *DISPLAY_MODES.get(usize::try_from(mode).ok()?)?;
    u64::from(w)
        .checked_mul(u64::from(h))?
        .checked_mul(4)?
        .checked_mul(u64::from(heads))
}

/// One context-table slot (32 bytes: `state`, `priority`, `ring_base`,
/// `page_table`, 8 reserved bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Context {
    /// 0 free, 1 idle, 2 running, 3 faulted.
    pub state: u32,
    /// 0..=3.
    pub priority: u32,
    /// Ring buffer GPU address, 4 KiB aligned.
    pub ring_base: u64,
    /// Page-table root GPU address, 4 KiB aligned.
    pub page_table: u64,
}

/// `simgpu.regs`, 4096 bytes.
///
/// ```text
/// off  size field
///   0     4 magic            "SGRG"
///   4     4 fb_pages         framebuffer pages; the destination type's
///   8     4 heads            1..=4; the destination's `heads`
///  12     4 ctx_count        active contexts, 0..=64
///  16     4 ring_size        power of two, 256..=65536
///  20     4 ring_head        < ring_size
///  24     4 ring_tail        < ring_size
///  28     4 power_state      0 D0, 1 D1, 2 D2, 3 D3hot
///  32     4 display_mode     0 off, 1 640x480, 2 1280x720, 3 1920x1080, 4 3840x2160
///  36     4 irq_mask         bits 0..3 (vblank, fence, fault, hotplug); others 0
///  40     8 fence_submitted
///  48     8 fence_completed  <= fence_submitted
///  56     8 reserved         0
///  64  2048 contexts[64]     32 bytes each: state u32 (0 free, 1 idle, 2 running,
///                            3 faulted), priority u32 (0..=3), ring_base u64,
///                            page_table u64 (both non-zero, 4 KiB aligned),
///                            reserved u64 (0). Slots < ctx_count are not free;
///                            slots >= ctx_count are all zero.
/// 2112 1984 scratch          any bytes
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regs {
    /// Framebuffer pages.
    pub fb_pages: u32,
    /// Display heads.
    pub heads: u32,
    /// Active contexts.
    pub ctx_count: u32,
    /// Command ring entries.
    pub ring_size: u32,
    /// Ring consumer index.
    pub ring_head: u32,
    /// Ring producer index.
    pub ring_tail: u32,
    /// PCI power state.
    pub power_state: u32,
    /// Display mode.
    pub display_mode: u32,
    /// Interrupt enables.
    pub irq_mask: u32,
    /// Last fence submitted.
    pub fence_submitted: u64,
    /// Last fence completed.
    pub fence_completed: u64,
    /// The context table.
    pub contexts: [Context; MAX_CONTEXTS],
    /// Scratch registers.
    pub scratch: [u8; SCRATCH_LEN],
}

const REGS: &str = "simgpu.regs";

impl Regs {
    /// Decodes 4096 bytes (length, magic, reserved fields).
    pub fn decode(data: &[u8]) -> Result<Self, VendorError> {
        let mut r = open(data, REGS_LEN, REGS_MAGIC, REGS)?;
        let s = short(REGS);
        let fb_pages = r.u32_le("fb_pages").map_err(&s)?;
        let heads = r.u32_le("heads").map_err(&s)?;
        let ctx_count = r.u32_le("ctx_count").map_err(&s)?;
        let ring_size = r.u32_le("ring_size").map_err(&s)?;
        let ring_head = r.u32_le("ring_head").map_err(&s)?;
        let ring_tail = r.u32_le("ring_tail").map_err(&s)?;
        let power_state = r.u32_le("power_state").map_err(&s)?;
        let display_mode = r.u32_le("display_mode").map_err(&s)?;
        let irq_mask = r.u32_le("irq_mask").map_err(&s)?;
        let fence_submitted = r.u64_le("fence_submitted").map_err(&s)?;
        let fence_completed = r.u64_le("fence_completed").map_err(&s)?;
        zero_u64(&mut r, REGS, "reserved")?;
        let mut contexts = [Context::default(); MAX_CONTEXTS];
        for c in contexts.iter_mut() {
            c.state = r.u32_le("context.state").map_err(&s)?;
            c.priority = r.u32_le("context.priority").map_err(&s)?;
            c.ring_base = r.u64_le("context.ring_base").map_err(&s)?;
            c.page_table = r.u64_le("context.page_table").map_err(&s)?;
            zero_u64(&mut r, REGS, "context.reserved")?;
        }
        let scratch = *r.take_array::<SCRATCH_LEN>("scratch").map_err(&s)?;
        finish(&r, REGS)?;
        Ok(Self {
            fb_pages,
            heads,
            ctx_count,
            ring_size,
            ring_head,
            ring_tail,
            power_state,
            display_mode,
            irq_mask,
            fence_submitted,
            fence_completed,
            contexts,
            scratch,
        })
    }

    /// The 4096 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(REGS_LEN);
        o.extend_from_slice(&REGS_MAGIC);
        for v in [
            self.fb_pages,
            self.heads,
            self.ctx_count,
            self.ring_size,
            self.ring_head,
            self.ring_tail,
            self.power_state,
            self.display_mode,
            self.irq_mask,
        ] {
            o.extend_from_slice(&v.to_le_bytes());
        }
        o.extend_from_slice(&self.fence_submitted.to_le_bytes());
        o.extend_from_slice(&self.fence_completed.to_le_bytes());
        o.extend_from_slice(&0u64.to_le_bytes());
        for c in &self.contexts {
            o.extend_from_slice(&c.state.to_le_bytes());
            o.extend_from_slice(&c.priority.to_le_bytes());
            o.extend_from_slice(&c.ring_base.to_le_bytes());
            o.extend_from_slice(&c.page_table.to_le_bytes());
            o.extend_from_slice(&0u64.to_le_bytes());
        }
        o.extend_from_slice(&self.scratch);
        o
    }

    /// Checks the values against a destination of `ty` configured `config`.
    pub fn check(&self, ty: GpuType, config: Config) -> Result<(), VendorError> {
        if self.fb_pages != ty.fb_pages() {
            return Err(err(
                codes::FB_SIZE,
                REGS,
                format!(
                    "fb_pages {} is not {}'s {}",
                    self.fb_pages,
                    ty.name(),
                    ty.fb_pages()
                ),
            ));
        }
        if !(1..=4).contains(&self.heads) || self.heads != config.heads {
            return Err(err(
                codes::HEADS,
                REGS,
                format!(
                    "heads {} (1..=4) does not match the destination's heads={}",
                    self.heads, config.heads
                ),
            ));
        }
        let active = usize::try_from(self.ctx_count)
            .ok()
            .filter(|n| *n <= MAX_CONTEXTS)
            .ok_or_else(|| {
                err(
                    codes::CTX_COUNT,
                    REGS,
                    format!("ctx_count {} is above {MAX_CONTEXTS}", self.ctx_count),
                )
            })?;
        for (i, c) in self.contexts.iter().enumerate() {
            if i < active {
                if c.state > 3 {
                    return Err(err(
                        codes::ENUM_VALUE,
                        REGS,
                        format!("context {i} state {} is not 0..=3", c.state),
                    ));
                }
                if c.state == 0 || c.priority > 3 || !page_address(c.ring_base) || !page_address(c.page_table)
                {
                    return Err(err(
                        codes::CONTEXT,
                        REGS,
                        format!(
                            "active context {i}: state {} priority {} ring_base {:#x} page_table {:#x}",
                            c.state, c.priority, c.ring_base, c.page_table
                        ),
                    ));
                }
            } else if *c != Context::default() {
                return Err(err(
                    codes::CONTEXT,
                    REGS,
                    format!("context {i} is beyond ctx_count {active} but not zero"),
                ));
            }
        }
        if !pow2_in(self.ring_size, 256, 65536) {
            return Err(err(
                codes::RING_SIZE,
                REGS,
                format!(
                    "ring_size {} is not a power of two in 256..=65536",
                    self.ring_size
                ),
            ));
        }
        if self.ring_head >= self.ring_size || self.ring_tail >= self.ring_size {
            return Err(err(
                codes::RING_INDEX,
                REGS,
                format!(
                    "ring head {} / tail {} not below ring_size {}",
                    self.ring_head, self.ring_tail, self.ring_size
                ),
            ));
        }
        if self.power_state > 3 {
            return Err(err(
                codes::ENUM_VALUE,
                REGS,
                format!("power_state {} is not D0..D3hot (0..=3)", self.power_state),
            ));
        }
        let need = display_bytes(self.display_mode, self.heads).ok_or_else(|| {
            err(
                codes::ENUM_VALUE,
                REGS,
                format!("display_mode {} is not 0..=4", self.display_mode),
            )
        })?;
        if need > ty.fb_len() {
            return Err(err(
                codes::DISPLAY_FIT,
                REGS,
                format!(
                    "display_mode {} on {} head(s) needs {need} bytes; {} has {}",
                    self.display_mode,
                    self.heads,
                    ty.name(),
                    ty.fb_len()
                ),
            ));
        }
        if self.irq_mask & !IRQ_MASK_DEFINED != 0 {
            return Err(err(
                codes::RESERVED,
                REGS,
                format!("irq_mask {:#x} has undefined bits", self.irq_mask),
            ));
        }
        if self.fence_completed > self.fence_submitted {
            return Err(err(
                codes::FENCE,
                REGS,
                format!(
                    "fence_completed {} is ahead of fence_submitted {}",
                    self.fence_completed, self.fence_submitted
                ),
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// telemetry

/// `simgpu.telemetry`, 64 bytes, optional (state version 2 and later). Host-side
/// counters; not guest-visible, so not part of the device digest.
///
/// ```text
/// off size field
///   0    4 magic      "SGTM"
///   4    4 temp_mc    0..=125000 (milli-degrees Celsius)
///   8    4 power_mw   0..=600000
///  12    4 clock_mhz  0..=3000
///  16    8 frames
///  24    8 busy_ns
///  32   32 reserved   0
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Telemetry {
    /// Temperature, milli-degrees Celsius.
    pub temp_mc: u32,
    /// Board power, milliwatts.
    pub power_mw: u32,
    /// Core clock, MHz.
    pub clock_mhz: u32,
    /// Frames rendered.
    pub frames: u64,
    /// Busy time, ns.
    pub busy_ns: u64,
}

const TELEMETRY: &str = "simgpu.telemetry";

impl Telemetry {
    /// Decodes 64 bytes.
    pub fn decode(data: &[u8]) -> Result<Self, VendorError> {
        let mut r = open(data, TELEMETRY_LEN, TELEMETRY_MAGIC, TELEMETRY)?;
        let s = short(TELEMETRY);
        let t = Self {
            temp_mc: r.u32_le("temp_mc").map_err(&s)?,
            power_mw: r.u32_le("power_mw").map_err(&s)?,
            clock_mhz: r.u32_le("clock_mhz").map_err(&s)?,
            frames: r.u64_le("frames").map_err(&s)?,
            busy_ns: r.u64_le("busy_ns").map_err(&s)?,
        };
        zero_bytes(r.take(32, "reserved").map_err(&s)?, TELEMETRY, "reserved")?;
        finish(&r, TELEMETRY)?;
        Ok(t)
    }

    /// The 64 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(TELEMETRY_LEN);
        o.extend_from_slice(&TELEMETRY_MAGIC);
        o.extend_from_slice(&self.temp_mc.to_le_bytes());
        o.extend_from_slice(&self.power_mw.to_le_bytes());
        o.extend_from_slice(&self.clock_mhz.to_le_bytes());
        o.extend_from_slice(&self.frames.to_le_bytes());
        o.extend_from_slice(&self.busy_ns.to_le_bytes());
        o.extend_from_slice(&[0u8; 32]);
        o
    }

    /// Range checks.
    pub fn check(&self) -> Result<(), VendorError> {
        if self.temp_mc > 125_000 || self.power_mw > 600_000 || self.clock_mhz > 3000 {
            return Err(err(
                codes::TELEMETRY_RANGE,
                TELEMETRY,
                format!(
                    "temp {} mC (<= 125000), power {} mW (<= 600000), clock {} MHz (<= 3000)",
                    self.temp_mc, self.power_mw, self.clock_mhz
                ),
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// ctx3

/// One ctx3 queue slot (32 bytes: `len`, `head`, `tail`, `priority`, `base`, 8
/// reserved bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ctx3Queue {
    /// Entries, a power of two in 16..=1024.
    pub len: u32,
    /// Consumer index, < len.
    pub head: u32,
    /// Producer index, < len.
    pub tail: u32,
    /// 0..=3.
    pub priority: u32,
    /// Queue GPU address, non-zero and 4 KiB aligned.
    pub base: u64,
}

/// `simgpu.ctx3`, 272 bytes, required in state version 3.
///
/// ```text
/// off size field
///   0    4 magic        "SGC3"
///   4    4 enabled      0/1; must equal the destination's ctx3 attribute
///   8    4 queue_count  0..=8; 0 when disabled
///  12    4 reserved     0
///  16  256 queues[8]    32 bytes each: len u32 (power of two 16..=1024), head u32,
///                       tail u32 (< len), priority u32 (0..=3), base u64 (non-zero,
///                       4 KiB aligned), reserved u64 (0). Slots >= queue_count are
///                       all zero.
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ctx3 {
    /// The feature is on.
    pub enabled: u32,
    /// Active queues.
    pub queue_count: u32,
    /// The queue slots.
    pub queues: [Ctx3Queue; MAX_CTX3_QUEUES],
}

const CTX3: &str = "simgpu.ctx3";

impl Ctx3 {
    /// The state of an unused ctx3 feature for a device configured `config`.
    pub fn reset(config: Config) -> Self {
        Self {
            enabled: u32::from(config.ctx3),
            ..Self::default()
        }
    }

    /// Decodes 272 bytes.
    pub fn decode(data: &[u8]) -> Result<Self, VendorError> {
        let mut r = open(data, CTX3_LEN, CTX3_MAGIC, CTX3)?;
        let s = short(CTX3);
        let enabled = r.u32_le("enabled").map_err(&s)?;
        let queue_count = r.u32_le("queue_count").map_err(&s)?;
        zero_u32(&mut r, CTX3, "reserved")?;
        let mut queues = [Ctx3Queue::default(); MAX_CTX3_QUEUES];
        for q in queues.iter_mut() {
            q.len = r.u32_le("queue.len").map_err(&s)?;
            q.head = r.u32_le("queue.head").map_err(&s)?;
            q.tail = r.u32_le("queue.tail").map_err(&s)?;
            q.priority = r.u32_le("queue.priority").map_err(&s)?;
            q.base = r.u64_le("queue.base").map_err(&s)?;
            zero_u64(&mut r, CTX3, "queue.reserved")?;
        }
        finish(&r, CTX3)?;
        Ok(Self {
            enabled,
            queue_count,
            queues,
        })
    }

    /// The 272 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(CTX3_LEN);
        o.extend_from_slice(&CTX3_MAGIC);
        o.extend_from_slice(&self.enabled.to_le_bytes());
        o.extend_from_slice(&self.queue_count.to_le_bytes());
        o.extend_from_slice(&0u32.to_le_bytes());
        for q in &self.queues {
            o.extend_from_slice(&q.len.to_le_bytes());
            o.extend_from_slice(&q.head.to_le_bytes());
            o.extend_from_slice(&q.tail.to_le_bytes());
            o.extend_from_slice(&q.priority.to_le_bytes());
            o.extend_from_slice(&q.base.to_le_bytes());
            o.extend_from_slice(&0u64.to_le_bytes());
        }
        o
    }

    /// Checks against a destination configured `config`.
    pub fn check(&self, config: Config) -> Result<(), VendorError> {
        if self.enabled > 1 {
            return Err(err(
                codes::ENUM_VALUE,
                CTX3,
                format!("enabled {} is not 0 or 1", self.enabled),
            ));
        }
        if (self.enabled == 1) != config.ctx3 {
            return Err(err(
                codes::CTX3_MISMATCH,
                CTX3,
                format!(
                    "enabled {} but the destination is configured ctx3={}",
                    self.enabled,
                    if config.ctx3 { "on" } else { "off" }
                ),
            ));
        }
        let limit = if self.enabled == 1 { MAX_CTX3_QUEUES } else { 0 };
        let active = usize::try_from(self.queue_count)
            .ok()
            .filter(|n| *n <= limit)
            .ok_or_else(|| {
                err(
                    codes::CTX3_QUEUE,
                    CTX3,
                    format!("queue_count {} is above {limit}", self.queue_count),
                )
            })?;
        for (i, q) in self.queues.iter().enumerate() {
            let ok = if i < active {
                pow2_in(q.len, 16, 1024)
                    && q.head < q.len
                    && q.tail < q.len
                    && q.priority <= 3
                    && page_address(q.base)
            } else {
                *q == Ctx3Queue::default()
            };
            if !ok {
                return Err(err(
                    codes::CTX3_QUEUE,
                    CTX3,
                    format!(
                        "queue {i} (of {active} active): len {} head {} tail {} priority {} base {:#x}",
                        q.len, q.head, q.tail, q.priority, q.base
                    ),
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// encoder

/// `simgpu.encoder`, 256 bytes, present with `encoder=on`; restoring it needs host
/// capability `simgpu.hw-encoder`.
///
/// ```text
/// off size field
///   0    4 magic         "SGEN"
///   4    4 active        0 idle, 1 session open
///   8    4 codec         0 none (idle only), 1 H.264, 2 HEVC, 3 AV1
///  12    4 width         16..=7680, even
///  16    4 height        16..=4320, even
///  20    4 bitrate_kbps  100..=200000
///  24    4 gop           1..=1000
///  28    4 reserved      0
///  32    8 frame_num
///  40    8 session_id    non-zero
///  48  208 rc_state      any bytes
/// ```
/// An idle encoder has every field after `active` zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoder {
    /// Session open.
    pub active: u32,
    /// Codec.
    pub codec: u32,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Target bitrate.
    pub bitrate_kbps: u32,
    /// Group-of-pictures length.
    pub gop: u32,
    /// Frames encoded.
    pub frame_num: u64,
    /// Session id.
    pub session_id: u64,
    /// Rate-control state.
    pub rc_state: [u8; RC_STATE_LEN],
}

const ENCODER: &str = "simgpu.encoder";

impl Encoder {
    /// An idle encoder.
    pub fn idle() -> Self {
        Self {
            active: 0,
            codec: 0,
            width: 0,
            height: 0,
            bitrate_kbps: 0,
            gop: 0,
            frame_num: 0,
            session_id: 0,
            rc_state: [0; RC_STATE_LEN],
        }
    }

    /// Decodes 256 bytes.
    pub fn decode(data: &[u8]) -> Result<Self, VendorError> {
        let mut r = open(data, ENCODER_LEN, ENCODER_MAGIC, ENCODER)?;
        let s = short(ENCODER);
        let active = r.u32_le("active").map_err(&s)?;
        let codec = r.u32_le("codec").map_err(&s)?;
        let width = r.u32_le("width").map_err(&s)?;
        let height = r.u32_le("height").map_err(&s)?;
        let bitrate_kbps = r.u32_le("bitrate_kbps").map_err(&s)?;
        let gop = r.u32_le("gop").map_err(&s)?;
        zero_u32(&mut r, ENCODER, "reserved")?;
        let frame_num = r.u64_le("frame_num").map_err(&s)?;
        let session_id = r.u64_le("session_id").map_err(&s)?;
        let rc_state = *r.take_array::<RC_STATE_LEN>("rc_state").map_err(&s)?;
        finish(&r, ENCODER)?;
        Ok(Self {
            active,
            codec,
            width,
            height,
            bitrate_kbps,
            gop,
            frame_num,
            session_id,
            rc_state,
        })
    }

    /// The 256 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(ENCODER_LEN);
        o.extend_from_slice(&ENCODER_MAGIC);
        for v in [
            self.active,
            self.codec,
            self.width,
            self.height,
            self.bitrate_kbps,
            self.gop,
            0,
        ] {
            o.extend_from_slice(&v.to_le_bytes());
        }
        o.extend_from_slice(&self.frame_num.to_le_bytes());
        o.extend_from_slice(&self.session_id.to_le_bytes());
        o.extend_from_slice(&self.rc_state);
        o
    }

    /// Checks against a destination configured `config`.
    pub fn check(&self, config: Config) -> Result<(), VendorError> {
        if !config.encoder {
            return Err(err(
                codes::ENCODER_MISMATCH,
                ENCODER,
                "the destination is configured encoder=off",
            ));
        }
        match self.active {
            0 => {
                if *self != Self::idle() {
                    return Err(err(
                        codes::ENCODER_RANGE,
                        ENCODER,
                        "an idle encoder has non-zero session fields",
                    ));
                }
                Ok(())
            }
            1 => {
                if !(1..=3).contains(&self.codec) {
                    return Err(err(
                        codes::ENUM_VALUE,
                        ENCODER,
                        format!("codec {} is not 1 (H.264), 2 (HEVC) or 3 (AV1)", self.codec),
                    ));
                }
                let even_in = |v: u32, hi: u32| (16..=hi).contains(&v) && v & 1 == 0;
                if !even_in(self.width, 7680)
                    || !even_in(self.height, 4320)
                    || !(100..=200_000).contains(&self.bitrate_kbps)
                    || !(1..=1000).contains(&self.gop)
                    || self.session_id == 0
                {
                    return Err(err(
                        codes::ENCODER_RANGE,
                        ENCODER,
                        format!(
                            "{}x{} at {} kbps, gop {}, session {:#x} out of range",
                            self.width, self.height, self.bitrate_kbps, self.gop, self.session_id
                        ),
                    ));
                }
                Ok(())
            }
            other => Err(err(
                codes::ENUM_VALUE,
                ENCODER,
                format!("active {other} is not 0 or 1"),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------
// fb-dirty

/// `simgpu.fb-dirty`: the framebuffer pages dirtied since the save began, re-sent at
/// stop-copy. Its length is fixed per type (16 + 4100 × capacity) so the broker
/// knows it before the first byte is sent.
///
/// ```text
/// off            size          field
///   0               4          magic      "SGDT"
///   4               4          count      pages carried, <= capacity
///   8               4          capacity   the type's capacity (256 or 1024)
///  12               4          page_size  4096
///  16    4 × capacity          index[]    first `count`: strictly increasing page
///                                         numbers < fb pages; the rest 0
///  16 + 4 × capacity  4096 × capacity  page[]     first `count`: the pages' bytes;
///                                         the rest 0
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FbDirty<'a> {
    /// Page numbers, strictly increasing.
    pub indices: Vec<u32>,
    /// `indices.len()` pages of 4096 bytes, in index order.
    pub pages: &'a [u8],
}

const FB_DIRTY: &str = "simgpu.fb-dirty";

impl<'a> FbDirty<'a> {
    /// Decodes and checks an `fb-dirty` section for `ty`: the only structured
    /// section whose decoding needs the type (its capacity fixes its length).
    pub fn decode(data: &'a [u8], ty: GpuType) -> Result<Self, VendorError> {
        let want = usize::try_from(fb_dirty_len(ty)).unwrap_or(usize::MAX);
        let mut r = open(data, want, FB_DIRTY_MAGIC, FB_DIRTY)?;
        let s = short(FB_DIRTY);
        let count = r.u32_le("count").map_err(&s)?;
        let capacity = r.u32_le("capacity").map_err(&s)?;
        let page_size = r.u32_le("page_size").map_err(&s)?;
        if capacity != ty.dirty_cap()
            || usize::try_from(page_size).ok() != Some(PAGE_SIZE)
            || count > capacity
        {
            return Err(err(
                codes::DIRTY_COUNT,
                FB_DIRTY,
                format!(
                    "count {count}, capacity {capacity}, page_size {page_size}; {} has capacity {} of \
                     {PAGE_SIZE}-byte pages",
                    ty.name(),
                    ty.dirty_cap()
                ),
            ));
        }
        let cap = usize::try_from(capacity).unwrap_or(usize::MAX);
        let used = usize::try_from(count).unwrap_or(usize::MAX);
        let index_bytes = r.take(cap.saturating_mul(4), "index").map_err(&s)?;
        let mut indices = Vec::with_capacity(used);
        let mut unused_at = None;
        for (slot, raw) in index_bytes.chunks_exact(4).enumerate() {
            let v = raw.iter().rev().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
            if slot < used {
                let increasing = indices.last().is_none_or(|prev| v > *prev);
                if v >= ty.fb_pages() || !increasing {
                    return Err(err(
                        codes::DIRTY_INDEX,
                        FB_DIRTY,
                        format!(
                            "index {slot} is page {v}: not below {} or not above the previous",
                            ty.fb_pages()
                        ),
                    ));
                }
                indices.push(v);
            } else if v != 0 && unused_at.is_none() {
                unused_at = Some(slot);
            }
        }
        if let Some(slot) = unused_at {
            return Err(err(
                codes::RESERVED,
                FB_DIRTY,
                format!("unused index slot {slot} is not 0"),
            ));
        }
        let page_bytes = r.rest();
        let (pages, unused) = page_bytes
            .split_at_checked(used.saturating_mul(PAGE_SIZE))
            .ok_or_else(|| err(codes::BAD_LENGTH, FB_DIRTY, "pages short"))?;
        zero_bytes(unused, FB_DIRTY, "unused page slot")?;
        if unused.len() != cap.saturating_sub(used).saturating_mul(PAGE_SIZE) {
            return Err(err(codes::BAD_LENGTH, FB_DIRTY, "page area has the wrong length"));
        }
        Ok(Self { indices, pages })
    }

    /// The section's bytes for `ty`.
    pub fn encode(&self, ty: GpuType) -> Vec<u8> {
        encode_fb_dirty(
            ty,
            self.indices
                .iter()
                .copied()
                .zip(self.pages.chunks_exact(PAGE_SIZE)),
        )
    }

    /// `(page number, page bytes)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &'a [u8])> + '_ {
        self.indices
            .iter()
            .copied()
            .zip(self.pages.chunks_exact(PAGE_SIZE))
    }
}

/// Encodes an `fb-dirty` section for `ty` from `(page, bytes)` pairs in increasing
/// page order; at most `capacity` pairs are taken, short pages are zero-padded.
pub fn encode_fb_dirty<'b>(ty: GpuType, pages: impl IntoIterator<Item = (u32, &'b [u8])>) -> Vec<u8> {
    let len = usize::try_from(fb_dirty_len(ty)).unwrap_or(0);
    let cap = usize::try_from(ty.dirty_cap()).unwrap_or(0);
    let index_at = FB_DIRTY_HEADER_LEN;
    let pages_at = index_at.saturating_add(cap.saturating_mul(4));
    let mut o = vec![0u8; len];
    let mut count = 0u32;
    for (slot, (page, bytes)) in pages.into_iter().take(cap).enumerate() {
        let i = index_at.saturating_add(slot.saturating_mul(4));
        if let Some(dst) = o.get_mut(i..i.saturating_add(4)) {
            dst.copy_from_slice(&page.to_le_bytes());
        }
        let p = pages_at.saturating_add(slot.saturating_mul(PAGE_SIZE));
        let n = bytes.len().min(PAGE_SIZE);
        if let (Some(dst), Some(src)) = (o.get_mut(p..p.saturating_add(n)), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        count = count.saturating_add(1);
    }
    let mut header = Vec::with_capacity(FB_DIRTY_HEADER_LEN);
    header.extend_from_slice(&FB_DIRTY_MAGIC);
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&ty.dirty_cap().to_le_bytes());
    header.extend_from_slice(&u32::try_from(PAGE_SIZE).unwrap_or(0).to_le_bytes());
    if let Some(dst) = o.get_mut(..FB_DIRTY_HEADER_LEN) {
        dst.copy_from_slice(&header);
    }
    o
}
