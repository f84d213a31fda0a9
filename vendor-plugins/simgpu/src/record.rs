//! Raw-stream records: the 32-byte framing header and the sections of each state
//! version.
//!
//! ```text
//! record header (32 bytes, little-endian)
//! off size field
//!   0    4 magic     "SGPU" (53 47 50 55)
//!   4    2 tag       section tag (table below); unknown tags are skipped when not REQUIRED
//!   6    2 version   the section's format version (1 for every section today)
//!   8    4 flags     bit 0 REQUIRED, bit 1 BULK, bit 2 CAPABILITY; other bits 0
//!  12    4 reserved  0
//!  16    8 length    data bytes that follow the header
//!  24    8 check     FNV-1a 64 of bytes 0..24
//! ```
//!
//! | tag | section            | kind       | flags | data length                 | versions |
//! |----:|--------------------|------------|-------|-----------------------------|----------|
//! | 1   | `simgpu.fb`        | Bulk       | 0x3   | framebuffer size            | 1, 2, 3  |
//! | 2   | `simgpu.fb-dirty`  | Structured | 0x1   | 16 + 4100 × capacity        | 1, 2, 3  |
//! | 3   | `simgpu.regs`      | Structured | 0x1   | 4096                        | 1, 2, 3  |
//! | 4   | `simgpu.telemetry` | Structured | 0x0   | 64 (optional)               | 2, 3     |
//! | 5   | `simgpu.ctx3`      | Structured | 0x1   | 272                         | 3        |
//! | 6   | `simgpu.encoder`   | Structured | 0x5   | 256 (only with `encoder=on`)| 1, 2, 3  |
//!
//! Records appear in tag order. The header depends only on the section's name,
//! format version and data length, so [`framing`] can rebuild it from a
//! [`SectionSpec`] on the destination.

use mdevmig_plugin_api::{Reader, SectionKind, SectionSpec, VendorError};

use crate::codes;
use crate::sections::{CTX3_LEN, ENCODER_LEN, REGS_LEN, TELEMETRY_LEN};
use crate::types::{Config, GpuType};

/// Bytes of framing before every section's data.
pub const FRAMING_LEN: usize = 32;
/// [`FRAMING_LEN`] as a u64.
pub const FRAMING_LEN_U64: u64 = 32;
/// First four bytes of every record header.
pub const RECORD_MAGIC: [u8; 4] = *b"SGPU";
/// Flag: a loader that does not know the record must refuse the stream.
pub const FLAG_REQUIRED: u32 = 1;
/// Flag: the record is bulk data (validated chunk by chunk).
pub const FLAG_BULK: u32 = 2;
/// Flag: restoring the record needs a host capability.
pub const FLAG_CAPABILITY: u32 = 4;
/// Every defined flag bit.
pub const FLAGS_DEFINED: u32 = FLAG_REQUIRED | FLAG_BULK | FLAG_CAPABILITY;
/// The format version of every section today.
pub const SECTION_VERSION: u16 = 1;
/// The capability a destination needs to restore `simgpu.encoder`.
pub const ENCODER_CAPABILITY: &str = "simgpu.hw-encoder";

/// The sections, by tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// `simgpu.fb`: the framebuffer, Bulk.
    Fb,
    /// `simgpu.fb-dirty`: pages dirtied during pre-copy, re-sent at stop-copy.
    FbDirty,
    /// `simgpu.regs`: the register file.
    Regs,
    /// `simgpu.telemetry`: host-side counters (v2+, optional).
    Telemetry,
    /// `simgpu.ctx3`: v3 context queues (v3, required).
    Ctx3,
    /// `simgpu.encoder`: hardware encoder session (with `encoder=on`).
    Encoder,
}

impl Section {
    /// Every section, in stream order.
    pub const ALL: [Section; 6] = [
        Section::Fb,
        Section::FbDirty,
        Section::Regs,
        Section::Telemetry,
        Section::Ctx3,
        Section::Encoder,
    ];

    /// The stable section name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fb => "simgpu.fb",
            Self::FbDirty => "simgpu.fb-dirty",
            Self::Regs => "simgpu.regs",
            Self::Telemetry => "simgpu.telemetry",
            Self::Ctx3 => "simgpu.ctx3",
            Self::Encoder => "simgpu.encoder",
        }
    }

    /// The section for a name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The record tag.
    pub const fn tag(self) -> u16 {
        match self {
            Self::Fb => 1,
            Self::FbDirty => 2,
            Self::Regs => 3,
            Self::Telemetry => 4,
            Self::Ctx3 => 5,
            Self::Encoder => 6,
        }
    }

    /// The section for a tag.
    pub fn from_tag(tag: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.tag() == tag)
    }

    /// The record flags.
    pub const fn flags(self) -> u32 {
        match self {
            Self::Fb => FLAG_REQUIRED | FLAG_BULK,
            Self::Telemetry => 0,
            Self::Encoder => FLAG_REQUIRED | FLAG_CAPABILITY,
            Self::FbDirty | Self::Regs | Self::Ctx3 => FLAG_REQUIRED,
        }
    }

    /// The first state version that has this section.
    pub const fn since(self) -> u32 {
        match self {
            Self::Telemetry => 2,
            Self::Ctx3 => 3,
            Self::Fb | Self::FbDirty | Self::Regs | Self::Encoder => 1,
        }
    }

    /// The exact data length for `ty`.
    pub fn data_len(self, ty: GpuType) -> u64 {
        let small = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        match self {
            Self::Fb => ty.fb_len(),
            Self::FbDirty => crate::sections::fb_dirty_len(ty),
            Self::Regs => small(REGS_LEN),
            Self::Telemetry => small(TELEMETRY_LEN),
            Self::Ctx3 => small(CTX3_LEN),
            Self::Encoder => small(ENCODER_LEN),
        }
    }

    /// The section's spec for `ty`.
    pub fn spec(self, ty: GpuType) -> SectionSpec {
        SectionSpec {
            name: self.name().to_owned(),
            version: SECTION_VERSION,
            required: self.flags() & FLAG_REQUIRED != 0,
            capability: match self {
                Self::Encoder => Some(ENCODER_CAPABILITY.to_owned()),
                _ => None,
            },
            max_len: self.data_len(ty),
            kind: match self {
                Self::Fb => SectionKind::Bulk,
                _ => SectionKind::Structured,
            },
            streamed: false,
        }
    }

    /// True when a state of `version` for a device configured `config` has this
    /// section.
    pub fn present(self, version: u32, config: Config) -> bool {
        version >= self.since() && (self != Self::Encoder || config.encoder)
    }
}

