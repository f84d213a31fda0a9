//! Test-only helpers for mdevmig: the entry points of the fuzz targets in `fuzz/`,
//! and what the test suites share with them. Only tests, examples and `fuzz/`
//! depend on this crate; nothing that ships does. [`test_signer`]'s seed is
//! public, so a key from it must never be trusted outside a test.
//!
//! * [`vectors`]: the generator of `spec/vectors/`;
//! * [`layout`]: where every field of a valid stream lies, for mutation;
//! * [`Segmented`]: a reader that hands a stream over in chosen pieces;
//! * [`resign`] and [`reencode`]: signing a mutated stream again, so that a
//!   mutation gets past the signatures to the checks behind them.
//!
//! Every `fuzz_*` function takes arbitrary bytes, must not panic on any of them,
//! and panics (the fuzzer's crash signal) only when an invariant of the envelope is
//! broken:
//!
//! | function | invariant |
//! | --- | --- |
//! | [`fuzz_envelope_header`] | a header `decode` accepts re-encodes (signed again by the test key) to the same bytes and decodes to the same fields; the streaming header read agrees with `decode` |
//! | [`fuzz_stream_reader`] | a stream the reader accepts is exactly what [`StreamWriter`] makes of its header and data with the test key (one valid encoding, nothing unsigned accepted); the outcome does not depend on how the input is split into reads; session binding is enforced; every error has a documented code |
//! | [`fuzz_policy`] | a policy document that parses re-serialises to one that parses to the same policy, and [`compat::evaluate`] obeys its version rules |
//!
//! [`fuzz_stream_reader`] also *re-signs* its input with the test key ([`resign`])
//! before a second read, so that mutations get past the signatures and reach the
//! structural checks behind them.

pub mod hisi_acc;
pub mod layout;
pub mod streamed;
pub mod vectors;
pub mod xe_splits;

use std::io::{ErrorKind, Read};

use sha2::{Digest, Sha256};

use mdevmig::auth::{SigningKeyPair, TrustStore, SIGNATURE_LEN};
use mdevmig::codec::header::{self, Header, PREFIX_LEN};
use mdevmig::codec::record::{FIELDS_LEN, FRAME_LEN, KIND_CHUNK, KIND_END, KIND_TRAILER};
use mdevmig::codec::{read_header_unverified, ReadOptions, StreamReader, StreamWriter};
use mdevmig::codec::{CHUNK_CONTEXT, END_CONTEXT, TRAILER_CONTEXT};
use mdevmig::compat::{self, Policy};
use mdevmig::{Code, Result};

/// Seed of the test signer (`spec/vectors/keys/test-signer.key`; public, tests only).
pub const TEST_SIGNER_SEED: [u8; 32] = [0x5e; 32];

/// The test signer.
pub fn test_signer() -> SigningKeyPair {
    SigningKeyPair::from_seed(&TEST_SIGNER_SEED)
}

/// A trust store holding only the test signer's public key.
pub fn test_trust() -> TrustStore {
    let mut t = TrustStore::new();
    t.add(test_signer().verifying_key(), "test-signer");
    t
}

/// A reader over `data` that hands it out in pieces: `piece` bytes per `read`
/// call, or split at fixed positions. With `interrupt`, every other call fails
/// with [`ErrorKind::Interrupted`] first (which readers must retry).
#[derive(Debug, Clone)]
pub struct Segmented<'a> {
    data: &'a [u8],
    pos: usize,
    piece: usize,
    cuts: Vec<usize>,
    interrupt: bool,
    interrupted: bool,
}

impl<'a> Segmented<'a> {
    /// Reads of at most `piece` bytes (at least 1).
    pub fn every(data: &'a [u8], piece: usize) -> Self {
        Segmented {
            data,
            pos: 0,
            piece: piece.max(1),
            cuts: Vec::new(),
            interrupt: false,
            interrupted: false,
        }
    }

    /// No read crosses any of `cuts` (positions in `data`).
    pub fn at(data: &'a [u8], cuts: &[usize]) -> Self {
        let mut cuts = cuts.to_vec();
        cuts.sort_unstable();
        Segmented {
            data,
            pos: 0,
            piece: usize::MAX,
            cuts,
            interrupt: false,
            interrupted: false,
        }
    }

    /// Also return [`ErrorKind::Interrupted`] before every piece.
    pub fn interrupting(mut self) -> Self {
        self.interrupt = true;
        self
    }
}

