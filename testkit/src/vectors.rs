//! The test-vector generator for `spec/vectors/`.
//!
//! Deterministic: fixed key seeds, fixed stream ids, fixed data. Run
//! `cargo run --example gen_vectors` to rewrite the folder; `tests/vectors.rs`
//! regenerates in memory and fails if a committed file differs, then checks that
//! every committed vector produces exactly its recorded outcome.
//!
//! The keys here are for tests only: their seeds are public.

use mdevmig::auth::SigningKeyPair;
use mdevmig::codec::header::{Header, SectionEntry};
use mdevmig::codec::record::{ChunkRecord, SectionEnd};
use mdevmig::codec::StreamWriter;
use mdevmig::codec::{FLAG_SESSION_BOUND, SECTION_REQUIRED, SECTION_STREAMED};
use sha2::{Digest, Sha256};

/// Seed of the trusted test signer (`keys/test-signer.key`).
pub const SIGNER_SEED: [u8; 32] = [0x5e; 32];
/// Seed of a key the test trust store does not hold (`keys/untrusted.key`).
pub const UNTRUSTED_SEED: [u8; 32] = [0xa7; 32];
/// The session nonce the bound vectors carry.
pub const SESSION: [u8; 32] = [0x11; 32];
/// Another destination's nonce.
pub const OTHER_SESSION: [u8; 32] = [0x22; 32];

pub struct Vector {
    pub name: String,
    pub bytes: Vec<u8>,
    /// `ok` or the exact error code.
    pub expect: String,
    /// Session nonce the verifier requires, if any (hex).
    pub session: Option<[u8; 32]>,
    pub description: String,
}

pub fn signer() -> SigningKeyPair {
    SigningKeyPair::from_seed(&SIGNER_SEED)
}

pub fn untrusted() -> SigningKeyPair {
    SigningKeyPair::from_seed(&UNTRUSTED_SEED)
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + 7) as u8) ^ salt).collect()
}

fn header(
    key: &SigningKeyPair,
    vendor: &str,
    ty: &str,
    sections: Vec<SectionEntry>,
    stream_id: u8,
) -> Header {
    Header {
        flags: 0,
        state_version: 1,
        min_version: 1,
        chunk_size: 4096,
        key_id: key.id(),
        session_nonce: [0; 32],
        stream_id: [stream_id; 16],
        vendor: vendor.into(),
        device_type: ty.into(),
        attributes: Default::default(),
        sections,
    }
}

fn sec(name: &str, version: u16, required: bool, length: u64) -> SectionEntry {
    SectionEntry {
        name: name.into(),
        version,
        flags: if required { SECTION_REQUIRED } else { 0 },
        length,
    }
}

/// Writes a stream: `data[i]` is section i's content.
pub fn build(h: &Header, key: &SigningKeyPair, data: &[Vec<u8>]) -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new(), h, key).unwrap();
    for d in data {
        w.write_data(d).unwrap();
    }
    w.finish().unwrap()
}

/// The single-section stream: a 96-byte mtty-2-sized state.
pub fn single() -> (Header, Vec<Vec<u8>>) {
    let k = signer();
    let mut h = header(&k, "mtty", "mtty-2", vec![sec("mtty.state", 1, true, 96)], 1);
    h.attributes.insert("ports".into(), "2".into());
    (h, vec![pattern(96, 0)])
}

/// The multi-section stream: 2 + 0 + 3 chunks, one optional section.
pub fn multi() -> (Header, Vec<Vec<u8>>) {
    let k = signer();
    let mut h = header(
        &k,
        "simgpu",
        "vgpu-64m",
        vec![
            sec("simgpu.regs", 1, true, 5000),
            sec("simgpu.telemetry", 1, false, 0),
            sec("simgpu.fb", 2, true, 10000),
        ],
        2,
    );
    h.state_version = 2;
    h.min_version = 1;
    (h, vec![pattern(5000, 1), vec![], pattern(10000, 2)])
}

/// A streamed section (its header `length` is the bound).
fn streamed_sec(name: &str, bound: u64) -> SectionEntry {
    SectionEntry {
        name: name.into(),
        version: 1,
        flags: SECTION_REQUIRED | SECTION_STREAMED,
        length: bound,
    }
}

/// Writes a stream whose sections may be streamed: `data[i]` is section i's
/// content; streamed sections are ended after their data.
pub fn build_streamed(h: &Header, key: &SigningKeyPair, data: &[Vec<u8>]) -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new(), h, key).unwrap();
    for (d, s) in data.iter().zip(&h.sections) {
        w.write_data(d).unwrap();
        if s.streamed() {
            assert_eq!(w.end_section().unwrap(), d.len() as u64);
        }
    }
    w.finish().unwrap()
}

/// The streamed stream: a streamed section (bound 16384) carrying 9000 bytes in
/// chunks of 4096, 4096 and 808 and its end record, then an exact 50-byte section.
pub fn streamed() -> (Header, Vec<Vec<u8>>) {
    let k = signer();
    let h = header(
        &k,
        "xe",
        "xe-vf-64m",
        vec![streamed_sec("xe.packets", 16384), sec("xe.extra", 1, true, 50)],
        4,
    );
    (h, vec![pattern(9000, 4), pattern(50, 5)])
}

/// Every record of a stream: (kind, start, end), the header excluded.
pub fn records(bytes: &[u8]) -> Vec<(u8, usize, usize)> {
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let mut pos = header_len;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let kind = bytes[pos];
        let len = if kind == 1 {
            u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize
        } else {
            0
        };
        out.push((kind, pos, pos + 88 + len));
        pos += 88 + len;
    }
    out
}

