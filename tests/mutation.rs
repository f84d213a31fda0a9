//! A deterministic, structure-aware mutation suite for the envelope reader, the
//! broker's restore path and the vendor plugins.
//!
//! Valid signed streams (the `spec/vectors` generator's single, session-bound and
//! multi-section streams, a 25-chunk stream deeper than the reader's read-ahead,
//! and a real mtty stream saved from a simulated device) are mutated field by
//! field ([`layout`] knows where every field is), truncated, re-split, reordered,
//! duplicated, dropped, spliced and replayed. Each field mutation is read twice: as
//! it is (a changed signed byte must be refused) and re-signed by the test key (so
//! the structural checks behind the signatures are reached: a length, count,
//! undefined flag, kind or reserved byte must still be refused, and anything
//! accepted must be the one canonical encoding of its content). For every input:
//!
//! - nothing panics (each input runs under `catch_unwind`; a failure names it);
//! - nothing modified is accepted as the original;
//! - every rejection's code is documented in `spec/errors.md`;
//! - the reader's allocation stays bounded: a counting global allocator tracks the
//!   bytes the reading thread holds, and the peak while reading one stream must stay
//!   below 64 KiB plus one 4096-byte chunk buffer per slot the reader keeps (the
//!   chunk it returned, one recycled, and two per core of read-ahead; the reader
//!   now reads up to four per core ahead, two pairs per hashing worker, and the
//!   64 KiB margin absorbs the difference: 55,064 bytes measured on 2 cores): an
//!   inflated `data_len` must not allocate. The counters are per thread so that
//!   tests running in parallel (and the reader's hashing workers) do not disturb
//!   the measurement.
//!
//! A stream carrying an **Xe** streamed section (a simulated xe-vf-tiny VF's
//! packet stream, 313 KB in 64 KiB chunks and its signed section end record) gets
//! the same treatment with the streamed rules added: the section's flags and
//! bound, the end record's fields, the end record dropped, repeated, moved,
//! spliced, and the section ended early by the signer (a valid envelope). Then
//! its **payload** is mutated with the envelope signed again, so that only the Xe
//! validator stands in the way: every packet header field (version, type, tile
//! and GT ids, flags, offset + size overflow, size 2^63, ...), packets dropped,
//! repeated, inserted after the trailer, the payload cut; the envelope must be
//! accepted and the validator must refuse with the documented `vendor.xe.*` code
//! the check order gives, chunk by chunk as the broker feeds it and whole alike.
//! xe-vf-tiny is not a device type the plugin offers, so the broker's restore
//! into a simulated Xe VF is exercised with xe-vf-64m streams in 1 MiB chunks
//! (`restore_refuses_mutated_xe_streams_and_nothing_reaches_the_device`): every
//! refusal leaves the device RUNNING with its state unchanged, and the refused
//! packet's header never reaches the device whole.
//!
//! The `bug_class_NN_*` tests are the ten bug classes of state loaders from the
//! field notes (QEMU CVE-2013-4148 onwards), each run against the envelope and the
//! vendor plugins.

use mdevmig_testkit::layout;
use mdevmig_testkit::vectors;
// The fuzz targets' logic, shared for regression replay, seeds and helpers.
use mdevmig_testkit::streamed as fuzz_streamed;
use mdevmig_testkit::xe_splits as fuzz_xe;

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use layout::{layout, must_refuse_signed, put, values, Field};
use layout::{Kind, Layout};
use mdevmig::auth::{SigningKeyPair, TrustStore};
use mdevmig::broker::{self, RestoreOptions, SaveOptions};
use mdevmig::codec::header::{Header, SectionEntry};
use mdevmig::codec::record::{ChunkRecord, SectionEnd, KIND_END};
use mdevmig::codec::ReadOptions;
use mdevmig::codec::StreamWriter;
use mdevmig::codec::{Trailer, SECTION_REQUIRED, SECTION_STREAMED};
use mdevmig::device::{MigState, MigrationDevice};
use mdevmig::plugins::Registry;
use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::{DeviceInfo, VendorPlugin};
use mdevmig_testkit::{
    documented, read_all, read_with, reencode, resign, test_signer, test_trust, Accepted, Segmented,
};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------
// Counting allocator.

struct Counting;

thread_local! {
    /// Bytes this thread holds now, relative to the last reset (may go negative
    /// when it frees what it held before).
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    /// The most `CURRENT` has been since the last reset.
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Inputs read under measurement, all threads.
static MEASURED: AtomicU64 = AtomicU64::new(0);

fn track(delta: isize) {
    // try_with: no panic during thread teardown; the keys are const-initialised
    // Cells without destructors, so they never allocate.
    let _ = CURRENT.try_with(|c| {
        let now = c.get().saturating_add(delta);
        c.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn size(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged
// and only updates thread-local counters besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        track(size(layout.size()));
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        track(size(layout.size()));
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        track(-size(layout.size()));
        // SAFETY: `ptr` was allocated by `System` with `layout` (all our allocations are).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        track(size(new_size) - size(layout.size()));
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the peak number of bytes this thread
/// allocated on top of what it held when `f` started.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    CURRENT.with(|c| c.set(0));
    PEAK.with(|p| p.set(0));
    let out = f();
    MEASURED.fetch_add(1, Ordering::Relaxed);
    let peak = PEAK.with(|p| p.get());
    (out, usize::try_from(peak).unwrap_or(0))
}

/// The streams' chunk size.
const CHUNK: usize = 4096;

/// The allocation bound while reading one stream with 4096-byte chunks: 64 KiB
/// for the header, the hashers and messages, and one buffer per chunk the reader
/// holds: the one it returned, one recycled, and its read-ahead of two batches per
/// core, a batch being as many chunks as the CPU's hashing engine takes at once
/// (sixteen with AVX-512, two with SHA-NI). The bound is the reader's design
/// constants, whatever the streams say; nothing may depend on a length read from
/// the stream.
fn alloc_bound() -> usize {
    alloc_bound_for(CHUNK)
}

/// [`alloc_bound`] for streams of `chunk`-byte chunks.
fn alloc_bound_for(chunk: usize) -> usize {
    // available_parallelism reads cgroup files on every call: once is enough.
    static SLOTS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let slots = *SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let lanes = mdevmig_sha2x::engine().lanes();
        2 + 2 * cores * lanes
    });
    64 * 1024 + slots * chunk
}

// ---------------------------------------------------------------------------
// The streams.

/// A valid stream to mutate.
struct Base {
    name: &'static str,
    bytes: Vec<u8>,
    /// The nonce a destination verifies it with.
    nonce: Option<[u8; 32]>,
    /// The same content in another stream (another stream id).
    other: Vec<u8>,
    /// What reading it gives.
    accepted: Accepted,
    /// Its chunk size (the allocation bound depends on it).
    chunk: usize,
    /// It has streamed sections (section end records).
    streamed: bool,
}

fn base(name: &'static str, bytes: Vec<u8>, other: Vec<u8>, nonce: Option<[u8; 32]>) -> Base {
    let accepted = read_all(&bytes[..], &test_trust(), nonce).unwrap_or_else(|e| panic!("{name}: {e}"));
    Base {
        name,
        bytes,
        nonce,
        other,
        accepted,
        chunk: CHUNK,
        streamed: false,
    }
}

fn with_stream_id(mut h: Header, id: u8) -> Header {
    h.stream_id = [id; 16];
    h
}

fn single_base() -> Base {
    let (h, d) = vectors::single();
    let k = vectors::signer();
    base(
        "single",
        vectors::build(&h, &k, &d),
        vectors::build(&with_stream_id(h, 0x31), &k, &d),
        None,
    )
}

fn bound_base() -> Base {
    let (mut h, d) = vectors::single();
    h.flags = mdevmig::codec::FLAG_SESSION_BOUND;
    h.session_nonce = vectors::SESSION;
    let k = vectors::signer();
    base(
        "bound",
        vectors::build(&h, &k, &d),
        vectors::build(&with_stream_id(h, 0x32), &k, &d),
        Some(vectors::SESSION),
    )
}

fn multi_base() -> Base {
    let (h, d) = vectors::multi();
    let k = vectors::signer();
    base(
        "multi",
        vectors::build(&h, &k, &d),
        vectors::build(&with_stream_id(h, 0x33), &k, &d),
        None,
    )
}

/// 25 chunks in two sections: deeper than the reader's read-ahead on any
/// machine with up to 12 cores.
fn long_base() -> Base {
    let (mut h, _) = vectors::multi();
    h.sections.truncate(2);
    h.sections[0].length = 20 * CHUNK as u64 + 100;
    h.sections[1].length = 3 * CHUNK as u64;
    let d: Vec<Vec<u8>> = h
        .sections
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (0..s.length)
                .map(|j| (j as u8).wrapping_mul(13) ^ i as u8)
                .collect()
        })
        .collect();
    let k = vectors::signer();
    base(
        "long",
        vectors::build(&h, &k, &d),
        vectors::build(&with_stream_id(h, 0x34), &k, &d),
        None,
    )
}

fn registry() -> Registry {
    Registry::builtin()
}

fn open_sim(spec: &str) -> Box<dyn MigrationDevice> {
    mdevmig::device::open(&spec.parse().unwrap(), &registry())
        .unwrap()
        .0
}

/// A real mtty-2 stream saved from a simulated device (4096-byte chunks).
fn mtty_stream(seed: u64, session: Option<[u8; 32]>) -> Vec<u8> {
    let mut dev = open_sim(&format!("sim:mtty/mtty-2,seed={seed}"));
    let mut out = Vec::new();
    let opts = SaveOptions {
        chunk_size: CHUNK as u32,
        session,
        ..SaveOptions::default()
    };
    broker::save(&mut *dev, &registry(), &test_signer(), &mut out, &opts).unwrap();
    out
}

fn mtty_base() -> Base {
    base("mtty", mtty_stream(3, None), mtty_stream(3, None), None)
}

// ---------------------------------------------------------------------------
// The runner.

/// How thoroughly a base stream is mutated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// Every byte (truncation, flips, re-splits): the small streams.
    Every,
    /// Every field and record boundary, data sampled: the multi-section stream.
    Fields,
    /// Record boundaries and the first and last chunks: the long stream.
    Records,
}

/// What a mutated input must do.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Be refused (any documented code).
    Reject,
    /// Be refused with this code.
    Code(&'static str),
    /// Be refused, or be accepted as the canonical encoding of its content
    /// (re-signed mutations of free values).
    RejectOrCanonical,
    /// Be accepted as the canonical encoding of its content (a re-signed stream
    /// that is valid: a streamed section's bound anywhere from its final length
    /// to the limit, a streamed section ended early).
    Accepted,
    /// Give exactly what the base stream gives (re-split input).
    Same,
}

/// How the input reaches the reader.
#[derive(Debug, Clone, Copy)]
enum Feed<'a> {
    Whole,
    Pieces(usize),
    Cuts(&'a [usize]),
}

struct Runner<'b> {
    base: &'b Base,
    trust: TrustStore,
    key: SigningKeyPair,
    count: u64,
    peak: usize,
    failures: Vec<String>,
    /// Read through the reader's hashing workers and read-ahead (the default
    /// reader), else on the caller's thread alone.
    pooled: bool,
}

impl<'b> Runner<'b> {
    fn new(base: &'b Base) -> Self {
        Runner {
            base,
            trust: test_trust(),
            key: test_signer(),
            count: 0,
            peak: 0,
            failures: Vec::new(),
            pooled: false,
        }
    }

    fn fail(&mut self, what: &dyn Fn() -> String, why: String) {
        if self.failures.len() < 40 {
            self.failures
                .push(format!("{}: {}: {why}", self.base.name, what()));
        }
    }

    /// Reads one input and checks it. A modified input identical to its base
    /// does not count.
    fn check(
        &mut self,
        what: &dyn Fn() -> String,
        input: &[u8],
        nonce: Option<[u8; 32]>,
        feed: Feed<'_>,
        expect: Expect,
    ) {
        if !matches!(expect, Expect::Same) && input == self.base.bytes && nonce == self.base.nonce {
            return;
        }
        self.count += 1;
        let trust = &self.trust;
        let pooled = self.pooled;
        let (result, peak) = measure(|| {
            catch_unwind(AssertUnwindSafe(|| {
                // Re-split input alternates: odd piece sizes are hashed on this
                // thread, even ones by the workers; neither may change the outcome.
                let single_threaded = match feed {
                    Feed::Pieces(k) => k % 2 == 1,
                    _ => !pooled,
                };
                let opts = ReadOptions {
                    expected_nonce: nonce,
                    single_threaded,
                };
                match feed {
                    Feed::Whole => read_with(input, trust, &opts),
                    Feed::Pieces(k) => read_with(Segmented::every(input, k), trust, &opts),
                    Feed::Cuts(c) => read_with(Segmented::at(input, c), trust, &opts),
                }
            }))
        });
        self.peak = self.peak.max(peak);
        let bound = alloc_bound_for(self.base.chunk);
        if peak > bound {
            self.fail(what, format!("reading allocated {peak} bytes, above {bound}"));
        }
        let result = match result {
            Ok(r) => r,
            Err(_) => return self.fail(what, "the reader panicked".into()),
        };
        match (result, expect) {
            (Err(e), _) if !documented(e.code.as_str()) => {
                self.fail(what, format!("undocumented code {}", e.code))
            }
            (Err(e), Expect::Same | Expect::Accepted) => {
                self.fail(what, format!("refused ({}: {})", e.code, e.message))
            }
            (Err(e), Expect::Code(c)) if e.code.as_str() != c => self.fail(
                what,
                format!("refused with {}, expected {c}: {}", e.code, e.message),
            ),
            (Err(_), _) => {}
            (Ok(_), Expect::Reject | Expect::Code(_)) => {
                self.fail(what, "accepted after modification".into())
            }
            (Ok(a), Expect::Same) if a != self.base.accepted => {
                self.fail(what, "accepted with other content than the base".into())
            }
            (Ok(_), Expect::Same) => {}
            (Ok(_), Expect::RejectOrCanonical | Expect::Accepted) => {
                if self.reencode(input).as_deref() != Some(input) {
                    self.fail(
                        what,
                        "accepted, but not the canonical encoding of its content".into(),
                    )
                }
            }
        }
    }

