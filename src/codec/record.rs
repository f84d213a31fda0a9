//! Chunk, trailer and section end records (`spec/wire-format.md` §4).
//!
//! All start with the same 88-byte frame: 24 bytes of fields, then a 64-byte
//! ed25519 signature. A chunk's data follows its frame.
//!
//! ```text
//! chunk                          trailer                    section end
//! off size field                 off size field             off size field
//!   0    1 kind = 1                0    1 kind = 2            0    1 kind = 3
//!   1    1 reserved = 0            1    7 reserved = 0        1    1 reserved = 0
//!   2    2 section_index                                      2    2 section_index
//!   4    4 data_len                                           4    4 reserved = 0
//!   8    8 seq                     8    8 chunk_count         8    8 seq (chunks before it)
//!  16    8 offset in section      16    8 total_len          16    8 final length
//!  24   64 signature              24   64 signature          24   64 signature
//!  88    * data
//! ```
//!
//! Chunk signature message (104 bytes):
//! `CHUNK_CONTEXT(16) || header_digest(32) || frame[0..24] || SHA-256(data)(32)`.
//!
//! Trailer and section end signature messages (72 bytes):
//! `TRAILER_CONTEXT(16) || header_digest(32) || frame[0..24]`, and the same with
//! `END_CONTEXT`.

use mdevmig_plugin_api::Reader;

use super::{Digest32, CHUNK_CONTEXT, END_CONTEXT, TRAILER_CONTEXT};
use crate::auth::SIGNATURE_LEN;
use crate::error::{Code, Error, Result};

/// Bytes of the signed fields of a record.
pub const FIELDS_LEN: usize = 24;
/// Bytes of a whole record frame (fields and signature).
pub const FRAME_LEN: usize = FIELDS_LEN + SIGNATURE_LEN;

/// Record kind of a chunk.
pub const KIND_CHUNK: u8 = 1;
/// Record kind of the trailer.
pub const KIND_TRAILER: u8 = 2;
/// Record kind of a streamed section's end.
pub const KIND_END: u8 = 3;

/// A chunk's frame fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRecord {
    /// Index into the header's section table.
    pub section_index: u16,
    /// Data bytes that follow the frame.
    pub data_len: u32,
    /// Position in the stream, from 0.
    pub seq: u64,
    /// Offset of the data within its section.
    pub offset: u64,
}

/// The trailer's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Number of chunks in the stream.
    pub chunk_count: u64,
    /// Sum of all section lengths.
    pub total_len: u64,
}

/// A streamed section's end: its final length, signed where the data stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionEnd {
    /// Index into the header's section table.
    pub section_index: u16,
    /// Chunks before this record in the stream (the next chunk's seq).
    pub seq: u64,
    /// The section's final length: the sum of its chunks' data lengths.
    pub length: u64,
}

impl SectionEnd {
    /// The 24 signed field bytes.
    pub fn fields(&self) -> [u8; FIELDS_LEN] {
        let mut f = [0u8; FIELDS_LEN];
        let mut w = Writer(&mut f, 0);
        w.put(&[KIND_END, 0]);
        w.put(&self.section_index.to_le_bytes());
        w.put(&[0, 0, 0, 0]);
        w.put(&self.seq.to_le_bytes());
        w.put(&self.length.to_le_bytes());
        f
    }

    /// The message its signature covers.
    pub fn signed_message(&self, header_digest: &Digest32) -> [u8; 72] {
        let mut m = [0u8; 72];
        let mut w = Writer(&mut m, 0);
        w.put(END_CONTEXT);
        w.put(header_digest);
        w.put(&self.fields());
        m
    }
}

/// A decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A chunk frame and its signature.
    Chunk(ChunkRecord, [u8; SIGNATURE_LEN]),
    /// The trailer and its signature.
    Trailer(Trailer, [u8; SIGNATURE_LEN]),
    /// A section end and its signature.
    End(SectionEnd, [u8; SIGNATURE_LEN]),
}

impl ChunkRecord {
    /// The 24 signed field bytes.
    pub fn fields(&self) -> [u8; FIELDS_LEN] {
        let mut f = [0u8; FIELDS_LEN];
        let mut w = Writer(&mut f, 0);
        w.put(&[KIND_CHUNK, 0]);
        w.put(&self.section_index.to_le_bytes());
        w.put(&self.data_len.to_le_bytes());
        w.put(&self.seq.to_le_bytes());
        w.put(&self.offset.to_le_bytes());
        f
    }

    /// The message its signature covers.
    pub fn signed_message(&self, header_digest: &Digest32, data_digest: &Digest32) -> [u8; 104] {
        let mut m = [0u8; 104];
        let mut w = Writer(&mut m, 0);
        w.put(CHUNK_CONTEXT);
        w.put(header_digest);
        w.put(&self.fields());
        w.put(data_digest);
        m
    }
}

