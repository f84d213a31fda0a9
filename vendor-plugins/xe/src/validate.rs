//! [`StreamValidator`]: the whole raw packet stream, checked as it streams.
//!
//! It runs the plugin API's shared record driver
//! ([`mdevmig_plugin_api::records::RecordStream`]) over [`XeFormat`], so bytes may
//! arrive in any split (a piece may end inside a header) and the API's rule for
//! unknown records applies: Xe headers have no optional flag, so every unknown
//! type is refused ([`codes::UNKNOWN_TYPE`]).
//!
//! # Memory
//!
//! The 24-byte header, and the descriptor (at most
//! [`DESCRIPTOR_MAX`] bytes, checked before it is
//! buffered). VRAM, GGTT, MMIO and GuC payloads are counted, never buffered; a
//! [`PacketSink`] (the simulated device's loader) may look at them in pieces.
//!
//! # Checks, in the order they run on each header
//!
//! 1. nothing after the trailer ([`codes::AFTER_TRAILER`], also for any byte after
//!    it, even less than a header);
//! 2. `version` is 1 ([`codes::BAD_VERSION`]);
//! 3. the type is known ([`codes::UNKNOWN_TYPE`]);
//! 4. `flags` is 0 ([`codes::BAD_FLAGS`]);
//! 5. `size` is at most 512 MiB ([`codes::SIZE_TOO_LARGE`]) — before any sum;
//! 6. the first packet is the descriptor ([`codes::DESCRIPTOR_NOT_FIRST`]);
//! 7. ids: descriptor and trailer on tile 0 / GT 0 ([`codes::BAD_IDS`]); others on
//!    a tile and GT the destination has ([`codes::UNKNOWN_TILE`],
//!    [`codes::UNKNOWN_GT`]), the GT on that tile ([`codes::GT_NOT_ON_TILE`]),
//!    GGTT and VRAM only on a primary GT ([`codes::WRONG_GT`]);
//! 8. `offset + size` without overflow ([`codes::OFFSET_OVERFLOW`]); offset 0 for
//!    resources sent whole ([`codes::BAD_OFFSET`]); an empty trailer
//!    ([`codes::BAD_SIZE`]);
//! 9. `offset + size` inside the resource ([`codes::OUT_OF_RANGE`]): the tile's
//!    VRAM, the GGTT table, 8 MiB of GuC state, 16 bytes of MMIO, the descriptor
//!    cap; sizes exact ([`codes::BAD_SIZE`]); VRAM 4 KiB aligned
//!    ([`codes::UNALIGNED`]);
//! 10. the stream stays within [`Config::max_stream_len`] ([`codes::TOO_LONG`]);
//! 11. at most one descriptor and one GuC, GGTT and MMIO packet per GT
//!     ([`codes::DUPLICATE`]); VRAM re-sends allowed, holes not
//!     ([`codes::VRAM_GAP`]);
//! 12. at the trailer: every GT's GuC and MMIO, every tile's GGTT and all of its
//!     VRAM were sent ([`codes::MISSING_PACKET`]).
//!
//! The descriptor body is then parsed ([`codes::BAD_DESCRIPTOR`]) and its ids
//! compared with the destination's ([`codes::DESCRIPTOR_MISMATCH`]). At the end:
//! inside a packet is [`codes::TRUNCATED`], between packets without a trailer
//! [`codes::MISSING_TRAILER`].

use mdevmig_plugin_api::records::{Body, RecordCodes, RecordFormat, RecordHead, RecordStream};
use mdevmig_plugin_api::{RecordValidator, VendorError};

use crate::codes;
use crate::format::{
    parse_descriptor, Header, PacketType, DESCRIPTOR_MAX, GUC_MAX, HEADER_LEN, HEADER_LEN_U64, MMIO_LEN,
    PAGE_SIZE_U64, VRAM_CHUNK_MAX,
};
use crate::profile::{Config, MAX_GTS, MAX_TILES};

