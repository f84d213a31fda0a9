//! Streaming writer and reader for whole envelopes.
//!
//! [`StreamWriter`] takes section data in table order, cuts it into canonical
//! chunks, signs each and writes the trailer at [`StreamWriter::finish`].
//!
//! [`StreamReader`] reads the header through a 4 KiB cap, checks the key, the
//! signature and the session binding, and then hands out chunks one by one, each
//! verified before the caller sees a byte of it. Its memory is one chunk buffer,
//! whatever the stream's size. The trailer is verified before the reader reports
//! the end, and any byte after the trailer is an error.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use super::header::{self, Header, SignedHeader, PREFIX_LEN};
use super::record::{decode_frame, ChunkRecord, Frame, Trailer, FRAME_LEN};
use super::{len64, Digest32};
use crate::auth::{SigningKeyPair, TrustStore, SIGNATURE_LEN};
use crate::error::{Code, Error, Result};

/// Signs one chunk: the frame's signature.
pub fn seal_chunk(
    key: &SigningKeyPair,
    header_digest: &Digest32,
    rec: &ChunkRecord,
    data: &[u8],
) -> [u8; SIGNATURE_LEN] {
    let digest: Digest32 = Sha256::digest(data).into();
    key.sign(&rec.signed_message(header_digest, &digest))
}

/// Writes an envelope.
pub struct StreamWriter<'k, W: Write> {
    out: W,
    key: &'k SigningKeyPair,
    header: SignedHeader,
    section: usize,
    offset: u64,
    seq: u64,
    buf: Vec<u8>,
    total: u64,
}

impl<'k, W: Write> StreamWriter<'k, W> {
    /// Signs and writes `header` (its key_id must be `key`'s).
    pub fn new(mut out: W, header: &Header, key: &'k SigningKeyPair) -> Result<Self> {
        let header = header.sign(key)?;
        out.write_all(&header.bytes)
            .map_err(|e| Error::io(Code::IoWrite, "writing header", &e))?;
        let cap = usize::try_from(header.header.chunk_size).unwrap_or(0);
        let mut w = StreamWriter {
            out,
            key,
            header,
            section: 0,
            offset: 0,
            seq: 0,
            buf: Vec::with_capacity(cap),
            total: 0,
        };
        w.skip_empty_sections();
        Ok(w)
    }

    /// The signed header as written.
    pub fn header(&self) -> &SignedHeader {
        &self.header
    }

    /// Name of the section the next data byte belongs to, if any.
    pub fn current_section(&self) -> Option<&str> {
        self.header
            .header
            .sections
            .get(self.section)
            .map(|s| s.name.as_str())
    }

    fn skip_empty_sections(&mut self) {
        while self
            .header
            .header
            .sections
            .get(self.section)
            .is_some_and(|s| s.length == self.offset.saturating_add(len64(self.buf.len())))
        {
            self.section = self.section.saturating_add(1);
            self.offset = 0;
        }
    }

