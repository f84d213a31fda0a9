//! The simulated device's loader: parses a raw stream that arrives in pieces split
//! at any byte, checks every record as the device would, and builds the new state
//! without holding the framebuffer.

use mdevmig_plugin_api::VendorError;

use crate::codes;
use crate::fb::Fb;
use crate::record::{RecordHeader, Section, FLAG_REQUIRED, FRAMING_LEN, SECTION_VERSION};
use crate::sections::{Ctx3, Encoder, FbDirty, Regs, Telemetry};
use crate::state::DevState;
use crate::types::{Config, GpuType, PAGE_SIZE, PAGE_SIZE_U64};

enum Phase {
    /// Collecting a record header.
    Header { buf: [u8; FRAMING_LEN], fill: usize },
    /// Streaming framebuffer data: `pos` bytes done, `partial` a page in progress.
    Fb { pos: u64, partial: Vec<u8> },
    /// Collecting a structured section.
    Collect {
        section: Section,
        buf: Vec<u8>,
        need: usize,
    },
    /// Skipping an unknown optional record.
    Skip { left: u64 },
}

fn header_phase() -> Phase {
    Phase::Header {
        buf: [0; FRAMING_LEN],
        fill: 0,
    }
}

/// A load in progress.
pub(crate) struct Loader {
    ty: GpuType,
    config: Config,
    known: u32,
    phase: Phase,
    last_tag: u16,
    fb: Option<Fb>,
    fb_done: bool,
    dirty_done: bool,
    regs: Option<Regs>,
    telemetry: Option<Telemetry>,
    ctx3: Option<Ctx3>,
    encoder: Option<Encoder>,
    failed: Option<VendorError>,
}

/// Moves up to `want` bytes from the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], want: usize) -> &'a [u8] {
    let n = want.min(rest.len());
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    head
}

impl Loader {
    /// A load into a device of `ty` configured `config` that knows state versions up
    /// to `known`.
    pub fn new(ty: GpuType, config: Config, known: u32) -> Self {
        Self {
            ty,
            config,
            known,
            phase: header_phase(),
            last_tag: 0,
            fb: None,
            fb_done: false,
            dirty_done: false,
            regs: None,
            telemetry: None,
            ctx3: None,
            encoder: None,
            failed: None,
        }
    }