    fn whole(&mut self, what: &dyn Fn() -> String, input: &[u8], expect: Expect) {
        self.check(what, input, self.base.nonce, Feed::Whole, expect)
    }

    /// Re-signs a mutated input with the test key (section end records too, for
    /// streams with streamed sections).
    fn resign(&self, input: &[u8]) -> Vec<u8> {
        if self.base.streamed {
            fuzz_streamed::resign_streamed(input, &self.key)
        } else {
            resign(input, &self.key)
        }
    }

    /// The canonical encoding of an accepted input's content.
    fn reencode(&self, input: &[u8]) -> Option<Vec<u8>> {
        if self.base.streamed {
            fuzz_streamed::reencode(input, &self.trust, &self.key)
        } else {
            reencode(input, &self.trust, &self.key)
        }
    }

    fn finish(self, into: &mut Totals) {
        into.count += self.count;
        into.peak = into.peak.max(self.peak);
        into.failures.extend(self.failures);
    }
}

#[derive(Default)]
struct Totals {
    count: u64,
    peak: usize,
    failures: Vec<String>,
}

// ---------------------------------------------------------------------------
// Mutation families. Each takes a runner for one base stream.

/// Every field set to each of its mutation values, as it is and re-signed. In
/// streams of many chunks, the fields of the last two chunks and the trailer.
fn fields(r: &mut Runner<'_>) {
    let b = r.base.bytes.clone();
    let l = layout(&b);
    let n = l.chunks.len();
    // Long streams: the last two chunks (behind the read-ahead) and the trailer;
    // the header and the first chunks are the multi-section stream's.
    let wanted = |f: &Field| {
        n <= 5
            || f.name.starts_with("trailer.")
            || [n - 2, n - 1]
                .iter()
                .any(|i| f.name.starts_with(&format!("chunk[{i}].")))
    };
    for f in l.fields.iter().filter(|f| wanted(f)) {
        for v in values(f) {
            let mut m = b.clone();
            put(&mut m, f.at, f.width, v);
            let what = || format!("{} = {v:#x}", f.name);
            r.whole(&what, &m, Expect::Reject);
            let signed = resign(&m, &r.key);
            let what = || format!("{} = {v:#x}, re-signed", f.name);
            let expect = if must_refuse_signed(f, v) {
                Expect::Reject
            } else {
                Expect::RejectOrCanonical
            };
            r.whole(&what, &signed, expect);
        }
    }
}

/// Every prefix, for small streams; every boundary ±1 for large ones.
fn truncations(r: &mut Runner<'_>, depth: Depth) {
    let b = r.base.bytes.clone();
    let l = stream_layout(&b);
    let records: Vec<usize> = l
        .chunks
        .iter()
        .flat_map(|(s, e)| [*s, s + 24, s + 88, *e])
        .chain([0, 16, l.header_len, l.trailer])
        .collect();
    let mut cuts: Vec<usize> = match depth {
        Depth::Every => (0..b.len()).collect(),
        Depth::Fields => l
            .boundaries
            .iter()
            .flat_map(|p| [p.saturating_sub(1), *p, p + 1])
            .chain(0..l.header_len + 1)
            .chain((0..b.len()).step_by(97))
            .collect(),
        Depth::Records => records
            .iter()
            .flat_map(|p| [p.saturating_sub(1), *p, p + 1])
            .collect(),
    };
    cuts.retain(|p| *p < b.len());
    cuts.sort_unstable();
    cuts.dedup();
    for n in cuts {
        let what = || format!("cut to {n} bytes");
        r.whole(&what, &b[..n], Expect::Code("format.truncated"));
    }
    // Something after the trailer: one byte, a second copy of the trailer, a
    // second stream.
    for tail in [vec![0u8], b[l.trailer..].to_vec(), b.clone()] {
        let mut m = b.clone();
        m.extend_from_slice(&tail);
        let what = || format!("{} bytes after the trailer", tail.len());
        r.whole(&what, &m, Expect::Code("format.trailing_data"));
    }
}

/// Each byte xor 0x01, 0x80 and 0xff, and set to 0x00 and 0xff, as it is: a
/// changed signed byte is always refused. Every byte of small streams; of the
/// multi-section one every header and record-frame byte and every 61st data
/// byte; of the long one a sample of the header and the first and last chunks.
fn byte_flips(r: &mut Runner<'_>, depth: Depth) {
    let b = r.base.bytes.clone();
    let l = layout(&b);
    let n = l.chunks.len();
    let positions: Vec<usize> = match depth {
        Depth::Every => (0..b.len()).collect(),
        Depth::Fields => (0..l.header_len)
            .chain(
                l.chunks
                    .iter()
                    .flat_map(|(s, e)| (*s..*s + 88).chain((*s + 88..*e).step_by(61))),
            )
            .chain(l.trailer..b.len())
            .collect(),
        Depth::Records => (0..l.header_len)
            .step_by(5)
            .chain([0, 1, n - 2, n - 1].iter().flat_map(|i| {
                let (s, e) = l.chunks[*i];
                (s..s + 24).chain((s + 24..e).step_by(127))
            }))
            .chain(l.trailer..l.trailer + 24)
            .collect(),
    };
    let mut m = b.clone();
    for at in positions {
        for v in [b[at] ^ 0x01, b[at] ^ 0x80, b[at] ^ 0xff, 0x00, 0xff] {
            m[at] = v;
            let what = || format!("byte {at} = {v:#04x}");
            r.whole(&what, &m, Expect::Reject);
        }
        m[at] = b[at];
    }
}

/// Every header byte set to every other value (cheap: most fail before the
/// signature is checked).
fn header_exhaustive(r: &mut Runner<'_>) {
    let b = r.base.bytes.clone();
    let hl = layout(&b).header_len;
    let mut m = b.clone();
    for at in 0..hl {
        for v in 0..=255u8 {
            if v == b[at] {
                continue;
            }
            m[at] = v;
            let what = || format!("header byte {at} = {v:#04x}");
            r.whole(&what, &m, Expect::Reject);
        }
        m[at] = b[at];
    }
}

/// Records reordered, duplicated, dropped, spliced from another stream, and the
/// stream replayed against another session.
fn records(r: &mut Runner<'_>) {
    let b = r.base.bytes.clone();
    let l = layout(&b);
    let head = &b[..l.header_len];
    let trailer = &b[l.trailer..];
    let recs: Vec<&[u8]> = l.chunks.iter().map(|(s, e)| &b[*s..*e]).collect();
    let other = r.base.other.clone();
    let ol = layout(&other);
    let orecs: Vec<&[u8]> = ol.chunks.iter().map(|(s, e)| &other[*s..*e]).collect();
    let otrailer = &other[ol.trailer..];
    let n = recs.len();
    let assemble = |order: &[usize], pool: &[&[u8]], tail: &[u8]| {
        let mut m = head.to_vec();
        for i in order {
            m.extend_from_slice(pool[*i]);
        }
        m.extend_from_slice(tail);
        m
    };

    // Every order of the chunks (n! for n <= 5).
    let mut perms: Vec<Vec<usize>> = vec![Vec::new()];
    for _ in 0..if n <= 5 { n } else { 0 } {
        let mut next = Vec::new();
        for p in &perms {
            for i in (0..n).filter(|i| !p.contains(i)) {
                let mut q = p.clone();
                q.push(i);
                next.push(q);
            }
        }
        perms = next;
    }
    for p in &perms {
        let what = || format!("chunks in order {p:?}");
        r.whole(&what, &assemble(p, &recs, trailer), Expect::Reject);
    }
    // Adjacent swaps have an exact code.
    for i in 0..n.saturating_sub(1) {
        let mut p: Vec<usize> = (0..n).collect();
        p.swap(i, i + 1);
        let what = || format!("chunks {i} and {} swapped", i + 1);
        r.whole(
            &what,
            &assemble(&p, &recs, trailer),
            Expect::Code("format.chunk_reordered"),
        );
    }
    // Chunk i sent again at every later position (right after itself and at the
    // end, for long streams).
    for i in 0..n {
        let later: Vec<usize> = if n <= 5 {
            (i + 1..=n).collect()
        } else {
            vec![i + 1, n]
        };
        for at in later {
            let mut p: Vec<usize> = (0..n).collect();
            p.insert(at, i);
            let what = || format!("chunk {i} again at position {at}");
            r.whole(
                &what,
                &assemble(&p, &recs, trailer),
                Expect::Code("format.chunk_duplicated"),
            );
        }
    }
    // Every non-empty subset of chunks dropped (each single chunk and each
    // adjacent pair for long streams).
    let masks: Vec<u64> = if n <= 5 {
        (1..1 << n).collect()
    } else {
        (0..n)
            .flat_map(|i| [1 << i, 3 << i])
            .filter(|m| *m < 1 << n)
            .collect()
    };
    for mask in masks {
        let p: Vec<usize> = (0..n).filter(|i| mask & (1 << i) == 0).collect();
        let what = || format!("chunks {mask:#b} dropped");
        r.whole(
            &what,
            &assemble(&p, &recs, trailer),
            Expect::Code("format.chunk_dropped"),
        );
    }
    // Chunks and trailer spliced in from the other stream (same key and content).
    for i in 0..n {
        let mut pool = recs.clone();
        pool[i] = orecs[i];
        let p: Vec<usize> = (0..n).collect();
        let what = || format!("chunk {i} from another stream");
        r.whole(
            &what,
            &assemble(&p, &pool, trailer),
            Expect::Code("auth.bad_chunk_signature"),
        );
    }
    let p: Vec<usize> = (0..n).collect();
    let what = || "trailer from another stream".to_owned();
    r.whole(
        &what,
        &assemble(&p, &recs, otrailer),
        Expect::Code("auth.bad_trailer_signature"),
    );
    let what = || "every chunk from another stream".to_owned();
    r.whole(
        &what,
        &assemble(&p, &orecs, otrailer),
        Expect::Code("auth.bad_chunk_signature"),
    );
    let what = || "trailer twice".to_owned();
    let mut m = b.clone();
    m.extend_from_slice(trailer);
    r.whole(&what, &m, Expect::Code("format.trailing_data"));
    let what = || "no trailer".to_owned();
    r.whole(&what, &b[..l.trailer], Expect::Code("format.truncated"));
    let what = || "the other stream's header".to_owned();
    let mut m = other[..ol.header_len].to_vec();
    m.extend_from_slice(&b[l.header_len..]);
    r.whole(&what, &m, Expect::Code("auth.bad_chunk_signature"));

    // Replay: verified by a destination that issued another nonce, or none.
    let bound = r.base.nonce.is_some();
    for nonce in [Some([0x22; 32]), Some([0; 32]), None] {
        if nonce == r.base.nonce || (nonce.is_none() && bound) {
            continue;
        }
        let what = || format!("replayed with expected nonce {nonce:02x?}");
        let code = if bound {
            "auth.session_mismatch"
        } else {
            "auth.unbound_stream"
        };
        r.check(&what, &b, nonce, Feed::Whole, Expect::Code(code));
    }
}

/// The valid stream read in pieces of every size `k` and split at every point:
/// the result must not depend on segmentation (the hisi_acc bug class).
fn resplits(r: &mut Runner<'_>, depth: Depth) {
    let b = r.base.bytes.clone();
    let nonce = r.base.nonce;
    let (sizes, points): (Vec<usize>, Vec<usize>) = if depth == Depth::Every {
        ((1..=b.len()).collect(), (0..=b.len()).collect())
    } else if depth == Depth::Records {
        let l = stream_layout(&b);
        let sizes = [1, 2, 3, 88, 89, 4095, 4096, 4097, 4184, 9000].into();
        let points = l
            .chunks
            .iter()
            .flat_map(|(s, e)| [*s, s + 1, s + 88, e - 1])
            .collect();
        (sizes, points)
    } else {
        let l = stream_layout(&b);
        let sizes = (1..=97)
            .chain([88, 89, 4095, 4096, 4097, 4184, b.len()])
            .collect();
        let mut points: Vec<usize> = l
            .boundaries
            .iter()
            .flat_map(|p| [p.saturating_sub(1), *p, p + 1])
            .chain((0..b.len()).step_by(251))
            .collect();
        points.sort_unstable();
        points.dedup();
        (sizes, points)
    };
    for k in sizes {
        let what = || format!("read in {k}-byte pieces");
        r.check(&what, &b, nonce, Feed::Pieces(k), Expect::Same);
    }
    for p in points {
        let cut = [p];
        let what = || format!("split at {p}");
        r.check(&what, &b, nonce, Feed::Cuts(&cut), Expect::Same);
    }
    // Every record boundary at once, with interruptions.
    let l = stream_layout(&b);
    let what = || "split at every field boundary".to_owned();
    r.check(&what, &b, nonce, Feed::Cuts(&l.boundaries), Expect::Same);
    let got = read_all(Segmented::every(&b, 3).interrupting(), &r.trust, nonce);
    if got.as_ref().ok() != Some(&r.base.accepted) {
        r.failures
            .push(format!("{}: interrupted reads changed the outcome", r.base.name));
    }
}

// ---------------------------------------------------------------------------
// A stream carrying an Xe streamed section.
//
// The payload is a valid xe-vf-tiny packet stream as the simulated Xe VF saves it
// (descriptor, the VRAM first pass in 64 KiB packets, a few re-sent dirty pages,
// GuC, GGTT and MMIO per GT, trailer), carried in one streamed section
// (`xe.packets`, REQUIRED | STREAMED, bound `Config::max_stream_len`) in 64 KiB
// chunks, ended by its signed section end record. xe-vf-tiny is not a device type
// the plugin offers, so this stream is read by the reader and its payload
// validated by `StreamValidator` for the tiny configuration (the verify path);
// `restore_refuses_mutated_xe_streams...` restores xe-vf-64m streams through the
// broker into a simulated Xe VF.

/// The Xe stream's chunk size: the 313 KB payload is five chunks.
const XE_CHUNK: usize = 64 << 10;

/// The configuration the tiny payload is validated for (the sim's defaults:
/// one tile, two GTs).
fn xe_config() -> mdevmig_xe::Config {
    mdevmig_xe::Config::new(mdevmig_xe::XE_VF_TINY)
}