    /// Appends data to the current section; data crossing a section's declared end
    /// continues in the next section.
    pub fn write_data(&mut self, mut data: &[u8]) -> Result<()> {
        let cs = usize::try_from(self.header.header.chunk_size).unwrap_or(usize::MAX);
        while !data.is_empty() {
            let Some(sec) = self.header.header.sections.get(self.section) else {
                return Err(Error::new(
                    Code::Internal,
                    "more data than the header's sections declare",
                ));
            };
            let left_in_section = sec
                .length
                .saturating_sub(self.offset)
                .saturating_sub(len64(self.buf.len()));
            let room = cs.saturating_sub(self.buf.len());
            let n = data
                .len()
                .min(room)
                .min(usize::try_from(left_in_section).unwrap_or(usize::MAX));
            let (head, tail) = data.split_at(n);
            self.buf.extend_from_slice(head);
            data = tail;
            let section_done = self.offset.saturating_add(len64(self.buf.len())) == sec.length;
            if self.buf.len() == cs || section_done {
                self.flush_chunk()?;
            }
            if section_done {
                self.section = self.section.saturating_add(1);
                self.offset = 0;
                self.skip_empty_sections();
            }
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let rec = ChunkRecord {
            section_index: u16::try_from(self.section)
                .map_err(|_| Error::new(Code::Internal, "section index"))?,
            data_len: u32::try_from(self.buf.len())
                .map_err(|_| Error::new(Code::Internal, "chunk length"))?,
            seq: self.seq,
            offset: self.offset,
        };
        let sig = seal_chunk(self.key, &self.header.digest, &rec, &self.buf);
        self.out
            .write_all(&rec.fields())
            .and_then(|()| self.out.write_all(&sig))
            .and_then(|()| self.out.write_all(&self.buf))
            .map_err(|e| Error::io(Code::IoWrite, "writing chunk", &e))?;
        self.seq = self.seq.saturating_add(1);
        self.offset = self.offset.saturating_add(len64(self.buf.len()));
        self.total = self.total.saturating_add(len64(self.buf.len()));
        self.buf.clear();
        Ok(())
    }

    /// Writes the trailer; fails if any section is short of its declared length.
    pub fn finish(mut self) -> Result<W> {
        if let Some(sec) = self.header.header.sections.get(self.section) {
            return Err(Error::new(
                Code::Internal,
                format!(
                    "section {} got {} of its {} bytes",
                    sec.name,
                    self.offset.saturating_add(len64(self.buf.len())),
                    sec.length
                ),
            ));
        }
        let t = Trailer {
            chunk_count: self.seq,
            total_len: self.total,
        };
        let sig = self.key.sign(&t.signed_message(&self.header.digest));
        self.out
            .write_all(&t.fields())
            .and_then(|()| self.out.write_all(&sig))
            .and_then(|()| self.out.flush())
            .map_err(|e| Error::io(Code::IoWrite, "writing trailer", &e))?;
        Ok(self.out)
    }
}

/// What a reader requires beyond a trusted signature.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The session nonce this destination issued; the stream must be bound to it.
    pub expected_nonce: Option<[u8; 32]>,
}

/// A chunk whose signature, position and length have been verified.
#[derive(Debug)]
pub struct VerifiedChunk<'a> {
    /// Index of its section in the header's table.
    pub section_index: u16,
    /// Offset of `data` within the section.
    pub offset: u64,
    /// The data.
    pub data: &'a [u8],
}

/// Reads and verifies an envelope.
pub struct StreamReader<R: Read> {
    src: R,
    header: SignedHeader,
    key: ed25519_dalek::VerifyingKey,
    /// Next expected chunk: section index, offset, seq.
    section: usize,
    offset: u64,
    seq: u64,
    chunk_count: u64,
    buf: Vec<u8>,
    done: bool,
    /// Bytes consumed so far (for diagnostics).
    position: u64,
}

fn read_exact_or(src: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    src.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::new(Code::Truncated, format!("stream ended inside {what}"))
        } else {
            Error::io(Code::IoRead, format!("reading {what}"), &e)
        }
    })
}

/// Reads and decodes a header without checking its signature (for `inspect`).
pub fn read_header_unverified(src: &mut impl Read) -> Result<(Header, Vec<u8>)> {
    let bytes = read_header_bytes(src)?;
    let (h, _) = header::decode(&bytes)?;
    Ok((h, bytes))
}

fn read_header_bytes(src: &mut impl Read) -> Result<Vec<u8>> {
    let mut prefix = [0u8; PREFIX_LEN];
    read_exact_or(src, &mut prefix, "the header prefix")?;
    let len = header::decode_prefix(&prefix)?;
    // decode_prefix capped len at MAX_HEADER_LEN.
    let len = usize::try_from(len).map_err(|_| Error::new(Code::HeaderTooLarge, "header_len"))?;
    let mut bytes = vec![0u8; len];
    let (head, rest) = bytes.split_at_mut(PREFIX_LEN.min(len));
    head.copy_from_slice(prefix.get(..head.len()).unwrap_or(&[]));
    read_exact_or(src, rest, "the header")?;
    Ok(bytes)
}