/// Sees the packets a [`StreamValidator`] accepted, as they stream: every call
/// comes after the checks above passed for the packet's header.
pub trait PacketSink: Send {
    /// A packet's header was accepted.
    fn packet(&mut self, header: &Header) -> Result<(), VendorError> {
        let _ = header;
        Ok(())
    }
    /// The next `data` of the current packet's payload, `at` bytes into it.
    fn payload(&mut self, header: &Header, at: u64, data: &[u8]) -> Result<(), VendorError> {
        let _ = (header, at, data);
        Ok(())
    }
    /// The current packet's payload is complete (and, for the descriptor, parsed
    /// and matched).
    fn packet_end(&mut self, header: &Header) -> Result<(), VendorError> {
        let _ = header;
        Ok(())
    }
}

/// A sink that ignores everything.
impl PacketSink for () {}

fn err(code: &'static str, message: String) -> VendorError {
    VendorError::new(code, message)
}

/// The Xe packet format as a [`RecordFormat`], with the state the checks need.
#[derive(Debug)]
pub struct XeFormat<S> {
    config: Config,
    sink: S,
    /// The packet being read.
    cur: Option<Header>,
    /// Stream offset of the current packet's header.
    cur_at: u64,
    /// Stream bytes the format has seen (headers and payloads).
    pos: u64,
    packets: u64,
    /// The last header of an unknown type (for the driver's refusal message).
    unknown: Option<Header>,
    descriptor: bool,
    /// Stream length through the trailer, once it was seen.
    trailer_end: Option<u64>,
    guc: [bool; MAX_GTS],
    mmio: [bool; MAX_GTS],
    ggtt: [bool; MAX_TILES],
    /// Per tile: VRAM bytes `0..fresh` have been sent.
    fresh: [u64; MAX_TILES],
}

impl<S: PacketSink> XeFormat<S> {
    fn new(config: Config, sink: S) -> Self {
        XeFormat {
            config,
            sink,
            cur: None,
            cur_at: 0,
            pos: 0,
            packets: 0,
            unknown: None,
            descriptor: false,
            trailer_end: None,
            guc: [false; MAX_GTS],
            mmio: [false; MAX_GTS],
            ggtt: [false; MAX_TILES],
            fresh: [0; MAX_TILES],
        }
    }

    fn whereabouts(&self, h: &Header) -> String {
        format!(
            "{} packet {} at stream offset {} (tile {}, GT {}, offset {:#x}, size {:#x})",
            h.ty, self.packets, self.cur_at, h.tile_id, h.gt_id, h.offset, h.size
        )
    }

    /// Checks a decoded header; on success the packet is the current one.
    fn check(&mut self, h: &Header) -> Result<(), VendorError> {
        let at = || self.whereabouts(h);
        if self.trailer_end.is_some() {
            return Err(err(codes::AFTER_TRAILER, format!("{} follows the trailer", at())));
        }
        if h.version != crate::format::VERSION {
            return Err(err(
                codes::BAD_VERSION,
                format!("{}: header version {}, not 1", at(), h.version),
            ));
        }
        if !h.ty.is_known() {
            // The record driver refuses it with UNKNOWN_TYPE.
            return Ok(());
        }
        if h.flags != 0 {
            return Err(err(
                codes::BAD_FLAGS,
                format!("{}: flags {:#x}, but no flag is defined", at(), h.flags),
            ));
        }
        if h.size > VRAM_CHUNK_MAX {
            return Err(err(
                codes::SIZE_TOO_LARGE,
                format!(
                    "{}: size above the {VRAM_CHUNK_MAX}-byte maximum of any packet",
                    at()
                ),
            ));
        }
        if !self.descriptor && h.ty != PacketType::DESCRIPTOR {
            return Err(err(
                codes::DESCRIPTOR_NOT_FIRST,
                format!("{}: the stream must start with the descriptor", at()),
            ));
        }
        self.check_ids(h)?;
        let end = h.offset.checked_add(h.size).ok_or_else(|| {
            err(
                codes::OFFSET_OVERFLOW,
                format!("{}: offset + size overflows", at()),
            )
        })?;
        if h.ty != PacketType::VRAM && h.offset != 0 {
            return Err(err(
                codes::BAD_OFFSET,
                format!("{}: {} is sent whole, at offset 0", at(), h.ty),
            ));
        }
        if h.ty == PacketType::TRAILER && h.size != 0 {
            return Err(err(codes::BAD_SIZE, format!("{}: the trailer is empty", at())));
        }
        let (limit, what) = self.resource(h);
        if end > limit {
            return Err(err(
                codes::OUT_OF_RANGE,
                format!(
                    "{}: ends at {end:#x}, beyond the {limit:#x} bytes of {what}",
                    at()
                ),
            ));
        }
        self.check_shape(h)?;
        let max = self.config.max_stream_len();
        let packet_end = self.pos.checked_add(h.size).filter(|e| *e <= max);
        let Some(packet_end) = packet_end else {
            return Err(err(
                codes::TOO_LONG,
                format!(
                    "{}: the stream would exceed {max} bytes, the bound for {} (VRAM re-sends \
                     beyond twice the VRAM)",
                    self.whereabouts(h),
                    self.config.ty.name()
                ),
            ));
        };
        self.check_once(h)?;
        if h.ty == PacketType::TRAILER {
            self.check_complete(h)?;
            self.trailer_end = Some(packet_end);
        }
        Ok(())
    }