/// The simulated tiny VF's save (seed `fuzz_xe::SIM_SEED`: 313 KB, 13 packets,
/// two of them re-sent dirty pages), the `xe_validator_splits` target's base.
fn xe_payload() -> Vec<u8> {
    fuzz_xe::base(&xe_config()).to_vec()
}

fn xe_header(bound: u64, stream_id: u8) -> Header {
    Header {
        flags: 0,
        state_version: 1,
        min_version: 1,
        chunk_size: XE_CHUNK as u32,
        key_id: test_signer().id(),
        session_nonce: [0; 32],
        stream_id: [stream_id; 16],
        vendor: mdevmig_xe::VENDOR.into(),
        device_type: mdevmig_xe::XE_VF_TINY.name().into(),
        attributes: BTreeMap::new(),
        sections: vec![SectionEntry {
            name: mdevmig_xe::SECTION.into(),
            version: mdevmig_xe::SECTION_VERSION,
            flags: SECTION_REQUIRED | SECTION_STREAMED,
            length: bound,
        }],
    }
}

/// `payload` in one streamed section, signed by the test key (on this thread).
fn xe_envelope(payload: &[u8], stream_id: u8) -> Vec<u8> {
    let h = xe_header(xe_config().max_stream_len(), stream_id);
    let mut w = StreamWriter::single_threaded(Vec::new(), &h, &test_signer()).unwrap();
    w.write_data(payload).unwrap();
    assert_eq!(w.end_section().unwrap(), payload.len() as u64);
    w.finish().unwrap()
}

/// Re-signs with the test key the records of `e` (laid out as `l`: chunks, end
/// records, the trailer) that hold any byte of `range`, as their fields and data
/// now are; the header is left as it is.
fn resign_records(e: &mut [u8], l: &Layout, range: std::ops::Range<usize>) {
    let key = test_signer();
    let h: [u8; 32] = Sha256::digest(&e[..l.header_len]).into();
    let trailer = (l.trailer, l.trailer + 88);
    for &(s, end) in l.chunks.iter().chain([&trailer]) {
        if end <= range.start || s >= range.end {
            continue;
        }
        let context = match e[s] {
            1 => mdevmig::codec::CHUNK_CONTEXT,
            KIND_END => mdevmig::codec::END_CONTEXT,
            _ => mdevmig::codec::TRAILER_CONTEXT,
        };
        let mut msg = context.to_vec();
        msg.extend_from_slice(&h);
        msg.extend_from_slice(&e[s..s + 24]);
        if e[s] == 1 {
            msg.extend_from_slice(&Sha256::digest(&e[s + 88..end]));
        }
        let sig = key.sign(&msg);
        e[s + 24..s + 88].copy_from_slice(&sig);
    }
}

fn xe_base() -> Base {
    let p = xe_payload();
    let mut b = base("xe", xe_envelope(&p, 0x35), xe_envelope(&p, 0x36), None);
    b.chunk = XE_CHUNK;
    b.streamed = true;
    b
}

fn le_at(b: &[u8], at: usize, width: usize) -> u64 {
    let mut v = [0u8; 8];
    v[..width].copy_from_slice(&b[at..at + width]);
    u64::from_le_bytes(v)
}

/// The layout of a valid stream, streamed sections included. `layout` knows
/// exact-length streams only, so for a stream with section end records it walks
/// the header (followed by the trailer frame alone) and the records are walked
/// here: each end record's frame is in `chunks` (records in stream order) with its
/// fields named `end[i].*`, and a streamed section's flags allow both defined bits.
fn stream_layout(b: &[u8]) -> Layout {
    let recs = vectors::records(b);
    if !recs.iter().any(|(k, _, _)| *k == KIND_END) {
        return layout(b);
    }
    let hl = le_at(b, 12, 4) as usize;
    let &(_, trailer, _) = recs.last().unwrap();
    let mut shadow = b[..hl].to_vec();
    shadow.extend_from_slice(&b[trailer..]);
    let head = layout(&shadow);
    let (h, _) = mdevmig::codec::header::decode(&b[..hl]).unwrap();
    let mut fields: Vec<Field> = head
        .fields
        .into_iter()
        .filter(|f| f.at < hl)
        .map(|mut f| {
            let streamed = f
                .name
                .strip_prefix("section[")
                .and_then(|r| r.strip_suffix("].flags"))
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| h.sections[i].streamed());
            if streamed {
                f.kind = Kind::Flags {
                    defined: u64::from(SECTION_REQUIRED | SECTION_STREAMED),
                };
            }
            f
        })
        .collect();
    let mut bounds: Vec<usize> = head.boundaries.into_iter().filter(|p| *p <= hl).collect();
    let mut field = |name: String, at: usize, width: usize, kind: Kind, max: Option<u64>| {
        fields.push(Field {
            name,
            at,
            width,
            kind,
            max,
            orig: le_at(b, at, width),
        });
        bounds.extend([at, at + width]);
    };
    let sections = h.sections.len() as u64;
    let (mut chunks, mut ends) = (0, 0);
    let mut extents = Vec::new();
    let mut record_bounds = Vec::new();
    for &(kind, s, e) in &recs {
        match kind {
            1 => {
                let c = format!("chunk[{chunks}]");
                chunks += 1;
                field(format!("{c}.kind"), s, 1, Kind::Enum { valid: &[1] }, None);
                field(format!("{c}.reserved"), s + 1, 1, Kind::Reserved, None);
                field(
                    format!("{c}.section_index"),
                    s + 2,
                    2,
                    Kind::Length,
                    Some(sections),
                );
                field(
                    format!("{c}.data_len"),
                    s + 4,
                    4,
                    Kind::Length,
                    Some(u64::from(h.chunk_size)),
                );
                field(format!("{c}.seq"), s + 8, 8, Kind::Length, None);
                field(format!("{c}.offset"), s + 16, 8, Kind::Length, None);
                extents.push((s, e));
            }
            KIND_END => {
                let c = format!("end[{ends}]");
                ends += 1;
                field(format!("{c}.kind"), s, 1, Kind::Enum { valid: &[3] }, None);
                field(format!("{c}.reserved"), s + 1, 1, Kind::Reserved, None);
                field(
                    format!("{c}.section_index"),
                    s + 2,
                    2,
                    Kind::Length,
                    Some(sections),
                );
                field(format!("{c}.reserved2"), s + 4, 4, Kind::Reserved, None);
                field(format!("{c}.seq"), s + 8, 8, Kind::Length, None);
                field(format!("{c}.length"), s + 16, 8, Kind::Length, Some(1 << 40));
                extents.push((s, e));
            }
            _ => {
                field("trailer.kind".into(), s, 1, Kind::Enum { valid: &[2] }, None);
                for i in 0..7 {
                    field(
                        format!("trailer.reserved[{i}]"),
                        s + 1 + i,
                        1,
                        Kind::Reserved,
                        None,
                    );
                }
                field("trailer.chunk_count".into(), s + 8, 8, Kind::Length, None);
                field("trailer.total_len".into(), s + 16, 8, Kind::Length, Some(1 << 40));
            }
        }
        record_bounds.extend([s, s + 88, e]);
    }
    bounds.extend(record_bounds);
    bounds.push(b.len());
    bounds.sort_unstable();
    bounds.dedup();
    Layout {
        header_len: hl,
        chunks: extents,
        trailer,
        fields,
        boundaries: bounds,
        chunk_size: u64::from(h.chunk_size),
    }
}

/// The final length of section 0 of a streamed stream (its end record's).
fn final_len(l: &Layout) -> u64 {
    l.fields.iter().find(|f| f.name == "end[0].length").unwrap().orig
}

/// Every field of the Xe stream set to each of its mutation values, as it is (a
/// changed signed byte is refused) and re-signed, end record included. The
/// streamed section's flags and bound have their own rules: clearing STREAMED is
/// refused (the bound is then an exact length the chunks do not fill), clearing
/// REQUIRED is a valid stream, and any bound from the final length F to 2^40 is
/// valid (accepted, canonical); below F the chunk that passes it is over bound,
/// above 2^40 the header is refused.
fn xe_fields(r: &mut Runner<'_>) {
    let b = r.base.bytes.clone();
    let l = stream_layout(&b);
    let fin = final_len(&l);
    let cs = l.chunk_size;
    for f in &l.fields {
        let flags = matches!(f.kind, Kind::Flags { defined: 3 });
        let bound = f.name == "section[0].length";
        let mut vals = values(f);
        if flags {
            vals.extend([0, 1, 2]);
        }
        if bound {
            vals.extend([fin - 1, fin, fin + 1, 2 * cs, 5 * cs, 1 << 40, (1 << 40) + 1]);
        }
        vals.retain(|v| *v != f.orig);
        vals.sort_unstable();
        vals.dedup();
        for v in vals {
            let mut m = b.clone();
            put(&mut m, f.at, f.width, v);
            let what = || format!("{} = {v:#x}", f.name);
            r.whole(&what, &m, Expect::Reject);
            let signed = r.resign(&m);
            let expect = if bound {
                if v < fin {
                    Expect::Code("limit.section_over_bound")
                } else if v > 1 << 40 {
                    Expect::Code("limit.stream_too_large")
                } else {
                    Expect::Accepted
                }
            } else if flags {
                match v {
                    2 => Expect::Accepted,
                    v if v & !3 != 0 => Expect::Code("format.unknown_flags"),
                    _ => Expect::Reject,
                }
            } else if must_refuse_signed(f, v) {
                Expect::Reject
            } else {
                Expect::RejectOrCanonical
            };
            let what = || format!("{} = {v:#x}, re-signed", f.name);
            r.whole(&what, &signed, expect);
        }
    }
}

/// Each header byte, the field bytes and a sample of the signature bytes of each
/// record and the trailer, and every 4093rd data byte xor 0x01, 0x80 and 0xff
/// and set to 0x00 and 0xff, as it is; and every byte of the section table set
/// to every other value.
fn xe_byte_flips(r: &mut Runner<'_>) {
    let b = r.base.bytes.clone();
    let l = stream_layout(&b);
    let frame = |s: usize| (s..s + 24).chain([s + 24, s + 55, s + 56, s + 87]);
    let positions: Vec<usize> = (0..l.header_len)
        .chain(
            l.chunks
                .iter()
                .flat_map(|(s, e)| frame(*s).chain((*s + 88..*e).step_by(4093))),
        )
        .chain(frame(l.trailer))
        .collect();
    let mut m = b.clone();
    for at in positions {
        for v in [b[at] ^ 0x01, b[at] ^ 0x80, b[at] ^ 0xff, 0x00, 0xff] {
            m[at] = v;
            let what = || format!("byte {at} = {v:#04x}");
            r.whole(&what, &m, Expect::Reject);
        }
        m[at] = b[at];
    }
    let table = l
        .fields
        .iter()
        .find(|f| f.name == "section[0].name_len")
        .unwrap()
        .at;
    for at in table..l.header_len - 64 {
        for v in (0..=255u8).filter(|v| *v != b[at]) {
            m[at] = v;
            let what = || format!("section table byte {at} = {v:#04x}");
            r.whole(&what, &m, Expect::Reject);
        }
        m[at] = b[at];
    }
}

/// Records of a stream with one streamed section reordered, duplicated, dropped,
/// spliced from another stream (the end record too), forged where a valid
/// stream is made (the section ended early: valid for the envelope, only the
/// plugin can refuse it), and replayed.
fn streamed_records(r: &mut Runner<'_>) {
    let b = r.base.bytes.clone();
    let key = test_signer();
    let l = stream_layout(&b);
    let head = &b[..l.header_len];
    let trailer = &b[l.trailer..];
    let recs: Vec<&[u8]> = l.chunks.iter().map(|(s, e)| &b[*s..*e]).collect();
    let other = r.base.other.clone();
    let ol = stream_layout(&other);
    let orecs: Vec<&[u8]> = ol.chunks.iter().map(|(s, e)| &other[*s..*e]).collect();
    let otrailer = &other[ol.trailer..];
    let n = recs.len();
    let end = n - 1;
    assert_eq!(
        recs[end][0], KIND_END,
        "one streamed section, its end record last"
    );
    let assemble = |order: &[usize], pool: &[&[u8]], tail: &[u8]| {
        let mut m = head.to_vec();
        for i in order {
            m.extend_from_slice(pool[*i]);
        }
        m.extend_from_slice(tail);
        m
    };
    let all: Vec<usize> = (0..n).collect();
    // Adjacent swaps: two chunks are reordered; the end record before the last
    // chunk names a seq the reader has not reached (a drop).
    for i in 0..n - 1 {
        let mut p = all.clone();
        p.swap(i, i + 1);
        let code = if i + 1 == end {
            "format.chunk_dropped"
        } else {
            "format.chunk_reordered"
        };
        let what = || format!("records {i} and {} swapped", i + 1);
        r.whole(&what, &assemble(&p, &recs, trailer), Expect::Code(code));
    }
    // The end record moved to the front.
    let mut p = all.clone();
    p.rotate_right(1);
    let what = || "end record first".to_owned();
    r.whole(
        &what,
        &assemble(&p, &recs, trailer),
        Expect::Code("format.chunk_dropped"),
    );
    // Record i again right after itself and after the end record.
    for i in 0..n {
        let later = if i == end { vec![n] } else { vec![i + 1, n] };
        for at in later {
            let mut p = all.clone();
            p.insert(at, i);
            let code = if i == end {
                // Where the trailer belongs.
                "format.chunk_mismatch"
            } else {
                "format.chunk_duplicated"
            };
            let what = || format!("record {i} again at position {at}");
            r.whole(&what, &assemble(&p, &recs, trailer), Expect::Code(code));
        }
    }
    // Each record and each adjacent pair dropped.
    for i in 0..n {
        for k in [1, 2] {
            if i + k > n {
                continue;
            }
            let p: Vec<usize> = all.iter().copied().filter(|j| *j < i || *j >= i + k).collect();
            let what = || format!("{k} record(s) from {i} dropped");
            r.whole(
                &what,
                &assemble(&p, &recs, trailer),
                Expect::Code("format.chunk_dropped"),
            );
        }
    }
    // Spliced from the other stream (same key and content).
    for i in 0..n {
        let mut pool = recs.clone();
        pool[i] = orecs[i];
        let code = if i == end {
            "auth.bad_end_signature"
        } else {
            "auth.bad_chunk_signature"
        };
        let what = || format!("record {i} from another stream");
        r.whole(&what, &assemble(&all, &pool, trailer), Expect::Code(code));
    }
    let what = || "trailer from another stream".to_owned();
    r.whole(
        &what,
        &assemble(&all, &recs, otrailer),
        Expect::Code("auth.bad_trailer_signature"),
    );
    let what = || "the other stream's header".to_owned();
    let mut m = other[..ol.header_len].to_vec();
    m.extend_from_slice(&b[l.header_len..]);
    r.whole(&what, &m, Expect::Code("auth.bad_chunk_signature"));
    let what = || "trailer twice".to_owned();
    let mut m = b.clone();
    m.extend_from_slice(trailer);
    r.whole(&what, &m, Expect::Code("format.trailing_data"));
    // Forged by the trusted key: a chunk after the short last chunk (the end was
    // due); the section ended early after each chunk and before any (a valid
    // stream: accepted); the trailer then left as it was.
    let fin = final_len(&l);
    let extra = vectors::signed_chunk(
        &key,
        head,
        ChunkRecord {
            section_index: 0,
            data_len: 100,
            seq: end as u64,
            offset: fin,
        },
        &[0x5a; 100],
    );
    let mut m = assemble(&all[..end], &recs, &extra);
    m.extend_from_slice(recs[end]);
    m.extend_from_slice(trailer);
    let what = || "a signed chunk after the short last chunk".to_owned();
    r.whole(&what, &m, Expect::Code("format.bad_chunk_length"));
    for j in 0..end {
        let length = (j * XE_CHUNK) as u64;
        let early = vectors::signed_end(
            &key,
            head,
            SectionEnd {
                section_index: 0,
                seq: j as u64,
                length,
            },
        );
        let t = vectors::signed_trailer(
            &key,
            head,
            Trailer {
                chunk_count: j as u64,
                total_len: length,
            },
        );
        let mut m = assemble(&all[..j], &recs, &early);
        m.extend_from_slice(&t);
        let what = || format!("section ended after {j} chunks, signed");
        r.whole(&what, &m, Expect::Accepted);
        let mut m = assemble(&all[..j], &recs, &early);
        m.extend_from_slice(trailer);
        let what = || format!("section ended after {j} chunks, the old trailer");
        r.whole(&what, &m, Expect::Code("format.trailer_mismatch"));
    }
    // Replay where the destination issued a nonce.
    let what = || "replayed with an expected nonce".to_owned();
    r.check(
        &what,
        &b,
        Some([0x22; 32]),
        Feed::Whole,
        Expect::Code("auth.unbound_stream"),
    );
}