    /// Takes the next bytes; the first error sticks.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), VendorError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.feed_inner(data);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn feed_inner(&mut self, data: &[u8]) -> Result<(), VendorError> {
        let mut rest = data;
        while !rest.is_empty() {
            match &mut self.phase {
                Phase::Header { buf, fill } => {
                    let room = buf.get_mut(*fill..).unwrap_or(&mut []);
                    let got = take(&mut rest, room.len());
                    if let Some(dst) = room.get_mut(..got.len()) {
                        dst.copy_from_slice(got);
                    }
                    *fill = fill.saturating_add(got.len());
                    if *fill == FRAMING_LEN {
                        let header = RecordHeader::decode(buf)?;
                        self.start_record(header)?;
                    }
                }
                Phase::Fb { pos, partial } => {
                    let fb = self.fb.as_mut().ok_or_else(|| {
                        VendorError::new(codes::MISSING_SECTION, "framebuffer data without its record")
                    })?;
                    let fb_len = self.ty.fb_len();
                    if partial.is_empty() {
                        // Whole pages straight from the input.
                        let left_pages = fb_len.saturating_sub(*pos) / PAGE_SIZE_U64;
                        let avail = u64::try_from(rest.len() / PAGE_SIZE).unwrap_or(0);
                        let n = usize::try_from(left_pages.min(avail)).unwrap_or(0);
                        let whole = take(&mut rest, n.saturating_mul(PAGE_SIZE));
                        for page in whole.chunks_exact(PAGE_SIZE) {
                            let index = u32::try_from(*pos / PAGE_SIZE_U64).unwrap_or(u32::MAX);
                            fb.set_page(index, page, *pos == 0);
                            *pos = pos.saturating_add(PAGE_SIZE_U64);
                        }
                    }
                    if *pos < fb_len && !rest.is_empty() {
                        let got = take(&mut rest, PAGE_SIZE.saturating_sub(partial.len()));
                        partial.extend_from_slice(got);
                        if partial.len() == PAGE_SIZE {
                            let index = u32::try_from(*pos / PAGE_SIZE_U64).unwrap_or(u32::MAX);
                            fb.set_page(index, partial, *pos == 0);
                            partial.clear();
                            *pos = pos.saturating_add(PAGE_SIZE_U64);
                        }
                    }
                    if *pos >= fb_len {
                        self.fb_done = true;
                        self.phase = header_phase();
                    }
                }
                Phase::Collect { section, buf, need } => {
                    let got = take(&mut rest, need.saturating_sub(buf.len()));
                    buf.extend_from_slice(got);
                    if buf.len() == *need {
                        let section = *section;
                        let data = std::mem::take(buf);
                        self.phase = header_phase();
                        self.finish_section(section, &data)?;
                    }
                }
                Phase::Skip { left } => {
                    let want = usize::try_from(*left).unwrap_or(usize::MAX);
                    let got = take(&mut rest, want);
                    *left = left.saturating_sub(u64::try_from(got.len()).unwrap_or(u64::MAX));
                    if *left == 0 {
                        self.phase = header_phase();
                    }
                }
            }
        }
        Ok(())
    }

    fn start_record(&mut self, h: RecordHeader) -> Result<(), VendorError> {
        let known =
            Section::from_tag(h.tag).filter(|s| s.since() <= self.known && h.version == SECTION_VERSION);
        let Some(section) = known else {
            if h.flags & FLAG_REQUIRED != 0 {
                return Err(VendorError::new(
                    codes::UNKNOWN_SECTION,
                    format!(
                        "required record tag {} version {} is not known to this device (state versions up \
                         to {})",
                        h.tag, h.version, self.known
                    ),
                ));
            }
            self.phase = if h.length == 0 {
                header_phase()
            } else {
                Phase::Skip { left: h.length }
            };
            return Ok(());
        };
        let name = section.name();
        if h.flags != section.flags() {
            return Err(VendorError::new(
                codes::FRAMING,
                format!("{name} record flags {:#x}, not {:#x}", h.flags, section.flags()),
            ));
        }
        if h.tag <= self.last_tag {
            return Err(VendorError::new(
                codes::RECORD_ORDER,
                format!(
                    "{name} record after tag {} (records go in tag order, once each)",
                    self.last_tag
                ),
            ));
        }
        self.last_tag = h.tag;
        let want = section.data_len(self.ty);
        if h.length != want {
            return Err(VendorError::new(
                codes::BAD_LENGTH,
                format!(
                    "{name} record is {} bytes; {} needs {want}",
                    h.length,
                    self.ty.name()
                ),
            ));
        }
        self.phase = match section {
            Section::Fb => {
                self.fb = Some(Fb::new(self.ty, 0));
                Phase::Fb {
                    pos: 0,
                    partial: Vec::with_capacity(PAGE_SIZE),
                }
            }
            Section::Encoder if !self.config.encoder => {
                return Err(VendorError::new(
                    codes::ENCODER_MISMATCH,
                    "simgpu.encoder record for a device configured encoder=off",
                ))
            }
            Section::FbDirty if !self.fb_done => {
                return Err(VendorError::new(
                    codes::MISSING_SECTION,
                    "simgpu.fb-dirty record without a complete simgpu.fb before it",
                ))
            }
            _ => {
                let need = usize::try_from(want).unwrap_or(0);
                Phase::Collect {
                    section,
                    buf: Vec::with_capacity(need),
                    need,
                }
            }
        };
        Ok(())
    }

    fn finish_section(&mut self, section: Section, data: &[u8]) -> Result<(), VendorError> {
        match section {
            Section::Fb => {}
            Section::FbDirty => {
                let dirty = FbDirty::decode(data, self.ty)?;
                if let Some(fb) = self.fb.as_mut() {
                    for (page, bytes) in dirty.iter() {
                        fb.set_page(page, bytes, false);
                    }
                }
                self.dirty_done = true;
            }
            Section::Regs => {
                let regs = Regs::decode(data)?;
                regs.check(self.ty, self.config)?;
                self.regs = Some(regs);
            }
            Section::Telemetry => {
                let t = Telemetry::decode(data)?;
                t.check()?;
                self.telemetry = Some(t);
            }
            Section::Ctx3 => {
                let c = Ctx3::decode(data)?;
                c.check(self.config)?;
                self.ctx3 = Some(c);
            }
            Section::Encoder => {
                let e = Encoder::decode(data)?;
                e.check(self.config)?;
                self.encoder = Some(e);
            }
        }
        Ok(())
    }

    /// Ends the load: the stream must end between records and have every required
    /// record.
    pub fn finish(self) -> Result<DevState, VendorError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        match &self.phase {
            Phase::Header { fill: 0, .. } => {}
            Phase::Header { fill, .. } => {
                return Err(VendorError::new(
                    codes::TRUNCATED,
                    format!("raw stream ended {fill} bytes into a record header"),
                ))
            }
            _ => {
                return Err(VendorError::new(
                    codes::TRUNCATED,
                    "raw stream ended inside a record's data",
                ))
            }
        }
        let missing =
            |name: &str| VendorError::new(codes::MISSING_SECTION, format!("raw stream has no {name} record"));
        let fb = self
            .fb
            .filter(|_| self.fb_done)
            .ok_or_else(|| missing(Section::Fb.name()))?;
        if !self.dirty_done {
            return Err(missing(Section::FbDirty.name()));
        }
        let regs = self.regs.ok_or_else(|| missing(Section::Regs.name()))?;
        Ok(DevState {
            fb,
            regs,
            telemetry: self.telemetry.unwrap_or_default(),
            ctx3: self.ctx3.unwrap_or_else(|| Ctx3::reset(self.config)),
            encoder: if self.config.encoder {
                Some(self.encoder.unwrap_or_else(Encoder::idle))
            } else {
                None
            },
        })
    }
}