impl Read for Segmented<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.interrupt && !self.interrupted {
            self.interrupted = true;
            return Err(ErrorKind::Interrupted.into());
        }
        self.interrupted = false;
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        let next_cut = self
            .cuts
            .iter()
            .find(|c| **c > self.pos)
            .map_or(usize::MAX, |c| c - self.pos);
        let n = buf.len().min(rest.len()).min(self.piece).min(next_cut);
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// What reading a whole stream gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The authenticated header.
    pub header: Header,
    /// Chunks released.
    pub chunks: u64,
    /// SHA-256 over every released chunk's section index, offset and data, in order.
    pub digest: [u8; 32],
}

/// Reads `src` to the end with `trust`, requiring `nonce` when given. Holds no
/// more than the reader itself does: chunk data is hashed, not kept.
pub fn read_all(src: impl Read, trust: &TrustStore, nonce: Option<[u8; 32]>) -> Result<Accepted> {
    let opts = ReadOptions {
        expected_nonce: nonce,
        ..ReadOptions::default()
    };
    read_with(src, trust, &opts)
}

/// [`read_all`] with every reader option.
pub fn read_with(src: impl Read, trust: &TrustStore, opts: &ReadOptions) -> Result<Accepted> {
    let mut r = StreamReader::open(src, trust, opts)?;
    let mut h = Sha256::new();
    let mut chunks = 0u64;
    while let Some(c) = r.next_chunk()? {
        h.update(c.section_index.to_le_bytes());
        h.update(c.offset.to_le_bytes());
        h.update(c.data);
        chunks += 1;
    }
    Ok(Accepted {
        header: r.header().header.clone(),
        chunks,
        digest: h.finalize().into(),
    })
}

/// The outcome of reading as a comparable value: the acceptance, or the code.
pub fn outcome_code(r: &Result<Accepted>) -> std::result::Result<&Accepted, &'static str> {
    r.as_ref().map_err(|e| e.code.as_str())
}

/// Reads an accepted stream again and writes its header and data back through
/// [`StreamWriter`] with `key`. `None` if `bytes` is not accepted.
pub fn reencode(bytes: &[u8], trust: &TrustStore, key: &SigningKeyPair) -> Option<Vec<u8>> {
    let inline = ReadOptions {
        single_threaded: true,
        ..ReadOptions::default()
    };
    let mut r = StreamReader::open(bytes, trust, &inline).ok()?;
    let header = r.header().header.clone();
    // Per section: a streamed section's data ends where its end record was, which
    // the writer reproduces with end_section().
    let mut data = vec![Vec::new(); header.sections.len()];
    while let Some(c) = r.next_chunk().ok()? {
        data.get_mut(usize::from(c.section_index))?
            .extend_from_slice(c.data);
    }
    let mut w = StreamWriter::new(Vec::new(), &header, key).ok()?;
    for (d, s) in data.iter().zip(&header.sections) {
        w.write_data(d).ok()?;
        if s.streamed() {
            w.end_section().ok()?;
        }
    }
    w.finish().ok()
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)?
        .try_into()
        .ok()
        .map(u32::from_le_bytes)
}

/// Re-signs a (possibly mutated) stream with `key`, best effort: sets the header's
/// key id to `key`'s, signs the header as its `header_len` field delimits it, then
/// walks the records (a chunk's extent is given by its `data_len`, cut at the end
/// of the input) and re-signs each for the new header digest. Bytes it cannot
/// place are left alone. Lets a mutation reach the checks behind the signatures.
pub fn resign(bytes: &[u8], key: &SigningKeyPair) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let Some(hl) = u32_at(&b, 12).and_then(|l| usize::try_from(l).ok()) else {
        return b;
    };
    if hl < 64 + SIGNATURE_LEN || hl > b.len() {
        return b;
    }
    b[32..64].copy_from_slice(&key.id().0);
    let unsigned_end = hl - SIGNATURE_LEN;
    let sig = key.sign(&header::signed_message(&b[..unsigned_end]));
    b[unsigned_end..hl].copy_from_slice(&sig);
    let digest: [u8; 32] = Sha256::digest(&b[..hl]).into();
    let mut pos = hl;
    while pos + FRAME_LEN <= b.len() {
        let fields = b[pos..pos + FIELDS_LEN].to_vec();
        let mut msg = Vec::with_capacity(136);
        let next = match fields[0] {
            KIND_CHUNK => {
                let len = u32_at(&fields, 4)
                    .and_then(|l| usize::try_from(l).ok())
                    .unwrap_or(usize::MAX);
                let start = pos + FRAME_LEN;
                let end = start.saturating_add(len).min(b.len());
                msg.extend_from_slice(CHUNK_CONTEXT);
                msg.extend_from_slice(&digest);
                msg.extend_from_slice(&fields);
                msg.extend_from_slice(&Sha256::digest(&b[start..end]));
                end
            }
            KIND_TRAILER => {
                msg.extend_from_slice(TRAILER_CONTEXT);
                msg.extend_from_slice(&digest);
                msg.extend_from_slice(&fields);
                pos + FRAME_LEN
            }
            KIND_END => {
                msg.extend_from_slice(END_CONTEXT);
                msg.extend_from_slice(&digest);
                msg.extend_from_slice(&fields);
                pos + FRAME_LEN
            }
            _ => break,
        };
        let sig = key.sign(&msg);
        b[pos + FIELDS_LEN..pos + FRAME_LEN].copy_from_slice(&sig);
        pos = next;
    }
    b
}

