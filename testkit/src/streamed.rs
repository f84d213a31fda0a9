//! The `stream_reader_streamed` fuzz target: whole streams with streamed sections
//! (section flag `STREAMED`, kind-3 section end records), read by the envelope
//! reader and checked against `spec/wire-format.md` §4-5.
//!
//! Kept in the test kit so that `tests/mutation.rs` can run it to replay regressions and write seeds. The first input byte picks
//! a mode (bit 0) and the size of the pieces of the split read (bits 1..7):
//!
//! - **bytes** (bit 0 clear): the rest is a stream. It is read as it is (only
//!   documented codes), then re-signed by the public test key with
//!   [`resign_streamed`] (`crate::resign`, which signs section end
//!   records too) and checked by [`check`].
//! - **script** (bit 0 set): the rest is a script ([`script_stream`]): a header
//!   (chunk size, 1 to 4 sections, each exact or streamed, with its length or
//!   bound and, for a streamed one, the length its writer gives it) and a list
//!   of record operations (the next canonical record, a drop, explicit chunks,
//!   end records and trailers with chosen seq, section, offset, length and
//!   counts, a bad signature or a non-zero reserved byte, duplicates, swaps,
//!   garbage, a cut). Every record is signed by the test key, so the fuzzer
//!   explores the reader's state machine behind the signature checks.
//!
//! [`check`] panics (the fuzzer's crash signal) when:
//!
//! - a refusal has a code `spec/errors.md` does not document, or one that is not
//!   a `format.`, `limit.` or `auth.` code;
//! - the header is valid and signed by the test key (so that records are read),
//!   and the outcome (the code, or acceptance) of the default reader (read-ahead,
//!   hashing workers) or of a single-threaded read in small interrupted pieces
//!   differs from [`expected`], an independent model of §4-5 written from the
//!   spec; or either released a chunk the model does not release before its
//!   verdict;
//! - an accepted stream is not exactly what `StreamWriter` makes of its header and
//!   data (one valid encoding: nothing unsigned or non-canonical is accepted).

use std::io::Read;

use crate::{test_signer, test_trust, Segmented};
use mdevmig::auth::{SigningKeyPair, TrustStore, SIGNATURE_LEN};
use mdevmig::codec::header::{self, Header, SectionEntry};
use mdevmig::codec::record::{FIELDS_LEN, FRAME_LEN, KIND_CHUNK, KIND_END, KIND_TRAILER};
use mdevmig::codec::{
    limits, CHUNK_CONTEXT, END_CONTEXT, SECTION_REQUIRED, SECTION_STREAMED, TRAILER_CONTEXT,
};
use mdevmig::codec::{ReadOptions, StreamReader};
use mdevmig::Code;
use sha2::{Digest, Sha256};

/// Selector bit: the rest of the input is a script, not a stream.
pub const SCRIPT: u8 = 1;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)?
        .try_into()
        .ok()
        .map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at.checked_add(8)?)?
        .try_into()
        .ok()
        .map(u64::from_le_bytes)
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The message a record's signature covers: its context, the header digest, its
/// 24 field bytes and, for a chunk, SHA-256 of its data.
fn record_message(fields: &[u8], header_digest: &[u8; 32], data: Option<&[u8]>) -> Vec<u8> {
    let context = match (fields.first(), data) {
        (_, Some(_)) => CHUNK_CONTEXT,
        (Some(&KIND_END), None) => END_CONTEXT,
        _ => TRAILER_CONTEXT,
    };
    let mut m = Vec::with_capacity(104);
    m.extend_from_slice(context);
    m.extend_from_slice(header_digest);
    m.extend_from_slice(fields);
    if let Some(d) = data {
        m.extend_from_slice(&sha(d));
    }
    m
}

/// Re-signs a (possibly mutated) stream with `key`, best effort: the library's
/// [`crate::resign`], which signs chunk, section end and trailer
/// frames for the new header digest.
pub fn resign_streamed(bytes: &[u8], key: &SigningKeyPair) -> Vec<u8> {
    crate::resign(bytes, key)
}

