//! Streaming validation of record-structured device state, shared by every vendor.
//!
//! Real passthrough devices hand out their state as a sequence of self-describing
//! records whose count and sizes are known only at the end: Intel Xe VF packets
//! (`drivers/gpu/drm/xe/xe_sriov_packet_types.h`: a 24-byte header, then `size`
//! bytes), mlx5 records (`drivers/vfio/pci/mlx5/cmd.h`, `struct
//! mlx5_vf_migration_header`: `record_size`, `flags`, `tag`), virtio device parts
//! (`drivers/vfio/pci/virtio/migrate.c`). [`RecordStream`] drives a plugin's
//! [`RecordFormat`] over such a stream:
//!
//! ```text
//!   bytes in any split ─► header buffer (exactly header_len, never more)
//!                        ─► RecordFormat::header() says: known / unknown, body length
//!                        ─► body: whole (buffered up to the format's own cap), or
//!                               streamed in pieces, or skipped (unknown-optional)
//!                        ─► next header ... ─► finish(): not inside a record,
//!                                              RecordFormat::end() (end marker seen?)
//! ```
//!
//! # Unknown records: decided here, once, for every vendor
//!
//! QEMU's 2011 subsection bug came from a loader that had to guess whether bytes it
//! did not understand could be passed over. The rule here is the envelope's rule for
//! sections, applied to records:
//!
//! * a record type the destination plugin knows is validated, whatever its flags say;
//! * an unknown record the stream marks optional (mlx5's `TAG_OPTIONAL`) is skipped,
//!   its body counted against [`RecordFormat::max_skipped`] and never buffered;
//! * an unknown record not marked optional is refused with the format's
//!   `unknown_mandatory` code. A format with no optional flag (Xe) refuses every
//!   unknown type.
//!
//! # Memory
//!
//! The driver holds the current header (`header_len` bytes) and, for a record whose
//! body must be seen whole, that body, whose length [`RecordFormat::header`] has
//! already checked against a cap the format documents. Nothing else is buffered,
//! whatever the stream says: a `size` field can only make the driver count, never
//! allocate.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]

use crate::{RecordValidator, VendorError};

/// What a record header says, as the format decoded and checked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    /// Bytes of body after the header.
    pub body_len: u64,
    /// Whether the format knows this record type.
    pub known: bool,
    /// The record marks itself optional (mlx5's `TAG_OPTIONAL`); always false for
    /// formats without such a flag.
    pub optional: bool,
    /// How a known record's body is seen: whole (checked against the format's cap
    /// before anything is buffered) or in pieces.
    pub body: Body,
}

/// How the driver hands a known record's body to the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Buffered and passed whole to [`RecordFormat::record`]; the format checked
    /// `body_len` against its own cap for this record type.
    Whole,
    /// Passed in pieces to [`RecordFormat::body`] (bulk payloads).
    Pieces,
}

/// Codes a format reports for the rules the driver enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordCodes {
    /// An unknown record not marked optional.
    pub unknown_mandatory: &'static str,
    /// The section ended inside a record header or body.
    pub truncated: &'static str,
    /// Skipped optional records add up to more than [`RecordFormat::max_skipped`].
    pub skipped_too_much: &'static str,
    /// A whole body above the driver's absolute cap ([`MAX_WHOLE_BODY`]).
    pub body_too_large: &'static str,
}

/// Largest body any format may ask to see whole. Formats document tighter caps
/// per record type; this is the driver's own backstop.
pub const MAX_WHOLE_BODY: u64 = 1 << 20;

/// A vendor's record format, driven by [`RecordStream`].
pub trait RecordFormat: Send {
    /// Size of every record header.
    fn header_len(&self) -> usize;
    /// The codes of the rules the driver enforces.
    fn codes(&self) -> RecordCodes;
    /// Decodes and checks one header. Refuse here anything the header alone shows
    /// wrong (version, ids, offset + size, order); for [`Body::Whole`] records,
    /// check `body_len` against the record type's cap.
    fn header(&mut self, header: &[u8]) -> Result<RecordHead, VendorError>;
    /// The next `data` of the current record's body, `offset` bytes in.
    fn body(&mut self, offset: u64, data: &[u8]) -> Result<(), VendorError> {
        let _ = (offset, data);
        Ok(())
    }
    /// The whole body of a [`Body::Whole`] record.
    fn record(&mut self, body: &[u8]) -> Result<(), VendorError> {
        let _ = body;
        Ok(())
    }
    /// The current record's body is complete (after its last piece or `record`).
    fn record_end(&mut self) -> Result<(), VendorError> {
        Ok(())
    }
    /// Most body bytes of unknown optional records the stream may carry in all.
    fn max_skipped(&self) -> u64 {
        0
    }
    /// The stream ended between records: refuse a missing end marker.
    fn end(&mut self) -> Result<(), VendorError>;
}