fn run_xe_families(base: &Base, totals: &mut Totals) {
    let start = Instant::now();
    let mut r = Runner::new(base);
    xe_fields(&mut r);
    truncations(&mut r, Depth::Records);
    xe_byte_flips(&mut r);
    r.pooled = true;
    streamed_records(&mut r);
    resplits(&mut r, Depth::Records);
    eprintln!(
        "mutation: {}: {} inputs in {:.2?}",
        base.name,
        r.count,
        start.elapsed()
    );
    r.finish(totals);
}

// ---------------------------------------------------------------------------
// Mutations inside the Xe payload, the envelope signed again.

/// Xe header fields: (name, offset in the header, width).
const XE_FIELDS: [(&str, usize, usize); 7] = [
    ("version", 0, 1),
    ("type", 1, 1),
    ("tile_id", 2, 1),
    ("gt_id", 3, 1),
    ("flags", 4, 4),
    ("offset", 8, 8),
    ("size", 16, 8),
];

/// One mutation of an Xe packet header: field `field` (of [`XE_FIELDS`]) of the
/// header at payload offset `at` set to `value`; refused with `code`, or with any
/// `vendor.xe.*` code when `None`.
#[derive(Debug, Clone)]
struct XeHeaderMutant {
    at: usize,
    packet: usize,
    ty: u8,
    field: usize,
    value: u64,
    code: Option<&'static str>,
}

impl XeHeaderMutant {
    fn describe(&self) -> String {
        format!(
            "packet {} (type {}, at {}): {} = {:#x}",
            self.packet, self.ty, self.at, XE_FIELDS[self.field].0, self.value
        )
    }

    fn apply(&self, payload: &mut [u8]) {
        let (_, off, width) = XE_FIELDS[self.field];
        put(payload, self.at + off, width, self.value);
    }
}

/// The header mutations of every packet of `payload` (valid for `c`) that the Xe
/// validator must refuse: each header field set to values outside its rules
/// (`FORMAT.md`, "What this plugin checks"), with the exact code where the check
/// order fixes it. `brief`: only version, type, flags, size 2^63, offset overflow
/// and the tile and GT ids (the broker restores).
fn xe_header_mutants(c: &mdevmig_xe::Config, payload: &[u8], brief: bool) -> Vec<XeHeaderMutant> {
    use mdevmig_xe::codes as x;
    let mut out = Vec::new();
    for (packet, &(at, end)) in fuzz_xe::packets(payload).iter().enumerate() {
        let ty = payload[at + 1];
        let tile = payload[at + 2];
        let gt = payload[at + 3];
        let offset = le_at(payload, at + 8, 8);
        let size = (end - at - 24) as u64;
        let whole_only = ty == 1 || ty == 2; // descriptor, trailer: tile 0, GT 0
        let vram = ty == 6;
        let mut m = |field: usize, value: u64, code: Option<&'static str>| {
            out.push(XeHeaderMutant {
                at,
                packet,
                ty,
                field,
                value,
                code,
            })
        };
        let ids = |specific: &'static str| if whole_only { x::BAD_IDS } else { specific };
        m(0, 2, Some(x::BAD_VERSION));
        m(1, 7, Some(x::UNKNOWN_TYPE));
        m(4, 1, Some(x::BAD_FLAGS));
        m(6, 1 << 63, Some(x::SIZE_TOO_LARGE));
        if size > 0 {
            m(5, u64::MAX - size + 1, Some(x::OFFSET_OVERFLOW));
        } else {
            m(5, u64::MAX, Some(x::BAD_OFFSET));
        }
        m(2, u64::from(c.tiles), Some(ids(x::UNKNOWN_TILE)));
        m(3, u64::from(c.gt_count()), Some(ids(x::UNKNOWN_GT)));
        if c.gts == 2 && !whole_only && (vram || ty == 3) {
            // The media GT of the same tile.
            m(3, u64::from(tile * c.gts + 1), Some(x::WRONG_GT));
        }
        if c.tiles == 2 && !whole_only {
            // The same GT number on the other tile.
            m(
                3,
                u64::from((1 - tile) * c.gts + gt % c.gts),
                Some(x::GT_NOT_ON_TILE),
            );
        }
        if brief {
            continue;
        }
        for v in [0u64, 0xff] {
            m(0, v, Some(x::BAD_VERSION));
        }
        for v in [0u64, 0x80, 0xff] {
            m(1, v, Some(x::UNKNOWN_TYPE));
        }
        m(4, 1 << 31, Some(x::BAD_FLAGS));
        for v in [u64::MAX, (512 << 20) + 1] {
            m(6, v, Some(x::SIZE_TOO_LARGE));
        }
        m(2, 0xff, Some(ids(x::UNKNOWN_TILE)));
        m(3, 0xff, Some(ids(x::UNKNOWN_GT)));
        if vram {
            let limit = c.vram_per_tile();
            let code = if offset + 1 + size > limit {
                x::OUT_OF_RANGE
            } else {
                x::UNALIGNED
            };
            m(5, offset + 1, Some(code));
            m(5, limit, Some(x::OUT_OF_RANGE));
        } else {
            m(5, 4096, Some(x::BAD_OFFSET));
        }
        // Framing and structure: another size, another known type.
        for v in [size + 1, size.wrapping_sub(1), 0, size + 4096] {
            if v != size && v < 1 << 40 {
                m(6, v, None);
            }
        }
        for t in 1..=6u64 {
            if t != u64::from(ty) {
                m(1, t, None);
            }
        }
    }
    out
}

/// Structural mutations of `payload` (valid for the sim's default tiny
/// configuration, in its order: descriptor, VRAM, GuC, GGTT, MMIO, trailer): the
/// payload cut, bytes after the trailer, packets dropped, repeated and inserted,
/// the descriptor's ids changed: (what, payload, the code, or any `vendor.xe.*`
/// code for `None`).
fn xe_structural_mutants(payload: &[u8]) -> Vec<(String, Vec<u8>, Option<&'static str>)> {
    use mdevmig_xe::codes as x;
    let p = fuzz_xe::packets(payload);
    let mut out: Vec<(String, Vec<u8>, Option<&'static str>)> = Vec::new();
    out.push(("empty payload".into(), Vec::new(), Some(x::MISSING_TRAILER)));
    for (i, &(s, e)) in p.iter().enumerate() {
        let ty = payload[s + 1];
        if s > 0 {
            out.push((
                format!("cut before packet {i}"),
                payload[..s].to_vec(),
                Some(x::MISSING_TRAILER),
            ));
        }
        for cut in [s + 1, s + 23, s + 24, s + 24 + (e - s - 24) / 2] {
            if cut < e {
                out.push((
                    format!("cut at {cut} in packet {i}"),
                    payload[..cut].to_vec(),
                    Some(x::TRUNCATED),
                ));
            }
        }
        let dropped = [&payload[..s], &payload[e..]].concat();
        let code = match ty {
            1 => Some(x::DESCRIPTOR_NOT_FIRST),
            2 => Some(x::MISSING_TRAILER),
            3..=5 => Some(x::MISSING_PACKET),
            // A re-sent dirty page (the first pass is in 64 KiB packets): its
            // absence leaves a valid stream.
            _ if e - s - 24 == 4096 => continue,
            _ => None,
        };
        out.push((format!("packet {i} dropped"), dropped, code));
        let again = [&payload[..e], &payload[s..e], &payload[e..]].concat();
        let code = match ty {
            1 | 3..=5 => Some(x::DUPLICATE),
            2 => Some(x::AFTER_TRAILER),
            _ => continue, // VRAM may be sent again
        };
        out.push((format!("packet {i} twice"), again, code));
    }
    let (ds, de) = p[0];
    let trailer = &payload[p.last().unwrap().0..];
    for tail in [vec![0u8], trailer.to_vec(), payload[ds..de].to_vec()] {
        let mut m = payload.to_vec();
        m.extend_from_slice(&tail);
        out.push((
            format!("{} bytes after the trailer", tail.len()),
            m,
            Some(x::AFTER_TRAILER),
        ));
    }
    // An unknown packet type (no payload) after the descriptor.
    let mut unknown = payload[..de].to_vec();
    unknown.extend_from_slice(&mdevmig_xe::Header::new(mdevmig_xe::PacketType(9), 0, 0, 0, 0).encode());
    unknown.extend_from_slice(&payload[de..]);
    out.push((
        "an unknown packet type after the descriptor".into(),
        unknown,
        Some(x::UNKNOWN_TYPE),
    ));
    // The descriptor's KLVs: the device id, the revision id, a key.
    for (what, at, code) in [
        ("device id", 4, x::DESCRIPTOR_MISMATCH),
        ("revision id", 12, x::DESCRIPTOR_MISMATCH),
        ("first key", 2, x::BAD_DESCRIPTOR),
    ] {
        let mut m = payload.to_vec();
        m[ds + 24 + at] ^= 0x01;
        out.push((format!("descriptor {what} changed"), m, Some(code)));
    }
    out
}

/// Reads `input` (a validly signed stream) and feeds its section 0 to a fresh
/// `StreamValidator` for `c` chunk by chunk, as the broker does, up to the first
/// refusal: the reader's code (`Err(..)`), or the validator's outcome.
fn read_and_validate(input: &[u8], c: &mdevmig_xe::Config) -> Result<Result<(), &'static str>, &'static str> {
    let opts = ReadOptions {
        expected_nonce: None,
        single_threaded: true,
    };
    let mut r =
        mdevmig::codec::StreamReader::open(input, &test_trust(), &opts).map_err(|e| e.code.as_str())?;
    let mut v = mdevmig_xe::StreamValidator::new(c);
    while let Some(chunk) = r.next_chunk().map_err(|e| e.code.as_str())? {
        if let Err(e) = v.feed(chunk.data) {
            return Ok(Err(e.code));
        }
    }
    Ok(v.finish().map_err(|e| e.code))
}

/// Mutations inside the Xe payload, each carried in a validly re-signed envelope:
/// the reader must accept the envelope (nothing there is wrong) and the Xe
/// validator must refuse the payload with a documented `vendor.xe.*` code (the
/// exact one where the check order fixes it) whether it is fed chunk by chunk or
/// whole, within the allocation bound. For the sim's tiny stream (header fields of
/// every packet, structural mutations) and a two-tile, two-GT stream from the
/// packet builder (header fields).
fn xe_payload_mutations(totals: &mut Totals) {
    let start = Instant::now();
    let mut t = Totals::default();
    let mut one = |what: &dyn Fn() -> String,
                   c: &mdevmig_xe::Config,
                   payload: &[u8],
                   env: &[u8],
                   code: Option<&'static str>| {
        t.count += 1;
        let (got, bytes) = measure(|| catch_unwind(AssertUnwindSafe(|| read_and_validate(env, c))));
        t.peak = t.peak.max(bytes);
        let whole = fuzz_xe::validate(c, payload, &[]);
        let why = match got {
            _ if bytes > alloc_bound_for(XE_CHUNK) => Some(format!("{bytes} bytes allocated")),
            Err(_) => Some("panicked".to_owned()),
            Ok(Err(e)) => Some(format!(
                "the envelope was refused ({e}), but it is validly signed"
            )),
            Ok(Ok(Ok(()))) => Some("the Xe validator accepted a modified payload".to_owned()),
            Ok(Ok(Err(got))) if !got.starts_with("vendor.xe.") || !fuzz_xe::documented(got) => {
                Some(format!("refused with {got}, not a documented vendor.xe code"))
            }
            Ok(Ok(Err(got))) if code.is_some_and(|c| c != got) => {
                Some(format!("refused with {got}, expected {}", code.unwrap_or("")))
            }
            Ok(Ok(Err(got))) if whole != Err(got) => {
                Some(format!("refused with {got} chunk by chunk, {whole:?} whole"))
            }
            Ok(Ok(Err(_))) => None,
        };
        if let Some(why) = why {
            if t.failures.len() < 40 {
                t.failures
                    .push(format!("xe payload ({} tile(s)): {}: {why}", c.tiles, what()));
            }
        }
    };
    let mut two = xe_config();
    two.tiles = 2;
    // The sim's stream: every mutation. Two tiles: the brief header mutations,
    // which include a GT of the other tile.
    let cases: Vec<(mdevmig_xe::Config, Vec<u8>, bool)> = vec![
        (xe_config(), xe_payload(), true),
        (two, fuzz_xe::base(&two).to_vec(), false),
    ];
    for (c, payload, full) in cases {
        assert_eq!(fuzz_xe::validate(&c, &payload, &[]), Ok(()), "the base payload");
        let env = xe_envelope(&payload, 0x37);
        let l = stream_layout(&env);
        // A payload offset's place in the envelope (chunks are XE_CHUNK bytes).
        let place = |p: usize| l.chunks[p / XE_CHUNK].0 + 88 + p % XE_CHUNK;
        let (mut p, mut e) = (payload.clone(), env.clone());
        for m in xe_header_mutants(&c, &payload, !full) {
            m.apply(&mut p);
            for i in m.at..m.at + 24 {
                e[place(i)] = p[i];
            }
            let signed = place(m.at)..place(m.at + 23) + 1;
            resign_records(&mut e, &l, signed.clone());
            one(&|| m.describe(), &c, &p, &e, m.code);
            // Back to the base: the bytes, then the signatures.
            p[m.at..m.at + 24].copy_from_slice(&payload[m.at..m.at + 24]);
            for i in m.at..m.at + 24 {
                e[place(i)] = p[i];
            }
            resign_records(&mut e, &l, signed);
        }
        assert!(e == env, "the envelope was not restored");
        if full {
            for (what, p, code) in xe_structural_mutants(&payload) {
                one(&|| what.clone(), &c, &p, &xe_envelope(&p, 0x37), code);
            }
        }
    }
    eprintln!(
        "mutation: xe payload: {} inputs in {:.2?}, peak allocation {} bytes",
        t.count,
        start.elapsed(),
        t.peak
    );
    totals.count += t.count;
    totals.peak = totals.peak.max(t.peak);
    totals.failures.extend(t.failures);
}