/// A chunk the reader released: its section, offset, length and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Section index.
    pub section: u16,
    /// Offset in the section.
    pub offset: u64,
    /// Data bytes.
    pub len: usize,
    /// SHA-256 of the data.
    pub digest: [u8; 32],
}

/// What reading a stream gave: `None` for an accepted stream, else the code; and
/// every chunk released before that verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The refusal's code, `None` when the stream was accepted.
    pub code: Option<&'static str>,
    /// The chunks released, in order.
    pub released: Vec<Released>,
}

/// Reads `src` to the end with the reader (`single_threaded`, or the default
/// read-ahead with hashing workers).
pub fn read(src: impl Read, trust: &TrustStore, single_threaded: bool) -> Outcome {
    let opts = ReadOptions {
        expected_nonce: None,
        single_threaded,
    };
    let mut released = Vec::new();
    let code = read_into(src, trust, &opts, &mut released)
        .err()
        .map(|e| e.code.as_str());
    Outcome { code, released }
}

fn read_into(
    src: impl Read,
    trust: &TrustStore,
    opts: &ReadOptions,
    released: &mut Vec<Released>,
) -> mdevmig::Result<()> {
    let mut r = StreamReader::open(src, trust, opts)?;
    while let Some(c) = r.next_chunk()? {
        released.push(Released {
            section: c.section_index,
            offset: c.offset,
            len: c.data.len(),
            digest: sha(c.data),
        });
    }
    Ok(())
}

/// Reads an accepted stream and writes its header and data back through
/// `StreamWriter` with `key`, ending each streamed section after its data. `None`
/// if the stream is not accepted or the writer refuses.
pub fn reencode(bytes: &[u8], trust: &TrustStore, key: &SigningKeyPair) -> Option<Vec<u8>> {
    crate::reencode(bytes, trust, key)
}

// ---------------------------------------------------------------------------
// An independent model of spec/wire-format.md §4-5, for a stream whose header is
// valid and signed by the test key.

/// One record as §5 step 1 reads it.
enum Rec<'a> {
    Chunk {
        fields: [u8; FIELDS_LEN],
        sig: &'a [u8],
        section: u16,
        seq: u64,
        offset: u64,
        data: &'a [u8],
    },
    End {
        fields: [u8; FIELDS_LEN],
        sig: &'a [u8],
        section: u16,
        seq: u64,
        length: u64,
    },
    Trailer {
        fields: [u8; FIELDS_LEN],
        sig: &'a [u8],
        count: u64,
        total: u64,
    },
}

/// §5 step 1: the frame (kind, then reserved bytes) and, for a chunk, its length
/// and data. Nothing here depends on what is expected.
fn step1<'a>(body: &'a [u8], pos: &mut usize, chunk_size: u64) -> Result<Rec<'a>, &'static str> {
    let frame = body
        .get(*pos..pos.saturating_add(FRAME_LEN))
        .ok_or("format.truncated")?;
    *pos += FRAME_LEN;
    let mut fields = [0u8; FIELDS_LEN];
    fields.copy_from_slice(&frame[..FIELDS_LEN]);
    let sig = &frame[FIELDS_LEN..];
    let u16_at = |at: usize| u16::from_le_bytes([fields[at], fields[at + 1]]);
    let seq = u64_at(&fields, 8).unwrap_or(0);
    let last = u64_at(&fields, 16).unwrap_or(0);
    match fields[0] {
        KIND_CHUNK => {
            if fields[1] != 0 {
                return Err("format.reserved_nonzero");
            }
            let len = u32_at(&fields, 4).unwrap_or(0);
            if len > limits::MAX_CHUNK_SIZE {
                return Err("limit.chunk_too_large");
            }
            if len == 0 || u64::from(len) > chunk_size {
                return Err("format.bad_chunk_length");
            }
            let n = usize::try_from(len).unwrap_or(usize::MAX);
            let data = body.get(*pos..pos.saturating_add(n)).ok_or("format.truncated")?;
            *pos += n;
            Ok(Rec::Chunk {
                fields,
                sig,
                section: u16_at(2),
                seq,
                offset: last,
                data,
            })
        }
        KIND_TRAILER => {
            if fields[1..8].iter().any(|b| *b != 0) {
                return Err("format.reserved_nonzero");
            }
            Ok(Rec::Trailer {
                fields,
                sig,
                count: seq,
                total: last,
            })
        }
        KIND_END => {
            if fields[1] != 0 || fields[4..8].iter().any(|b| *b != 0) {
                return Err("format.reserved_nonzero");
            }
            Ok(Rec::End {
                fields,
                sig,
                section: u16_at(2),
                seq,
                length: last,
            })
        }
        _ => Err("format.bad_record_kind"),
    }
}

