//! The embedder example runs end to end, and depends on no command-line crate.

use std::process::Command;

#[test]
fn the_embedder_migrates_a_simulated_vgpu_through_the_region() {
    let out = Command::new(env!("CARGO_BIN_EXE_mdevmig-embedder"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("pre-check: compatible"), "{stdout}");
    assert!(stdout.trim_end().ends_with("MATCH"), "{stdout}");
}

#[test]
fn the_embedder_gets_no_clap() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "mdevmig-embedder",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tree.lines().any(|l| l.starts_with("mdevmig v")), "{tree}");
    for banned in ["clap", "mdevmig-cli", "mdevmig-testkit"] {
        assert!(
            !tree.lines().any(|l| l.starts_with(&format!("{banned} v"))),
            "an embedder of mdevmig pulls in {banned}:\n{tree}"
        );
    }
}