/// True when `code` is one `spec/errors.md` documents (a broker or plugin code).
pub fn documented(code: &str) -> bool {
    Code::from_str_code(code).is_some()
        || mdevmig::plugins::all_error_codes()
            .iter()
            .any(|(c, _)| *c == code)
}

/// Reader errors on in-memory input: format, limit and auth codes only.
fn assert_reader_code(e: &mdevmig::Error, input: &[u8]) {
    let code = e.code.as_str();
    assert!(
        Code::from_str_code(code).is_some()
            && (code.starts_with("format.") || code.starts_with("limit.") || code.starts_with("auth.")),
        "reader refused {} bytes with {code}: {}",
        input.len(),
        e.message
    );
}

/// Checks one input against the reader's invariants (see the module docs); the
/// result of the plain read.
pub fn check_stream(input: &[u8], trust: &TrustStore, key: &SigningKeyPair) -> Result<Accepted> {
    let whole = read_all(input, trust, None);
    match &whole {
        Ok(a) => {
            // Nothing unsigned is accepted: the only trusted key is `key`, and an
            // accepted stream is exactly what the writer makes of its content.
            assert_eq!(a.header.key_id, key.id());
            let again = reencode(input, trust, key);
            assert!(
                again.as_deref() == Some(input),
                "accepted stream is not the canonical encoding of its content"
            );
            let other = [0xa5; 32];
            let bound = |nonce| {
                let opts = ReadOptions {
                    expected_nonce: Some(nonce),
                    single_threaded: true,
                };
                read_with(input, trust, &opts)
            };
            let code = bound(other).map(|_| ()).map_err(|e| e.code);
            if a.header.session_bound() {
                if a.header.session_nonce != other {
                    assert_eq!(code, Err(Code::SessionMismatch));
                }
                let own = bound(a.header.session_nonce);
                assert_eq!(own.as_ref().ok(), Some(a));
            } else {
                assert_eq!(code, Err(Code::UnboundStream));
            }
        }
        Err(e) => assert_reader_code(e, input),
    }
    whole
}

/// Fuzz target `stream_reader`: the input as a stream, then re-signed, then the
/// re-signed stream in small pieces.
pub fn fuzz_stream_reader(data: &[u8]) {
    let key = test_signer();
    let trust = test_trust();
    let _ = check_stream(data, &trust, &key);
    let signed = resign(data, &key);
    let whole = check_stream(&signed, &trust, &key);
    // In small pieces, hashed on this thread only: neither the segmentation nor
    // the read-ahead may change the outcome.
    let piece = data.last().map_or(1, |b| usize::from(b % 17) + 1);
    let inline = ReadOptions {
        single_threaded: true,
        ..ReadOptions::default()
    };
    let split = read_with(Segmented::every(&signed, piece).interrupting(), &trust, &inline);
    assert_eq!(
        outcome_code(&split),
        outcome_code(&whole),
        "the outcome depends on how the input is split into reads ({piece}-byte pieces)"
    );
}