/// A chunk record signed by `key` for the stream whose header is `header_bytes`.
pub fn signed_chunk(key: &SigningKeyPair, header_bytes: &[u8], rec: ChunkRecord, data: &[u8]) -> Vec<u8> {
    let h: [u8; 32] = Sha256::digest(header_bytes).into();
    let d: [u8; 32] = Sha256::digest(data).into();
    let mut b = rec.fields().to_vec();
    b.extend_from_slice(&key.sign(&rec.signed_message(&h, &d)));
    b.extend_from_slice(data);
    b
}

/// A section end record signed by `key` for the stream whose header is `header_bytes`.
pub fn signed_end(key: &SigningKeyPair, header_bytes: &[u8], end: SectionEnd) -> Vec<u8> {
    let h: [u8; 32] = Sha256::digest(header_bytes).into();
    let mut b = end.fields().to_vec();
    b.extend_from_slice(&key.sign(&end.signed_message(&h)));
    b
}

/// A trailer signed by `key` for the stream whose header is `header_bytes`.
pub fn signed_trailer(key: &SigningKeyPair, header_bytes: &[u8], t: mdevmig::codec::Trailer) -> Vec<u8> {
    let h: [u8; 32] = Sha256::digest(header_bytes).into();
    let mut b = t.fields().to_vec();
    b.extend_from_slice(&key.sign(&t.signed_message(&h)));
    b
}

/// Offsets of every record in a stream built from `h`: (start, end) of each
/// chunk in order, then the trailer's start.
pub fn record_bounds(bytes: &[u8]) -> (usize, Vec<(usize, usize)>, usize) {
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let mut pos = header_len;
    let mut chunks = Vec::new();
    loop {
        if bytes[pos] == 2 {
            return (header_len, chunks, pos);
        }
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        chunks.push((pos, pos + 88 + len));
        pos += 88 + len;
    }
}

/// Re-signs a patched header in place (so the patch, not the signature, is
/// what the reader meets). `bytes` is a whole stream; the header signature is
/// recomputed over the patched header.
fn resign_header(bytes: &mut [u8], key: &SigningKeyPair) {
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let unsigned_end = header_len - 64;
    let msg = mdevmig::codec::header::signed_message(&bytes[..unsigned_end]);
    let sig = key.sign(&msg);
    bytes[unsigned_end..header_len].copy_from_slice(&sig);
}

/// Builds a raw header with arbitrary (possibly illegal) fields, signed.
fn raw_header(key: &SigningKeyPair, patch: impl FnOnce(&mut RawHeader)) -> Vec<u8> {
    let mut h = RawHeader {
        header_len: None,
        flags: 0,
        state_version: 1,
        min_version: 1,
        chunk_size: 4096,
        vendor: b"mtty".to_vec(),
        ty: b"mtty-2".to_vec(),
        sections: vec![(b"mtty.state".to_vec(), 1, SECTION_REQUIRED, 96)],
        count: None,
        attrs: vec![(b"ports".to_vec(), b"2".to_vec())],
    };
    patch(&mut h);
    let mut b = Vec::new();
    b.extend_from_slice(&mdevmig::codec::MAGIC);
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&h.flags.to_le_bytes());
    b.extend_from_slice(&h.state_version.to_le_bytes());
    b.extend_from_slice(&h.min_version.to_le_bytes());
    b.extend_from_slice(&h.chunk_size.to_le_bytes());
    b.extend_from_slice(&key.id().0);
    b.extend_from_slice(&[0; 32]);
    b.extend_from_slice(&[9; 16]);
    b.push(h.vendor.len() as u8);
    b.extend_from_slice(&h.vendor);
    b.push(h.ty.len() as u8);
    b.extend_from_slice(&h.ty);
    b.push(h.attrs.len() as u8);
    for (k, v) in &h.attrs {
        b.push(k.len() as u8);
        b.extend_from_slice(k);
        b.push(v.len() as u8);
        b.extend_from_slice(v);
    }
    b.extend_from_slice(&h.count.unwrap_or(h.sections.len() as u16).to_le_bytes());
    for (name, v, f, len) in &h.sections {
        b.push(name.len() as u8);
        b.extend_from_slice(name);
        b.extend_from_slice(&v.to_le_bytes());
        b.extend_from_slice(&f.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
    }
    let len = h.header_len.unwrap_or((b.len() + 64) as u32);
    b[12..16].copy_from_slice(&len.to_le_bytes());
    let msg = mdevmig::codec::header::signed_message(&b);
    b.extend_from_slice(&key.sign(&msg));
    b
}

struct RawHeader {
    header_len: Option<u32>,
    flags: u32,
    state_version: u32,
    min_version: u32,
    chunk_size: u32,
    vendor: Vec<u8>,
    ty: Vec<u8>,
    sections: Vec<(Vec<u8>, u16, u16, u64)>,
    count: Option<u16>,
    attrs: Vec<(Vec<u8>, Vec<u8>)>,
}

