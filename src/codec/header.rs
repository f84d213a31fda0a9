//! The envelope header.
//!
//! ```text
//! off  size field
//!   0     8 magic            89 4d 44 45 56 4d 49 47  ("\x89MDEVMIG")
//!   8     2 format_version   1
//!  10     2 reserved         0
//!  12     4 header_len       total header bytes, prefix and signature included (<= 8192)
//!  16     4 flags            bit 0 SESSION_BOUND; other bits 0
//!  20     4 state_version    >= 1
//!  24     4 min_version      1 <= min_version <= state_version
//!  28     4 chunk_size       power of two, 4096 ..= 16 MiB
//!  32    32 key_id           SHA-256 of the signer's raw ed25519 public key
//!  64    32 session_nonce    destination-issued nonce; all zero unless SESSION_BOUND
//!  96    16 stream_id        random per stream
//! 112     1 vendor_len       1..=32, then vendor bytes [a-z0-9._-]
//!         1 type_len         1..=64, then type bytes [a-z0-9._-]
//!         1 attr_count       0..=16, then attr_count device attributes, names strictly ascending:
//!             1 name_len 1..=32, name [a-z0-9._-], 1 value_len 1..=32, value [a-z0-9._:+-]
//!         2 section_count    1..=64, then section_count entries:
//!             1 name_len 1..=32, name, 2 version, 2 flags (bit 0 REQUIRED, bit 1 STREAMED),
//!             8 length (exact; for a STREAMED section the bound on its final length)
//!        64 signature        ed25519 over HEADER_CONTEXT || all preceding header bytes
//! ```
//!
//! [`decode`] checks every rule as it reaches the field the rule is about, so the
//! first broken rule in byte order is the one reported (`spec/wire-format.md` §3);
//! [`Header::check`] applies the same rules in the same order before a writer
//! encodes, so a writer cannot produce what a reader refuses.

use mdevmig_plugin_api::Reader;
use sha2::{Digest, Sha256};

use super::limits::*;
use super::{
    check_name, Digest32, FLAG_SESSION_BOUND, FORMAT_VERSION, HEADER_CONTEXT, MAGIC, SECTION_FLAGS,
    SECTION_REQUIRED, SECTION_STREAMED,
};
use crate::auth::{KeyId, SigningKeyPair, SIGNATURE_LEN};
use crate::error::{Code, Error, Result};

/// Bytes before the variable part: prefix and fixed body.
pub(crate) const FIXED_LEN: usize = 112;
/// Bytes of the prefix a reader takes before it knows header_len.
pub const PREFIX_LEN: usize = 16;

/// One entry of the section table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionEntry {
    /// Unique name.
    pub name: String,
    /// The section's own format version.
    pub version: u16,
    /// Flags: [`SECTION_REQUIRED`], [`SECTION_STREAMED`].
    pub flags: u16,
    /// Exact data length in bytes; for a streamed section, the bound on its final
    /// length (the end record signs the final length).
    pub length: u64,
}

impl SectionEntry {
    /// True when the destination must restore this section.
    pub fn required(&self) -> bool {
        self.flags & SECTION_REQUIRED != 0
    }

    /// True when the section's length is known only at its end record, and
    /// `length` is its bound.
    pub fn streamed(&self) -> bool {
        self.flags & SECTION_STREAMED != 0
    }
}

fn check_flags(flags: u32) -> Result<()> {
    if flags & !FLAG_SESSION_BOUND != 0 {
        return Err(Error::new(
            Code::UnknownFlags,
            format!("header flags 0x{flags:08x} has undefined bits"),
        ));
    }
    Ok(())
}

fn check_state_version(state_version: u32) -> Result<()> {
    if state_version == 0 {
        return Err(Error::new(Code::BadVersionWindow, "state_version is 0"));
    }
    Ok(())
}

fn check_min_version(state_version: u32, min_version: u32) -> Result<()> {
    if min_version == 0 || min_version > state_version {
        return Err(Error::new(
            Code::BadVersionWindow,
            format!("state_version {state_version} with min_version {min_version}"),
        ));
    }
    Ok(())
}