/// The reader's expectation (§5, "The reader's state").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Chunk(u64),
    ChunkOrEnd(u64),
    End,
    Trailer,
}

struct Model<'h> {
    sections: &'h [SectionEntry],
    chunk_size: u64,
    s: usize,
    o: u64,
    seq: u64,
    total: u64,
    /// A chunk of the current streamed section was short (its end is due).
    short: bool,
}

impl Model<'_> {
    /// Passes over exact-length sections with nothing left.
    fn settle(&mut self) {
        while self
            .sections
            .get(self.s)
            .is_some_and(|sec| !sec.streamed() && self.o == sec.length)
        {
            self.s += 1;
            self.o = 0;
        }
    }

    fn expect(&self) -> Expect {
        match self.sections.get(self.s) {
            None => Expect::Trailer,
            Some(sec) if sec.streamed() => {
                if self.short || self.o >= sec.length {
                    Expect::End
                } else {
                    Expect::ChunkOrEnd(sec.length - self.o)
                }
            }
            Some(sec) => Expect::Chunk(self.chunk_size.min(sec.length - self.o)),
        }
    }
}

/// What §4-5 say reading `body` (the bytes after a valid header whose digest is
/// `digest`, signed by `key`) gives: the first rule broken, or acceptance, and the
/// chunks released before the verdict.
pub fn expected(header: &Header, digest: &[u8; 32], body: &[u8], key: &SigningKeyPair) -> Outcome {
    let signed = |fields: &[u8], sig: &[u8], data: Option<&[u8]>| {
        key.sign(&record_message(fields, digest, data))[..] == *sig
    };
    let mut m = Model {
        sections: &header.sections,
        chunk_size: u64::from(header.chunk_size),
        s: 0,
        o: 0,
        seq: 0,
        total: 0,
        short: false,
    };
    m.settle();
    let mut released = Vec::new();
    let mut pos = 0usize;
    let code = loop {
        let rec = match step1(body, &mut pos, m.chunk_size) {
            Ok(r) => r,
            Err(c) => break Some(c),
        };
        let expect = m.expect();
        if expect == Expect::Trailer {
            break match rec {
                Rec::Chunk {
                    fields,
                    sig,
                    seq,
                    data,
                    ..
                } => Some(if !signed(&fields, sig, Some(data)) {
                    "auth.bad_chunk_signature"
                } else if seq < m.seq {
                    "format.chunk_duplicated"
                } else {
                    "format.chunk_mismatch"
                }),
                Rec::End { fields, sig, .. } => Some(if signed(&fields, sig, None) {
                    "format.chunk_mismatch"
                } else {
                    "auth.bad_end_signature"
                }),
                Rec::Trailer {
                    fields,
                    sig,
                    count,
                    total,
                } => {
                    if !signed(&fields, sig, None) {
                        Some("auth.bad_trailer_signature")
                    } else if count != m.seq || total != m.total {
                        Some("format.trailer_mismatch")
                    } else if pos < body.len() {
                        Some("format.trailing_data")
                    } else {
                        None
                    }
                }
            };
        }
        match rec {
            Rec::Trailer { .. } => break Some("format.chunk_dropped"),
            Rec::End {
                fields,
                sig,
                section,
                seq,
                length,
            } => {
                if !signed(&fields, sig, None) {
                    break Some("auth.bad_end_signature");
                }
                if matches!(expect, Expect::Chunk(_)) {
                    break Some("format.chunk_mismatch");
                }
                if seq > m.seq {
                    break Some("format.chunk_dropped");
                }
                if seq < m.seq {
                    break Some("format.chunk_duplicated");
                }
                if usize::from(section) != m.s {
                    break Some("format.chunk_mismatch");
                }
                if length != m.o {
                    break Some("format.section_length_mismatch");
                }
                m.s += 1;
                m.o = 0;
                m.short = false;
                m.settle();
            }
            Rec::Chunk {
                fields,
                sig,
                section,
                seq,
                offset,
                data,
            } => {
                if !signed(&fields, sig, Some(data)) {
                    break Some("auth.bad_chunk_signature");
                }
                if seq < m.seq {
                    break Some("format.chunk_duplicated");
                }
                if seq > m.seq {
                    // The look-ahead: the next record by step 1 alone.
                    let mut p = pos;
                    break Some(match step1(body, &mut p, m.chunk_size) {
                        Ok(Rec::Chunk { seq: next, .. }) if next == m.seq => "format.chunk_reordered",
                        _ => "format.chunk_dropped",
                    });
                }
                if usize::from(section) != m.s || offset != m.o {
                    break Some("format.chunk_mismatch");
                }
                let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                match expect {
                    Expect::Chunk(canonical) if len != canonical => break Some("format.bad_chunk_length"),
                    Expect::End => {
                        let bound = m.sections.get(m.s).map_or(0, |sec| sec.length);
                        break Some(if m.o >= bound {
                            "limit.section_over_bound"
                        } else {
                            "format.bad_chunk_length"
                        });
                    }
                    Expect::ChunkOrEnd(room) if len > room => break Some("limit.section_over_bound"),
                    Expect::ChunkOrEnd(room) => m.short = len < m.chunk_size || len == room,
                    _ => {}
                }
                released.push(Released {
                    section,
                    offset,
                    len: data.len(),
                    digest: sha(data),
                });
                m.seq += 1;
                m.o += len;
                m.total += len;
                m.settle();
            }
        }
    };
    Outcome { code, released }
}

