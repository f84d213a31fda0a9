//! The parallel hashing pipeline (chunks paired per worker, results in order)
//! against the single-threaded one: same bytes written, same data and errors read.

use mdevmig::auth::{SigningKeyPair, TrustStore};
use mdevmig::codec::header::{Header, SectionEntry};
use mdevmig::codec::SECTION_REQUIRED;
use mdevmig::codec::{ReadOptions, StreamReader, StreamWriter};
use mdevmig::Code;

const CS: usize = 4096;

fn key() -> SigningKeyPair {
    SigningKeyPair::from_seed(&[0x42; 32])
}

fn trust() -> TrustStore {
    let mut t = TrustStore::new();
    t.add(key().verifying_key(), "test");
    t
}

/// Sections of 37 chunks and a short one, an empty one, 18 chunks: odd counts,
/// a short chunk mid-stream, and far more chunks than the parallel threshold.
fn setup() -> (Header, Vec<Vec<u8>>) {
    let lens = [CS * 37 + 5, 0, CS * 18];
    let sections = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| SectionEntry {
            name: format!("t.s{i}"),
            version: 1,
            flags: SECTION_REQUIRED,
            length: len as u64,
        })
        .collect();
    let h = Header {
        flags: 0,
        state_version: 1,
        min_version: 1,
        chunk_size: CS as u32,
        key_id: key().id(),
        session_nonce: [0; 32],
        stream_id: [7; 16],
        vendor: "test".into(),
        device_type: "t".into(),
        attributes: Default::default(),
        sections,
    };
    let data = lens
        .iter()
        .enumerate()
        .map(|(s, &len)| (0..len).map(|i| (i * 13 + s * 101 + i / 4096) as u8).collect())
        .collect();
    (h, data)
}

fn write(parallel: bool, piece: Option<usize>) -> Vec<u8> {
    let (h, data) = setup();
    let mut w = if parallel {
        StreamWriter::new(Vec::new(), &h, &key()).unwrap()
    } else {
        StreamWriter::single_threaded(Vec::new(), &h, &key()).unwrap()
    };
    for d in &data {
        match piece {
            None => w.write_data(d).unwrap(),
            Some(p) => {
                // Through write_with, in pieces that straddle chunk boundaries.
                let mut rest: &[u8] = d;
                while !rest.is_empty() {
                    let n = w
                        .write_with(p.min(rest.len()), |space| {
                            space.copy_from_slice(&rest[..space.len()]);
                            Ok(())
                        })
                        .unwrap();
                    assert!(n > 0 && n <= p);
                    rest = &rest[n..];
                }
            }
        }
    }
    w.finish().unwrap()
}

fn read(bytes: &[u8], single_threaded: bool) -> (Vec<Vec<u8>>, Option<Code>, u64) {
    let opts = ReadOptions {
        single_threaded,
        ..Default::default()
    };
    let mut r = StreamReader::open(bytes, &trust(), &opts).unwrap();
    let mut out = vec![Vec::new(); r.header().header.sections.len()];
    let mut chunks = 0;
    loop {
        match r.next_chunk() {
            Ok(Some(c)) => {
                let s = &mut out[usize::from(c.section_index)];
                assert_eq!(c.offset, s.len() as u64, "chunks arrive in order");
                s.extend_from_slice(c.data);
                chunks += 1;
            }
            Ok(None) => return (out, None, chunks),
            Err(e) => return (out, Some(e.code), chunks),
        }
    }
}

#[test]
fn parallel_and_inline_writers_write_the_same_bytes() {
    let reference = write(false, None);
    assert_eq!(write(true, None), reference);
    for piece in [1000, 4096, 5000, 9000] {
        assert_eq!(
            write(true, Some(piece)),
            reference,
            "write_with pieces of {piece}"
        );
        assert_eq!(
            write(false, Some(piece)),
            reference,
            "write_with pieces of {piece}"
        );
    }
}

#[test]
fn parallel_and_inline_readers_return_the_same_data() {
    let (_, data) = setup();
    let bytes = write(true, None);
    for single in [false, true] {
        let (got, err, chunks) = read(&bytes, single);
        assert_eq!(err, None);
        assert_eq!(chunks, 38 + 18);
        assert_eq!(got, data);
    }
}

#[test]
fn a_bad_chunk_is_reported_at_its_place_whatever_its_position_in_a_pair() {
    let bytes = write(true, None);
    let header_len = {
        let r = StreamReader::open(&bytes[..], &trust(), &ReadOptions::default()).unwrap();
        r.position() as usize
    };
    // Every chunk of the first section is 88 + 4096 bytes.
    for bad in [0usize, 1, 16, 17, 36] {
        let mut t = bytes.clone();
        t[header_len + bad * (88 + CS) + 88 + 100] ^= 0x40;
        for single in [false, true] {
            let (_, err, chunks) = read(&t, single);
            assert_eq!(err, Some(Code::BadChunkSignature), "chunk {bad}");
            assert_eq!(
                chunks, bad as u64,
                "chunks before {bad} are delivered, none after"
            );
        }
    }
}
