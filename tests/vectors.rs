//! Walks `spec/vectors/` and asserts each vector's exact outcome; checks that the
//! committed files are exactly what the generator makes.

use mdevmig_testkit::vectors;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mdevmig::auth::TrustStore;
use mdevmig::codec::{ReadOptions, StreamReader};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/vectors")
}

fn trust() -> TrustStore {
    // The checkout's file: its mode follows the umask of whoever cloned it, which
    // is not what this test is about.
    TrustStore::load_with(
        &dir().join("keys/test-signer.pub"),
        mdevmig::auth::TrustOptions { insecure: true },
    )
    .unwrap()
}

/// Verifies `bytes`; Ok(()) or the error code.
pub fn outcome(bytes: &[u8], session: Option<[u8; 32]>) -> String {
    let opts = ReadOptions {
        expected_nonce: session,
        ..Default::default()
    };
    let run = || -> mdevmig::Result<()> {
        let mut r = StreamReader::open(bytes, &trust(), &opts)?;
        r.verify_to_end()?;
        Ok(())
    };
    match run() {
        Ok(()) => "ok".into(),
        Err(e) => e.code.as_str().into(),
    }
}

fn parse_hex(s: &str) -> [u8; 32] {
    mdevmig::auth::parse_nonce(s).unwrap()
}

#[test]
fn committed_vectors_are_what_the_generator_makes() {
    let all = vectors::all();
    for v in &all {
        let path = dir().join(format!("{}.mdm", v.name));
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            on_disk == v.bytes,
            "{} differs from the generator's output; run `cargo run --example gen_vectors`",
            path.display()
        );
    }
    let manifest = std::fs::read_to_string(dir().join("MANIFEST")).unwrap();
    assert_eq!(
        manifest,
        vectors::manifest(&all),
        "MANIFEST is stale; run `cargo run --example gen_vectors`"
    );
}

#[test]
fn every_vector_in_the_folder_has_its_exact_outcome() {
    let manifest = std::fs::read_to_string(dir().join("MANIFEST")).unwrap();
    let mut listed = BTreeMap::new();
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut parts = line.splitn(4, ' ');
        let (file, expect, session) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let session = (session != "-").then(|| parse_hex(session));
        listed.insert(file.to_string(), (expect.to_string(), session));
    }
    let mut seen = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "mdm") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let (expect, session) = listed
            .get(&name)
            .unwrap_or_else(|| panic!("{name} is not in MANIFEST"));
        let got = outcome(&std::fs::read(&path).unwrap(), *session);
        assert_eq!(&got, expect, "vector {}", path.display());
        if expect != "ok" {
            assert!(
                mdevmig::Code::from_str_code(expect).is_some(),
                "{name}: {expect} is not a documented code"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, listed.len(), "MANIFEST lists files that are missing");
    assert!(seen >= 40);
}

#[test]
fn truncation_at_every_byte_boundary_is_refused() {
    for (name, bytes) in [
        ("single", &vectors::all()[0].bytes),
        ("multi", &vectors::all()[1].bytes),
    ] {
        for cut in 0..bytes.len() {
            assert_eq!(
                outcome(&bytes[..cut], None),
                "format.truncated",
                "{name} cut at {cut}"
            );
        }
        assert_eq!(outcome(bytes, None), "ok");
    }
}

#[test]
fn every_single_bit_flip_of_a_small_vector_is_refused() {
    let bytes = &vectors::all()[0].bytes;
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let got = outcome(&b, None);
            assert_ne!(got, "ok", "flip of bit {bit} at byte {i} accepted");
        }
    }
}

#[test]
fn every_valid_vector_passes_the_fuzzing_invariants() {
    // The fuzz targets' own invariants (canonical re-encoding, the same outcome in
    // any read pattern) hold on every valid vector, streamed sections included.
    for v in vectors::all()
        .iter()
        .filter(|v| v.expect == "ok" && v.session.is_none())
    {
        mdevmig_testkit::fuzz_stream_reader(&v.bytes);
    }
}
