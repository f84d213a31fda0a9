//! Streaming writer and reader for whole envelopes.
//!
//! [`StreamWriter`] takes section data in table order, cuts it into canonical
//! chunks, signs each, writes a streamed section's end record at
//! [`StreamWriter::end_section`] and the trailer at [`StreamWriter::finish`].
//!
//! [`StreamReader`] reads the header through an 8 KiB cap, checks the key, the
//! signature and the session binding, and then hands out chunks one by one, each
//! verified before the caller sees a byte of it. It reads chunks ahead and hashes
//! them on all cores, in batches as wide as each core's hashing engine (sixteen
//! chunks in AVX-512 lanes, or a SHA-NI pair); its memory is those chunk buffers
//! (at most 32 MiB of read-ahead), whatever the stream's size.
//! The trailer is verified before the reader reports the end, and any byte after
//! the trailer is an error.

use std::io::{IoSlice, Read, Write};

use super::header::{self, Header, SignedHeader, PREFIX_LEN};
use super::pool::{Done, Job, Pool, Task};
use super::record::{decode_frame, ChunkRecord, Frame, SectionEnd, Trailer, FRAME_LEN};
use super::{len64, Digest32};
use crate::auth::{SigningKeyPair, TrustStore, SIGNATURE_LEN};
use crate::error::{Code, Error, Result};

/// Batches in flight per hashing worker: one being hashed and one the caller
/// fills meanwhile (a batch is as many chunks as the engine hashes at once).
const BATCHES_PER_WORKER: usize = 2;

/// Streams with fewer chunks are hashed on the caller's thread.
const PARALLEL_MIN_CHUNKS: u64 = 16;

/// Most bytes of chunk buffers a reader or writer keeps in flight.
const MAX_IN_FLIGHT_BYTES: usize = 32 << 20;

/// The chunk size `save` uses unless told otherwise, for this machine: 1 MiB
/// ([`super::limits::DEFAULT_CHUNK_SIZE`]), or 512 KiB when 1 MiB chunks would
/// not let every hashing worker hold two full batches within the 32 MiB of
/// `MAX_IN_FLIGHT_BYTES`: sixteen-lane AVX-512 batches on two or more cores
/// (SHA-NI pairs on nine or more, one-message `sha2` batches on seventeen or
/// more). It follows the engine the process picked ([`mdevmig_sha2x::engine`]),
/// so on a CPU where SHA-NI and AVX-512 are close it can differ between runs
/// unless `MDEVMIG_SHA256_ENGINE` pins the engine.
///
/// Each chunk costs a signature (about 17 us to sign and 48 us to verify, next
/// to 170 us to hash 512 KiB in AVX-512 lanes), so chunks stay large; but with
/// one batch per worker both ends of `save | restore` run in bursts and stall
/// together. Measured on the 2-core Xeon (interleaved runs): with AVX-512,
/// 512 KiB chunks made save|restore ~8 % faster than 1 MiB and 256 KiB slower;
/// with SHA-NI pairs, 1 MiB stayed ~3 % faster than 512 KiB. Any chunk size is
/// valid for any reader; this only tunes what the source writes.
pub fn default_chunk_size() -> u32 {
    let (holders, per) = batch_holders(Pool::machine_workers());
    let want = holders
        .saturating_mul(per)
        .saturating_mul(mdevmig_sha2x::engine().lanes());
    let per_chunk = MAX_IN_FLIGHT_BYTES.checked_div(want).unwrap_or(0);
    let full = super::limits::DEFAULT_CHUNK_SIZE;
    if per_chunk >= usize::try_from(full).unwrap_or(usize::MAX) {
        full
    } else {
        full / 2
    }
}

/// Who holds batches, and how many each: two per worker, or one on the
/// caller's thread when there are no workers.
fn batch_holders(workers: usize) -> (usize, usize) {
    if workers == 0 {
        (1, 1)
    } else {
        (workers, BATCHES_PER_WORKER)
    }
}