/// [`expected`] for a whole stream, when its header decodes, names the test key
/// and carries its valid signature; `None` otherwise (the header is
/// `envelope_header`'s business).
pub fn oracle(input: &[u8], key: &SigningKeyPair) -> Option<Outcome> {
    let hl = usize::try_from(u32_at(input, 12)?).ok()?;
    let hb = input.get(..hl)?;
    let (h, sig) = header::decode(hb).ok()?;
    if h.key_id != key.id() || hl < SIGNATURE_LEN {
        return None;
    }
    if key.sign(&header::signed_message(&hb[..hl - SIGNATURE_LEN])) != sig {
        return None;
    }
    Some(expected(&h, &sha(hb), &input[hl..], key))
}

// ---------------------------------------------------------------------------
// The checks.

fn assert_reader_code(code: Option<&'static str>, what: &str) {
    if let Some(c) = code {
        assert!(
            Code::from_str_code(c).is_some()
                && (c.starts_with("format.") || c.starts_with("limit.") || c.starts_with("auth.")),
            "{what}: the reader refused with {c}, not a documented format/limit/auth code"
        );
    }
}

fn is_prefix(short: &[Released], long: &[Released]) -> bool {
    long.get(..short.len()) == Some(short)
}

/// Checks one (signed) input against every invariant in the module docs: a
/// single-threaded read in `piece`-byte interrupted pieces and, when the header is
/// valid and signed by `key` (so that there are records to read), the default
/// reader's read and the model's verdict. What the split read gave.
pub fn check(input: &[u8], trust: &TrustStore, key: &SigningKeyPair, piece: usize) -> Outcome {
    let split = read(Segmented::every(input, piece).interrupting(), trust, true);
    assert_reader_code(split.code, "split");
    if let Some(want) = oracle(input, key) {
        let whole = read(input, trust, false);
        assert_eq!(
            split.code, whole.code,
            "the outcome depends on the read-ahead or on {piece}-byte pieces"
        );
        assert_eq!(
            whole.code,
            want.code,
            "the reader and spec/wire-format.md §4-5 disagree ({} chunks released, the spec releases {})",
            whole.released.len(),
            want.released.len()
        );
        assert!(
            is_prefix(&whole.released, &want.released) && is_prefix(&split.released, &want.released),
            "the reader released a chunk the spec does not release"
        );
        if want.code.is_none() {
            assert_eq!(whole.released, want.released, "accepted with other data");
            assert_eq!(
                split.released, want.released,
                "accepted with other data when split"
            );
        }
    }
    if split.code.is_none() {
        let again = reencode(input, trust, key);
        assert!(
            again.as_deref() == Some(input),
            "an accepted stream is not the canonical encoding of its content"
        );
    }
    split
}