pub fn all() -> Vec<Vector> {
    let k = signer();
    let mut v = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, expect: &str, session: Option<[u8; 32]>, description: &str| {
        v.push(Vector {
            name: name.into(),
            bytes,
            expect: expect.into(),
            session,
            description: description.into(),
        })
    };

    let (sh, sd) = single();
    let single_bytes = build(&sh, &k, &sd);
    let (mh, md) = multi();
    let multi_bytes = build(&mh, &k, &md);
    let (m_hlen, m_chunks, m_trailer) = record_bounds(&multi_bytes);
    let (s_hlen, s_chunks, s_trailer) = record_bounds(&single_bytes);

    add(
        "valid-single-section",
        single_bytes.clone(),
        "ok",
        None,
        "one 96-byte required section in one chunk",
    );
    add(
        "valid-multi-section",
        multi_bytes.clone(),
        "ok",
        None,
        "three sections (5000, 0 and 10000 bytes), 5 chunks of at most 4096 bytes, one optional section",
    );
    let mut bh = sh.clone();
    bh.flags = FLAG_SESSION_BOUND;
    bh.session_nonce = SESSION;
    let bound = build(&bh, &k, &sd);
    add(
        "valid-session-bound",
        bound.clone(),
        "ok",
        Some(SESSION),
        "bound to session nonce 11..11 and verified by the destination that issued it",
    );
    add(
        "session-replayed",
        bound.clone(),
        "auth.session_mismatch",
        Some(OTHER_SESSION),
        "the bound stream replayed to a destination that issued nonce 22..22",
    );
    add(
        "session-unbound",
        single_bytes.clone(),
        "auth.unbound_stream",
        Some(SESSION),
        "an unbound stream offered where a session-bound one is required",
    );

    // One flipped byte in each part.
    let flip = |b: &[u8], at: usize, mask: u8| {
        let mut b = b.to_vec();
        b[at] ^= mask;
        b
    };
    add(
        "flip-magic",
        flip(&single_bytes, 1, 0x01),
        "format.bad_magic",
        None,
        "magic byte 1 flipped",
    );
    add(
        "flip-header-state-version",
        flip(&single_bytes, 20, 0x02),
        "auth.bad_header_signature",
        None,
        "state_version changed from 1 to 3 without re-signing",
    );
    add(
        "flip-header-key-id",
        flip(&single_bytes, 40, 0x01),
        "auth.untrusted_key",
        None,
        "a key_id byte flipped: no trusted key has that id",
    );
    // Section table: the length field of the first section (after 1+4 vendor, 1+6 type, 2 count, 1+10 name, 2, 2).
    let sec_len_at = 112 + 5 + 7 + 9 + 2 + 11 + 4;
    add(
        "flip-section-length",
        flip(&single_bytes, sec_len_at, 0x01),
        "auth.bad_header_signature",
        None,
        "the section table's length field changed (96 to 97) without re-signing",
    );
    add(
        "flip-section-name",
        flip(&single_bytes, 112 + 5 + 7 + 2 + 1, 0x20),
        "format.bad_string",
        None,
        "a section name letter turned upper-case (outside [a-z0-9._-])",
    );
    add(
        "flip-chunk-data",
        flip(&single_bytes, s_chunks[0].0 + 88 + 10, 0x80),
        "auth.bad_chunk_signature",
        None,
        "one bit of chunk data flipped",
    );
    add(
        "flip-chunk-seq",
        flip(&multi_bytes, m_chunks[1].0 + 8, 0x04),
        "auth.bad_chunk_signature",
        None,
        "a chunk's signed sequence number changed",
    );
    add(
        "flip-trailer-count",
        flip(&single_bytes, s_trailer + 8, 0x01),
        "auth.bad_trailer_signature",
        None,
        "the trailer's chunk_count changed without re-signing",
    );
    add(
        "flip-trailer-kind",
        flip(&single_bytes, s_trailer, 0x04),
        "format.bad_record_kind",
        None,
        "the trailer's kind byte changed to 6",
    );
    add(
        "flip-trailer-reserved",
        flip(&single_bytes, s_trailer + 3, 0x01),
        "format.reserved_nonzero",
        None,
        "a trailer reserved byte set",
    );

    // Chunk order.
    let cut = |b: &[u8], r: (usize, usize)| b[r.0..r.1].to_vec();
    let mut reordered = multi_bytes[..m_hlen].to_vec();
    reordered.extend(cut(&multi_bytes, m_chunks[1]));
    reordered.extend(cut(&multi_bytes, m_chunks[0]));
    reordered.extend_from_slice(&multi_bytes[m_chunks[2].0..]);
    add(
        "chunk-reordered",
        reordered,
        "format.chunk_reordered",
        None,
        "chunks 0 and 1 swapped",
    );
    let mut dup = multi_bytes[..m_chunks[1].0].to_vec();
    dup.extend(cut(&multi_bytes, m_chunks[0]));
    dup.extend_from_slice(&multi_bytes[m_chunks[1].0..]);
    add(
        "chunk-duplicated",
        dup,
        "format.chunk_duplicated",
        None,
        "chunk 0 sent again after itself",
    );
    let mut dropped = multi_bytes[..m_chunks[2].0].to_vec();
    dropped.extend_from_slice(&multi_bytes[m_chunks[3].0..]);
    add(
        "chunk-dropped",
        dropped,
        "format.chunk_dropped",
        None,
        "chunk 2 left out",
    );
    let mut dropped_last = multi_bytes[..m_chunks[4].0].to_vec();
    dropped_last.extend_from_slice(&multi_bytes[m_trailer..]);
    add(
        "chunk-dropped-last",
        dropped_last,
        "format.chunk_dropped",
        None,
        "the last chunk left out; the trailer comes early",
    );
    // Splice: the same content in another stream (another stream id) has other signatures.
    let mut other = mh.clone();
    other.stream_id = [3; 16];
    let other_bytes = build(&other, &k, &md);
    let (_, o_chunks, _) = record_bounds(&other_bytes);
    let mut spliced = multi_bytes[..m_chunks[1].0].to_vec();
    spliced.extend(cut(&other_bytes, o_chunks[1]));
    spliced.extend_from_slice(&multi_bytes[m_chunks[2].0..]);
    add(
        "chunk-spliced",
        spliced,
        "auth.bad_chunk_signature",
        None,
        "chunk 1 taken from another stream with the same content and key",
    );

    // Keys.
    let u = untrusted();
    let mut uh = sh.clone();
    uh.key_id = u.id();
    add(
        "untrusted-key",
        build(&uh, &u, &sd),
        "auth.untrusted_key",
        None,
        "a well-formed stream signed by a key outside the trust store",
    );

    // Trailing garbage.
    let mut garbage = single_bytes.clone();
    garbage.extend_from_slice(b"extra");
    add(
        "trailing-garbage",
        garbage,
        "format.trailing_data",
        None,
        "five bytes after the trailer",
    );
    add(
        "truncated-before-trailer",
        single_bytes[..s_trailer].to_vec(),
        "format.truncated",
        None,
        "the stream cut right after its last chunk",
    );
    add(
        "truncated-in-header",
        single_bytes[..s_hlen - 1].to_vec(),
        "format.truncated",
        None,
        "the stream cut one byte before the end of the header",
    );
    add("empty", Vec::new(), "format.truncated", None, "zero bytes");

    // Lengths inflated past their limits.
    let mut big_hlen = single_bytes.clone();
    big_hlen[12..16].copy_from_slice(&8193u32.to_le_bytes());
    add(
        "limit-header-len",
        big_hlen,
        "limit.header_too_large",
        None,
        "header_len 8193, above the 8192 cap",
    );
    add(
        "limit-vendor-len",
        raw_header(&k, |h| h.vendor = vec![b'a'; 33]),
        "limit.string_too_long",
        None,
        "vendor of 33 bytes, above 32",
    );
    add(
        "limit-type-len",
        raw_header(&k, |h| h.ty = vec![b'a'; 65]),
        "limit.string_too_long",
        None,
        "device type of 65 bytes, above 64",
    );
    add(
        "limit-section-name-len",
        raw_header(&k, |h| h.sections[0].0 = vec![b'a'; 33]),
        "limit.string_too_long",
        None,
        "section name of 33 bytes, above 32",
    );
    add(
        "limit-section-count",
        raw_header(&k, |h| {
            h.sections = (0..65).map(|i| (format!("s{i}").into_bytes(), 1, 0, 1)).collect()
        }),
        "limit.too_many_sections",
        None,
        "65 sections, above 64",
    );
    add(
        "limit-chunk-size",
        raw_header(&k, |h| h.chunk_size = 32 << 20),
        "limit.chunk_too_large",
        None,
        "chunk_size 32 MiB, above 16 MiB",
    );
    add(
        "limit-section-length",
        raw_header(&k, |h| h.sections[0].3 = (1 << 40) + 1),
        "limit.stream_too_large",
        None,
        "one section of 1 TiB + 1 byte",
    );
    add(
        "limit-total-length",
        raw_header(&k, |h| {
            h.sections = vec![
                (b"a".to_vec(), 1, 0, 1 << 39),
                (b"b".to_vec(), 1, 0, 1 << 39),
                (b"c".to_vec(), 1, 0, 1),
            ]
        }),
        "limit.stream_too_large",
        None,
        "three sections adding up to 1 TiB + 1 byte",
    );
    let mut big_chunk = single_bytes.clone();
    big_chunk[s_chunks[0].0 + 4..s_chunks[0].0 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    add(
        "limit-chunk-len",
        big_chunk,
        "limit.chunk_too_large",
        None,
        "a chunk's data_len set to 2^32-1",
    );
    let mut long_chunk = single_bytes.clone();
    long_chunk[s_chunks[0].0 + 4..s_chunks[0].0 + 8].copy_from_slice(&4097u32.to_le_bytes());
    add(
        "chunk-len-above-chunk-size",
        long_chunk,
        "format.bad_chunk_length",
        None,
        "a chunk's data_len 4097, above the stream's chunk_size 4096",
    );

    // Well-signed but illegal headers: canonical-encoding rules.
    add(
        "bad-version-window",
        raw_header(&k, |h| h.min_version = 2),
        "format.bad_version_window",
        None,
        "min_version 2 above state_version 1",
    );
    add(
        "zero-state-version",
        raw_header(&k, |h| {
            h.state_version = 0;
            h.min_version = 0;
        }),
        "format.bad_version_window",
        None,
        "state_version 0",
    );
    add(
        "unknown-header-flag",
        raw_header(&k, |h| h.flags = 1 << 5),
        "format.unknown_flags",
        None,
        "header flag bit 5 set",
    );
    add(
        "unknown-section-flag",
        raw_header(&k, |h| h.sections[0].2 = 0x8001),
        "format.unknown_flags",
        None,
        "section flag bit 15 set",
    );
    add(
        "duplicate-section",
        raw_header(&k, |h| h.sections.push(h.sections[0].clone())),
        "format.duplicate_section",
        None,
        "the same section name twice",
    );
    add(
        "no-sections",
        raw_header(&k, |h| h.sections.clear()),
        "format.no_sections",
        None,
        "an empty section table",
    );
    add(
        "chunk-size-not-pow2",
        raw_header(&k, |h| h.chunk_size = 5000),
        "format.bad_chunk_size",
        None,
        "chunk_size 5000",
    );
    add(
        "chunk-size-too-small",
        raw_header(&k, |h| h.chunk_size = 1024),
        "format.bad_chunk_size",
        None,
        "chunk_size 1024, below 4096",
    );
    add(
        "header-len-short",
        raw_header(&k, |h| h.header_len = Some(200)),
        "format.header_length",
        None,
        "header_len smaller than the content",
    );
    add(
        "limit-attribute-count",
        raw_header(&k, |h| {
            h.attrs = (0..17)
                .map(|i| (format!("a{i:02}").into_bytes(), b"1".to_vec()))
                .collect()
        }),
        "limit.too_many_attributes",
        None,
        "17 device attributes, above 16",
    );
    add(
        "limit-attribute-value",
        raw_header(&k, |h| h.attrs[0].1 = vec![b'1'; 33]),
        "limit.string_too_long",
        None,
        "an attribute value of 33 bytes, above 32",
    );
    add(
        "attributes-unsorted",
        raw_header(&k, |h| {
            h.attrs = vec![
                (b"ports".to_vec(), b"2".to_vec()),
                (b"heads".to_vec(), b"1".to_vec()),
            ]
        }),
        "format.attribute_order",
        None,
        "attributes ports then heads: not in ascending order",
    );
    add(
        "attributes-duplicate",
        raw_header(&k, |h| {
            h.attrs = vec![
                (b"ports".to_vec(), b"2".to_vec()),
                (b"ports".to_vec(), b"2".to_vec()),
            ]
        }),
        "format.attribute_order",
        None,
        "the same attribute twice",
    );
    add(
        "attribute-value-upper-case",
        raw_header(&k, |h| h.attrs[0].1 = b"X".to_vec()),
        "format.bad_string",
        None,
        "an attribute value with an upper-case letter",
    );
    add(
        "upper-case-vendor",
        raw_header(&k, |h| h.vendor = b"MTTY".to_vec()),
        "format.bad_string",
        None,
        "vendor MTTY (upper case is not allowed)",
    );
    add(
        "empty-vendor",
        raw_header(&k, |h| h.vendor.clear()),
        "format.bad_string",
        None,
        "an empty vendor",
    );
    let mut v2 = single_bytes.clone();
    v2[8] = 2;
    add(
        "format-version-2",
        v2,
        "format.unsupported_version",
        None,
        "envelope format version 2",
    );
    let mut rsv = single_bytes.clone();
    rsv[10] = 1;
    add(
        "prefix-reserved",
        rsv,
        "format.reserved_nonzero",
        None,
        "the prefix's reserved field set",
    );
    let mut nonce = single_bytes.clone();
    nonce[64] = 1;
    resign_header(&mut nonce, &k);
    add(
        "nonce-on-unbound",
        nonce,
        "format.unbound_nonce",
        None,
        "a session nonce on a stream whose SESSION_BOUND flag is clear",
    );
    let mut kind = single_bytes.clone();
    kind[s_chunks[0].0] = 7;
    add(
        "bad-record-kind",
        kind,
        "format.bad_record_kind",
        None,
        "a record of kind 7",
    );
    streamed_vectors(&mut add);
    multi_fault_vectors(&mut add, &single_bytes, &multi_bytes);
    v
}

type Add<'a> = dyn FnMut(&str, Vec<u8>, &str, Option<[u8; 32]>, &str) + 'a;

/// Streamed sections: a bound in the header, the final length in a signed end record.
fn streamed_vectors(add: &mut Add<'_>) {
    let k = signer();
    let (h, d) = streamed();
    let bytes = build_streamed(&h, &k, &d);
    let hlen = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let hb = bytes[..hlen].to_vec();
    // records: chunk 0, 1, 2 (808 bytes), end, chunk 3 (xe.extra), trailer
    let r = records(&bytes);
    assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 1, 1, 3, 1, 2]);
    let part = |i: usize| bytes[r[i].1..r[i].2].to_vec();
    let join = |idx: &[usize]| {
        let mut b = hb.clone();
        for &i in idx {
            b.extend(part(i));
        }
        b
    };
    add(
        "valid-streamed",
        bytes.clone(),
        "ok",
        None,
        "a streamed section (bound 16384) of 9000 bytes in chunks of 4096, 4096 and 808 and its end record, then an exact 50-byte section",
    );
    let mut eh = h.clone();
    eh.stream_id = [5; 16];
    eh.sections = vec![
        streamed_sec("a", 8192),
        streamed_sec("b", 100),
        sec("c", 1, false, 0),
        streamed_sec("d", 5000),
    ];
    add(
        "valid-streamed-edges",
        build_streamed(&eh, &k, &[pattern(8192, 6), vec![], vec![], pattern(4096, 7)]),
        "ok",
        None,
        "streamed sections ending exactly at their bound (8192), empty (an end record alone), and at a whole chunk below the bound (4096 of 5000), around an empty exact section",
    );
    // The final length above the bound: a third full chunk where the bound leaves 904 bytes.
    let mut oh = h.clone();
    oh.sections[0].length = 9000;
    oh.stream_id = [6; 16];
    let over = build_streamed(&oh, &k, &[pattern(9000, 4), pattern(50, 5)]);
    let ohl = u32::from_le_bytes(over[12..16].try_into().unwrap()) as usize;
    let mut over_bound = over[..ohl].to_vec();
    let or = records(&over);
    over_bound.extend_from_slice(&over[or[0].1..or[1].2]);
    over_bound.extend(signed_chunk(
        &k,
        &over[..ohl],
        ChunkRecord {
            section_index: 0,
            data_len: 4096,
            seq: 2,
            offset: 8192,
        },
        &pattern(4096, 8),
    ));
    add(
        "streamed-over-bound",
        over_bound,
        "limit.section_over_bound",
        None,
        "a signed third chunk of 4096 bytes where the section's bound of 9000 leaves 808",
    );
    let mut len_mismatch = join(&[0, 1, 2]);
    len_mismatch.extend(signed_end(
        &k,
        &hb,
        SectionEnd {
            section_index: 0,
            seq: 3,
            length: 9001,
        },
    ));
    len_mismatch.extend(part(4));
    len_mismatch.extend(part(5));
    add(
        "streamed-length-mismatch",
        len_mismatch,
        "format.section_length_mismatch",
        None,
        "a signed end record stating 9001 bytes after chunks that carried 9000",
    );
    let mut truncated = join(&[0]);
    truncated.extend_from_slice(&part(1)[..1000]);
    add(
        "streamed-truncated",
        truncated,
        "format.truncated",
        None,
        "the stream cut inside the streamed section's second chunk",
    );
    add(
        "streamed-missing-trailer",
        join(&[0, 1, 2, 3, 4]),
        "format.truncated",
        None,
        "the stream cut after its last chunk: no trailer",
    );
    add(
        "streamed-end-dropped",
        join(&[0, 1, 2, 4, 5]),
        "format.chunk_mismatch",
        None,
        "the streamed section's end record left out: the next section's chunk arrives while it is open",
    );
    add(
        "streamed-reordered",
        join(&[1, 0, 2, 3, 4, 5]),
        "format.chunk_reordered",
        None,
        "the streamed section's chunks 0 and 1 swapped",
    );
    add(
        "streamed-chunk-dropped",
        join(&[0, 2, 3, 4, 5]),
        "format.chunk_dropped",
        None,
        "the streamed section's chunk 1 left out",
    );
    add(
        "streamed-last-chunk-dropped",
        join(&[0, 1, 3, 4, 5]),
        "format.chunk_dropped",
        None,
        "the streamed section's short last chunk left out: its end record says a chunk is missing",
    );
    let mut other = h.clone();
    other.stream_id = [7; 16];
    let ob = build_streamed(&other, &k, &d);
    let orr = records(&ob);
    let mut spliced = join(&[0]);
    spliced.extend_from_slice(&ob[orr[1].1..orr[1].2]);
    spliced.extend(join(&[2, 3, 4, 5]).split_off(hlen));
    add(
        "streamed-spliced",
        spliced,
        "auth.bad_chunk_signature",
        None,
        "the streamed section's chunk 1 taken from another stream with the same content and key",
    );
    let mut end_spliced = join(&[0, 1, 2]);
    end_spliced.extend_from_slice(&ob[orr[3].1..orr[3].2]);
    end_spliced.extend(join(&[4, 5]).split_off(hlen));
    add(
        "streamed-end-spliced",
        end_spliced,
        "auth.bad_end_signature",
        None,
        "the end record taken from another stream with the same content and key",
    );
    let mut after_short = join(&[0, 1, 2]);
    after_short.extend(signed_chunk(
        &k,
        &hb,
        ChunkRecord {
            section_index: 0,
            data_len: 100,
            seq: 3,
            offset: 9000,
        },
        &pattern(100, 9),
    ));
    add(
        "streamed-chunk-after-short",
        after_short,
        "format.bad_chunk_length",
        None,
        "a signed chunk after the streamed section's short chunk, where its end record was due",
    );
    let mut end_reserved = join(&[0, 1, 2, 3, 4, 5]);
    end_reserved[r[3].1 + 5] = 1;
    add(
        "streamed-end-reserved",
        end_reserved,
        "format.reserved_nonzero",
        None,
        "a reserved byte of the end record set",
    );
    let mut end_in_exact = join(&[0, 1, 2, 3]);
    end_in_exact.extend(signed_end(
        &k,
        &hb,
        SectionEnd {
            section_index: 1,
            seq: 3,
            length: 50,
        },
    ));
    end_in_exact.extend(join(&[4, 5]).split_off(hlen));
    add(
        "streamed-end-in-exact-section",
        end_in_exact,
        "format.chunk_mismatch",
        None,
        "a signed end record for the exact-length section where its chunk is due",
    );
    let mut zh = h.clone();
    zh.stream_id = [8; 16];
    zh.sections = vec![streamed_sec("z", 0), sec("c", 1, true, 10)];
    let zero = build_streamed(&zh, &k, &[vec![], pattern(10, 10)]);
    add(
        "valid-streamed-bound-zero",
        zero.clone(),
        "ok",
        None,
        "a streamed section of bound 0 (its end record alone), then an exact 10-byte section",
    );
    let zl = u32::from_le_bytes(zero[12..16].try_into().unwrap()) as usize;
    let mut zero_data = zero[..zl].to_vec();
    zero_data.extend(signed_chunk(
        &k,
        &zero[..zl],
        ChunkRecord {
            section_index: 0,
            data_len: 1,
            seq: 0,
            offset: 0,
        },
        &[1],
    ));
    add(
        "streamed-bound-zero-with-data",
        zero_data,
        "limit.section_over_bound",
        None,
        "a signed one-byte chunk in a streamed section of bound 0",
    );
    let mut end_at_trailer = join(&[0, 1, 2, 3, 4]);
    end_at_trailer.extend(signed_end(
        &k,
        &hb,
        SectionEnd {
            section_index: 1,
            seq: 4,
            length: 50,
        },
    ));
    end_at_trailer.extend(part(5));
    add(
        "streamed-end-where-trailer-due",
        end_at_trailer,
        "format.chunk_mismatch",
        None,
        "a signed end record for the exact section where the trailer is due",
    );
    let mut dup_at_trailer = join(&[0, 1, 2, 3, 4, 4]);
    dup_at_trailer.extend(part(5));
    add(
        "chunk-duplicated-where-trailer-due",
        dup_at_trailer,
        "format.chunk_duplicated",
        None,
        "the last chunk sent again where the trailer is due",
    );
    let mut wrong_offset = join(&[0]);
    wrong_offset.extend(signed_chunk(
        &k,
        &hb,
        ChunkRecord {
            section_index: 0,
            data_len: 4096,
            seq: 1,
            offset: 4095,
        },
        &pattern(4096, 11),
    ));
    add(
        "chunk-wrong-offset",
        wrong_offset,
        "format.chunk_mismatch",
        None,
        "a signed chunk with the right seq and section but offset 4095 instead of 4096",
    );
    // Non-canonical S: the same signature with S + L (the group order) verifies
    // under a lax check but must be refused.
    let add_l = |sig: &mut [u8]| {
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (b, l) in sig[32..64].iter_mut().zip(L) {
            let t = *b as u16 + l as u16 + carry;
            *b = t as u8;
            carry = t >> 8;
        }
    };
    let mut s_header = bytes.clone();
    add_l(&mut s_header[hlen - 64..hlen]);
    add(
        "signature-s-not-reduced-header",
        s_header,
        "auth.bad_header_signature",
        None,
        "the header signature's S replaced by S + L: the same point equation, a non-canonical encoding",
    );
    let mut s_chunk = bytes.clone();
    add_l(&mut s_chunk[r[0].1 + 24..r[0].1 + 88]);
    add(
        "signature-s-not-reduced-chunk",
        s_chunk,
        "auth.bad_chunk_signature",
        None,
        "chunk 0's signature S replaced by S + L",
    );
    let mut tail_mismatch = join(&[0, 1, 2, 3, 4]);
    tail_mismatch.extend(signed_trailer(
        &k,
        &hb,
        mdevmig::codec::Trailer {
            chunk_count: 4,
            total_len: 16384 + 50,
        },
    ));
    add(
        "streamed-trailer-at-bound",
        tail_mismatch,
        "format.trailer_mismatch",
        None,
        "a signed trailer whose total counts the streamed section at its bound, not its final length",
    );
}