/// Chunks to keep in flight, and sets the pool's batch size to match: two
/// batches per worker (one when the caller's thread hashes), within
/// [`MAX_IN_FLIGHT_BYTES`]. When the cap cuts that, batches shrink to one per
/// worker before they shrink below the engine's width (with 1 MiB chunks, a
/// full AVX-512 batch of sixteen per worker takes the whole cap on two cores).
fn depth_for(pool: &mut Pool, chunk_size: u32) -> usize {
    let cs = usize::try_from(chunk_size).unwrap_or(usize::MAX).max(1);
    let cap = MAX_IN_FLIGHT_BYTES.checked_div(cs).unwrap_or(1).max(1);
    let lanes = pool.lanes().max(1);
    let (holders, per) = batch_holders(pool.workers());
    let want = holders.saturating_mul(per).saturating_mul(lanes);
    let depth = want.min(cap).max(1);
    let batch = if depth >= want {
        lanes
    } else {
        lanes.min(depth.checked_div(holders).unwrap_or(1))
    };
    pool.set_batch(batch);
    depth
}

/// Writes an envelope. Chunks are hashed and signed on all cores; frames are
/// written in stream order.
pub struct StreamWriter<W: Write> {
    out: W,
    key: std::sync::Arc<(SigningKeyPair, Digest32)>,
    header: SignedHeader,
    section: usize,
    offset: u64,
    seq: u64,
    /// The chunk being built: always `chunk_size` long, its first `fill` bytes data.
    buf: Vec<u8>,
    fill: usize,
    total: u64,
    /// Data bytes of the chunks written to the output.
    emitted: u64,
    pool: Pool,
    in_flight: usize,
    depth: usize,
    free: Vec<Vec<u8>>,
}

impl<W: Write> StreamWriter<W> {
    /// Signs and writes `header` (its key_id must be `key`'s).
    pub fn new(mut out: W, header: &Header, key: &SigningKeyPair) -> Result<Self> {
        let signed = out_header(&mut out, header, key)?;
        let pool = if signed.header.chunk_count()? < PARALLEL_MIN_CHUNKS {
            Pool::new(0)
        } else {
            Pool::for_machine()
        };
        Self::with_pool(signed, out, key, pool)
    }

    /// As [`StreamWriter::new`], hashing on the caller's thread only.
    pub fn single_threaded(mut out: W, header: &Header, key: &SigningKeyPair) -> Result<Self> {
        Self::with_pool(out_header(&mut out, header, key)?, out, key, Pool::new(0))
    }

