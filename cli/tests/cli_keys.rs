//! The CLI's key handling and conventions, including interop with openssl.

use mdevmig_testkit::vectors;

use std::path::Path;
use std::process::Command;

fn mdevmig() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mdevmig"))
}

fn openssl(args: &[&str]) -> std::process::Output {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is needed for the interop tests (installed by .ci/setup)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tmp() -> tempdir::TempDir {
    tempdir::TempDir::new()
}

mod tempdir {
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "mdevmig-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn a_key_made_by_openssl_signs_a_stream_mdevmig_verifies() {
    let d = tmp();
    let key = d.path().join("ossl.key");
    let public = d.path().join("ossl.pub");
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", key.to_str().unwrap()]);
    openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let signer = mdevmig::auth::SigningKeyPair::load(&key).unwrap();
    let (mut h, data) = vectors::multi();
    h.key_id = signer.id();
    let stream = d.path().join("s.mdm");
    std::fs::write(&stream, vectors::build(&h, &signer, &data)).unwrap();
    let out = mdevmig()
        .args([
            "verify",
            stream.to_str().unwrap(),
            "--trust",
            public.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And a directory trust store holding it (plus an unrelated file) works too.
    std::fs::write(d.path().join("notes.txt"), "not a key").unwrap();
    let out = mdevmig()
        .args([
            "verify",
            stream.to_str().unwrap(),
            "--trust",
            d.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn openssl_loads_keys_made_by_keygen() {
    let d = tmp();
    let prefix = d.path().join("site");
    let out = mdevmig()
        .args(["keygen", "--out", prefix.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = d.path().join("site.key");
    let public = d.path().join("site.pub");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    openssl(&["pkey", "-in", key.to_str().unwrap(), "-noout"]);
    openssl(&["pkey", "-pubin", "-in", public.to_str().unwrap(), "-noout"]);
    let derived = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert_eq!(
        String::from_utf8(derived.stdout).unwrap(),
        std::fs::read_to_string(&public).unwrap()
    );
    // The printed key id is SHA-256 of the raw public key, as openssl computes it.
    let der = openssl(&[
        "pkey",
        "-pubin",
        "-in",
        public.to_str().unwrap(),
        "-outform",
        "DER",
    ])
    .stdout;
    use sha2::Digest;
    let id = mdevmig::auth::hex(&sha2::Sha256::digest(&der[der.len() - 32..]));
    assert_eq!(v["key_id"], id);
}

/// The vectors' test signer as a trust store: a copy, mode 0644, in `d`. The
/// checkout's own copy may be group-writable (a umask of 002), which a trust store
/// must not be.
fn test_signer(d: &tempdir::TempDir) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors");
    let p = d.path().join("test-signer.pub");
    std::fs::copy(dir.join("keys/test-signer.pub"), &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

fn verify_vector(name: &str, extra: &[&str]) -> std::process::Output {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors");
    let d = tmp();
    mdevmig()
        .arg("verify")
        .arg(dir.join(name))
        .arg("--trust")
        .arg(test_signer(&d))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn rejected_streams_exit_4_with_the_code_in_text_and_json() {
    let out = verify_vector("flip-chunk-data.mdm", &[]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error[auth.bad_chunk_signature]: "));
    let out = verify_vector("chunk-dropped.mdm", &["--json"]);
    assert_eq!(out.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["code"], "format.chunk_dropped");
    assert_eq!(v["error"]["exit_status"], 4);
}

#[test]
fn stdin_is_accepted_as_dash() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors");
    let d = tmp();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} verify - --trust {} < {}",
            env!("CARGO_BIN_EXE_mdevmig"),
            test_signer(&d).display(),
            dir.join("valid-multi-section.mdm").display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = mdevmig().args(["verify", "x.mdm"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error[usage.bad_arguments]: "));
    let out = mdevmig().args(["frobnicate", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "usage.bad_arguments");
}

#[test]
fn inspect_says_unverified_and_verifies_with_trust() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors");
    let keys = tmp();
    let out = mdevmig()
        .arg("inspect")
        .arg(dir.join("valid-multi-section.mdm"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("UNVERIFIED"), "{text}");
    assert!(text.contains("simgpu.fb"));
    // A tampered stream still decodes without --trust (the signature is not checked) ...
    let out = mdevmig()
        .arg("inspect")
        .arg(dir.join("flip-chunk-data.mdm"))
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], false);
    // ... and is refused with it.
    let out = mdevmig()
        .arg("inspect")
        .arg(dir.join("flip-chunk-data.mdm"))
        .arg("--trust")
        .arg(test_signer(&keys))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    // A structurally broken stream reports its problem.
    let out = mdevmig()
        .arg("inspect")
        .arg(dir.join("trailing-garbage.mdm"))
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "format.trailing_data");
}
