//! Opaque vendors: state of a vendor with no plugin moves only when the operator
//! names the vendor, and then authenticated and matched but unvalidated, which
//! every report says (`spec/compat.md` §6).

use std::path::{Path, PathBuf};

#[path = "support/cli.rs"]
mod cli;
use cli::{dir, run, Dir};

/// The flags that allow the vendor every test here uses.
const OPAQUE: [&str; 2] = ["--allow-opaque", "nvidia"];

fn spec(path: &Path, profile: &str) -> String {
    format!(
        "file:{},plugin=nvidia,type=nvidia-a100-4c,profile={profile}",
        path.display()
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A directory with keys and a raw "closed format" state: bytes no plugin could
/// check. Paths of the state, the key, the public key and a stream to write.
struct Setup {
    d: Dir,
    src: PathBuf,
    key: PathBuf,
    public: PathBuf,
    stream: PathBuf,
}

fn setup(tag: &str) -> Setup {
    let d = dir(tag);
    cli::keys(&d);
    let src = d.0.join("state.raw");
    let bytes: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&src, bytes).unwrap();
    Setup {
        src,
        key: d.0.join("k.key"),
        public: d.0.join("k.pub"),
        stream: d.0.join("s.mdm"),
        d,
    }
}

impl Setup {
    /// `save` of the state at profile 4c into `stream`, with `extra` flags.
    fn save(&self, extra: &[&str]) -> (i32, String, String) {
        let device = spec(&self.src, "4c");
        let mut args = vec![
            "save",
            "--device",
            &device,
            "--key",
            s(&self.key),
            "-o",
            s(&self.stream),
        ];
        args.extend_from_slice(extra);
        run(&args)
    }

    /// `restore` of `input` into an image `dst` of `profile`, with `extra` flags.
    fn restore(&self, dst: &Path, profile: &str, input: &Path, extra: &[&str]) -> (i32, String, String) {
        let device = spec(dst, profile);
        let mut args = vec![
            "restore",
            "--device",
            &device,
            "--trust",
            s(&self.public),
            "-i",
            s(input),
        ];
        args.extend_from_slice(extra);
        run(&args)
    }
}

#[test]
fn a_vendor_without_a_plugin_is_refused_unless_the_operator_names_it() {
    let t = setup("refused");
    let (rc, _, err) = t.save(&[]);
    assert_eq!(rc, 3, "{err}");
    assert!(
        err.contains("error[compat.no_plugin]") && err.contains("--allow-opaque nvidia"),
        "{err}"
    );
    // Naming another vendor does not help.
    let (rc, _, err) = t.save(&["--allow-opaque", "amd"]);
    assert_eq!(rc, 3, "{err}");
    // A vendor that has a plugin is never opaque: mtty state is still validated.
    let (rc, _, err) = run(&[
        "describe",
        "--device",
        "sim:mtty/mtty-2",
        "--allow-opaque",
        "mtty",
        "--json",
    ]);
    assert_eq!(rc, 0, "{err}");
    assert!(!err.contains("OPAQUE"));
}

#[test]
fn allowed_opaque_state_round_trips_authenticated_and_says_it_was_not_validated() {
    let t = setup("ok");
    let dst = t.d.0.join("dst.raw");
    let (rc, out, err) = t.save(&OPAQUE);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("300000 bytes"), "{out}");
    // Without the flag the destination refuses it before touching anything.
    let (rc, _, err) = t.restore(&dst, "4c", &t.stream, &[]);
    assert_eq!(rc, 3, "{err}");
    assert!(err.contains("error[compat.no_plugin]"), "{err}");
    assert!(!dst.exists());
    // With it, the bytes arrive exactly, and the report says nothing checked them.
    let (rc, out, err) = t.restore(&dst, "4c", &t.stream, &[OPAQUE[0], OPAQUE[1], "--json"]);
    assert_eq!(rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["opaque"], true, "{out}");
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&t.src).unwrap());
    let (rc, out, _) = t.restore(&t.d.0.join("dst2.raw"), "4c", &t.stream, &OPAQUE);
    assert_eq!(rc, 0);
    assert!(out.contains("OPAQUE: nvidia has no plugin here"), "{out}");
}

#[test]
fn opaque_state_is_still_authenticated_and_matched() {
    let t = setup("auth");
    let (rc, _, err) = t.save(&OPAQUE);
    assert_eq!(rc, 0, "{err}");
    // A flipped byte: the chunk signature, as for any vendor.
    let mut bytes = std::fs::read(&t.stream).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let bad = t.d.0.join("bad.mdm");
    std::fs::write(&bad, &bytes).unwrap();
    let dst = t.d.0.join("dst.raw");
    let (rc, _, err) = t.restore(&dst, "4c", &bad, &OPAQUE);
    assert_eq!(rc, 4, "{err}");
    assert!(err.contains("error[auth.bad_chunk_signature]"), "{err}");
    assert!(!dst.exists());
    // Another configuration of the same type: refused by the pre-check and the restore alike.
    let (rc, desc, _) = run(&[
        "describe",
        "--device",
        &spec(&t.src, "4c"),
        OPAQUE[0],
        OPAQUE[1],
        "--json",
    ]);
    assert_eq!(rc, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&desc).unwrap()["opaque"],
        true
    );
    let desc_path = t.d.0.join("src.json");
    std::fs::write(&desc_path, desc).unwrap();
    let check = |profile: &str| {
        let device = spec(&dst, profile);
        run(&[
            "check",
            "--device",
            &device,
            "--source",
            s(&desc_path),
            OPAQUE[0],
            OPAQUE[1],
        ])
    };
    let (rc, out, _) = check("8c");
    assert_eq!(rc, 3, "{out}");
    assert!(out.contains("compat.config_mismatch"), "{out}");
    let (rc, out, _) = check("4c");
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("OPAQUE:"), "{out}");
    let (rc, _, err) = t.restore(&dst, "8c", &t.stream, &OPAQUE);
    assert_eq!(rc, 3, "{err}");
    assert!(err.contains("error[compat.config_mismatch]"), "{err}");
}