/// Fuzz target `envelope_header`.
pub fn fuzz_envelope_header(data: &[u8]) {
    let decoded = header::decode(data);
    if let Ok((h, _sig)) = &decoded {
        // Re-encode: the test key signs the same fields (its id in key_id); every
        // byte but the key id and the signature must come out the same.
        let key = test_signer();
        let mut ours = h.clone();
        ours.key_id = key.id();
        let signed = match ours.sign(&key) {
            Ok(s) => s,
            Err(e) => panic!("decoded header does not encode: {e}"),
        };
        let n = data.len();
        assert_eq!(signed.bytes.len(), n, "re-encoded header has another length");
        assert_eq!(signed.bytes[..32], data[..32]);
        assert_eq!(signed.bytes[64..n - SIGNATURE_LEN], data[64..n - SIGNATURE_LEN]);
        let again = header::decode(&signed.bytes).map(|(h, _)| h);
        assert_eq!(again.as_ref(), Ok(&ours));
        let verified = header::SignedHeader::verify(signed.bytes.clone(), &key.verifying_key());
        assert!(verified.is_ok_and(|v| v.header == ours));
    }
    if let Err(e) = &decoded {
        assert_reader_code(e, data);
    }
    // The streaming read takes header_len bytes and decodes them the same way.
    let Some(prefix) = data.first_chunk::<PREFIX_LEN>() else {
        return;
    };
    let Ok(len) = header::decode_prefix(prefix) else {
        return;
    };
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let streamed = read_header_unverified(&mut Segmented::every(data, 7));
    match data.get(..len) {
        Some(exact) => {
            let direct = header::decode(exact).map(|(h, _)| h).map_err(|e| e.code);
            assert_eq!(streamed.map(|(h, _)| h).map_err(|e| e.code), direct);
        }
        None => assert_eq!(streamed.map(|_| ()).map_err(|e| e.code), Err(Code::Truncated)),
    }
}

/// Fuzz target `policy`: parse, round-trip, and evaluate against the built-in
/// plugins.
pub fn fuzz_policy(data: &[u8]) {
    let Ok(policy) = serde_json::from_slice::<Policy>(data) else {
        return;
    };
    let text = match serde_json::to_string(&policy) {
        Ok(t) => t,
        Err(e) => panic!("a parsed policy does not serialise: {e}"),
    };
    let back: Policy = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => panic!("a serialised policy does not parse: {e}: {text}"),
    };
    assert_eq!(back, policy, "policy changed in a round trip");
    assert_eq!(serde_json::to_string(&back).ok().as_deref(), Some(text.as_str()));

    let registry = mdevmig::plugins::Registry::builtin();
    for (vendor, ty, caps) in [
        ("mtty", "mtty-2", &[][..]),
        ("simgpu", "vgpu-64m", &["simgpu.hw-encoder"][..]),
        ("simgpu", "vgpu-256m", &[][..]),
    ] {
        let Some(plugin) = registry.vendor(vendor) else {
            continue;
        };
        let Some(window) = plugin.loads(ty) else {
            continue;
        };
        let mut dest = mdevmig_plugin_api::DeviceInfo {
            vendor: vendor.into(),
            device_type: ty.into(),
            ..Default::default()
        };
        if vendor == "simgpu" {
            dest.attributes.insert("encoder".into(), "on".into());
        }
        dest.capabilities = caps.iter().map(|c| (*c).to_owned()).collect();
        for v in [window.oldest, window.newest, window.newest.saturating_add(1)] {
            let sections = plugin.sections(&dest, v.min(window.newest)).unwrap_or_default();
            let claim = compat::StateClaim {
                vendor: vendor.into(),
                device_type: ty.into(),
                state_version: v,
                min_version: window.oldest,
                attributes: dest.attributes.clone(),
                sections: sections
                    .iter()
                    .map(|s| compat::StateSection {
                        name: s.name.clone(),
                        version: s.version,
                        required: s.required,
                    })
                    .collect(),
            };
            let verdict = compat::evaluate(&claim, &dest, Some(plugin), Some(window), &policy);
            for r in &verdict.reasons {
                assert!(documented(r.code.as_str()), "undocumented compat code {}", r.code);
            }
            assert_eq!(verdict.compatible, verdict.reasons.is_empty());
            if policy.refuse_versions.contains(&v) || policy.pin_version.is_some_and(|p| p != v) {
                assert!(
                    !verdict.compatible,
                    "policy refuses version {v} but evaluate allows it"
                );
            }
            if verdict.compatible {
                assert_eq!(verdict.sections.len(), claim.sections.len());
            }
        }
    }
}

/// Restore options that validate in the real sandbox, with `validator` (a
/// program that calls `mdevmig::sandbox::child_entry`, such as the
/// `mdevmig-validator` or `mdevmig` binaries) as the child: a test binary is
/// not one.
pub fn sandboxed_restore(validator: &str) -> mdevmig::broker::RestoreOptions {
    mdevmig::broker::RestoreOptions {
        validation: mdevmig::sandbox::Validation::sandbox(validator),
        ..mdevmig::broker::RestoreOptions::default()
    }
}