    fn with_pool(header: SignedHeader, out: W, key: &SigningKeyPair, mut pool: Pool) -> Result<Self> {
        // A chunk is never longer than the chunk size or the whole stream's data.
        let total = header.header.total_len().unwrap_or(u64::MAX);
        let cap = usize::try_from(u64::from(header.header.chunk_size).min(total)).unwrap_or(0);
        let depth = depth_for(&mut pool, header.header.chunk_size);
        let ctx = std::sync::Arc::new((key.clone(), header.digest));
        let mut w = StreamWriter {
            out,
            key: ctx,
            header,
            section: 0,
            offset: 0,
            seq: 0,
            buf: vec![0; cap],
            fill: 0,
            total: 0,
            emitted: 0,
            pool,
            in_flight: 0,
            depth,
            free: Vec::new(),
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

    /// Moves past exact-length sections with no data left (a streamed section
    /// ends only at [`StreamWriter::end_section`]).
    fn skip_empty_sections(&mut self) {
        while self
            .header
            .header
            .sections
            .get(self.section)
            .is_some_and(|s| !s.streamed() && s.length == self.offset.saturating_add(len64(self.fill)))
        {
            self.section = self.section.saturating_add(1);
            self.offset = 0;
        }
    }

    /// Appends data to the current section; data crossing an exact-length
    /// section's declared end continues in the next section.
    pub fn write_data(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = self.write_with(data.len(), |space| {
                let (head, _) = data.split_at(space.len().min(data.len()));
                space.copy_from_slice(head);
                Ok(())
            })?;
            data = data.get(n..).unwrap_or(&[]);
        }
        Ok(())
    }

    /// Lets `fill` write the next bytes of the current section straight into the
    /// chunk being built (no copy): `fill` gets between 1 and `max` bytes of space,
    /// never past the chunk or the section, and must fill all of it. Returns the
    /// number of bytes written (0 when `max` is 0).
    pub fn write_with(&mut self, max: usize, fill: impl FnOnce(&mut [u8]) -> Result<()>) -> Result<usize> {
        self.write_some(max, |space| fill(space).map(|()| space.len()))
    }

    /// As [`StreamWriter::write_with`], but `fill` may write fewer bytes than it
    /// is given and returns how many it wrote (a device read that returns what it
    /// has). A streamed section at its bound refuses more data with
    /// `limit.section_over_bound`.
    pub fn write_some(&mut self, max: usize, fill: impl FnOnce(&mut [u8]) -> Result<usize>) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let Some(sec) = self.header.header.sections.get(self.section) else {
            return Err(Error::new(
                Code::Internal,
                "more data than the header's sections declare",
            ));
        };
        let (length, streamed) = (sec.length, sec.streamed());
        let left_in_section = length
            .saturating_sub(self.offset)
            .saturating_sub(len64(self.fill));
        if left_in_section == 0 {
            return Err(Error::new(
                Code::SectionOverBound,
                format!("section {} already holds its bound of {length} bytes", sec.name),
            ));
        }
        let n = max
            .min(self.buf.len().saturating_sub(self.fill))
            .min(usize::try_from(left_in_section).unwrap_or(usize::MAX));
        let end = self.fill.saturating_add(n);
        let space = self
            .buf
            .get_mut(self.fill..end)
            .ok_or_else(|| Error::new(Code::Internal, "chunk buffer"))?;
        let got = fill(space)?.min(n);
        self.fill = self.fill.saturating_add(got);
        let at_end = self.offset.saturating_add(len64(self.fill)) == length;
        if self.fill == self.buf.len() || at_end {
            self.flush_chunk()?;
        }
        if at_end && !streamed {
            self.section = self.section.saturating_add(1);
            self.offset = 0;
            self.skip_empty_sections();
        }
        Ok(got)
    }

    /// Data bytes in the chunks cut so far (all of them once every section is
    /// complete): what the trailer's `total_len` will say.
    pub fn data_bytes(&self) -> u64 {
        self.total
    }

    /// Bytes the current section can still take: what is left of an exact
    /// section, or of a streamed section's bound (0 when there is no section).
    pub fn section_room(&self) -> u64 {
        self.header.header.sections.get(self.section).map_or(0, |s| {
            s.length
                .saturating_sub(self.offset)
                .saturating_sub(len64(self.fill))
        })
    }

    /// Writes every complete chunk (waiting for the hashing workers) and flushes
    /// the output: what a live save does at the device's temporary end of data,
    /// so the reader gets every byte that can be sent. The chunk being built
    /// stays: chunks are cut canonically (`spec/wire-format.md` §5), so its
    /// [`held`](StreamWriter::held) bytes go out with the data that completes it.
    pub fn flush_complete(&mut self) -> Result<()> {
        self.drain(0)?;
        self.out
            .flush()
            .map_err(|e| Error::io(Code::IoWrite, "flushing chunks", &e))
    }

    /// Data bytes in the chunk being built (not yet signed or written).
    pub fn held(&self) -> u64 {
        len64(self.fill)
    }

    /// Data bytes of the chunks written to the output so far (chunks being
    /// hashed and the one being built are not counted).
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Ends the current streamed section: writes its last (short) chunk and the
    /// signed end record with its final length, and moves to the next section.
    /// Returns the final length.
    pub fn end_section(&mut self) -> Result<u64> {
        let index = self.section;
        let Some(sec) = self.header.header.sections.get(index) else {
            return Err(Error::new(Code::Internal, "no section to end"));
        };
        if !sec.streamed() {
            return Err(Error::new(
                Code::Internal,
                format!(
                    "section {} has an exact length; only streamed sections end",
                    sec.name
                ),
            ));
        }
        self.flush_chunk()?;
        self.drain(0)?;
        let end = SectionEnd {
            section_index: u16::try_from(index).map_err(|_| Error::new(Code::Internal, "section index"))?,
            seq: self.seq,
            length: self.offset,
        };
        let sig = self.key.0.sign(&end.signed_message(&self.header.digest));
        write_all_vectored(&mut self.out, [&end.fields()[..], &sig[..]])
            .map_err(|e| Error::io(Code::IoWrite, "writing a section end", &e))?;
        self.section = index.saturating_add(1);
        self.offset = 0;
        self.skip_empty_sections();
        Ok(end.length)
    }