    fn check_ids(&self, h: &Header) -> Result<(), VendorError> {
        let at = || self.whereabouts(h);
        let c = self.config;
        if h.ty == PacketType::DESCRIPTOR || h.ty == PacketType::TRAILER {
            if h.tile_id != 0 || h.gt_id != 0 {
                return Err(err(codes::BAD_IDS, format!("{}: must be on tile 0, GT 0", at())));
            }
            return Ok(());
        }
        if h.tile_id >= c.tiles {
            return Err(err(
                codes::UNKNOWN_TILE,
                format!("{}: the destination has {} tile(s)", at(), c.tiles),
            ));
        }
        let tile = c.gt_tile(h.gt_id).ok_or_else(|| {
            err(
                codes::UNKNOWN_GT,
                format!("{}: the destination has {} GT(s)", at(), c.gt_count()),
            )
        })?;
        if tile != h.tile_id {
            return Err(err(
                codes::GT_NOT_ON_TILE,
                format!("{}: GT {} is on tile {tile}", at(), h.gt_id),
            ));
        }
        if (h.ty == PacketType::GGTT || h.ty == PacketType::VRAM) && !c.is_primary(h.gt_id) {
            return Err(err(
                codes::WRONG_GT,
                format!("{}: only a tile's primary GT carries GGTT and VRAM", at()),
            ));
        }
        Ok(())
    }

    /// The addressed resource's length and name.
    fn resource(&self, h: &Header) -> (u64, &'static str) {
        match h.ty {
            PacketType::DESCRIPTOR => (DESCRIPTOR_MAX, "the descriptor cap"),
            PacketType::TRAILER => (0, "the trailer"),
            PacketType::GGTT => (self.config.ggtt_len(), "the tile's GGTT table"),
            PacketType::MMIO => (MMIO_LEN, "the GT's MMIO block"),
            PacketType::GUC => (GUC_MAX, "GuC state (8 MiB max)"),
            _ => (self.config.vram_per_tile(), "the tile's VRAM"),
        }
    }

    fn check_shape(&self, h: &Header) -> Result<(), VendorError> {
        let at = || self.whereabouts(h);
        let bad = |why: &str| Err(err(codes::BAD_SIZE, format!("{}: {why}", at())));
        match h.ty {
            PacketType::DESCRIPTOR if !h.size.is_multiple_of(4) => bad("not whole dwords of KLVs"),
            PacketType::GGTT if h.size != self.config.ggtt_len() => bad("GGTT is sent as the whole table"),
            PacketType::MMIO if h.size != MMIO_LEN => bad("MMIO is 16 bytes"),
            PacketType::GUC if h.size == 0 || !h.size.is_multiple_of(4) => {
                bad("GuC state is a non-empty dword array")
            }
            PacketType::VRAM if h.size == 0 => bad("an empty VRAM packet"),
            PacketType::VRAM
                if !h.offset.is_multiple_of(PAGE_SIZE_U64) || !h.size.is_multiple_of(PAGE_SIZE_U64) =>
            {
                Err(err(
                    codes::UNALIGNED,
                    format!("{}: VRAM packets are 4 KiB aligned", at()),
                ))
            }
            _ => Ok(()),
        }
    }