/// Streams that break two rules at once: the code reported pins the order the
/// spec gives.
fn multi_fault_vectors(add: &mut Add<'_>, single_bytes: &[u8], multi_bytes: &[u8]) {
    let k = signer();
    add(
        "two-faults-flags-then-vendor",
        raw_header(&k, |h| {
            h.flags = 1 << 5;
            h.vendor = b"MTTY".to_vec();
        }),
        "format.unknown_flags",
        None,
        "an undefined header flag (offset 16) and an upper-case vendor: the flag comes first in byte order",
    );
    add(
        "two-faults-window-then-chunk-size",
        raw_header(&k, |h| {
            h.min_version = 2;
            h.chunk_size = 5000;
        }),
        "format.bad_version_window",
        None,
        "min_version above state_version (offset 24) and a chunk_size that is not a power of two (offset 28)",
    );
    add(
        "two-faults-chunk-size-then-attributes",
        raw_header(&k, |h| {
            h.chunk_size = 5000;
            h.attrs = vec![
                (b"ports".to_vec(), b"2".to_vec()),
                (b"heads".to_vec(), b"1".to_vec()),
            ];
        }),
        "format.bad_chunk_size",
        None,
        "a bad chunk_size and attributes out of order: the fixed field comes first",
    );
    let mut nonce_name = raw_header(&k, |h| h.sections[0].0 = b"Mtty.state".to_vec());
    nonce_name[64] = 1;
    let nlen = nonce_name.len();
    let msg = mdevmig::codec::header::signed_message(&nonce_name[..nlen - 64]);
    let sig = k.sign(&msg);
    nonce_name[nlen - 64..].copy_from_slice(&sig);
    add(
        "two-faults-nonce-then-section-name",
        nonce_name,
        "format.unbound_nonce",
        None,
        "a nonce on an unbound stream (offset 64) and an upper-case section name",
    );
    add(
        "two-faults-section-flags-then-length",
        raw_header(&k, |h| {
            h.sections = vec![
                (b"a".to_vec(), 1, 0x0004, 1),
                (b"b".to_vec(), 1, 0, (1 << 40) + 1),
            ]
        }),
        "format.unknown_flags",
        None,
        "the first entry has an undefined flag, the second a length above 1 TiB",
    );
    add(
        "two-faults-total-then-duplicate",
        raw_header(&k, |h| {
            h.sections = vec![
                (b"a".to_vec(), 1, 0, 1 << 39),
                (b"b".to_vec(), 1, 0, 1 << 39),
                (b"c".to_vec(), 1, 0, 1),
                (b"a".to_vec(), 1, 0, 1),
            ]
        }),
        "limit.stream_too_large",
        None,
        "the running total passes 1 TiB at the third entry, and the fourth repeats a name: the total is checked at each entry",
    );
    add(
        "two-faults-flags-then-header-len",
        raw_header(&k, |h| {
            h.flags = 1 << 5;
            h.header_len = Some(200);
        }),
        "format.unknown_flags",
        None,
        "an undefined flag and a header_len too small for the content, which is found later in byte order",
    );
    let mut cap_short = single_bytes[..16].to_vec();
    cap_short[12..16].copy_from_slice(&9000u32.to_le_bytes());
    add(
        "two-faults-header-cap-then-truncated",
        cap_short,
        "limit.header_too_large",
        None,
        "header_len 9000 in a 16-byte stream: the prefix is checked before the rest is read",
    );
    let mut short_magic = single_bytes[..10].to_vec();
    short_magic[0] = 0;
    add(
        "two-faults-truncated-prefix-then-magic",
        short_magic,
        "format.truncated",
        None,
        "ten bytes with a bad magic: the 16-byte prefix is read whole before it is checked",
    );
    let (hlen, chunks, trailer) = record_bounds(multi_bytes);
    let cut = |r: (usize, usize)| multi_bytes[r.0..r.1].to_vec();
    let mut sig_and_seq = multi_bytes[..hlen].to_vec();
    let mut c1 = cut(chunks[1]);
    c1[88] ^= 1;
    sig_and_seq.extend(c1);
    sig_and_seq.extend(cut(chunks[0]));
    sig_and_seq.extend_from_slice(&multi_bytes[chunks[2].0..]);
    add(
        "two-faults-signature-then-order",
        sig_and_seq,
        "auth.bad_chunk_signature",
        None,
        "chunk 1 arrives first and its data is altered: the signature is checked before the sequence",
    );
    let mut gap_eof = multi_bytes[..hlen].to_vec();
    gap_eof.extend(cut(chunks[1]));
    add(
        "two-faults-gap-then-end-of-input",
        gap_eof,
        "format.chunk_dropped",
        None,
        "chunk 1 where chunk 0 is due, then end of input: a look-ahead that finds no record reports a drop",
    );
    let mut gap_bad_sig = multi_bytes[..hlen].to_vec();
    gap_bad_sig.extend(cut(chunks[1]));
    let mut c0 = cut(chunks[0]);
    c0[100] ^= 1;
    gap_bad_sig.extend(c0);
    gap_bad_sig.extend_from_slice(&multi_bytes[chunks[2].0..]);
    add(
        "two-faults-gap-then-bad-signature",
        gap_bad_sig,
        "format.chunk_reordered",
        None,
        "chunks 0 and 1 swapped and chunk 0's data altered: the look-ahead reads seq without verifying the signature",
    );
    let mut gap_kind = multi_bytes[..hlen].to_vec();
    gap_kind.extend(cut(chunks[1]));
    let mut c0 = cut(chunks[0]);
    c0[0] = 7;
    gap_kind.extend(c0);
    gap_kind.extend_from_slice(&multi_bytes[chunks[2].0..]);
    add(
        "two-faults-gap-then-bad-kind",
        gap_kind,
        "format.chunk_dropped",
        None,
        "chunk 1 where chunk 0 is due, and the next record has kind 7: a look-ahead that cannot decode a chunk reports a drop",
    );
    let mut gap_len = multi_bytes[..hlen].to_vec();
    gap_len.extend(cut(chunks[1]));
    let mut c0 = cut(chunks[0]);
    c0[4..8].copy_from_slice(&8192u32.to_le_bytes());
    gap_len.extend(c0);
    gap_len.extend_from_slice(&multi_bytes[chunks[2].0..]);
    add(
        "two-faults-gap-then-bad-length",
        gap_len,
        "format.chunk_dropped",
        None,
        "chunk 1 where chunk 0 is due, and the next record's data_len is above chunk_size: the look-ahead checks data_len",
    );
    let mut mismatch_trailing = multi_bytes[..trailer].to_vec();
    mismatch_trailing.extend(signed_trailer(
        &k,
        &multi_bytes[..hlen],
        mdevmig::codec::Trailer {
            chunk_count: 6,
            total_len: 15000,
        },
    ));
    mismatch_trailing.extend_from_slice(b"x");
    add(
        "two-faults-trailer-then-trailing-data",
        mismatch_trailing,
        "format.trailer_mismatch",
        None,
        "a signed trailer with the wrong chunk count, then one more byte: the trailer is checked before end of input",
    );
}

/// The manifest line format: `name expect session description`.
pub fn manifest(vectors: &[Vector]) -> String {
    let mut s = String::from(
        "# spec/vectors manifest: <file> <expected outcome> <session nonce or -> <description>\n\
         # Verify each file with trust store keys/test-signer.pub; when a session nonce is\n\
         # given, the verifier requires the stream to be bound to it. Generated by\n\
         # `cargo run --example gen_vectors`; do not edit by hand.\n",
    );
    for v in vectors {
        let session = v
            .session
            .map(|n| mdevmig::auth::hex(&n))
            .unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "{}.mdm {} {} {}\n",
            v.name, v.expect, session, v.description
        ));
    }
    s
}

/// SHA-256 of the manifest and every file, for the README of the folder.
pub fn digest_all(vectors: &[Vector]) -> String {
    let mut h = Sha256::new();
    for v in vectors {
        h.update(&v.bytes);
    }
    mdevmig::auth::hex(&h.finalize())
}