impl<R: Read> StreamReader<R> {
    /// Reads the header and authenticates it against `trust`.
    pub fn open(mut src: R, trust: &TrustStore, opts: &ReadOptions) -> Result<Self> {
        let bytes = read_header_bytes(&mut src)?;
        let (unverified, _) = header::decode(&bytes)?;
        let key = *trust.get(&unverified.key_id).ok_or_else(|| {
            Error::new(
                Code::UntrustedKey,
                format!(
                    "signed by key {}, which is not in the trust store",
                    unverified.key_id
                ),
            )
        })?;
        let position = len64(bytes.len());
        let header = SignedHeader::verify(bytes, &key)?;
        if let Some(nonce) = opts.expected_nonce {
            if !header.header.session_bound() {
                return Err(Error::new(
                    Code::UnboundStream,
                    "this destination requires a session-bound stream",
                ));
            }
            if header.header.session_nonce != nonce {
                return Err(Error::new(
                    Code::SessionMismatch,
                    "the stream is bound to another session",
                ));
            }
        }
        let chunk_count = header.header.chunk_count()?;
        let mut r = StreamReader {
            src,
            header,
            key,
            section: 0,
            offset: 0,
            seq: 0,
            chunk_count,
            buf: Vec::new(),
            done: false,
            position,
        };
        r.skip_empty_sections();
        Ok(r)
    }

    /// The authenticated header.
    pub fn header(&self) -> &SignedHeader {
        &self.header
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    fn skip_empty_sections(&mut self) {
        while self
            .header
            .header
            .sections
            .get(self.section)
            .is_some_and(|s| s.length == self.offset)
        {
            self.section = self.section.saturating_add(1);
            self.offset = 0;
        }
    }

    /// The canonical length of the next chunk, or None when the trailer is next.
    fn expected_len(&self) -> Option<u64> {
        let sec = self.header.header.sections.get(self.section)?;
        Some(
            sec.length
                .saturating_sub(self.offset)
                .min(u64::from(self.header.header.chunk_size)),
        )
    }

    fn read_frame(&mut self) -> Result<Frame> {
        let mut frame = [0u8; FRAME_LEN];
        read_exact_or(&mut self.src, &mut frame, "a record frame")?;
        self.position = self.position.saturating_add(len64(FRAME_LEN));
        decode_frame(&frame)
    }

    /// Reads a chunk's data into the buffer and verifies its signature.
    fn read_and_verify(&mut self, rec: &ChunkRecord, sig: &[u8; SIGNATURE_LEN]) -> Result<()> {
        let cs = self.header.header.chunk_size;
        if rec.data_len > super::limits::MAX_CHUNK_SIZE {
            return Err(Error::new(
                Code::ChunkTooLarge,
                format!("chunk {} claims {} bytes, above the cap", rec.seq, rec.data_len),
            ));
        }
        if rec.data_len == 0 || rec.data_len > cs {
            return Err(Error::new(
                Code::BadChunkLength,
                format!(
                    "chunk {} claims {} bytes; chunk_size is {cs}",
                    rec.seq, rec.data_len
                ),
            ));
        }
        // data_len <= chunk_size <= 16 MiB: bounded by the header's checked chunk size.
        let n = usize::try_from(rec.data_len).map_err(|_| Error::new(Code::ChunkTooLarge, "chunk length"))?;
        self.buf.resize(n, 0);
        read_exact_or(&mut self.src, &mut self.buf, "chunk data")?;
        self.position = self.position.saturating_add(u64::from(rec.data_len));
        let digest: Digest32 = Sha256::digest(&self.buf).into();
        if !crate::auth::verify(&self.key, &rec.signed_message(&self.header.digest, &digest), sig) {
            return Err(Error::new(
                Code::BadChunkSignature,
                format!(
                    "chunk {} (stream offset {}) fails its signature",
                    rec.seq, self.position
                ),
            ));
        }
        Ok(())
    }

    /// After an out-of-sequence chunk: a look at the next record tells a reordered
    /// chunk (the expected one comes next) from a dropped one.
    fn classify_gap(&mut self, got: u64) -> Error {
        let expected = self.seq;
        let next_is_expected = matches!(self.read_frame(), Ok(Frame::Chunk(r, _)) if r.seq == expected);
        if next_is_expected {
            Error::new(
                Code::ChunkReordered,
                format!("chunk {got} arrived before chunk {expected}"),
            )
        } else {
            Error::new(
                Code::ChunkDropped,
                format!("chunk {expected} is missing (chunk {got} came instead)"),
            )
        }
    }

    /// The next verified chunk, or `None` once the trailer has been verified and
    /// the input has ended.
    pub fn next_chunk(&mut self) -> Result<Option<VerifiedChunk<'_>>> {
        if self.done {
            return Ok(None);
        }
        let frame = self.read_frame()?;
        let Some(expected_len) = self.expected_len() else {
            return self.finish(frame).map(|()| None);
        };
        let (rec, sig) = match frame {
            Frame::Chunk(rec, sig) => (rec, sig),
            Frame::Trailer(..) => {
                return Err(Error::new(
                    Code::ChunkDropped,
                    format!("trailer arrived where chunk {} was expected", self.seq),
                ));
            }
        };
        self.read_and_verify(&rec, &sig)?;
        if rec.seq < self.seq {
            return Err(Error::new(
                Code::ChunkDuplicated,
                format!(
                    "chunk {} arrived again after chunk {}",
                    rec.seq,
                    self.seq.saturating_sub(1)
                ),
            ));
        }
        if rec.seq > self.seq {
            return Err(self.classify_gap(rec.seq));
        }
        let index_ok = usize::from(rec.section_index) == self.section;
        if !index_ok || rec.offset != self.offset {
            return Err(Error::new(
                Code::ChunkMismatch,
                format!(
                    "chunk {} is for section {} offset {}, expected section {} offset {}",
                    rec.seq, rec.section_index, rec.offset, self.section, self.offset
                ),
            ));
        }
        if u64::from(rec.data_len) != expected_len {
            return Err(Error::new(
                Code::BadChunkLength,
                format!(
                    "chunk {} has {} bytes; the canonical length is {expected_len}",
                    rec.seq, rec.data_len
                ),
            ));
        }
        self.seq = self.seq.saturating_add(1);
        let offset = self.offset;
        self.offset = self.offset.saturating_add(u64::from(rec.data_len));
        let section_index = rec.section_index;
        self.skip_empty_sections();
        Ok(Some(VerifiedChunk {
            section_index,
            offset,
            data: &self.buf,
        }))
    }