fn check_chunk_size(chunk_size: u32) -> Result<()> {
    if chunk_size > MAX_CHUNK_SIZE {
        return Err(Error::new(
            Code::ChunkTooLarge,
            format!("chunk_size {chunk_size} above the {MAX_CHUNK_SIZE}-byte cap"),
        ));
    }
    if chunk_size < MIN_CHUNK_SIZE || !chunk_size.is_power_of_two() {
        return Err(Error::new(
            Code::BadChunkSize,
            format!("chunk_size {chunk_size} is not a power of two in {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"),
        ));
    }
    Ok(())
}

fn check_nonce(flags: u32, nonce: &[u8; 32]) -> Result<()> {
    if flags & FLAG_SESSION_BOUND == 0 && *nonce != [0; 32] {
        return Err(Error::new(
            Code::UnboundNonce,
            "session nonce set on a stream that is not session-bound",
        ));
    }
    Ok(())
}

fn check_attr_count(n: usize) -> Result<()> {
    if n > usize::from(MAX_ATTRIBUTES) {
        return Err(Error::new(
            Code::TooManyAttributes,
            format!("{n} device attributes, more than {MAX_ATTRIBUTES}"),
        ));
    }
    Ok(())
}

fn check_section_count(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::new(Code::NoSections, "the section table is empty"));
    }
    if n > usize::from(MAX_SECTIONS) {
        return Err(Error::new(
            Code::TooManySections,
            format!("{n} sections, more than {MAX_SECTIONS}"),
        ));
    }
    Ok(())
}

/// A section name must not repeat an earlier entry's.
fn check_unique(earlier: &[SectionEntry], name: &str) -> Result<()> {
    if earlier.iter().any(|p| p.name == name) {
        return Err(Error::new(
            Code::DuplicateSection,
            format!("section {name} appears twice"),
        ));
    }
    Ok(())
}

/// The rules of one section entry after its version: defined flags, and the
/// running total of lengths (`total` is the sum before this entry; returns the
/// sum after it).
fn check_entry(name: &str, flags: u16, length: u64, total: u64) -> Result<u64> {
    if flags & !SECTION_FLAGS != 0 {
        return Err(Error::new(
            Code::UnknownFlags,
            format!("section {name} flags 0x{flags:04x} has undefined bits"),
        ));
    }
    total
        .checked_add(length)
        .filter(|t| *t <= MAX_TOTAL_LEN)
        .ok_or_else(|| {
            Error::new(
                Code::StreamTooLarge,
                format!("with section {name} ({length} bytes) the sections add up to more than {MAX_TOTAL_LEN} bytes"),
            )
        })
}

/// A decoded header (everything but the signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header flags.
    pub flags: u32,
    /// Version of the vendor state.
    pub state_version: u32,
    /// Oldest loader version that restores this state correctly.
    pub min_version: u32,
    /// Data bytes per chunk (the last chunk of a section may be shorter).
    pub chunk_size: u32,
    /// Which key signed the stream.
    pub key_id: KeyId,
    /// Destination-issued session nonce, or zeros.
    pub session_nonce: [u8; 32],
    /// Random per-stream id; makes every stream's digest unique.
    pub stream_id: [u8; 16],
    /// Vendor id.
    pub vendor: String,
    /// Device type.
    pub device_type: String,
    /// The source device's configuration attributes ("shell" devices: same type,
    /// different configuration), names in ascending order.
    pub attributes: std::collections::BTreeMap<String, String>,
    /// Sections in stream order.
    pub sections: Vec<SectionEntry>,
}