/// Where the driver is inside the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Filling the header buffer.
    Header,
    /// Inside a body: what to do with it, bytes seen, bytes in all.
    Body(Handling, u64, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handling {
    Whole,
    Pieces,
    Skip,
}

/// Drives a [`RecordFormat`] over bytes that arrive in arbitrary splits.
#[derive(Debug)]
pub struct RecordStream<F> {
    format: F,
    header: Vec<u8>,
    whole: Vec<u8>,
    at: At,
    skipped: u64,
    failed: bool,
}

impl<F: RecordFormat> RecordStream<F> {
    /// A driver at the start of a stream.
    pub fn new(format: F) -> Self {
        let n = format.header_len();
        RecordStream {
            format,
            header: Vec::with_capacity(n),
            whole: Vec::new(),
            at: At::Header,
            skipped: 0,
            failed: false,
        }
    }

    /// The format, for inspection after the stream (tests, the simulated device).
    pub fn format(&self) -> &F {
        &self.format
    }

    /// The format, mutably.
    pub fn format_mut(&mut self) -> &mut F {
        &mut self.format
    }

    fn start_body(&mut self, head: RecordHead) -> Result<(), VendorError> {
        let codes = self.format.codes();
        let handling = match (head.known, head.optional, head.body) {
            (true, _, Body::Whole) => {
                if head.body_len > MAX_WHOLE_BODY {
                    return Err(VendorError::new(
                        codes.body_too_large,
                        format!(
                            "a record body of {} bytes, above the {MAX_WHOLE_BODY}-byte cap",
                            head.body_len
                        ),
                    ));
                }
                self.whole.clear();
                Handling::Whole
            }
            (true, _, Body::Pieces) => Handling::Pieces,
            (false, true, _) => {
                let total = self.skipped.checked_add(head.body_len);
                match total.filter(|t| *t <= self.format.max_skipped()) {
                    Some(t) => self.skipped = t,
                    None => {
                        return Err(VendorError::new(
                            codes.skipped_too_much,
                            format!(
                                "unknown optional records add up to more than {} bytes",
                                self.format.max_skipped()
                            ),
                        ))
                    }
                }
                Handling::Skip
            }
            (false, false, _) => {
                return Err(VendorError::new(
                    codes.unknown_mandatory,
                    "a record of a type this plugin does not know, not marked optional",
                ))
            }
        };
        self.at = At::Body(handling, 0, head.body_len);
        self.end_body_if_done()
    }

    fn end_body_if_done(&mut self) -> Result<(), VendorError> {
        if let At::Body(h, seen, len) = self.at {
            if seen == len {
                if h == Handling::Whole {
                    let body = std::mem::take(&mut self.whole);
                    self.format.record(&body)?;
                    self.whole = body;
                }
                if h != Handling::Skip {
                    self.format.record_end()?;
                }
                self.at = At::Header;
                self.header.clear();
            }
        }
        Ok(())
    }

    fn step<'a>(&mut self, data: &'a [u8]) -> Result<&'a [u8], VendorError> {
        match self.at {
            At::Header => {
                let want = self.format.header_len().saturating_sub(self.header.len());
                let (take, rest) = data.split_at(want.min(data.len()));
                self.header.extend_from_slice(take);
                if self.header.len() == self.format.header_len() {
                    let header = std::mem::take(&mut self.header);
                    let head = self.format.header(&header);
                    self.header = header;
                    self.start_body(head?)?;
                }
                Ok(rest)
            }
            At::Body(h, seen, len) => {
                let left = len.saturating_sub(seen);
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                let (take, rest) = data.split_at(n);
                match h {
                    Handling::Whole => self.whole.extend_from_slice(take),
                    Handling::Pieces => self.format.body(seen, take)?,
                    Handling::Skip => {}
                }
                let seen = seen.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
                self.at = At::Body(h, seen, len);
                self.end_body_if_done()?;
                Ok(rest)
            }
        }
    }
}