    fn check_once(&mut self, h: &Header) -> Result<(), VendorError> {
        let place = self.whereabouts(h);
        let dup = |what: &str| Err(err(codes::DUPLICATE, format!("{place}: a second {what}")));
        let gt = usize::from(h.gt_id);
        let tile = usize::from(h.tile_id);
        match h.ty {
            PacketType::DESCRIPTOR if self.descriptor => return dup("descriptor"),
            PacketType::DESCRIPTOR => self.descriptor = true,
            PacketType::GUC | PacketType::MMIO | PacketType::GGTT => {
                let slot = match h.ty {
                    PacketType::GUC => self.guc.get_mut(gt),
                    PacketType::MMIO => self.mmio.get_mut(gt),
                    _ => self.ggtt.get_mut(tile),
                };
                match slot {
                    Some(true) => return dup(&format!("{} packet for this GT", h.ty)),
                    Some(s) => *s = true,
                    None => {}
                }
            }
            PacketType::VRAM => {
                let fresh = self.fresh.get(tile).copied().unwrap_or(0);
                if h.offset > fresh {
                    return Err(err(
                        codes::VRAM_GAP,
                        format!("{place}: VRAM up to {fresh:#x} has been sent; this leaves a hole"),
                    ));
                }
                if let Some(f) = self.fresh.get_mut(tile) {
                    *f = fresh.max(h.offset.saturating_add(h.size));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn check_complete(&self, h: &Header) -> Result<(), VendorError> {
        let c = self.config;
        let mut missing = Vec::new();
        for gt in 0..c.gt_count() {
            let i = usize::from(gt);
            if !self.guc.get(i).copied().unwrap_or(false) {
                missing.push(format!("GuC of GT {gt}"));
            }
            if !self.mmio.get(i).copied().unwrap_or(false) {
                missing.push(format!("MMIO of GT {gt}"));
            }
        }
        for tile in 0..c.tiles {
            let i = usize::from(tile);
            if !self.ggtt.get(i).copied().unwrap_or(false) {
                missing.push(format!("GGTT of tile {tile}"));
            }
            let fresh = self.fresh.get(i).copied().unwrap_or(0);
            if fresh < c.vram_per_tile() {
                missing.push(format!(
                    "VRAM of tile {tile} from {fresh:#x} to {:#x}",
                    c.vram_per_tile()
                ));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(err(
                codes::MISSING_PACKET,
                format!("{}: not sent: {}", self.whereabouts(h), missing.join(", ")),
            ))
        }
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The sink, mutably.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// True once the trailer was accepted.
    pub fn trailer_seen(&self) -> bool {
        self.trailer_end.is_some()
    }
}

impl<S: PacketSink> RecordFormat for XeFormat<S> {
    fn header_len(&self) -> usize {
        HEADER_LEN
    }

    fn codes(&self) -> RecordCodes {
        RecordCodes {
            unknown_mandatory: codes::UNKNOWN_TYPE,
            truncated: codes::TRUNCATED,
            skipped_too_much: codes::UNKNOWN_TYPE,
            body_too_large: codes::SIZE_TOO_LARGE,
        }
    }

    fn header(&mut self, header: &[u8]) -> Result<RecordHead, VendorError> {
        let bytes: &[u8; HEADER_LEN] = header
            .try_into()
            .map_err(|_| err(codes::TRUNCATED, "a short packet header".to_owned()))?;
        let h = Header::decode(bytes);
        self.cur_at = self.pos;
        self.pos = self.pos.saturating_add(HEADER_LEN_U64);
        self.check(&h)?;
        self.packets = self.packets.saturating_add(1);
        if !h.ty.is_known() {
            self.unknown = Some(h);
            return Ok(RecordHead {
                body_len: h.size,
                known: false,
                optional: false,
                body: Body::Pieces,
            });
        }
        self.sink.packet(&h)?;
        self.cur = Some(h);
        Ok(RecordHead {
            body_len: h.size,
            known: true,
            optional: false,
            body: if h.ty == PacketType::DESCRIPTOR {
                Body::Whole
            } else {
                Body::Pieces
            },
        })
    }

    fn body(&mut self, offset: u64, data: &[u8]) -> Result<(), VendorError> {
        self.pos = self
            .pos
            .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
        match self.cur {
            Some(h) => self.sink.payload(&h, offset, data),
            None => Ok(()),
        }
    }

    fn record(&mut self, body: &[u8]) -> Result<(), VendorError> {
        self.pos = self
            .pos
            .saturating_add(u64::try_from(body.len()).unwrap_or(u64::MAX));
        let d = parse_descriptor(body)?;
        let c = self.config;
        if d.devid != u32::from(c.devid) || d.revid != u32::from(c.revid) {
            return Err(err(
                codes::DESCRIPTOR_MISMATCH,
                format!(
                    "the stream comes from PCI device {:#06x} revision {:#04x}; the destination is \
                     {:#06x} revision {:#04x}",
                    d.devid, d.revid, c.devid, c.revid
                ),
            ));
        }
        match self.cur {
            Some(h) => self.sink.payload(&h, 0, body),
            None => Ok(()),
        }
    }

    fn record_end(&mut self) -> Result<(), VendorError> {
        match self.cur.take() {
            Some(h) => self.sink.packet_end(&h),
            None => Ok(()),
        }
    }

    fn end(&mut self) -> Result<(), VendorError> {
        if self.trailer_seen() {
            Ok(())
        } else {
            Err(err(
                codes::MISSING_TRAILER,
                format!(
                    "the stream ended after {} packet(s) ({} bytes) without a trailer",
                    self.packets, self.pos
                ),
            ))
        }
    }
}

/// The streaming validator of a whole Xe packet stream for one destination
/// configuration. Feed it bytes in any split, then [`finish`](Self::finish).
/// The first refusal is final: later calls repeat it.
pub struct StreamValidator<S: PacketSink = ()> {
    stream: RecordStream<XeFormat<S>>,
    fed: u64,
    failed: Option<VendorError>,
}

impl<S: PacketSink> std::fmt::Debug for StreamValidator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamValidator")
            .field("config", &self.stream.format().config)
            .field("fed", &self.fed)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl StreamValidator<()> {
    /// A validator for a destination configured `config`.
    pub fn new(config: &Config) -> Self {
        Self::with_sink(config, ())
    }
}

impl<S: PacketSink> StreamValidator<S> {
    /// A validator that also hands accepted packets to `sink`.
    pub fn with_sink(config: &Config, sink: S) -> Self {
        StreamValidator {
            stream: RecordStream::new(XeFormat::new(*config, sink)),
            fed: 0,
            failed: None,
        }
    }

    fn fail(&mut self, e: VendorError) -> VendorError {
        self.failed = Some(e.clone());
        e
    }

    fn after_trailer(&self) -> Option<VendorError> {
        let end = self.stream.format().trailer_end?;
        (self.fed > end).then(|| {
            err(
                codes::AFTER_TRAILER,
                format!(
                    "{} byte(s) follow the trailer, which ends at stream offset {end}",
                    self.fed.saturating_sub(end)
                ),
            )
        })
    }

    /// The next bytes of the stream.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), VendorError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.fed = self
            .fed
            .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
        let r = self
            .stream
            .feed(data)
            .map_err(|e| match self.stream.format().unknown {
                Some(h) if e.code == codes::UNKNOWN_TYPE => err(
                    e.code,
                    format!(
                    "{}: Xe packets have no optional flag, so a type this plugin does not know is refused",
                    self.stream.format().whereabouts(&h)
                ),
                ),
                _ => e,
            });
        // Bytes after the trailer are refused even when they do not make a header.
        match (r, self.after_trailer()) {
            (Err(e), _) | (Ok(()), Some(e)) => Err(self.fail(e)),
            (Ok(()), None) => Ok(()),
        }
    }

    /// The stream ended.
    pub fn finish(&mut self) -> Result<(), VendorError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.stream.finish() {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Bytes fed so far.
    pub fn fed(&self) -> u64 {
        self.fed
    }

    /// True once the trailer was accepted.
    pub fn trailer_seen(&self) -> bool {
        self.stream.format().trailer_seen()
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        self.stream.format().sink()
    }

    /// The sink, mutably.
    pub fn sink_mut(&mut self) -> &mut S {
        self.stream.format_mut().sink_mut()
    }
}

impl<S: PacketSink> RecordValidator for StreamValidator<S> {
    fn feed(&mut self, data: &[u8]) -> Result<(), VendorError> {
        StreamValidator::feed(self, data)
    }

    fn finish(&mut self) -> Result<(), VendorError> {
        StreamValidator::finish(self)
    }
}