/// A header with its exact bytes and digest, as written or as read and verified.
#[derive(Debug, Clone)]
pub struct SignedHeader {
    /// The decoded fields.
    pub header: Header,
    /// Every header byte, signature included.
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`; chunk and trailer signatures bind it.
    pub digest: Digest32,
}

impl Header {
    /// True when the stream is bound to a session nonce.
    pub fn session_bound(&self) -> bool {
        self.flags & FLAG_SESSION_BOUND != 0
    }

    /// Sum of all section lengths, streamed sections counted at their bound
    /// (checked against the cap by [`Header::check`]).
    pub fn total_len(&self) -> Result<u64> {
        self.sections.iter().try_fold(0u64, |acc, s| {
            acc.checked_add(s.length)
                .filter(|t| *t <= MAX_TOTAL_LEN)
                .ok_or_else(|| {
                    Error::new(
                        Code::StreamTooLarge,
                        format!("sections add up to more than {MAX_TOTAL_LEN} bytes"),
                    )
                })
        })
    }

    /// Number of chunks the stream carries (at most, when a section is streamed).
    pub fn chunk_count(&self) -> Result<u64> {
        let cs = u64::from(self.chunk_size);
        if cs == 0 {
            return Err(Error::new(Code::BadChunkSize, "chunk_size is zero"));
        }
        self.sections.iter().try_fold(0u64, |acc, s| {
            acc.checked_add(s.length.div_ceil(cs))
                .ok_or_else(|| Error::new(Code::StreamTooLarge, "chunk count overflows"))
        })
    }

    /// Checks every rule a header must satisfy, in the order [`decode`] meets
    /// them; run before encoding, so a writer cannot produce what a reader refuses.
    pub fn check(&self) -> Result<()> {
        check_flags(self.flags)?;
        check_state_version(self.state_version)?;
        check_min_version(self.state_version, self.min_version)?;
        check_chunk_size(self.chunk_size)?;
        check_nonce(self.flags, &self.session_nonce)?;
        check_name("vendor", self.vendor.as_bytes(), MAX_VENDOR_LEN)?;
        check_name("device type", self.device_type.as_bytes(), MAX_TYPE_LEN)?;
        check_attr_count(self.attributes.len())?;
        for (k, v) in &self.attributes {
            check_name("attribute name", k.as_bytes(), MAX_ATTR_LEN)?;
            check_value(v.as_bytes())?;
        }
        check_section_count(self.sections.len())?;
        let mut total = 0u64;
        for (i, s) in self.sections.iter().enumerate() {
            check_name("section name", s.name.as_bytes(), MAX_SECTION_NAME_LEN)?;
            check_unique(self.sections.get(..i).unwrap_or(&[]), &s.name)?;
            total = check_entry(&s.name, s.flags, s.length, total)?;
        }
        Ok(())
    }

    /// Encodes and signs the header.
    pub fn sign(&self, key: &SigningKeyPair) -> Result<SignedHeader> {
        if key.id() != self.key_id {
            return Err(Error::new(
                Code::Internal,
                "header key_id is not the signing key's id",
            ));
        }
        self.check()?;
        let mut b = Vec::with_capacity(512);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // header_len, patched below
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.state_version.to_le_bytes());
        b.extend_from_slice(&self.min_version.to_le_bytes());
        b.extend_from_slice(&self.chunk_size.to_le_bytes());
        b.extend_from_slice(&self.key_id.0);
        b.extend_from_slice(&self.session_nonce);
        b.extend_from_slice(&self.stream_id);
        put_name(&mut b, &self.vendor)?;
        put_name(&mut b, &self.device_type)?;
        let n = u8::try_from(self.attributes.len())
            .map_err(|_| Error::new(Code::TooManyAttributes, "attributes"))?;
        b.push(n);
        for (k, v) in &self.attributes {
            put_name(&mut b, k)?;
            put_name(&mut b, v)?;
        }
        let count = u16::try_from(self.sections.len())
            .map_err(|_| Error::new(Code::TooManySections, "too many sections"))?;
        b.extend_from_slice(&count.to_le_bytes());
        for s in &self.sections {
            put_name(&mut b, &s.name)?;
            b.extend_from_slice(&s.version.to_le_bytes());
            b.extend_from_slice(&s.flags.to_le_bytes());
            b.extend_from_slice(&s.length.to_le_bytes());
        }
        let total = b
            .len()
            .checked_add(SIGNATURE_LEN)
            .and_then(|n| u32::try_from(n).ok());
        let total = total
            .filter(|n| *n <= MAX_HEADER_LEN)
            .ok_or_else(|| Error::new(Code::HeaderTooLarge, "header above the 8192-byte cap"))?;
        if let Some(slot) = b.get_mut(12..PREFIX_LEN) {
            slot.copy_from_slice(&total.to_le_bytes());
        }
        let sig = key.sign(&signed_message(&b));
        b.extend_from_slice(&sig);
        let digest = Sha256::digest(&b).into();
        Ok(SignedHeader {
            header: self.clone(),
            bytes: b,
            digest,
        })
    }
}

/// Checks an attribute value: 1..=32 bytes of `[a-z0-9._:+-]`.
pub(crate) fn check_value(v: &[u8]) -> Result<()> {
    if v.is_empty() {
        return Err(Error::new(Code::BadString, "attribute value is empty"));
    }
    if v.len() > usize::from(MAX_ATTR_LEN) {
        return Err(Error::new(
            Code::StringTooLong,
            format!("attribute value of {} bytes, more than {MAX_ATTR_LEN}", v.len()),
        ));
    }
    if let Some(b) = v.iter().find(|b| {
        !(b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b':' | b'+'))
    }) {
        return Err(Error::new(
            Code::BadString,
            format!("attribute value has byte 0x{b:02x} outside [a-z0-9._:+-]"),
        ));
    }
    Ok(())
}

fn put_name(b: &mut Vec<u8>, s: &str) -> Result<()> {
    let len =
        u8::try_from(s.len()).map_err(|_| Error::new(Code::StringTooLong, format!("{s:?} too long")))?;
    b.push(len);
    b.extend_from_slice(s.as_bytes());
    Ok(())
}

/// The message the header signature covers.
pub fn signed_message(unsigned_header: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER_CONTEXT.len().saturating_add(unsigned_header.len()));
    m.extend_from_slice(HEADER_CONTEXT);
    m.extend_from_slice(unsigned_header);
    m
}

/// Checks the 16-byte prefix and returns header_len.
pub fn decode_prefix(prefix: &[u8; PREFIX_LEN]) -> Result<u32> {
    let mut r = Reader::new(prefix);
    let magic = r.take_array::<8>("magic").map_err(short)?;
    if *magic != MAGIC {
        return Err(Error::new(Code::BadMagic, "not an mdevmig stream (bad magic)"));
    }
    let version = r.u16_le("format_version").map_err(short)?;
    if version != FORMAT_VERSION {
        return Err(Error::new(
            Code::UnsupportedFormat,
            format!("envelope format version {version}; this build reads {FORMAT_VERSION}"),
        ));
    }
    let reserved = r.u16_le("reserved").map_err(short)?;
    if reserved != 0 {
        return Err(Error::new(
            Code::ReservedNonzero,
            "reserved prefix field is not zero",
        ));
    }
    let len = r.u32_le("header_len").map_err(short)?;
    if len > MAX_HEADER_LEN {
        return Err(Error::new(
            Code::HeaderTooLarge,
            format!("header_len {len} above the {MAX_HEADER_LEN}-byte cap"),
        ));
    }
    let min = FIXED_LEN.saturating_add(SIGNATURE_LEN);
    if usize::try_from(len).map_or(true, |l| l < min) {
        return Err(Error::new(
            Code::HeaderLength,
            format!("header_len {len} below the {min}-byte minimum"),
        ));
    }
    Ok(len)
}

fn short(e: mdevmig_plugin_api::Short) -> Error {
    Error::new(Code::Truncated, e.to_string())
}

fn name(r: &mut Reader<'_>, what: &'static str, max: u8) -> Result<String> {
    let len = r.u8(what).map_err(|_| header_short(what))?;
    if len > max {
        return Err(Error::new(
            Code::StringTooLong,
            format!("{what} length {len} above {max}"),
        ));
    }
    let bytes = r.take(usize::from(len), what).map_err(|_| header_short(what))?;
    check_name(what, bytes, max)?;
    // check_name admits only ASCII, so this cannot fail.
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::new(Code::BadString, format!("{what} is not ASCII")))
}

/// Inside a header whose length is known, running out of bytes means header_len
/// is too small for the content.
fn header_short(what: &str) -> Error {
    Error::new(
        Code::HeaderLength,
        format!("header_len too small: header ends inside {what}"),
    )
}

/// Decodes a whole header (exactly header_len bytes, signature included). The
/// signature is *not* checked here; see [`SignedHeader::verify`].
///
/// Every rule is checked as soon as its field is read, so the first broken rule
/// in byte order is the one reported: the prefix ([`decode_prefix`]), header_len
/// against the header's size, then the body in byte order (the fixed fields,
/// vendor, device type, attributes, section table) and last the bytes left
/// before the signature.
pub fn decode(bytes: &[u8]) -> Result<(Header, [u8; SIGNATURE_LEN])> {
    let (mut body, sig) = split_header(bytes)?;
    let r = &mut body;
    let fixed = decode_fixed(r)?;
    let vendor = name(r, "vendor", MAX_VENDOR_LEN)?;
    let device_type = name(r, "device type", MAX_TYPE_LEN)?;
    let attributes = decode_attributes(r)?;
    let sections = decode_sections(r)?;
    check_consumed(r)?;
    let header = Header {
        flags: fixed.flags,
        state_version: fixed.state_version,
        min_version: fixed.min_version,
        chunk_size: fixed.chunk_size,
        key_id: fixed.key_id,
        session_nonce: fixed.session_nonce,
        stream_id: fixed.stream_id,
        vendor,
        device_type,
        attributes,
        sections,
    };
    Ok((header, sig))
}

/// Checks the prefix and that header_len is the size of `bytes`; returns a
/// reader over the body (between the prefix and the signature) and the
/// signature.
fn split_header(bytes: &[u8]) -> Result<(Reader<'_>, [u8; SIGNATURE_LEN])> {
    let mut r = Reader::new(bytes);
    let prefix = r.take_array::<PREFIX_LEN>("prefix").map_err(short)?;
    let header_len = decode_prefix(prefix)?;
    if usize::try_from(header_len).ok() != Some(bytes.len()) {
        return Err(Error::new(
            Code::HeaderLength,
            "header_len is not the header's size",
        ));
    }
    let body_len = bytes
        .len()
        .saturating_sub(PREFIX_LEN)
        .saturating_sub(SIGNATURE_LEN);
    let body = r
        .sub(body_len, "header body")
        .map_err(|_| header_short("header body"))?;
    let sig = *r.take_array::<SIGNATURE_LEN>("signature").map_err(short)?;
    Ok((body, sig))
}

/// The fixed-size body fields (offsets 16 to 112).
struct Fixed {
    flags: u32,
    state_version: u32,
    min_version: u32,
    chunk_size: u32,
    key_id: KeyId,
    session_nonce: [u8; 32],
    stream_id: [u8; 16],
}

/// Maps running out of header bytes inside `what` to [`header_short`].
fn hs(what: &'static str) -> impl Fn(mdevmig_plugin_api::Short) -> Error {
    move |_| header_short(what)
}

/// Reads flags through stream_id, checking each field's rule once it is read.
fn decode_fixed(r: &mut Reader<'_>) -> Result<Fixed> {
    let flags = r.u32_le("flags").map_err(hs("flags"))?;
    check_flags(flags)?;
    let state_version = r.u32_le("state_version").map_err(hs("state_version"))?;
    check_state_version(state_version)?;
    let min_version = r.u32_le("min_version").map_err(hs("min_version"))?;
    check_min_version(state_version, min_version)?;
    let chunk_size = r.u32_le("chunk_size").map_err(hs("chunk_size"))?;
    check_chunk_size(chunk_size)?;
    let key_id = KeyId(*r.take_array::<32>("key_id").map_err(hs("key_id"))?);
    let session_nonce = *r.take_array::<32>("session_nonce").map_err(hs("session_nonce"))?;
    check_nonce(flags, &session_nonce)?;
    let stream_id = *r.take_array::<16>("stream_id").map_err(hs("stream_id"))?;
    Ok(Fixed {
        flags,
        state_version,
        min_version,
        chunk_size,
        key_id,
        session_nonce,
        stream_id,
    })
}

/// Reads attr_count and the attributes: each name, its order against the
/// previous one, the value's length, then the value.
fn decode_attributes(r: &mut Reader<'_>) -> Result<std::collections::BTreeMap<String, String>> {
    let attr_count = r.u8("attr_count").map_err(hs("attr_count"))?;
    check_attr_count(usize::from(attr_count))?;
    let mut attributes = std::collections::BTreeMap::new();
    let mut last: Option<String> = None;
    for _ in 0..attr_count {
        let k = name(r, "attribute name", MAX_ATTR_LEN)?;
        if let Some(l) = last.as_ref().filter(|l| **l >= k) {
            return Err(Error::new(
                Code::AttributeOrder,
                format!("attribute {k} is not after {l}"),
            ));
        }
        let v = attribute_value(r)?;
        last = Some(k.clone());
        attributes.insert(k, v);
    }
    Ok(attributes)
}

/// Reads one attribute value: its length against the cap, then its bytes.
fn attribute_value(r: &mut Reader<'_>) -> Result<String> {
    let len = r.u8("attribute value").map_err(hs("attribute value"))?;
    if len > MAX_ATTR_LEN {
        return Err(Error::new(
            Code::StringTooLong,
            format!("attribute value length {len} above {MAX_ATTR_LEN}"),
        ));
    }
    let v = r
        .take(usize::from(len), "attribute value")
        .map_err(hs("attribute value"))?;
    check_value(v)?;
    String::from_utf8(v.to_vec()).map_err(|_| Error::new(Code::BadString, "attribute value is not ASCII"))
}

/// Reads section_count and the section table, checking each entry's name,
/// its uniqueness, its flags and the running total of lengths in that order.
fn decode_sections(r: &mut Reader<'_>) -> Result<Vec<SectionEntry>> {
    let count = r.u16_le("section_count").map_err(hs("section_count"))?;
    check_section_count(usize::from(count))?;
    // Bounded by MAX_SECTIONS above.
    let mut sections: Vec<SectionEntry> = Vec::with_capacity(usize::from(count));
    let mut total = 0u64;
    for _ in 0..count {
        let name = name(r, "section name", MAX_SECTION_NAME_LEN)?;
        check_unique(&sections, &name)?;
        let version = r.u16_le("section version").map_err(hs("section version"))?;
        let flags = r.u16_le("section flags").map_err(hs("section flags"))?;
        let length = r.u64_le("section length").map_err(hs("section length"))?;
        total = check_entry(&name, flags, length, total)?;
        sections.push(SectionEntry {
            name,
            version,
            flags,
            length,
        });
    }
    Ok(sections)
}

/// No byte may be left between the section table and the signature.
fn check_consumed(r: &Reader<'_>) -> Result<()> {
    if !r.is_empty() {
        return Err(Error::new(
            Code::HeaderLength,
            format!(
                "header_len leaves {} bytes after the section table",
                r.remaining()
            ),
        ));
    }
    Ok(())
}

impl SignedHeader {
    /// Decodes `bytes` and verifies its signature with `key`.
    pub fn verify(bytes: Vec<u8>, key: &ed25519_dalek::VerifyingKey) -> Result<Self> {
        let (header, sig) = decode(&bytes)?;
        let unsigned = bytes
            .get(..bytes.len().saturating_sub(SIGNATURE_LEN))
            .unwrap_or(&[]);
        if !crate::auth::verify(key, &signed_message(unsigned), &sig) {
            return Err(Error::new(
                Code::BadHeaderSignature,
                "the header signature does not verify",
            ));
        }
        let digest = Sha256::digest(&bytes).into();
        Ok(SignedHeader {
            header,
            bytes,
            digest,
        })
    }
}