impl<F: RecordFormat> RecordValidator for RecordStream<F> {
    fn feed(&mut self, mut data: &[u8]) -> Result<(), VendorError> {
        if self.failed {
            return Err(VendorError::new(
                self.format.codes().truncated,
                "the record stream was already refused",
            ));
        }
        while !data.is_empty() {
            match self.step(data) {
                Ok(rest) => data = rest,
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), VendorError> {
        let inside = match self.at {
            At::Header => !self.header.is_empty(),
            At::Body(..) => true,
        };
        if inside || self.failed {
            return Err(VendorError::new(
                self.format.codes().truncated,
                "the stream ends inside a record",
            ));
        }
        self.format.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy format: 4-byte header `{u8 type, u8 optional, u16 len}`; type 1 whole
    /// (≤ 16 bytes), type 2 pieces, type 9 the end marker.
    #[derive(Default)]
    struct Toy {
        records: Vec<(u8, Vec<u8>)>,
        cur: u8,
        ended: bool,
    }

    impl RecordFormat for Toy {
        fn header_len(&self) -> usize {
            4
        }
        fn codes(&self) -> RecordCodes {
            RecordCodes {
                unknown_mandatory: "vendor.toy.unknown",
                truncated: "vendor.toy.truncated",
                skipped_too_much: "vendor.toy.skipped",
                body_too_large: "vendor.toy.big",
            }
        }
        fn header(&mut self, h: &[u8]) -> Result<RecordHead, VendorError> {
            let len = u64::from(u16::from_le_bytes([h[2], h[3]]));
            self.cur = h[0];
            if self.ended {
                return Err(VendorError::new("vendor.toy.after_end", "record after the end"));
            }
            let (known, body) = match h[0] {
                1 if len > 16 => return Err(VendorError::new("vendor.toy.big", "too big")),
                1 => (true, Body::Whole),
                2 => (true, Body::Pieces),
                9 => {
                    self.ended = true;
                    (true, Body::Pieces)
                }
                _ => (false, Body::Pieces),
            };
            if known {
                self.records.push((h[0], Vec::new()));
            }
            Ok(RecordHead {
                body_len: len,
                known,
                optional: h[1] == 1,
                body,
            })
        }
        fn body(&mut self, _offset: u64, data: &[u8]) -> Result<(), VendorError> {
            self.records.last_mut().unwrap().1.extend_from_slice(data);
            Ok(())
        }
        fn record(&mut self, body: &[u8]) -> Result<(), VendorError> {
            self.records.last_mut().unwrap().1.extend_from_slice(body);
            Ok(())
        }
        fn max_skipped(&self) -> u64 {
            8
        }
        fn end(&mut self) -> Result<(), VendorError> {
            if self.ended {
                Ok(())
            } else {
                Err(VendorError::new("vendor.toy.no_end", "no end marker"))
            }
        }
    }

    fn rec(t: u8, opt: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![t, opt];
        v.extend_from_slice(&u16::try_from(body.len()).unwrap().to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    fn stream() -> Vec<u8> {
        [
            rec(1, 0, b"abc"),
            rec(7, 1, b"skip"),
            rec(2, 0, b"0123456789"),
            rec(1, 1, b""),
            rec(9, 0, b""),
        ]
        .concat()
    }

    fn run(pieces: &[&[u8]]) -> Result<Vec<(u8, Vec<u8>)>, VendorError> {
        let mut s = RecordStream::new(Toy::default());
        for p in pieces {
            s.feed(p)?;
        }
        s.finish()?;
        Ok(s.format().records.clone())
    }

    #[test]
    fn every_split_gives_the_same_records() {
        let all = stream();
        let whole = run(&[&all]).unwrap();
        assert_eq!(whole.len(), 4);
        for i in 0..=all.len() {
            for j in i..=all.len() {
                let got = run(&[&all[..i], &all[i..j], &all[j..]]).unwrap();
                assert_eq!(got, whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn unknown_mandatory_is_refused_and_optional_skipped_within_bound() {
        let bad = [rec(7, 0, b"x"), rec(9, 0, b"")].concat();
        assert_eq!(run(&[&bad]).unwrap_err().code, "vendor.toy.unknown");
        let big = [rec(7, 1, b"123456789"), rec(9, 0, b"")].concat();
        assert_eq!(run(&[&big]).unwrap_err().code, "vendor.toy.skipped");
    }

    #[test]
    fn truncation_and_missing_end_are_refused() {
        let all = stream();
        for cut in 1..all.len() {
            let e = run(&[&all[..cut]]).unwrap_err();
            assert!(
                e.code == "vendor.toy.truncated" || e.code == "vendor.toy.no_end",
                "cut {cut}: {}",
                e.code
            );
        }
        assert_eq!(run(&[&rec(1, 0, b"a")]).unwrap_err().code, "vendor.toy.no_end");
    }

    #[test]
    fn a_refused_stream_stays_refused() {
        let mut s = RecordStream::new(Toy::default());
        assert!(s.feed(&rec(7, 0, b"")).is_err());
        assert_eq!(s.feed(&rec(9, 0, b"")).unwrap_err().code, "vendor.toy.truncated");
    }
}