// ---------------------------------------------------------------------------
// Scripts.

/// Reads script bytes; zeros once they run out.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let v = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        v
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn i8(&mut self) -> i64 {
        i64::from(self.u8() as i8)
    }

    fn i16(&mut self) -> i64 {
        i64::from(self.u16() as i16)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// Deterministic data of section `section` at `offset`.
pub fn pattern(section: u16, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = offset.wrapping_add(i).wrapping_mul(31) ^ u64::from(section).wrapping_mul(0x9e37);
            (x ^ (x >> 9)) as u8
        })
        .collect()
}

fn add(base: u64, delta: i64) -> u64 {
    base.wrapping_add(delta as u64)
}

/// Record builders for one stream.
struct Signer<'k> {
    key: &'k SigningKeyPair,
    digest: [u8; 32],
}

impl Signer<'_> {
    fn finish(&self, fields: [u8; FIELDS_LEN], data: Option<&[u8]>, bad_sig: bool) -> Vec<u8> {
        let mut sig = self.key.sign(&record_message(&fields, &self.digest, data));
        if bad_sig {
            sig[7] ^= 0x20;
        }
        let mut out = fields.to_vec();
        out.extend_from_slice(&sig);
        if let Some(d) = data {
            out.extend_from_slice(d);
        }
        out
    }

    fn chunk(
        &self,
        section: u16,
        seq: u64,
        offset: u64,
        data: &[u8],
        bad_sig: bool,
        reserved: u8,
    ) -> Vec<u8> {
        let mut f = [0u8; FIELDS_LEN];
        f[0] = KIND_CHUNK;
        f[1] = reserved;
        f[2..4].copy_from_slice(&section.to_le_bytes());
        f[4..8].copy_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
        f[8..16].copy_from_slice(&seq.to_le_bytes());
        f[16..24].copy_from_slice(&offset.to_le_bytes());
        self.finish(f, Some(data), bad_sig)
    }

    fn end(&self, section: u16, seq: u64, length: u64, bad_sig: bool, reserved: u8) -> Vec<u8> {
        let mut f = [0u8; FIELDS_LEN];
        f[0] = KIND_END;
        f[2..4].copy_from_slice(&section.to_le_bytes());
        f[4] = reserved;
        f[8..16].copy_from_slice(&seq.to_le_bytes());
        f[16..24].copy_from_slice(&length.to_le_bytes());
        self.finish(f, None, bad_sig)
    }

    fn trailer(&self, count: u64, total: u64, bad_sig: bool) -> Vec<u8> {
        let mut f = [0u8; FIELDS_LEN];
        f[0] = KIND_TRAILER;
        f[8..16].copy_from_slice(&count.to_le_bytes());
        f[16..24].copy_from_slice(&total.to_le_bytes());
        self.finish(f, None, bad_sig)
    }
}

