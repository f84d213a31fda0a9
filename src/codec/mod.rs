//! The mdevmig envelope, wire format version 1.
//!
//! `spec/wire-format.md` is the normative description; this module implements it.
//! A stream is a signed header, then signed chunks carrying the sections' data in
//! table order (a streamed section's chunks followed by its signed end record),
//! then a signed trailer, then end of input:
//!
//! ```text
//! +---------------------------------------------------------------+
//! | header: prefix(16) body(...) section table(...) sig(64)       |  <= 8192 bytes
//! +---------------------------------------------------------------+
//! | chunk 0: kind=1 rsv sect(2) len(4) seq(8) off(8) sig(64) data |
//! | chunk 1: ...                                                  |
//! | end:     kind=3 rsv sect(2) rsv(4) seq(8) len(8) sig(64)      |  streamed sections only
//! +---------------------------------------------------------------+
//! | trailer: kind=2 rsv(7) chunks(8) total(8) sig(64)             |
//! +---------------------------------------------------------------+
//! ```
//!
//! Every integer is little-endian. The header declares the chunk size and every
//! section's exact length (for a streamed section, a bound on it), so the reader
//! knows in advance the section and offset of every chunk, its length except where
//! a streamed section ends (which a signed end record marks), and when the trailer
//! must come: one valid encoding per message, and any deviation is an error with
//! its own code.
//!
//! Each chunk signature covers the header digest (which binds the key, the session
//! nonce and a random stream id), the chunk's position and SHA-256 of its data. A
//! chunk can therefore be verified and released as soon as it arrives, and chunk
//! digests can be computed on several cores at once.
//!
//! Nothing here panics on any input: the panicking lints are denied, and all
//! reading goes through [`mdevmig_plugin_api::Reader`].

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]

pub mod header;
mod pool;
pub mod record;
mod stream;

pub use header::{Header, SectionEntry};
pub use record::{ChunkRecord, Trailer};
pub use stream::{
    default_chunk_size, read_header_unverified, ReadOptions, StreamReader, StreamWriter, VerifiedChunk,
};

/// The 8 magic bytes every stream starts with.
pub const MAGIC: [u8; 8] = *b"\x89MDEVMIG";

/// The envelope format version this module reads and writes.
pub const FORMAT_VERSION: u16 = 1;

/// Signature domain for the header.
pub const HEADER_CONTEXT: &[u8; 16] = b"mdevmig/1/header";
/// Signature domain for chunks.
pub const CHUNK_CONTEXT: &[u8; 16] = b"mdevmig/1/chunk\0";
/// Signature domain for the trailer.
pub const TRAILER_CONTEXT: &[u8; 16] = b"mdevmig/1/tail\0\0";
/// Signature domain for a streamed section's end record.
pub const END_CONTEXT: &[u8; 16] = b"mdevmig/1/end\0\0\0";

/// Limits. Each protects a reader from a hostile length before it acts on it.
pub mod limits {
    /// Largest header. The largest legal header (64 sections with 32-byte names,
    /// 32-byte vendor, 64-byte type, 16 attributes with 32-byte names and values)
    /// is 4,213 bytes; 8 KiB is read into one bounded buffer before parsing.
    pub const MAX_HEADER_LEN: u32 = 8192;
    /// Most device attributes in a header.
    pub const MAX_ATTRIBUTES: u8 = 16;
    /// Longest attribute name and value.
    pub const MAX_ATTR_LEN: u8 = 32;
    /// Most sections. Real devices have a handful; the cap bounds the table and
    /// per-section bookkeeping.
    pub const MAX_SECTIONS: u16 = 64;
    /// Longest vendor id.
    pub const MAX_VENDOR_LEN: u8 = 32;
    /// Longest device type.
    pub const MAX_TYPE_LEN: u8 = 64;
    /// Longest section name.
    pub const MAX_SECTION_NAME_LEN: u8 = 32;
    /// Smallest chunk size: below it the 88-byte record overhead dominates.
    pub const MIN_CHUNK_SIZE: u32 = 4096;
    /// Largest chunk size: the reader holds one chunk per pipeline slot in memory,
    /// so this times the pipeline depth bounds its memory.
    pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
    /// The largest default chunk size ([`super::stream::default_chunk_size`]
    /// picks it or half of it for this machine).
    pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;
    /// Largest total state (sum of section lengths): 1 TiB, above any device's
    /// state today, and small enough that offsets and counts never overflow.
    pub const MAX_TOTAL_LEN: u64 = 1 << 40;
}

/// Section flag: the destination must restore this section or refuse the stream.
pub const SECTION_REQUIRED: u16 = 1 << 0;
/// Section flag: the section's length is known only at its end record; the
/// header's `length` is a bound.
pub const SECTION_STREAMED: u16 = 1 << 1;
/// Every defined section flag.
pub const SECTION_FLAGS: u16 = SECTION_REQUIRED | SECTION_STREAMED;

/// Header flag: the stream is bound to a destination-issued session nonce.
pub const FLAG_SESSION_BOUND: u32 = 1 << 0;

/// SHA-256 digest.
pub type Digest32 = mdevmig_sha2x::Digest32;

/// Checks a vendor, type or section name: 1..=max bytes of `[a-z0-9._-]`.
pub fn check_name(what: &str, s: &[u8], max: u8) -> crate::Result<()> {
    use crate::error::{Code, Error};
    if s.is_empty() {
        return Err(Error::new(Code::BadString, format!("{what} is empty")));
    }
    if s.len() > usize::from(max) {
        return Err(Error::new(
            Code::StringTooLong,
            format!("{what} is {} bytes, more than {max}", s.len()),
        ));
    }
    if let Some(b) = s
        .iter()
        .find(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')))
    {
        return Err(Error::new(
            Code::BadString,
            format!("{what} has byte 0x{b:02x} outside [a-z0-9._-]"),
        ));
    }
    Ok(())
}

/// `usize` to `u64` without `as` (lossless on every platform Rust supports).
pub(crate) fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