fn run_families(base: &Base, depth: Depth, exhaustive: bool, totals: &mut Totals) {
    let start = Instant::now();
    let mut r = Runner::new(base);
    // Single mutations of the long stream, and every reordering, run through the
    // default reader (hashing workers, read-ahead); the rest on one thread, which
    // is the same code without the thread start-up.
    r.pooled = depth == Depth::Records;
    fields(&mut r);
    truncations(&mut r, depth);
    byte_flips(&mut r, depth);
    if exhaustive {
        header_exhaustive(&mut r);
    }
    r.pooled = true;
    records(&mut r);
    resplits(&mut r, depth);
    eprintln!(
        "mutation: {}: {} inputs in {:.2?}",
        base.name,
        r.count,
        start.elapsed()
    );
    r.finish(totals);
}

#[test]
fn mutated_streams_are_refused_without_panic_or_unbounded_allocation() {
    let start = Instant::now();
    let bases = [
        single_base(),
        bound_base(),
        multi_base(),
        mtty_base(),
        long_base(),
        xe_base(),
    ];
    let [single, bound, multi, mtty, long, xe] = &bases;
    // Two threads, about equal work.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            let mut t = Totals::default();
            run_families(single, Depth::Every, true, &mut t);
            run_families(bound, Depth::Every, false, &mut t);
            run_families(mtty, Depth::Every, false, &mut t);
            run_xe_families(xe, &mut t);
            xe_payload_mutations(&mut t);
            t
        });
        let b = s.spawn(|| {
            let mut t = Totals::default();
            run_families(multi, Depth::Fields, true, &mut t);
            run_families(long, Depth::Records, false, &mut t);
            t
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    let count = a.count + b.count;
    let mut failures = a.failures;
    failures.extend(b.failures);
    eprintln!(
        "mutation: {count} inputs in {:.2?}, peak allocation while reading {} bytes (bound {} \
         for 4096-byte chunks, {} for the xe stream's {XE_CHUNK})",
        start.elapsed(),
        a.peak.max(b.peak),
        alloc_bound(),
        alloc_bound_for(XE_CHUNK)
    );
    assert!(MEASURED.load(Ordering::Relaxed) >= count);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(count >= 100_000, "only {count} mutated inputs ran");
}

// ---------------------------------------------------------------------------
// The broker's restore path.

fn restore_opts(session: Option<[u8; 32]>) -> RestoreOptions {
    RestoreOptions {
        session,
        resume: true,
        // The real sandbox, with this build's mdevmig as the validator.
        validation: mdevmig::sandbox::Validation::sandbox(env!("CARGO_BIN_EXE_mdevmig-validator")),
        ..RestoreOptions::default()
    }
}

fn restore(
    dev: &mut dyn MigrationDevice,
    input: &[u8],
    session: Option<[u8; 32]>,
) -> mdevmig::Result<broker::RestoreReport> {
    broker::restore(dev, &registry(), &test_trust(), input, &restore_opts(session))
}

#[test]
fn restore_of_the_unmutated_mtty_stream_reproduces_the_source() {
    let mut src = open_sim("sim:mtty/mtty-2,seed=3");
    let digest = src.state_digest();
    let mut dst = open_sim("sim:mtty/mtty-2,seed=7");
    assert_ne!(dst.state_digest(), digest);
    let report = restore(&mut *dst, &mtty_stream(3, None), None).unwrap();
    assert_eq!(report.state_digest, digest);
    assert_eq!(dst.state().unwrap(), MigState::Running);
}

#[test]
fn restore_refuses_mutated_streams_and_leaves_the_device_running_and_unchanged() {
    let start = Instant::now();
    let mut dev = open_sim("sim:mtty/mtty-2,seed=7");
    let before = dev.state_digest();
    let mut count = 0u64;
    let mut failures = Vec::new();
    let mut one = |dev: &mut Box<dyn MigrationDevice>,
                   what: &dyn Fn() -> String,
                   input: &[u8],
                   session: Option<[u8; 32]>| {
        count += 1;
        let got = catch_unwind(AssertUnwindSafe(|| restore(&mut **dev, input, session)));
        let why = match got {
            Err(_) => Some("panicked".to_owned()),
            Ok(Ok(_)) => Some("accepted after modification".to_owned()),
            Ok(Err(e)) if !documented(e.code.as_str()) => Some(format!("undocumented code {}", e.code)),
            Ok(Err(_)) => None,
        };
        let state = dev.state();
        let why = why.or_else(|| {
            (state.as_ref().ok() != Some(&MigState::Running)).then(|| format!("device left in {state:?}"))
        });
        let why = why.or_else(|| (dev.state_digest() != before).then(|| "device state changed".to_owned()));
        if let Some(why) = why {
            // Start the next input from a clean device, so one failure is reported once.
            *dev = open_sim("sim:mtty/mtty-2,seed=7");
            if failures.len() < 40 {
                failures.push(format!("{}: {why}", what()));
            }
        }
    };
    let b = mtty_stream(3, None);
    let l = layout(&b);
    for n in 0..b.len() {
        one(&mut dev, &|| format!("cut to {n}"), &b[..n], None);
    }
    for at in 0..b.len() {
        let mut m = b.clone();
        m[at] ^= 0xff;
        one(&mut dev, &|| format!("byte {at} ^ 0xff"), &m, None);
    }
    for f in &l.fields {
        for v in values(f) {
            let mut m = b.clone();
            put(&mut m, f.at, f.width, v);
            one(&mut dev, &|| format!("{} = {v:#x}", f.name), &m, None);
            if must_refuse_signed(f, v) {
                let s = resign(&m, &test_signer());
                one(&mut dev, &|| format!("{} = {v:#x}, re-signed", f.name), &s, None);
            }
        }
    }
    // Records: the chunk twice, dropped, from another stream; the trailer from
    // another stream; replay into another session.
    let other = mtty_stream(3, None);
    let ol = layout(&other);
    let (c0, c1) = l.chunks[0];
    let mut dup = b[..c1].to_vec();
    dup.extend_from_slice(&b[c0..]);
    one(&mut dev, &|| "chunk twice".into(), &dup, None);
    let mut dropped = b[..c0].to_vec();
    dropped.extend_from_slice(&b[c1..]);
    one(&mut dev, &|| "chunk dropped".into(), &dropped, None);
    let mut spliced = b[..c0].to_vec();
    spliced.extend_from_slice(&other[ol.chunks[0].0..ol.chunks[0].1]);
    spliced.extend_from_slice(&b[c1..]);
    one(&mut dev, &|| "chunk from another stream".into(), &spliced, None);
    let mut tail = b[..l.trailer].to_vec();
    tail.extend_from_slice(&other[ol.trailer..]);
    one(&mut dev, &|| "trailer from another stream".into(), &tail, None);
    let bound = mtty_stream(3, Some([0x11; 32]));
    one(
        &mut dev,
        &|| "bound stream replayed to another session".into(),
        &bound,
        Some([0x22; 32]),
    );
    one(
        &mut dev,
        &|| "unbound stream where a bound one is required".into(),
        &b,
        Some([0x11; 32]),
    );
    // A state the plugin must refuse, signed by the trusted key.
    let mut bad = b.clone();
    bad[c0 + 88 + 24 + 24] = 200; // port 0 rxtx.head
    let bad = resign(&bad, &test_signer());
    one(&mut dev, &|| "FIFO head 200, re-signed".into(), &bad, None);
    eprintln!("restore mutation: {count} inputs in {:.2?}", start.elapsed());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(count > 1000, "only {count} inputs");
}

// ---------------------------------------------------------------------------
// The broker's restore path into a simulated Xe VF.
//
// xe-vf-tiny is not a device type the plugin offers, so these streams are
// xe-vf-64m ones (64 MiB of VRAM) in 1 MiB chunks: a real save of the simulated
// VF (the VRAM first, then GuC, GGTT and MMIO) for mutations of the envelope,
// and the packet builder's stream in the driver's order (per GT: GuC, GGTT,
// MMIO, then VRAM), whose small packets come first, for mutations inside the
// payload. The mutants are few (a whole restore reads 64 MiB); the tiny stream
// above takes the many.

/// A device that counts the bytes written to it.
struct Watched {
    inner: Box<dyn MigrationDevice>,
    written: u64,
}

impl MigrationDevice for Watched {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }
    fn migration_flags(&self) -> u64 {
        self.inner.migration_flags()
    }
    fn state(&mut self) -> mdevmig::Result<MigState> {
        self.inner.state()
    }
    fn set_state(&mut self, target: MigState) -> mdevmig::Result<()> {
        self.inner.set_state(target)
    }
    fn read_data(&mut self, buf: &mut [u8]) -> mdevmig::Result<mdevmig::device::DataRead> {
        self.inner.read_data(buf)
    }
    fn write_data(&mut self, buf: &[u8]) -> mdevmig::Result<()> {
        self.written += buf.len() as u64;
        self.inner.write_data(buf)
    }
    fn data_size(&mut self) -> mdevmig::Result<u64> {
        self.inner.data_size()
    }
    fn precopy_info(&mut self) -> mdevmig::Result<mdevmig::device::PrecopyInfo> {
        self.inner.precopy_info()
    }
    fn reset(&mut self) -> mdevmig::Result<()> {
        self.inner.reset()
    }
    fn state_digest(&mut self) -> Option<[u8; 32]> {
        self.inner.state_digest()
    }
}

const XE_DST: &str = "sim:xe/xe-vf-64m,seed=9";

/// `payload` in the header `h` (another stream id), 1 MiB chunks, signed by the
/// test key.
fn xe_64m_envelope(h: &Header, payload: &[u8], stream_id: u8) -> Vec<u8> {
    let mut h = with_stream_id(h.clone(), stream_id);
    h.chunk_size = 1 << 20;
    let mut w = StreamWriter::new(Vec::new(), &h, &test_signer()).unwrap();
    w.write_data(payload).unwrap();
    w.end_section().unwrap();
    w.finish().unwrap()
}

/// `env` (laid out as `l`, its one streamed section carrying `old`) cut again
/// for the payload `new`: the chunks `old` and `new` share are kept, the rest is
/// written and signed by the test key with a new end record and trailer. What
/// the writer makes of `new`, without hashing the shared chunks again.
fn recut(env: &[u8], l: &Layout, old: &[u8], new: &[u8]) -> Vec<u8> {
    let key = test_signer();
    let cs = l.chunk_size as usize;
    let same = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let keep = (same / cs).min(l.chunks.len() - 1);
    let head = &env[..l.header_len];
    let mut out = env[..l.chunks[keep].0].to_vec();
    let (mut seq, mut off) = (keep as u64, keep * cs);
    while off < new.len() {
        let n = cs.min(new.len() - off);
        let rec = ChunkRecord {
            section_index: 0,
            data_len: n as u32,
            seq,
            offset: off as u64,
        };
        out.extend(vectors::signed_chunk(&key, head, rec, &new[off..off + n]));
        seq += 1;
        off += n;
    }
    let length = new.len() as u64;
    out.extend(vectors::signed_end(
        &key,
        head,
        SectionEnd {
            section_index: 0,
            seq,
            length,
        },
    ));
    out.extend(vectors::signed_trailer(
        &key,
        head,
        Trailer {
            chunk_count: seq,
            total_len: length,
        },
    ));
    out
}