/// The sections of a state, in stream order.
pub fn sections_of(version: u32, config: Config) -> Vec<Section> {
    Section::ALL
        .into_iter()
        .filter(|s| s.present(version, config))
        .collect()
}

/// The oldest loader version that can restore a state of `version` (the envelope's
/// `min_version`): the newest `since` of its required sections. A v2 state's only
/// addition is optional, so its minimum is 1; v3 needs 3.
pub fn min_version(version: u32, config: Config) -> u32 {
    sections_of(version, config)
        .into_iter()
        .filter(|s| s.flags() & FLAG_REQUIRED != 0)
        .map(Section::since)
        .max()
        .unwrap_or(1)
}

/// FNV-1a 64 over `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A record header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Section tag.
    pub tag: u16,
    /// Section format version.
    pub version: u16,
    /// Flags.
    pub flags: u32,
    /// Data length.
    pub length: u64,
}

impl RecordHeader {
    /// The header of `section` with `length` data bytes.
    pub fn for_section(section: Section, length: u64) -> Self {
        Self {
            tag: section.tag(),
            version: SECTION_VERSION,
            flags: section.flags(),
            length,
        }
    }

    /// The 32 header bytes.
    pub fn encode(&self) -> [u8; FRAMING_LEN] {
        let mut out = [0u8; FRAMING_LEN];
        let mut body = Vec::with_capacity(FRAMING_LEN);
        body.extend_from_slice(&RECORD_MAGIC);
        body.extend_from_slice(&self.tag.to_le_bytes());
        body.extend_from_slice(&self.version.to_le_bytes());
        body.extend_from_slice(&self.flags.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&self.length.to_le_bytes());
        let check = fnv1a64(&body);
        body.extend_from_slice(&check.to_le_bytes());
        for (o, b) in out.iter_mut().zip(body) {
            *o = b;
        }
        out
    }

    /// Decodes and checks the fixed fields (magic, reserved, checksum, flag bits).
    pub fn decode(bytes: &[u8; FRAMING_LEN]) -> Result<Self, VendorError> {
        let framing =
            |what: String| VendorError::new(codes::FRAMING, format!("simgpu record header: {what}"));
        let short = |_| framing("short".to_owned());
        let mut r = Reader::new(bytes);
        let magic = *r.take_array::<4>("magic").map_err(short)?;
        let tag = r.u16_le("tag").map_err(short)?;
        let version = r.u16_le("version").map_err(short)?;
        let flags = r.u32_le("flags").map_err(short)?;
        let reserved = r.u32_le("reserved").map_err(short)?;
        let length = r.u64_le("length").map_err(short)?;
        let check = r.u64_le("check").map_err(short)?;
        if magic != RECORD_MAGIC {
            return Err(framing(format!("magic is {magic:02x?}, not \"SGPU\"")));
        }
        let want = fnv1a64(bytes.get(..24).unwrap_or(&[]));
        if check != want {
            return Err(framing(format!("check is {check:#018x}, not {want:#018x}")));
        }
        if reserved != 0 {
            return Err(framing(format!("reserved field is {reserved:#x}")));
        }
        if flags & !FLAGS_DEFINED != 0 {
            return Err(framing(format!("undefined flag bits in {flags:#x}")));
        }
        Ok(Self {
            tag,
            version,
            flags,
            length,
        })
    }
}

/// The framing of `spec`'s data of `len` bytes: empty for a name this plugin does
/// not know.
pub fn framing(spec: &SectionSpec, len: u64) -> Vec<u8> {
    match Section::from_name(&spec.name) {
        Some(section) => RecordHeader {
            tag: section.tag(),
            version: spec.version,
            flags: section.flags(),
            length: len,
        }
        .encode()
        .to_vec(),
        None => Vec::new(),
    }
}

/// Total raw-stream length of a state.
pub fn raw_len(ty: GpuType, version: u32, config: Config) -> u64 {
    sections_of(version, config).into_iter().fold(0u64, |acc, s| {
        acc.saturating_add(FRAMING_LEN_U64).saturating_add(s.data_len(ty))
    })
}