    fn emit(&mut self, d: Done) -> Result<()> {
        let fields = d.rec.fields();
        write_all_vectored(&mut self.out, [&fields[..], &d.sig[..], &d.buf[..]])
            .map_err(|e| Error::io(Code::IoWrite, "writing chunk", &e))?;
        self.emitted = self.emitted.saturating_add(len64(d.buf.len()));
        self.free.push(d.buf);
        Ok(())
    }

    fn drain(&mut self, keep: usize) -> Result<()> {
        while self.in_flight > keep {
            let d = self
                .pool
                .collect()
                .ok_or_else(|| Error::new(Code::Internal, "hashing worker lost"))?;
            self.in_flight = self.in_flight.saturating_sub(1);
            self.emit(d)?;
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<()> {
        if self.fill == 0 {
            return Ok(());
        }
        let rec = ChunkRecord {
            section_index: u16::try_from(self.section)
                .map_err(|_| Error::new(Code::Internal, "section index"))?,
            data_len: u32::try_from(self.fill).map_err(|_| Error::new(Code::Internal, "chunk length"))?,
            seq: self.seq,
            offset: self.offset,
        };
        let cs = self.buf.len();
        // Buffers come back from the pool holding their last chunk; only a short
        // one needs its tail re-extended (with zeros, overwritten before use).
        // A new buffer comes zeroed from the allocator (calloc: fresh pages need
        // no second zeroing pass).
        let mut next = self.free.pop().unwrap_or_else(|| vec![0; cs]);
        next.resize(cs, 0);
        let mut buf = std::mem::replace(&mut self.buf, next);
        buf.truncate(self.fill);
        self.fill = 0;
        self.seq = self.seq.saturating_add(1);
        self.offset = self.offset.saturating_add(len64(buf.len()));
        self.total = self.total.saturating_add(len64(buf.len()));
        let job = Job {
            rec,
            buf,
            task: Task::Sign(self.key.clone()),
        };
        self.pool.submit(job);
        self.in_flight = self.in_flight.saturating_add(1);
        self.drain(self.depth.saturating_sub(1))
    }

    /// Writes the trailer; fails if any section is short of its declared length
    /// or a streamed section was not ended.
    pub fn finish(mut self) -> Result<W> {
        if let Some(sec) = self.header.header.sections.get(self.section) {
            return Err(Error::new(
                Code::Internal,
                format!(
                    "section {} got {} of its {} bytes",
                    sec.name,
                    self.offset.saturating_add(len64(self.fill)),
                    sec.length
                ),
            ));
        }
        self.drain(0)?;
        let t = Trailer {
            chunk_count: self.seq,
            total_len: self.total,
        };
        let sig = self.key.0.sign(&t.signed_message(&self.header.digest));
        self.out
            .write_all(&t.fields())
            .and_then(|()| self.out.write_all(&sig))
            .and_then(|()| self.out.flush())
            .map_err(|e| Error::io(Code::IoWrite, "writing trailer", &e))?;
        let StreamWriter { out, .. } = self;
        Ok(out)
    }
}

/// Writes every byte of `parts` in order, in as few writes as the output takes
/// (one `writev` for a frame and its data on a file or pipe).
fn write_all_vectored<const N: usize>(out: &mut impl Write, parts: [&[u8]; N]) -> std::io::Result<()> {
    let mut slices = parts.map(IoSlice::new);
    let mut bufs = slices.as_mut_slice();
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match out.write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn out_header(out: &mut impl Write, header: &Header, key: &SigningKeyPair) -> Result<SignedHeader> {
    let header = header.sign(key)?;
    out.write_all(&header.bytes)
        .map_err(|e| Error::io(Code::IoWrite, "writing header", &e))?;
    Ok(header)
}

/// What a reader requires beyond a trusted signature.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The session nonce this destination issued; the stream must be bound to it.
    pub expected_nonce: Option<[u8; 32]>,
    /// Hash on the caller's thread only (no worker threads).
    pub single_threaded: bool,
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

/// What the reader expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A chunk of an exact-length section, with its canonical length.
    Chunk(u64),
    /// A chunk of a streamed section (at most `room` bytes before its bound) or
    /// its end record; only the end record when `must_end`.
    Streamed { room: u64, must_end: bool },
    /// The trailer.
    Trailer,
}

/// An item of the reader's read-ahead queue, in stream order.
enum Ahead {
    /// A chunk being hashed and verified by the pool.
    Chunk(ChunkRecord),
    /// A chunk hashed and verified, collected from the pool.
    Ready(Done),
    /// The trailer frame.
    Trailer(Trailer, [u8; SIGNATURE_LEN]),
    /// A section end frame.
    End(SectionEnd, [u8; SIGNATURE_LEN]),
    /// The stream failed here (I/O, truncation, malformed frame).
    Failed(Error),
}

/// Reads and verifies an envelope. Chunk data is read ahead and hashed on all cores
/// while the caller consumes earlier chunks; every check still happens, and every
/// error is reported, in stream order.
pub struct StreamReader<R: Read> {
    src: R,
    header: SignedHeader,
    ctx: std::sync::Arc<(ed25519_dalek::VerifyingKey, Digest32)>,
    /// Next expected chunk: section index, offset, seq.
    section: usize,
    offset: u64,
    seq: u64,
    /// The current streamed section's last chunk was short (or reached its
    /// bound): its end record must come next.
    must_end: bool,
    /// Data bytes accepted so far (the trailer's `total_len`).
    received: u64,
    /// The buffer of the chunk last returned.
    cur: Vec<u8>,
    free: Vec<Vec<u8>>,
    ahead: std::collections::VecDeque<Ahead>,
    /// Reading stopped (trailer or failure queued).
    stopped: bool,
    pool: Pool,
    depth: usize,
    done: bool,
    /// Bytes read from the input so far (including read-ahead).
    position: u64,
}

/// A chunk whose signature does not verify (`auth.bad_chunk_signature`).
fn bad_chunk_signature(rec: &ChunkRecord) -> Error {
    Error::new(
        Code::BadChunkSignature,
        format!("chunk {} fails its signature", rec.seq),
    )
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
        let mut pool = if opts.single_threaded {
            Pool::new(0)
        } else {
            Pool::for_machine()
        };
        let depth = depth_for(&mut pool, header.header.chunk_size);
        let ctx = std::sync::Arc::new((key, header.digest));
        let mut r = StreamReader {
            src,
            header,
            ctx,
            section: 0,
            offset: 0,
            seq: 0,
            must_end: false,
            received: 0,
            cur: Vec::new(),
            free: Vec::new(),
            ahead: std::collections::VecDeque::new(),
            stopped: false,
            pool,
            depth,
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

    /// Moves past exact-length sections with no data left (a streamed section
    /// ends only at its end record).
    fn skip_empty_sections(&mut self) {
        while self
            .header
            .header
            .sections
            .get(self.section)
            .is_some_and(|s| !s.streamed() && s.length == self.offset)
        {
            self.section = self.section.saturating_add(1);
            self.offset = 0;
        }
    }

    /// What the next record must be.
    fn expect(&self) -> Expect {
        let cs = u64::from(self.header.header.chunk_size);
        match self.header.header.sections.get(self.section) {
            None => Expect::Trailer,
            Some(s) if s.streamed() => {
                let room = s.length.saturating_sub(self.offset);
                Expect::Streamed {
                    room,
                    must_end: self.must_end || room == 0,
                }
            }
            Some(s) => Expect::Chunk(s.length.saturating_sub(self.offset).min(cs)),
        }
    }

    fn read_frame(&mut self) -> Result<Frame> {
        let mut frame = [0u8; FRAME_LEN];
        read_exact_or(&mut self.src, &mut frame, "a record frame")?;
        self.position = self.position.saturating_add(len64(FRAME_LEN));
        decode_frame(&frame)
    }

    /// Reads one record into the read-ahead queue and starts hashing it.
    fn read_one(&mut self) {
        let item = match self.read_frame() {
            Err(e) => Ahead::Failed(e),
            Ok(Frame::Trailer(t, sig)) => Ahead::Trailer(t, sig),
            Ok(Frame::End(e, sig)) => Ahead::End(e, sig),
            Ok(Frame::Chunk(rec, sig)) => match self.read_data(&rec) {
                Err(e) => Ahead::Failed(e),
                Ok(buf) => {
                    self.pool.submit(Job {
                        rec,
                        buf,
                        task: Task::Verify(self.ctx.clone(), sig),
                    });
                    Ahead::Chunk(rec)
                }
            },
        };
        if !matches!(item, Ahead::Chunk(_) | Ahead::End(..)) {
            self.stopped = true;
            // No more chunks are coming: start the last batch.
            self.pool.flush();
        }
        self.ahead.push_back(item);
    }

    /// Checks a chunk's declared length and reads its data into a free buffer.
    fn read_data(&mut self, rec: &ChunkRecord) -> Result<Vec<u8>> {
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
        let mut buf = self.free.pop().unwrap_or_else(|| vec![0; n]);
        buf.resize(n, 0);
        read_exact_or(&mut self.src, &mut buf, "chunk data")?;
        self.position = self.position.saturating_add(u64::from(rec.data_len));
        Ok(buf)
    }

    /// Keeps `depth` chunks in flight.
    fn fill(&mut self) {
        while !self.stopped && self.ahead.len() < self.depth {
            self.read_one();
        }
    }

    /// The next item in stream order, with its hash result if it is a chunk.
    fn next_item(&mut self) -> Result<Ahead> {
        self.fill();
        if self.ahead.is_empty() {
            self.read_one();
        }
        match self.ahead.pop_front() {
            Some(Ahead::Chunk(_)) => {
                let d = self
                    .pool
                    .collect()
                    .ok_or_else(|| Error::new(Code::Internal, "hashing worker lost"))?;
                Ok(Ahead::Ready(d))
            }
            Some(other) => Ok(other),
            None => Err(Error::new(Code::Internal, "read-ahead queue empty")),
        }
    }

    /// After an out-of-sequence chunk: a look at the next record tells a reordered
    /// chunk (the expected one comes next) from a dropped one.
    fn classify_gap(&mut self, got: u64) -> Error {
        let expected = self.seq;
        if self.ahead.is_empty() && !self.stopped {
            self.read_one();
        }
        let next_seq = match self.ahead.front() {
            Some(Ahead::Chunk(r)) => Some(r.seq),
            _ => None,
        };
        if next_seq == Some(expected) {
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

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.free.len() < self.depth.saturating_add(1) {
            self.free.push(buf);
        }
    }

    /// The next verified chunk, or `None` once the trailer has been verified and
    /// the input has ended. Section end records are checked and consumed here.
    pub fn next_chunk(&mut self) -> Result<Option<VerifiedChunk<'_>>> {
        if self.done {
            return Ok(None);
        }
        let prev = std::mem::take(&mut self.cur);
        self.recycle(prev);
        loop {
            let item = self.next_item()?;
            let expect = self.expect();
            if expect == Expect::Trailer {
                return self.finish(item).map(|()| None);
            }
            let d = match item {
                Ahead::Ready(d) => d,
                Ahead::Failed(e) => return Err(e),
                Ahead::Trailer(..) => {
                    return Err(Error::new(
                        Code::ChunkDropped,
                        format!(
                            "trailer arrived where {} was expected",
                            self.expected_what(expect)
                        ),
                    ));
                }
                Ahead::End(end, sig) => {
                    self.check_end_signature(&end, &sig)?;
                    if !matches!(expect, Expect::Streamed { .. }) {
                        return Err(Error::new(
                            Code::ChunkMismatch,
                            format!(
                                "a section end record for section {} where {} was expected",
                                end.section_index,
                                self.expected_what(expect)
                            ),
                        ));
                    }
                    self.accept_end(&end)?;
                    continue;
                }
                Ahead::Chunk(_) => return Err(Error::new(Code::Internal, "unhashed chunk")),
            };
            self.check_chunk(&d.rec, d.ok, expect)?;
            let rec = d.rec;
            let offset = self.offset;
            let len = u64::from(rec.data_len);
            if let Expect::Streamed { room, .. } = expect {
                self.must_end = len < u64::from(self.header.header.chunk_size) || len == room;
            }
            self.seq = self.seq.saturating_add(1);
            self.offset = self.offset.saturating_add(len);
            self.received = self.received.saturating_add(len);
            self.skip_empty_sections();
            self.cur = d.buf;
            return Ok(Some(VerifiedChunk {
                section_index: rec.section_index,
                offset,
                data: &self.cur,
            }));
        }
    }

    /// Names the record the reader expects, for messages.
    fn expected_what(&self, expect: Expect) -> String {
        match expect {
            Expect::Chunk(_) => format!("chunk {}", self.seq),
            Expect::Streamed { must_end: true, .. } => format!("the end of section {}", self.section),
            Expect::Streamed { .. } => format!("chunk {} or the end of section {}", self.seq, self.section),
            Expect::Trailer => "the trailer".into(),
        }
    }

    /// The checks of a verified-or-not chunk where a chunk may stand, in the
    /// order `spec/wire-format.md` §5 gives (steps 5 to 8): signature, sequence,
    /// position, length.
    fn check_chunk(&mut self, rec: &ChunkRecord, signature_ok: bool, expect: Expect) -> Result<()> {
        if !signature_ok {
            return Err(bad_chunk_signature(rec));
        }
        self.check_seq(rec)?;
        self.check_position(rec)?;
        self.check_length(rec, expect)
    }

    /// Step 6: a `seq` below the reader's is a duplicate; above it, the
    /// look-ahead tells a reordered chunk from a dropped one.
    fn check_seq(&mut self, rec: &ChunkRecord) -> Result<()> {
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
        Ok(())
    }

    /// Step 7: the chunk's section and offset are the reader's.
    fn check_position(&self, rec: &ChunkRecord) -> Result<()> {
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
        Ok(())
    }

    /// Step 8: the chunk's length against what is expected: the canonical
    /// length in an exact section; in a streamed one, nothing at its bound,
    /// nothing after a short chunk, and never past the bound.
    fn check_length(&self, rec: &ChunkRecord, expect: Expect) -> Result<()> {
        let len = u64::from(rec.data_len);
        match expect {
            Expect::Chunk(canonical) if len != canonical => Err(Error::new(
                Code::BadChunkLength,
                format!(
                    "chunk {} has {len} bytes; the canonical length is {canonical}",
                    rec.seq
                ),
            )),
            Expect::Streamed { room: 0, .. } => Err(Error::new(
                Code::SectionOverBound,
                format!(
                    "chunk {} carries data past section {}'s bound",
                    rec.seq, self.section
                ),
            )),
            Expect::Streamed { must_end: true, .. } => Err(Error::new(
                Code::BadChunkLength,
                format!(
                    "chunk {} follows a short chunk of section {}, whose end record was due",
                    rec.seq, self.section
                ),
            )),
            Expect::Streamed { room, .. } if len > room => Err(Error::new(
                Code::SectionOverBound,
                format!(
                    "chunk {} carries {len} bytes where section {}'s bound leaves {room}",
                    rec.seq, self.section
                ),
            )),
            _ => Ok(()),
        }
    }

    fn check_end_signature(&self, end: &SectionEnd, sig: &[u8; SIGNATURE_LEN]) -> Result<()> {
        if crate::auth::verify(&self.ctx.0, &end.signed_message(&self.header.digest), sig) {
            Ok(())
        } else {
            Err(Error::new(
                Code::BadEndSignature,
                format!(
                    "the end record of section {} fails its signature",
                    end.section_index
                ),
            ))
        }
    }

    /// A verified end record where the current streamed section may end.
    fn accept_end(&mut self, end: &SectionEnd) -> Result<()> {
        if end.seq > self.seq {
            return Err(Error::new(
                Code::ChunkDropped,
                format!(
                    "the end of section {} follows chunk {}, but chunk {} is the next to arrive",
                    end.section_index,
                    end.seq.saturating_sub(1),
                    self.seq
                ),
            ));
        }
        if end.seq < self.seq {
            return Err(Error::new(
                Code::ChunkDuplicated,
                format!("an end record from before chunk {} arrived again", end.seq),
            ));
        }
        if usize::from(end.section_index) != self.section {
            return Err(Error::new(
                Code::ChunkMismatch,
                format!(
                    "an end record for section {} where section {} is open",
                    end.section_index, self.section
                ),
            ));
        }
        if end.length != self.offset {
            return Err(Error::new(
                Code::SectionLengthMismatch,
                format!(
                    "section {} ends at {} bytes by its end record, but its chunks carried {}",
                    self.section, end.length, self.offset
                ),
            ));
        }
        self.section = self.section.saturating_add(1);
        self.offset = 0;
        self.must_end = false;
        self.skip_empty_sections();
        Ok(())
    }

    /// The record where the trailer is expected (`spec/wire-format.md` §5, "The
    /// end"): only a verified trailer that matches what the stream carried,
    /// followed by the end of input, completes the stream.
    fn finish(&mut self, item: Ahead) -> Result<()> {
        match item {
            Ahead::Failed(e) => return Err(e),
            Ahead::Chunk(_) => return Err(Error::new(Code::Internal, "unhashed chunk")),
            Ahead::End(end, sig) => return Err(self.end_past_the_sections(&end, &sig)),
            Ahead::Ready(d) => return Err(self.chunk_past_the_sections(&d.rec, d.ok)),
            Ahead::Trailer(t, sig) => self.check_trailer(&t, &sig)?,
        }
        self.check_input_ended()?;
        self.done = true;
        Ok(())
    }

    /// A section end record where the trailer belongs: its signature, then
    /// `format.chunk_mismatch`.
    fn end_past_the_sections(&self, end: &SectionEnd, sig: &[u8; SIGNATURE_LEN]) -> Error {
        if let Err(e) = self.check_end_signature(end, sig) {
            return e;
        }
        Error::new(
            Code::ChunkMismatch,
            format!(
                "an end record for section {} where the trailer belongs",
                end.section_index
            ),
        )
    }

    /// A chunk where the trailer belongs: its signature says whether it is
    /// ours; then a duplicate, or a chunk the header has no room for.
    fn chunk_past_the_sections(&self, rec: &ChunkRecord, signature_ok: bool) -> Error {
        if !signature_ok {
            return bad_chunk_signature(rec);
        }
        if rec.seq < self.seq {
            return Error::new(
                Code::ChunkDuplicated,
                format!("chunk {} arrived again after the last chunk", rec.seq),
            );
        }
        Error::new(
            Code::ChunkMismatch,
            format!("chunk {} is beyond the sections' declared lengths", rec.seq),
        )
    }

    /// The trailer: its signature, then its counts against the stream's.
    fn check_trailer(&self, t: &Trailer, sig: &[u8; SIGNATURE_LEN]) -> Result<()> {
        if !crate::auth::verify(&self.ctx.0, &t.signed_message(&self.header.digest), sig) {
            return Err(Error::new(
                Code::BadTrailerSignature,
                "the trailer signature does not verify",
            ));
        }
        if t.chunk_count != self.seq || t.total_len != self.received {
            return Err(Error::new(
                Code::TrailerMismatch,
                format!(
                    "trailer says {} chunks / {} bytes; the stream carried {} / {}",
                    t.chunk_count, t.total_len, self.seq, self.received
                ),
            ));
        }
        Ok(())
    }

    /// Nothing may follow the trailer.
    fn check_input_ended(&mut self) -> Result<()> {
        let mut probe = [0u8; 1];
        loop {
            match self.src.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(Error::new(Code::TrailingData, "bytes follow the trailer")),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(Code::IoRead, "reading after the trailer", &e)),
            }
        }
    }

    /// Data bytes verified and handed out so far.
    pub fn received(&self) -> u64 {
        self.received
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