#[test]
fn restore_refuses_mutated_xe_streams_and_nothing_reaches_the_device() {
    use mdevmig_xe::codes as x;
    let start = Instant::now();
    // A real save, and its restore (the pattern the mutants must not match).
    let mut src = open_sim("sim:xe/xe-vf-64m,seed=3,dirty=2");
    let mut saved = Vec::new();
    let opts = SaveOptions {
        chunk_size: 1 << 20,
        ..SaveOptions::default()
    };
    let report = broker::save(&mut *src, &registry(), &test_signer(), &mut saved, &opts).unwrap();
    let mut fresh = open_sim(XE_DST);
    let r = restore(&mut *fresh, &saved, None).unwrap();
    assert_eq!(
        r.state_digest, report.state_digest,
        "an xe restore changed the state"
    );
    // The driver-order stream restores too.
    let config = mdevmig_xe::Config::new(mdevmig_xe::XE_VF_64M);
    let payload = mdevmig_xe::testing::stream(&config, 5);
    let env = xe_64m_envelope(&report.header, &payload, 0x41);
    let mut fresh = open_sim(XE_DST);
    restore(&mut *fresh, &env, None).unwrap();

    let mut dev = Watched {
        inner: open_sim(XE_DST),
        written: 0,
    };
    let before = dev.state_digest();
    let mut count = 0u64;
    let mut failures: Vec<String> = Vec::new();
    // `code`: the exact code, or any documented one (`None`); `seen`: the
    // payload bytes the device may have been given (the refused packet's header
    // never reaches it whole).
    let mut one = |dev: &mut Watched,
                   what: &dyn Fn() -> String,
                   input: &[u8],
                   session: Option<[u8; 32]>,
                   code: Option<&'static str>,
                   seen: Option<u64>| {
        count += 1;
        dev.written = 0;
        let got = catch_unwind(AssertUnwindSafe(|| restore(&mut *dev, input, session)));
        let why = match got {
            Err(_) => Some("panicked".to_owned()),
            Ok(Ok(_)) => Some("accepted after modification".to_owned()),
            Ok(Err(e)) if !documented(e.code.as_str()) => Some(format!("undocumented code {}", e.code)),
            Ok(Err(e)) if code.is_some_and(|c| c != e.code.as_str()) => Some(format!(
                "refused with {}, expected {}: {}",
                e.code,
                code.unwrap_or(""),
                e.message
            )),
            Ok(Err(_)) => None,
        };
        let state = dev.state();
        let why = why.or_else(|| {
            (state.as_ref().ok() != Some(&MigState::Running)).then(|| format!("device left in {state:?}"))
        });
        let why = why.or_else(|| (dev.state_digest() != before).then(|| "device state changed".to_owned()));
        let why = why.or_else(|| {
            seen.filter(|s| dev.written > *s).map(|s| {
                format!(
                    "{} bytes reached the device, the refused header starts at {s}",
                    dev.written
                )
            })
        });
        if let Some(why) = why {
            dev.inner = open_sim(XE_DST);
            if failures.len() < 40 {
                failures.push(format!("{}: {why}", what()));
            }
        }
    };

    // The envelope of the real save.
    let l = stream_layout(&saved);
    let field = |name: &str| l.fields.iter().find(|f| f.name == name).unwrap().clone();
    let fin = final_len(&l);
    let n = l.chunks.len();
    let (end_s, end_e) = l.chunks[n - 1];
    for (what, cut) in [
        ("the header alone", l.header_len),
        ("inside chunk 3", l.chunks[3].0 + 88 + 1000),
        ("before the end record", end_s),
    ] {
        one(
            &mut dev,
            &|| format!("cut {what}"),
            &saved[..cut],
            None,
            Some("format.truncated"),
            None,
        );
    }
    for (name, v, code) in [
        ("end[0].length", fin + 1, Some("format.section_length_mismatch")),
        ("section[0].length", fin - 1, Some("limit.section_over_bound")),
        (
            "section[0].length",
            config.max_stream_len() + 1,
            Some("limit.section_too_large"),
        ),
        ("section[0].flags", u64::from(SECTION_REQUIRED), None),
    ] {
        let f = field(name);
        let mut m = saved.clone();
        put(&mut m, f.at, f.width, v);
        let m = if f.at < l.header_len {
            fuzz_streamed::resign_streamed(&m, &test_signer())
        } else {
            resign_records(&mut m, &l, f.at..f.at + 1);
            m
        };
        one(
            &mut dev,
            &|| format!("{name} = {v:#x}, re-signed"),
            &m,
            None,
            code,
            None,
        );
    }
    let ol = stream_layout(&env);
    let (oe_s, oe_e) = ol.chunks[ol.chunks.len() - 1];
    for (what, m, code) in [
        (
            "end record dropped",
            [&saved[..end_s], &saved[end_e..]].concat(),
            "format.chunk_dropped",
        ),
        (
            "end record from another stream",
            [&saved[..end_s], &env[oe_s..oe_e], &saved[end_e..]].concat(),
            "auth.bad_end_signature",
        ),
    ] {
        one(&mut dev, &|| what.to_owned(), &m, None, Some(code), None);
    }
    one(
        &mut dev,
        &|| "unbound stream where a bound one is required".into(),
        &saved,
        Some([0x22; 32]),
        Some("auth.unbound_stream"),
        None,
    );

    // Inside the payload, the envelope re-signed: the Xe validator refuses.
    let place = |p: usize| ol.chunks[p >> 20].0 + 88 + (p & ((1 << 20) - 1));
    let mut e = env.clone();
    for m in xe_header_mutants(&config, &payload, true) {
        // The version and flags are the tiny stream's business; past the VRAM
        // (a whole restore each), the size alone.
        if matches!(m.field, 0 | 4) || m.at > 1 << 20 && m.field != 6 {
            continue;
        }
        let mut p = payload[m.at..m.at + 24].to_vec();
        XeHeaderMutant { at: 0, ..m.clone() }.apply(&mut p);
        for (i, b) in p.iter().enumerate() {
            e[place(m.at + i)] = *b;
        }
        let signed = place(m.at)..place(m.at + 23) + 1;
        resign_records(&mut e, &ol, signed.clone());
        let code = m.code.unwrap();
        assert!(code.starts_with("vendor.xe."));
        one(
            &mut dev,
            &|| m.describe(),
            &e,
            None,
            Some(code),
            Some(m.at as u64 + 23),
        );
        for i in 0..24 {
            e[place(m.at + i)] = payload[m.at + i];
        }
        resign_records(&mut e, &ol, signed);
    }
    assert!(e == env, "the envelope was not restored");
    assert!(recut(&env, &ol, &payload, &payload) == env);
    let packets = fuzz_xe::packets(&payload);
    let (trailer, _) = *packets.last().unwrap();
    let (vram, _) = *packets.iter().find(|(s, _)| payload[s + 1] == 6).unwrap();
    for (what, p, code, seen) in [
        (
            "payload cut inside the trailer",
            payload[..trailer + 12].to_vec(),
            x::TRUNCATED,
            None,
        ),
        (
            "payload cut inside the VRAM",
            payload[..vram + 24 + 4096].to_vec(),
            x::TRUNCATED,
            None,
        ),
        (
            "a byte after the trailer",
            [&payload[..], &[0][..]].concat(),
            x::AFTER_TRAILER,
            Some(payload.len() as u64),
        ),
        (
            "the trailer twice",
            [&payload[..], &payload[trailer..]].concat(),
            x::AFTER_TRAILER,
            Some(payload.len() as u64 + 23),
        ),
    ] {
        let m = recut(&env, &ol, &payload, &p);
        one(&mut dev, &|| what.to_owned(), &m, None, Some(code), seen);
    }
    eprintln!("xe restore mutation: {count} inputs in {:.2?}", start.elapsed());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(count >= 40, "only {count} inputs");
}

// ---------------------------------------------------------------------------
// The ten bug classes of state loaders (field notes), against the envelope and
// the plugins.

fn mtty_device(ty: &str) -> DeviceInfo {
    DeviceInfo {
        vendor: "mtty".into(),
        device_type: ty.into(),
        ..DeviceInfo::default()
    }
}

fn mtty_state() -> mdevmig_mtty::MttyState {
    mdevmig_mtty::MttyState::default_for(mdevmig_mtty::MttyType::Mtty2)
}

fn mtty_validate(s: &mdevmig_mtty::MttyState) -> Result<(), &'static str> {
    mdevmig_mtty::MttyPlugin
        .validate_section(
            &mtty_device("mtty-2"),
            &mdevmig_mtty::MttyPlugin::section_spec(),
            &s.to_bytes(),
        )
        .map_err(|e| e.code)
}

fn simgpu_attrs() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("encoder".to_owned(), "on".to_owned()),
        ("ctx3".to_owned(), "on".to_owned()),
        ("heads".to_owned(), "1".to_owned()),
    ])
}

/// A saved raw stream of the small simgpu fuzz device, and its records
/// (tag, start of data, data length).
fn simgpu_raw() -> (Vec<u8>, Vec<(u16, usize, usize)>) {
    let mut m = mdevmig_simgpu::SimGpuModel::fuzz_model(5, &simgpu_attrs());
    m.guest_activity(2);
    m.begin_save();
    let mut raw = vec![0u8; m.raw_len() as usize];
    let n = m.read_raw(0, &mut raw);
    raw.truncate(n);
    let mut recs = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let tag = u16::from_le_bytes(raw[pos + 4..pos + 6].try_into().unwrap());
        let len = u64::from_le_bytes(raw[pos + 16..pos + 24].try_into().unwrap()) as usize;
        recs.push((tag, pos + 32, len));
        pos += 32 + len;
    }
    (raw, recs)
}

/// Loads a raw simgpu stream into a fresh fuzz device in `piece`-byte writes;
/// the digest, or the first error's code.
fn simgpu_load(raw: &[u8], piece: usize) -> Result<[u8; 32], &'static str> {
    let mut m = mdevmig_simgpu::SimGpuModel::fuzz_model(9, &simgpu_attrs());
    m.begin_load();
    for p in raw.chunks(piece.max(1)) {
        if let Err(e) = m.load_data(p) {
            m.abort_load();
            return Err(e.code);
        }
    }
    m.end_load().map_err(|e| e.code)?;
    Ok(m.digest())
}

/// Re-frames record `tag` of a raw simgpu stream with `length` in its header
/// (checksum recomputed, so the framing itself is valid).
fn simgpu_reframe(raw: &[u8], recs: &[(u16, usize, usize)], tag: u16, length: u64) -> Vec<u8> {
    let (_, data, _) = recs.iter().find(|r| r.0 == tag).unwrap();
    let at = data - 32;
    let mut m = raw.to_vec();
    m[at + 16..at + 24].copy_from_slice(&length.to_le_bytes());
    let check = mdevmig_simgpu::record::fnv1a64(&m[at..at + 24]);
    m[at + 24..at + 32].copy_from_slice(&check.to_le_bytes());
    m
}

fn simgpu_regs() -> Vec<u8> {
    let (raw, recs) = simgpu_raw();
    let (_, at, len) = recs.iter().find(|r| r.0 == 3).unwrap();
    raw[*at..at + len].to_vec()
}

/// Validates a `simgpu.regs` section as the plugin does on a vgpu-64m destination.
fn simgpu_validate_regs(regs: &[u8]) -> Result<(), &'static str> {
    let ty = mdevmig_simgpu::VGPU_64M;
    let mut decoded = mdevmig_simgpu::sections::Regs::decode(regs).map_err(|e| e.code)?;
    // The fuzz device's regs are for its own framebuffer size; re-target them.
    decoded.fb_pages = ty.fb_pages();
    let device = DeviceInfo {
        vendor: "simgpu".into(),
        device_type: ty.name().into(),
        attributes: simgpu_attrs(),
        ..DeviceInfo::default()
    };
    mdevmig_simgpu::SimGpuPlugin::new()
        .validate_section(
            &device,
            &mdevmig_simgpu::Section::Regs.spec(ty),
            &decoded.encode(),
        )
        .map_err(|e| e.code)
}

/// Reads `bytes` (whole) with the test trust store: the code, or "ok".
fn code(bytes: &[u8]) -> &'static str {
    match read_all(bytes, &test_trust(), None) {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    }
}

/// The single stream with `patch` applied to its header fields, written by the
/// real writer when the header passes its checks, else by patching and
/// re-signing the bytes.
fn single_with(patch: impl Fn(&Field) -> Option<u64>) -> Vec<u8> {
    let b = single_base().bytes;
    let l = layout(&b);
    let mut m = b.clone();
    for f in &l.fields {
        if let Some(v) = patch(f) {
            put(&mut m, f.at, f.width, v);
        }
    }
    resign(&m, &test_signer())
}

fn field_named(name: &str) -> impl Fn(&Field) -> bool + '_ {
    move |f: &Field| f.name == name
}

#[test]
fn bug_class_01_index_from_stream_mtty_fifo_head_200_and_chunk_section_index() {
    // mtty: the kernel indexes fifo[head] before masking it.
    for (head, tail) in [(200u8, 0u8), (16, 0), (255, 0), (0, 16), (0, 200)] {
        let mut s = mtty_state();
        s.ports_mut()[1].rxtx.head = head;
        s.ports_mut()[1].rxtx.tail = tail;
        assert_eq!(
            mtty_validate(&s),
            Err("vendor.mtty.fifo_index"),
            "head {head} tail {tail}"
        );
    }
    // The envelope: a section index from the stream is never used to index the
    // table before it is compared with the expected one.
    let is = field_named("chunk[0].section_index");
    for v in [1u64, 200, 0xffff] {
        let m = single_with(|f| is(f).then_some(v));
        assert_eq!(code(&m), "format.chunk_mismatch", "section_index {v}");
    }
    // simgpu: a context index past ctx_count must be empty.
    let mut regs = mdevmig_simgpu::sections::Regs::decode(&simgpu_regs()).unwrap();
    let n = regs.ctx_count as usize;
    regs.contexts[n].state = 1;
    assert_eq!(simgpu_validate_regs(&regs.encode()), Err("vendor.simgpu.context"));
}