/// The canonical writer's position: what it would emit next.
struct Gen {
    /// Per section: streamed, and the data length the writer gives it (for an
    /// exact section, its length).
    plan: Vec<(bool, u64)>,
    chunk_size: u64,
    s: usize,
    o: u64,
    seq: u64,
    total: u64,
    done: bool,
}

impl Gen {
    /// The next canonical record, advancing; `None` after the trailer.
    fn next(&mut self, signer: &Signer<'_>) -> Option<Vec<u8>> {
        loop {
            if self.done {
                return None;
            }
            let Some(&(streamed, len)) = self.plan.get(self.s) else {
                self.done = true;
                return Some(signer.trailer(self.seq, self.total, false));
            };
            let section = u16::try_from(self.s).unwrap_or(u16::MAX);
            if self.o < len {
                let n = self.chunk_size.min(len - self.o);
                let data = pattern(section, self.o, usize::try_from(n).unwrap_or(0));
                let rec = signer.chunk(section, self.seq, self.o, &data, false, 0);
                self.seq = self.seq.wrapping_add(1);
                self.o += n;
                self.total = self.total.wrapping_add(n);
                return Some(rec);
            }
            let length = self.o;
            self.s += 1;
            self.o = 0;
            if streamed {
                return Some(signer.end(section, self.seq, length, false, 0));
            }
        }
    }
}

/// A length from a script: `units` whole chunks (at most 4) plus 0..=chunk_size
/// bytes.
fn script_len(c: &mut Cursor<'_>, units: u8, chunk_size: u64) -> u64 {
    u64::from(units % 5) * chunk_size + u64::from(c.u16()) % (chunk_size + 1)
}

