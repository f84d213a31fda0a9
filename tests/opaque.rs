//! Opaque vendors: state of a vendor with no plugin moves only when the operator
//! names the vendor, and then authenticated and matched but unvalidated, which
//! every report says (`spec/compat.md` §6).

use std::path::{Path, PathBuf};

#[path = "support/cli.rs"]
mod cli;
use cli::{dir, run, Dir};

fn spec(path: &Path, profile: &str) -> String {
    format!(
        "file:{},plugin=nvidia,type=nvidia-a100-4c,profile={profile}",
        path.display()
    )
}

/// A raw "closed format" state: bytes no plugin could check.
fn raw(d: &Dir) -> PathBuf {
    let p = d.0.join("state.raw");
    let bytes: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn a_vendor_without_a_plugin_is_refused_unless_the_operator_names_it() {
    let d = dir("refused");
    cli::keys(&d);
    let (src, key, out) = (raw(&d), d.0.join("k.key"), d.0.join("s.mdm"));
    let (rc, _, err) = run(&[
        "save",
        "--device",
        &spec(&src, "4c"),
        "--key",
        key.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(rc, 3, "{err}");
    assert!(
        err.contains("error[compat.no_plugin]") && err.contains("--allow-opaque nvidia"),
        "{err}"
    );
    // Naming another vendor does not help.
    let (rc, _, err) = run(&[
        "save",
        "--device",
        &spec(&src, "4c"),
        "--key",
        key.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--allow-opaque",
        "amd",
    ]);
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
    let d = dir("ok");
    cli::keys(&d);
    let (src, key, public, stream) = (raw(&d), d.0.join("k.key"), d.0.join("k.pub"), d.0.join("s.mdm"));
    let dst = d.0.join("dst.raw");
    let (rc, out, err) = run(&[
        "save",
        "--device",
        &spec(&src, "4c"),
        "--key",
        key.to_str().unwrap(),
        "-o",
        stream.to_str().unwrap(),
        "--allow-opaque",
        "nvidia",
    ]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("300000 bytes"), "{out}");
    // Without the flag the destination refuses it before touching anything.
    let (rc, _, err) = run(&[
        "restore",
        "--device",
        &spec(&dst, "4c"),
        "--trust",
        public.to_str().unwrap(),
        "-i",
        stream.to_str().unwrap(),
    ]);
    assert_eq!(rc, 3, "{err}");
    assert!(err.contains("error[compat.no_plugin]"), "{err}");
    assert!(!dst.exists());
    // With it, the bytes arrive exactly, and the report says nothing checked them.
    let (rc, out, err) = run(&[
        "restore",
        "--device",
        &spec(&dst, "4c"),
        "--trust",
        public.to_str().unwrap(),
        "-i",
        stream.to_str().unwrap(),
        "--allow-opaque",
        "nvidia",
        "--json",
    ]);
    assert_eq!(rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["opaque"], true, "{out}");
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&src).unwrap());
    let (rc, out, _) = run(&[
        "restore",
        "--device",
        &spec(&d.0.join("dst2.raw"), "4c"),
        "--trust",
        public.to_str().unwrap(),
        "-i",
        stream.to_str().unwrap(),
        "--allow-opaque",
        "nvidia",
    ]);
    assert_eq!(rc, 0);
    assert!(out.contains("OPAQUE: nvidia has no plugin here"), "{out}");
}

#[test]
fn opaque_state_is_still_authenticated_and_matched() {
    let d = dir("auth");
    cli::keys(&d);
    let (src, key, public, stream) = (raw(&d), d.0.join("k.key"), d.0.join("k.pub"), d.0.join("s.mdm"));
    let (rc, _, err) = run(&[
        "save",
        "--device",
        &spec(&src, "4c"),
        "--key",
        key.to_str().unwrap(),
        "-o",
        stream.to_str().unwrap(),
        "--allow-opaque",
        "nvidia",
    ]);
    assert_eq!(rc, 0, "{err}");
    // A flipped byte: the chunk signature, as for any vendor.
    let mut bytes = std::fs::read(&stream).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let bad = d.0.join("bad.mdm");
    std::fs::write(&bad, &bytes).unwrap();
    let dst = d.0.join("dst.raw");
    let (rc, _, err) = run(&[
        "restore",
        "--device",
        &spec(&dst, "4c"),
        "--trust",
        public.to_str().unwrap(),
        "-i",
        bad.to_str().unwrap(),
        "--allow-opaque",
        "nvidia",
    ]);
    assert_eq!(rc, 4, "{err}");
    assert!(err.contains("error[auth.bad_chunk_signature]"), "{err}");
    assert!(!dst.exists());
    // Another configuration of the same type: refused by the pre-check and the restore alike.
    let (rc, desc, _) = run(&[
        "describe",
        "--device",
        &spec(&src, "4c"),
        "--allow-opaque",
        "nvidia",
        "--json",
    ]);
    assert_eq!(rc, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&desc).unwrap()["opaque"],
        true
    );
    let desc_path = d.0.join("src.json");
    std::fs::write(&desc_path, desc).unwrap();
    let (rc, out, _) = run(&[
        "check",
        "--device",
        &spec(&dst, "8c"),
        "--source",
        desc_path.to_str().unwrap(),
        "--allow-opaque",
        "nvidia",
    ]);
    assert_eq!(rc, 3, "{out}");
    assert!(out.contains("compat.config_mismatch"), "{out}");
    let (rc, out, _) = run(&[
        "check",
        "--device",
        &spec(&dst, "4c"),
        "--source",
        desc_path.to_str().unwrap(),
        "--allow-opaque",
        "nvidia",
    ]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("OPAQUE:"), "{out}");
    let (rc, _, err) = run(&[
        "restore",
        "--device",
        &spec(&dst, "8c"),
        "--trust",
        public.to_str().unwrap(),
        "-i",
        stream.to_str().unwrap(),
        "--allow-opaque",
        "nvidia",
    ]);
    assert_eq!(rc, 3, "{err}");
    assert!(err.contains("error[compat.config_mismatch]"), "{err}");
}