#[test]
fn bug_class_02_count_larger_than_capacity_mtty_count_17_simgpu_ctx_count_section_count() {
    let mut s = mtty_state();
    s.ports_mut()[0].rxtx.count = 17;
    assert_eq!(mtty_validate(&s), Err("vendor.mtty.fifo_count"));
    s.ports_mut()[0].rxtx.count = 255;
    assert_eq!(mtty_validate(&s), Err("vendor.mtty.fifo_count"));

    let mut regs = mdevmig_simgpu::sections::Regs::decode(&simgpu_regs()).unwrap();
    for n in [65u32, 1000, u32::MAX] {
        regs.ctx_count = n;
        assert_eq!(
            simgpu_validate_regs(&regs.encode()),
            Err("vendor.simgpu.ctx_count"),
            "ctx_count {n}"
        );
    }
    // fb-dirty count above its capacity.
    let (raw, recs) = simgpu_raw();
    let (_, at, _) = *recs.iter().find(|r| r.0 == 2).unwrap();
    let mut m = raw.clone();
    let capacity = u32::from_le_bytes(m[at + 8..at + 12].try_into().unwrap());
    m[at + 4..at + 8].copy_from_slice(&(capacity + 1).to_le_bytes());
    assert_eq!(simgpu_load(&m, 4096), Err("vendor.simgpu.dirty_count"));

    // The envelope: section and attribute counts above their caps, signed.
    let sc = field_named("header.section_count");
    assert_eq!(
        code(&single_with(|f| sc(f).then_some(65))),
        "limit.too_many_sections"
    );
    let ac = field_named("header.attr_count");
    assert_eq!(
        code(&single_with(|f| ac(f).then_some(17))),
        "limit.too_many_attributes"
    );
}

#[test]
fn bug_class_03_size_from_stream_where_the_local_constant_must_be_used() {
    // simgpu: a record's length field must be the type's constant, whatever the
    // framing says (checksum valid).
    let (raw, recs) = simgpu_raw();
    for (tag, _, len) in &recs {
        for wrong in [
            0u64,
            1,
            *len as u64 - 1,
            *len as u64 + 1,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let m = simgpu_reframe(&raw, &recs, *tag, wrong);
            assert_eq!(
                simgpu_load(&m, 65536),
                Err("vendor.simgpu.bad_length"),
                "tag {tag} length {wrong}"
            );
        }
    }
    // A structured section of the wrong length is refused by validate_section.
    let regs = simgpu_regs();
    for n in [0, 4095, 4097, 8192] {
        let mut r = regs.clone();
        r.resize(n, 0);
        assert_eq!(
            simgpu_validate_regs(&r),
            Err("vendor.simgpu.bad_length"),
            "regs of {n} bytes"
        );
    }
    // mtty through the broker: a signed header may declare any section length;
    // the broker holds it against the plugin's constant for the destination's
    // type (96 for mtty-2) before anything is read, and the plugin uses its
    // constant, not the header's.
    for (len, want) in [
        (60usize, "vendor.section_length"),
        (95, "vendor.section_length"),
        (97, "limit.section_too_large"),
    ] {
        let mut h = vectors::single().0;
        h.sections[0].length = len as u64;
        let mut data = mtty_state().to_bytes();
        data.resize(len, 0);
        let s = vectors::build(&h, &test_signer(), &[data]);
        let mut dev = open_sim("sim:mtty/mtty-2,seed=7");
        let before = dev.state_digest();
        let e = restore(&mut *dev, &s, None).unwrap_err();
        assert_eq!(e.code.as_str(), want, "{len}: {e:?}");
        assert_eq!(dev.state_digest(), before);
    }
}

#[test]
fn bug_class_04_integer_overflow_in_size_arithmetic_section_length_near_u64_max() {
    let key = test_signer();
    // Header::check and the reader sum section lengths with checked arithmetic.
    let mut h = vectors::multi().0;
    for lens in [
        [u64::MAX, 0, 1],
        [u64::MAX - 1, 1, 1],
        [1 << 63, 0, 1 << 63],
        [(1 << 40) - 1, 0, 2],
        [1 << 39, 1 << 39, 1],
    ] {
        for (s, l) in h.sections.iter_mut().zip(lens) {
            s.length = l;
        }
        assert_eq!(
            h.check().unwrap_err().code.as_str(),
            "limit.stream_too_large",
            "{lens:?}"
        );
        let _ = h.chunk_count(); // must not panic
    }
    // The same lengths, signed onto the wire.
    let b = multi_base().bytes;
    let l = layout(&b);
    for v in [u64::MAX, u64::MAX - 1, 1 << 63, (1 << 40) + 1] {
        for i in 0..3 {
            let name = format!("section[{i}].length");
            let f = l.fields.iter().find(|f| f.name == name).unwrap();
            let mut m = b.clone();
            put(&mut m, f.at, 8, v);
            assert_eq!(
                code(&resign(&m, &key)),
                "limit.stream_too_large",
                "{name} = {v:#x}"
            );
        }
    }
    // Offsets and counts near the top: offset + data_len must not wrap.
    for (name, v) in [
        ("chunk[4].offset", u64::MAX),
        ("chunk[4].offset", u64::MAX - 1807),
        ("chunk[0].seq", u64::MAX),
        ("trailer.chunk_count", u64::MAX),
        ("trailer.total_len", u64::MAX),
    ] {
        let f = l.fields.iter().find(|f| f.name == name).unwrap();
        let mut m = b.clone();
        put(&mut m, f.at, 8, v);
        assert_ne!(code(&resign(&m, &key)), "ok", "{name} = {v:#x}");
    }
    // simgpu's bulk range check: offset + len past u64::MAX.
    let ty = mdevmig_simgpu::VGPU_64M;
    let device = DeviceInfo {
        vendor: "simgpu".into(),
        device_type: ty.name().into(),
        ..DeviceInfo::default()
    };
    let spec = mdevmig_simgpu::Section::Fb.spec(ty);
    for offset in [u64::MAX, u64::MAX - 4095, ty.fb_len() - 4095] {
        let e = mdevmig_simgpu::SimGpuPlugin::new()
            .validate_bulk(&device, &spec, offset, &[0u8; 4096])
            .unwrap_err();
        assert_eq!(e.code, "vendor.simgpu.bulk_range", "offset {offset:#x}");
    }
}

#[test]
fn bug_class_05_offset_plus_size_past_the_buffer_chunk_offset() {
    // A chunk whose offset + data_len runs past its section (signed, so only the
    // position check can catch it).
    let b = multi_base().bytes;
    let l = layout(&b);
    let key = test_signer();
    for (name, v) in [
        ("chunk[0].offset", 1u64),
        ("chunk[0].offset", 4999),
        ("chunk[1].offset", 4095),
        ("chunk[2].offset", 9999),
        ("chunk[4].offset", 10000),
    ] {
        let f = l.fields.iter().find(|f| f.name == name).unwrap();
        let mut m = b.clone();
        put(&mut m, f.at, 8, v);
        assert_eq!(code(&resign(&m, &key)), "format.chunk_mismatch", "{name} = {v}");
    }
    // simgpu: fb-dirty page indices must lie inside the framebuffer.
    let (raw, recs) = simgpu_raw();
    let (_, at, _) = *recs.iter().find(|r| r.0 == 2).unwrap();
    let mut m = raw.clone();
    m[at + 4..at + 8].copy_from_slice(&1u32.to_le_bytes());
    m[at + 16..at + 20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(simgpu_load(&m, 4096), Err("vendor.simgpu.dirty_index"));
    // simgpu bulk: the last byte, one past it.
    let ty = mdevmig_simgpu::VGPU_64M;
    let device = DeviceInfo {
        vendor: "simgpu".into(),
        device_type: ty.name().into(),
        ..DeviceInfo::default()
    };
    let spec = mdevmig_simgpu::Section::Fb.spec(ty);
    let p = mdevmig_simgpu::SimGpuPlugin::new();
    assert!(p.validate_bulk(&device, &spec, ty.fb_len() - 1, &[0]).is_ok());
    assert_eq!(
        p.validate_bulk(&device, &spec, ty.fb_len(), &[0])
            .unwrap_err()
            .code,
        "vendor.simgpu.bulk_range"
    );
}

#[test]
fn bug_class_06_zero_divisor_chunk_size_0() {
    let cs = field_named("header.chunk_size");
    for v in [0u64, 1, 4095, 4097, 3 << 12] {
        assert_eq!(
            code(&single_with(|f| cs(f).then_some(v))),
            "format.bad_chunk_size",
            "chunk_size {v}"
        );
    }
    // The arithmetic itself refuses a zero divisor instead of panicking.
    let mut h = vectors::single().0;
    h.chunk_size = 0;
    assert_eq!(
        h.chunk_count().unwrap_err().code.as_str(),
        "format.bad_chunk_size"
    );
    assert_eq!(h.check().unwrap_err().code.as_str(), "format.bad_chunk_size");
    // simgpu fb-dirty page_size 0 (a divisor a loader could use).
    let (raw, recs) = simgpu_raw();
    let (_, at, _) = *recs.iter().find(|r| r.0 == 2).unwrap();
    let mut m = raw.clone();
    m[at + 12..at + 16].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(simgpu_load(&m, 4096), Err("vendor.simgpu.dirty_count"));
    // mtty: max_fifo_size 0.
    let mut s = mtty_state();
    s.ports_mut()[0].max_fifo_size = 0;
    assert_eq!(mtty_validate(&s), Err("vendor.mtty.fifo_size"));
}

#[test]
fn bug_class_07_result_does_not_depend_on_how_the_stream_was_split() {
    let trust = test_trust();
    for base in [single_base(), multi_base()] {
        let b = &base.bytes;
        for k in [1usize, 2, 3, 7, 88, 89, 4096, 4097] {
            let got = read_all(Segmented::every(b, k).interrupting(), &trust, None);
            assert_eq!(
                got.as_ref().ok(),
                Some(&base.accepted),
                "{} in {k}-byte pieces",
                base.name
            );
        }
        // A refused stream is refused with the same code however it is split.
        let mut m = b.clone();
        let last = m.len() - 1;
        m[last] ^= 1;
        let whole = code(&m);
        for k in [1usize, 5, 88, 4096] {
            let split = read_all(Segmented::every(&m, k), &trust, None).unwrap_err();
            assert_eq!(split.code.as_str(), whole, "{} in {k}-byte pieces", base.name);
        }
    }
    // The simgpu loader: every write size gives the same digest (or error).
    let (raw, _) = simgpu_raw();
    let whole = simgpu_load(&raw, raw.len()).unwrap();
    for k in [1usize, 31, 32, 33, 4095, 4096, 4097, 65536] {
        assert_eq!(
            simgpu_load(&raw, k),
            Ok(whole),
            "simgpu raw stream in {k}-byte writes"
        );
    }
    let mut bad = raw.clone();
    bad[40] ^= 0x80;
    let want = simgpu_load(&bad, bad.len());
    for k in [1usize, 32, 4096] {
        assert_eq!(
            simgpu_load(&bad, k),
            want,
            "damaged simgpu raw stream in {k}-byte writes"
        );
    }
}

#[test]
fn bug_class_08_allocation_sized_by_a_stream_value_inflated_data_len() {
    let trust = test_trust();
    let key = test_signer();
    let b = single_base().bytes;
    let l = layout(&b);
    let f = l.fields.iter().find(|f| f.name == "chunk[0].data_len").unwrap();
    for v in [4096u64, 4097, 1 << 20, 16 << 20, (16 << 20) + 1, u32::MAX as u64] {
        for signed in [false, true] {
            let mut m = b.clone();
            put(&mut m, f.at, 4, v);
            if signed {
                m = resign(&m, &key);
            }
            // Also with the data missing entirely.
            for input in [&m[..], &m[..l.chunks[0].0 + 88]] {
                let (r, peak) = measure(|| read_all(input, &trust, None));
                assert!(r.is_err(), "data_len {v} accepted");
                assert!(peak < alloc_bound(), "data_len {v}: {peak} bytes allocated");
            }
        }
    }
    // header_len at its cap with a short input: at most the cap is allocated.
    let mut m = b.clone();
    put(&mut m, 12, 4, 8192);
    let (_, peak) = measure(|| read_all(&m[..], &trust, None));
    assert!(peak < alloc_bound(), "header_len 8192: {peak} bytes");
    // The simgpu loader sizes its buffers by the type's constants, not the
    // record's length field.
    let (raw, recs) = simgpu_raw();
    let m = simgpu_reframe(&raw, &recs, 3, u64::MAX);
    let (r, peak) = measure(|| simgpu_load(&m[..40], 40));
    assert!(r.is_err());
    assert!(
        peak < 1 << 20,
        "simgpu allocated {peak} bytes for a u64::MAX record"
    );
}

#[test]
fn bug_class_09_enum_or_bool_out_of_range_mtty_dlab_2_simgpu_power_state() {
    let mut s = mtty_state();
    s.ports_mut()[0].dlab = 2;
    assert_eq!(mtty_validate(&s), Err("vendor.mtty.register"));
    let mut s = mtty_state();
    s.ports_mut()[1].overrun = 0xff;
    assert_eq!(mtty_validate(&s), Err("vendor.mtty.register"));
    let mut s = mtty_state();
    s.ports_mut()[1].intr_trigger_level = 2;
    assert_eq!(mtty_validate(&s), Err("vendor.mtty.register"));

    let good = mdevmig_simgpu::sections::Regs::decode(&simgpu_regs()).unwrap();
    for v in [4u32, 0xff, u32::MAX] {
        let mut regs = good.clone();
        regs.power_state = v;
        assert_eq!(
            simgpu_validate_regs(&regs.encode()),
            Err("vendor.simgpu.enum_value"),
            "power_state {v}"
        );
        let mut regs = good.clone();
        regs.display_mode = v.wrapping_add(1).max(5);
        assert_eq!(
            simgpu_validate_regs(&regs.encode()),
            Err("vendor.simgpu.enum_value"),
            "display_mode {v}"
        );
    }
    // The envelope: record kinds, flags and the format version, signed.
    let b = single_base().bytes;
    let l = layout(&b);
    for (name, v, want) in [
        // Kind 3 is a section end: a chunk frame relabelled as one has its
        // data_len where the end record's reserved bytes are.
        ("chunk[0].kind", 3u64, "format.reserved_nonzero"),
        ("chunk[0].kind", 4, "format.bad_record_kind"),
        ("chunk[0].kind", 0, "format.bad_record_kind"),
        ("trailer.kind", 0xff, "format.bad_record_kind"),
        ("header.flags", 2, "format.unknown_flags"),
        ("header.flags", 1 << 31, "format.unknown_flags"),
        ("section[0].flags", 0x8001, "format.unknown_flags"),
        ("header.format_version", 2, "format.unsupported_version"),
    ] {
        let f = l.fields.iter().find(|f| f.name == name).unwrap();
        let mut m = b.clone();
        put(&mut m, f.at, f.width, v);
        assert_eq!(code(&resign(&m, &test_signer())), want, "{name} = {v:#x}");
    }
}

#[test]
fn bug_class_10_truncation_read_as_something_else_cut_before_trailer_hisi_prefix() {
    // The envelope: a stream cut exactly before its trailer (every chunk whole)
    // is truncated, not complete.
    for base in [single_base(), multi_base()] {
        let l = layout(&base.bytes);
        assert_eq!(
            code(&base.bytes[..l.trailer]),
            "format.truncated",
            "{}",
            base.name
        );
        for (_, end) in &l.chunks {
            assert_eq!(
                code(&base.bytes[..*end]),
                "format.truncated",
                "{} cut at {end}",
                base.name
            );
        }
    }
    // hisi_acc: the first 40 bytes of a whole 176-byte state are themselves a
    // valid (match-data-only) state. Only the envelope's authenticated section
    // length tells them apart.
    let plugin = mdevmig_hisi_acc::HisiAccPlugin;
    let device = DeviceInfo {
        vendor: "hisi_acc".into(),
        device_type: "hisi-sec-vf".into(),
        attributes: BTreeMap::from([("qp_num".into(), "64".into()), ("que_iso_cfg".into(), "1".into())]),
        ..DeviceInfo::default()
    };
    let spec = mdevmig_hisi_acc::plugin::section_spec(2);
    let whole = mdevmig_hisi_acc::AccVfData::sample(0xa256, 64, 1, true).to_bytes();
    assert_eq!(whole.len(), 176);
    plugin.validate_section(&device, &spec, &whole).unwrap();
    plugin.validate_section(&device, &spec, &whole[..40]).unwrap();
    let header = |len: u64, id: u8| Header {
        flags: 0,
        state_version: 2,
        min_version: 1,
        chunk_size: CHUNK as u32,
        key_id: test_signer().id(),
        session_nonce: [0; 32],
        stream_id: [id; 16],
        vendor: "hisi_acc".into(),
        device_type: "hisi-sec-vf".into(),
        attributes: BTreeMap::new(),
        sections: vec![SectionEntry {
            name: spec.name.clone(),
            version: spec.version,
            flags: mdevmig::codec::SECTION_REQUIRED,
            length: len,
        }],
    };
    let write = |h: &Header, data: &[u8]| {
        let mut w = StreamWriter::new(Vec::new(), h, &test_signer()).unwrap();
        w.write_data(data).unwrap();
        w.finish().unwrap()
    };
    let full = write(&header(176, 1), &whole);
    let l = layout(&full);
    let (c0, _) = l.chunks[0];
    // Cut after 40 data bytes: truncated. data_len patched to 40: signature
    // fails; re-signed: the header still says 176, so the length is wrong.
    assert_eq!(code(&full[..c0 + 88 + 40]), "format.truncated");
    let mut short = full[..c0 + 88 + 40].to_vec();
    put(&mut short, c0 + 4, 4, 40);
    short.extend_from_slice(&full[l.trailer..]);
    assert_eq!(code(&short), "auth.bad_chunk_signature");
    assert_eq!(code(&resign(&short, &test_signer())), "format.bad_chunk_length");
    // A stream that declares 40 bytes is the match-data-only state, and says so.
    let only = write(&header(40, 2), &whole[..40]);
    let got = read_all(&only[..], &test_trust(), None).unwrap();
    assert_eq!(got.header.sections[0].length, 40);
    assert_eq!(
        read_all(&full[..], &test_trust(), None).unwrap().header.sections[0].length,
        176
    );
}

// ---------------------------------------------------------------------------
// Regression inputs found by fuzzing (fuzz/regressions/<target>/), replayed.

#[test]
fn fuzz_regressions_replay_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let Ok(targets) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut n = 0;
    for t in targets {
        let t = t.unwrap().path();
        let target = t.file_name().unwrap().to_string_lossy().into_owned();
        for f in std::fs::read_dir(&t).unwrap() {
            let f = f.unwrap().path();
            let data = std::fs::read(&f).unwrap();
            let run = || match target.as_str() {
                "envelope_header" => mdevmig_testkit::fuzz_envelope_header(&data),
                "stream_reader" => mdevmig_testkit::fuzz_stream_reader(&data),
                "policy" => mdevmig_testkit::fuzz_policy(&data),
                "plugin_hisi_acc" => mdevmig_testkit::hisi_acc::parse_and_validate(&data),
                "stream_reader_streamed" => fuzz_streamed::run(&data),
                "xe_validator_splits" => fuzz_xe::run(&data),
                _ => {}
            };
            assert!(
                catch_unwind(AssertUnwindSafe(run)).is_ok(),
                "{} panics",
                f.display()
            );
            n += 1;
        }
    }
    eprintln!("replayed {n} fuzz regression inputs");
}

