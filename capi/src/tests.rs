//! The header is generated, committed, and checked here; the C programs under
//! `capi/tests/` exercise the ABI itself.

use std::path::Path;

fn generate() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen")
        .write(&mut out);
    String::from_utf8(out).expect("UTF-8 header")
}

#[test]
fn the_committed_header_is_what_cbindgen_generates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/mdevmig.h");
    let want = generate();
    if std::env::var_os("MDEVMIG_BLESS_HEADER").is_some() {
        std::fs::write(&path, &want).expect("write header");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "capi/include/mdevmig.h is stale: run MDEVMIG_BLESS_HEADER=1 cargo test -p mdevmig-capi"
    );
}