    fn finish(&mut self, frame: Frame) -> Result<()> {
        match frame {
            Frame::Trailer(t, sig) => {
                if !crate::auth::verify(&self.key, &t.signed_message(&self.header.digest), &sig) {
                    return Err(Error::new(
                        Code::BadTrailerSignature,
                        "the trailer signature does not verify",
                    ));
                }
                let total = self.header.header.total_len()?;
                if t.chunk_count != self.chunk_count || t.total_len != total {
                    return Err(Error::new(
                        Code::TrailerMismatch,
                        format!(
                            "trailer says {} chunks / {} bytes; header implies {} / {total}",
                            t.chunk_count, t.total_len, self.chunk_count
                        ),
                    ));
                }
            }
            Frame::Chunk(rec, sig) => {
                // A chunk where the trailer belongs: verify it so the code says
                // what it is (a duplicate, or a chunk the header has no room for).
                self.read_and_verify(&rec, &sig)?;
                if rec.seq < self.seq {
                    return Err(Error::new(
                        Code::ChunkDuplicated,
                        format!("chunk {} arrived again after the last chunk", rec.seq),
                    ));
                }
                return Err(Error::new(
                    Code::ChunkMismatch,
                    format!("chunk {} is beyond the sections' declared lengths", rec.seq),
                ));
            }
        }
        let mut probe = [0u8; 1];
        loop {
            match self.src.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => return Err(Error::new(Code::TrailingData, "bytes follow the trailer")),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(Code::IoRead, "reading after the trailer", &e)),
            }
        }
        self.done = true;
        Ok(())
    }

    /// Reads the whole stream, discarding the data; returns the chunk count.
    pub fn verify_to_end(&mut self) -> Result<u64> {
        let mut n = 0u64;
        while self.next_chunk()?.is_some() {
            n = n.saturating_add(1);
        }
        Ok(n)
    }
}