// ---------------------------------------------------------------------------
// Fuzz seeds that spec/vectors cannot provide (plugin states, real streams,
// policies). `cargo test --test mutation -- --ignored write_fuzz_seeds` rewrites
// fuzz/seeds/; fuzz/seed-corpus.sh copies them into the corpora.

#[test]
#[ignore = "writes fuzz/seeds/; run by hand when the formats change"]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    // Real streams: mtty unbound and bound.
    write("stream_reader", "mtty-2-seed3.mdm", &mtty_stream(3, None));
    write(
        "stream_reader",
        "mtty-2-bound.mdm",
        &mtty_stream(5, Some([0x11; 32])),
    );
    // mtty raw states: fresh and busy, both types, then a few guest accesses.
    for ty in ["mtty-1", "mtty-2"] {
        for seed in [0u64, 3] {
            let mut dev = open_sim(&format!("sim:mtty/{ty},seed={seed}"));
            let mut out = Vec::new();
            let opts = SaveOptions {
                chunk_size: CHUNK as u32,
                ..SaveOptions::default()
            };
            broker::save(&mut *dev, &registry(), &test_signer(), &mut out, &opts).unwrap();
            let l = layout(&out);
            let (c0, c1) = l.chunks[0];
            let mut state = out[c0 + 88..c1].to_vec();
            write("plugin_mtty", &format!("{ty}-seed{seed}.bin"), &state);
            // TX writes, an LCR write, RX reads, an FCR write.
            state.extend_from_slice(&[0, 0, 0x41, 0, 0, 0x42, 0, 3, 0x83, 0, 0x80, 0, 0, 2, 0x07]);
            write("plugin_mtty", &format!("{ty}-seed{seed}-ops.bin"), &state);
        }
    }
    // hisi_acc: whole V1/V2 states and their 40-byte match data.
    for (dev_id, name) in [(0xa256u32, "sec"), (0xa259, "hpre"), (0xa251, "zip")] {
        for v2 in [false, true] {
            let s = mdevmig_hisi_acc::AccVfData::sample(dev_id, 64, 1, v2);
            let v = if v2 { 2 } else { 1 };
            write("plugin_hisi_acc", &format!("{name}-v{v}.bin"), &s.to_bytes());
            write(
                "plugin_hisi_acc",
                &format!("{name}-v{v}-match.bin"),
                &s.match_only().to_bytes(),
            );
        }
    }
    // simgpu: each structured section (mode 0), the raw stream (mode 1, encoder and
    // ctx3 on), and a few mutations of the base stream (mode 2).
    let (raw, recs) = simgpu_raw();
    for (tag, at, len) in &recs {
        if *len <= 4096 {
            let mut s = vec![0u8];
            s.extend_from_slice(&raw[*at..at + len]);
            write("plugin_simgpu", &format!("section-tag{tag}.bin"), &s);
        }
    }
    let mut s = vec![1 | 8 | 16];
    s.extend_from_slice(&raw);
    write("plugin_simgpu", "raw-stream.bin", &s);
    write(
        "plugin_simgpu",
        "mutate.bin",
        &[2, 0x10, 0, 0, 0x01, 0x40, 0, 0, 0x80],
    );
    // Policies.
    for (name, doc) in [
        ("empty.json", "{}"),
        (
            "full.json",
            r#"{"allow_skip":["simgpu.encoder","simgpu.telemetry"],"pin_version":2,"refuse_versions":[1,3]}"#,
        ),
        ("pin.json", r#"{"pin_version":1}"#),
        ("refuse.json", r#"{"refuse_versions":[4294967295,0]}"#),
    ] {
        write("policy", name, doc.as_bytes());
    }
    // stream_reader_streamed, bytes mode (selector bit 0 clear; bits 1-7 the
    // piece size of the split read): the streamed vectors.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("streamed") && n.ends_with(".mdm"))
        .collect();
    names.sort();
    for (i, name) in names.iter().enumerate() {
        let mut s = vec![(i as u8 * 6) & 0xfe];
        s.extend_from_slice(&std::fs::read(dir.join(name)).unwrap());
        write("stream_reader_streamed", &format!("bytes-{name}"), &s);
    }
    // Script mode (bit 0 set): header configurations completed canonically, and
    // scripts that drop, repeat, swap, forge and cut records.
    for (name, script) in fuzz_seed_scripts() {
        let mut s = vec![fuzz_streamed::SCRIPT | 0x10];
        s.extend_from_slice(&script);
        assert!(
            fuzz_streamed::script_stream(&script, &test_signer()).is_some(),
            "{name}"
        );
        write("stream_reader_streamed", &format!("script-{name}.bin"), &s);
    }
    // xe_validator_splits, raw mode: the first packets of valid streams (no
    // VRAM, so refused at the trailer), in 1-byte pieces, in pieces that end
    // inside headers, whole.
    for (select, splits) in [(0u8, vec![0u8]), (2, vec![23, 0, 24, 0xc1]), (4, vec![])] {
        let c = fuzz_xe::config(select);
        let base = fuzz_xe::base(&c);
        let p = fuzz_xe::packets(base);
        let mut stream: Vec<u8> = p
            .iter()
            .filter(|(s, _)| base[s + 1] != 6)
            .flat_map(|&(s, e)| base[s..e].iter().copied())
            .collect();
        stream.truncate(4096);
        let mut s = vec![select, splits.len() as u8];
        s.extend_from_slice(&splits);
        s.extend_from_slice(&stream);
        write("xe_validator_splits", &format!("raw-{select}.bin"), &s);
    }
    // Mutate mode: a valid tiny stream as it is, and with one operation each
    // (see fuzz/src/xe_splits.rs).
    for (name, select, ops) in [
        ("valid", 1u8, vec![]),
        ("valid-two-tiles", 3, vec![]),
        ("size-2-63", 1, vec![1, 1, 6, 5, 0, 0]),
        ("type-7", 1, vec![1, 2, 1, 3, 0, 0]),
        ("offset-overflow", 1, vec![1, 4, 5, 13, 0, 0]),
        ("gt-other-tile", 3, vec![1, 1, 3, 14, 2, 0]),
        ("after-trailer", 1, vec![5, 0, 0, 0, 0, 0]),
        ("cut", 1, vec![2, 0x10, 0x20, 0x01, 0, 0]),
        ("drop-descriptor", 1, vec![3, 0, 0, 0, 0, 0]),
        ("descriptor-twice", 5, vec![4, 0, 1, 0, 0, 0]),
    ] {
        let splits = [0u8, 23, 0xc3, 0xff, 1];
        let mut s = vec![select, splits.len() as u8];
        s.extend_from_slice(&splits);
        s.extend_from_slice(&ops);
        write("xe_validator_splits", &format!("mutate-{name}.bin"), &s);
    }
}

/// Scripts for the `stream_reader_streamed` seeds (see `fuzz_streamed::script_stream`).
fn fuzz_seed_scripts() -> Vec<(&'static str, Vec<u8>)> {
    // Section flags byte: bit 0 streamed, bit 1 required, bits 2-4 whole chunks
    // of the length or bound, bits 5-7 of a streamed section's data; each
    // followed by the u16 remainders.
    let streamed = |bound_units: u8, data_units: u8| 1 | 2 | bound_units << 2 | data_units << 5;
    let exact = |units: u8| 2 | units << 2;
    let mut out = vec![
        // One streamed section: 3 chunks and 100 bytes of bound, 2 chunks and 5
        // bytes of data (a short last chunk).
        ("one-streamed", vec![0, streamed(3, 2), 100, 0, 5, 0]),
        // Data an exact multiple of the chunk size, below the bound.
        ("streamed-whole-chunks", vec![0, streamed(3, 2), 100, 0, 0, 0]),
        // Bound reached exactly.
        ("streamed-at-bound", vec![0, streamed(2, 2), 0, 0, 0, 0]),
        // Bound 0, no data: the end record alone.
        ("streamed-empty", vec![0, streamed(0, 0), 0, 0, 0, 0]),
        // The writer gives more than the bound.
        ("streamed-over-bound", vec![0, streamed(1, 2), 0, 0, 1, 0]),
        // 8 KiB chunks: exact, streamed, empty exact, streamed.
        (
            "mixed",
            vec![
                1 | 3 << 1,
                exact(1),
                10,
                0,
                streamed(2, 1),
                7,
                0,
                9,
                0,
                exact(0),
                0,
                0,
                streamed(1, 0),
                0,
                0,
                3,
                0,
            ],
        ),
    ];
    let base = vec![0, streamed(3, 2), 100, 0, 5, 0];
    for (name, ops) in [
        // Two canonical records, then one dropped.
        ("drop", vec![0, 0, 4]),
        // Three records, the second again.
        ("repeat", vec![0, 0, 0, 8, 1]),
        // Two chunks swapped.
        ("swap", vec![0, 0, 9]),
        // An end record after the first chunk (seq +0, length +0, advance).
        ("early-end", vec![0, 6, 0, 0, 0, 0, 4]),
        // A chunk with a bad signature where the second belongs.
        ("bad-signature", vec![0, 5, 0, 0, 0, 0, 0x10, 0, 1]),
        // Stop after two records and cut 10 bytes.
        ("cut", vec![0, 0, 11, 10]),
    ] {
        let mut s = base.clone();
        s.extend_from_slice(&ops);
        out.push((name, s));
    }
    out
}