/// Builds the stream a script describes, signed by `key`; `None` if the header
/// it describes cannot be signed.
///
/// Layout: one byte of header configuration (bit 0: chunk size 4096 or 8192;
/// bits 1-2: 1 to 4 sections), then per section a flags byte (bit 0 streamed,
/// bit 1 required, bits 2-4 and 5-7 whole chunks of its length or bound and of
/// the data its writer gives a streamed section) and a u16 for each of those
/// lengths' remainders; then operations, one byte each plus arguments (modulo
/// 12): 0-3 the next canonical record; 4 skip it (a drop); 5 a chunk (section,
/// seq delta i8, offset delta i16, length u16 mod chunk_size + 2, flags: bad
/// signature, reserved byte, advance the writer); 6 an end record (section, seq
/// delta, length delta, flags); 7 a trailer (count delta, total delta, bad
/// signature); 8 repeat an earlier record; 9 swap the last two; 10 up to 47
/// garbage bytes; 11 stop (without the rest of the canonical records) and cut
/// up to 255 bytes off the end. When the operations run out the canonical
/// records are completed through the trailer.
pub fn script_stream(script: &[u8], key: &SigningKeyPair) -> Option<Vec<u8>> {
    let mut c = Cursor { data: script, pos: 0 };
    let cfg = c.u8();
    let chunk_size = 4096u32 << (cfg & 1);
    let cs = u64::from(chunk_size);
    let n = 1 + usize::from((cfg >> 1) & 3);
    let mut sections = Vec::new();
    let mut plan = Vec::new();
    for i in 0..n {
        let f = c.u8();
        let streamed = f & 1 != 0;
        let length = script_len(&mut c, (f >> 2) & 7, cs);
        let data = if streamed {
            script_len(&mut c, f >> 5, cs)
        } else {
            length
        };
        sections.push(SectionEntry {
            name: format!("s{i}"),
            version: 1,
            flags: if f & 2 != 0 { SECTION_REQUIRED } else { 0 }
                | if streamed { SECTION_STREAMED } else { 0 },
            length,
        });
        plan.push((streamed, data));
    }
    let header = Header {
        flags: 0,
        state_version: 1,
        min_version: 1,
        chunk_size,
        key_id: key.id(),
        session_nonce: [0; 32],
        stream_id: [0x5c; 16],
        vendor: "xe".into(),
        device_type: "xe-vf-tiny".into(),
        attributes: Default::default(),
        sections,
    };
    let signed = header.sign(key).ok()?;
    let signer = Signer {
        key,
        digest: signed.digest,
    };
    let mut g = Gen {
        plan,
        chunk_size: cs,
        s: 0,
        o: 0,
        seq: 0,
        total: 0,
        done: false,
    };
    let mut recs: Vec<Vec<u8>> = Vec::new();
    let mut cut = None;
    // At most 256 operations: inputs stay small and fast.
    for _ in 0..256 {
        if c.done() {
            break;
        }
        match c.u8() % 12 {
            0..=3 => recs.extend(g.next(&signer)),
            4 => {
                let _ = g.next(&signer);
            }
            5 => {
                let section = u16::from(c.u8()) % (u16::try_from(n).unwrap_or(4) + 1);
                let seq = add(g.seq, c.i8());
                let offset = add(g.o, c.i16());
                let len = u64::from(c.u16()) % (cs + 2);
                let flags = c.u8();
                let data = pattern(section, offset, usize::try_from(len).unwrap_or(0));
                recs.push(signer.chunk(section, seq, offset, &data, flags & 1 != 0, flags >> 1 & 1));
                if flags & 4 != 0 {
                    g.seq = g.seq.wrapping_add(1);
                    g.o = g.o.wrapping_add(len);
                    g.total = g.total.wrapping_add(len);
                }
            }
            6 => {
                let section = u16::from(c.u8()) % (u16::try_from(n).unwrap_or(4) + 1);
                let seq = add(g.seq, c.i8());
                let length = add(g.o, c.i16());
                let flags = c.u8();
                recs.push(signer.end(section, seq, length, flags & 1 != 0, flags >> 1 & 1));
                if flags & 4 != 0 {
                    g.s += 1;
                    g.o = 0;
                }
            }
            7 => {
                let count = add(g.seq, c.i8());
                let total = add(g.total, c.i16());
                let flags = c.u8();
                recs.push(signer.trailer(count, total, flags & 1 != 0));
            }
            8 => {
                let k = usize::from(c.u8());
                if !recs.is_empty() {
                    let r = recs[k % recs.len()].clone();
                    recs.push(r);
                }
            }
            9 => {
                let len = recs.len();
                if len >= 2 {
                    recs.swap(len - 1, len - 2);
                }
            }
            10 => {
                let k = usize::from(c.u8() % 48);
                recs.push(c.bytes(k));
            }
            _ => {
                cut = Some(usize::from(c.u8()));
                break;
            }
        }
    }
    if cut.is_none() {
        while let Some(r) = g.next(&signer) {
            recs.push(r);
        }
    }
    let mut out = signed.bytes;
    for r in recs {
        out.extend_from_slice(&r);
    }
    out.truncate(out.len().saturating_sub(cut.unwrap_or(0)));
    Some(out)
}

/// The fuzz target.
pub fn run(data: &[u8]) {
    let Some((&select, rest)) = data.split_first() else {
        return;
    };
    let key = test_signer();
    let trust = test_trust();
    let piece = usize::from(select >> 1) % 97 + 1;
    if select & SCRIPT == 0 {
        let plain = read(rest, &trust, true);
        assert_reader_code(plain.code, "as given");
        let signed = resign_streamed(rest, &key);
        check(&signed, &trust, &key, piece);
    } else if let Some(stream) = script_stream(rest, &key) {
        check(&stream, &trust, &key, piece);
    }
}