impl Trailer {
    /// The 24 signed field bytes.
    pub fn fields(&self) -> [u8; FIELDS_LEN] {
        let mut f = [0u8; FIELDS_LEN];
        let mut w = Writer(&mut f, 0);
        w.put(&[KIND_TRAILER, 0, 0, 0, 0, 0, 0, 0]);
        w.put(&self.chunk_count.to_le_bytes());
        w.put(&self.total_len.to_le_bytes());
        f
    }

    /// The message its signature covers.
    pub fn signed_message(&self, header_digest: &Digest32) -> [u8; 72] {
        let mut m = [0u8; 72];
        let mut w = Writer(&mut m, 0);
        w.put(TRAILER_CONTEXT);
        w.put(header_digest);
        w.put(&self.fields());
        m
    }
}

/// Writes into a fixed array; all sizes are compile-time constants that fit.
struct Writer<'a>(&'a mut [u8], usize);

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.1.saturating_add(bytes.len());
        if let Some(dst) = self.0.get_mut(self.1..end) {
            dst.copy_from_slice(bytes);
        }
        self.1 = end;
    }
}

/// Decodes an 88-byte frame field by field: the kind, then the kind's reserved
/// bytes (`spec/wire-format.md` §4), then its other fields.
pub fn decode_frame(frame: &[u8; FRAME_LEN]) -> Result<Frame> {
    let mut r = Reader::new(frame);
    let kind = r.u8("kind").map_err(truncated)?;
    match kind {
        KIND_CHUNK => decode_chunk(&mut r),
        KIND_TRAILER => decode_trailer(&mut r),
        KIND_END => decode_end(&mut r),
        other => Err(Error::new(
            Code::BadRecordKind,
            format!("record kind {other} is not chunk (1), trailer (2) or section end (3)"),
        )),
    }
}

/// A frame shorter than its fields (unreachable with an 88-byte frame).
fn truncated(_: mdevmig_plugin_api::Short) -> Error {
    Error::new(Code::Truncated, "record frame")
}

/// A chunk frame after its kind byte.
fn decode_chunk(r: &mut Reader<'_>) -> Result<Frame> {
    let reserved = r.u8("reserved").map_err(truncated)?;
    if reserved != 0 {
        return Err(Error::new(
            Code::ReservedNonzero,
            "chunk reserved byte is not zero",
        ));
    }
    let section_index = r.u16_le("section_index").map_err(truncated)?;
    let data_len = r.u32_le("data_len").map_err(truncated)?;
    let seq = r.u64_le("seq").map_err(truncated)?;
    let offset = r.u64_le("offset").map_err(truncated)?;
    let sig = *r.take_array::<SIGNATURE_LEN>("signature").map_err(truncated)?;
    Ok(Frame::Chunk(
        ChunkRecord {
            section_index,
            data_len,
            seq,
            offset,
        },
        sig,
    ))
}

/// A trailer frame after its kind byte.
fn decode_trailer(r: &mut Reader<'_>) -> Result<Frame> {
    let reserved = r.take_array::<7>("reserved").map_err(truncated)?;
    if *reserved != [0; 7] {
        return Err(Error::new(
            Code::ReservedNonzero,
            "trailer reserved bytes are not zero",
        ));
    }
    let chunk_count = r.u64_le("chunk_count").map_err(truncated)?;
    let total_len = r.u64_le("total_len").map_err(truncated)?;
    let sig = *r.take_array::<SIGNATURE_LEN>("signature").map_err(truncated)?;
    Ok(Frame::Trailer(
        Trailer {
            chunk_count,
            total_len,
        },
        sig,
    ))
}

/// A section end frame after its kind byte: both reserved fields are checked
/// together, after section_index is read.
fn decode_end(r: &mut Reader<'_>) -> Result<Frame> {
    let reserved = r.u8("reserved").map_err(truncated)?;
    let section_index = r.u16_le("section_index").map_err(truncated)?;
    let reserved2 = r.take_array::<4>("reserved").map_err(truncated)?;
    if reserved != 0 || *reserved2 != [0; 4] {
        return Err(Error::new(
            Code::ReservedNonzero,
            "section end reserved bytes are not zero",
        ));
    }
    let seq = r.u64_le("seq").map_err(truncated)?;
    let length = r.u64_le("length").map_err(truncated)?;
    let sig = *r.take_array::<SIGNATURE_LEN>("signature").map_err(truncated)?;
    Ok(Frame::End(
        SectionEnd {
            section_index,
            seq,
            length,
        },
        sig,
    ))
}
