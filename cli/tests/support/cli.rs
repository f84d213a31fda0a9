//! Running the `mdevmig` binary from tests: a private temporary directory, a key
//! pair in it, and a runner that returns the exit status, stdout and stderr.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mdevmig")
}

/// A new private directory (mode 0700, an unguessable name), removed on drop;
/// `.0` is its path.
pub struct Dir(pub PathBuf, tempfile::TempDir);

/// A new private directory whose name starts with `mdevmig-<tag>-`.
pub fn dir(tag: &str) -> Dir {
    let t = tempfile::Builder::new()
        .prefix(&format!("mdevmig-{tag}-"))
        .tempdir()
        .unwrap();
    Dir(t.path().to_path_buf(), t)
}

/// Makes `k.key` and `k.pub` in `d`; their paths.
pub fn keys(d: &Dir) -> (String, String) {
    let out = Command::new(bin())
        .args(["keygen", "--out"])
        .arg(d.0.join("k"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (
        d.0.join("k.key").to_string_lossy().into_owned(),
        d.0.join("k.pub").to_string_lossy().into_owned(),
    )
}

/// Runs the binary with peak-RSS reporting on stderr; (status, stdout, stderr),
/// status -1 when a signal ended it.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin())
        .args(args)
        .env("MDEVMIG_REPORT_RSS", "1")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}
