//! Regenerates `spec/vectors/`: `cargo run --example gen_vectors [DIR]`.
use mdevmig_testkit::vectors;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "spec/vectors".into()));
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let all = vectors::all();
    for v in &all {
        std::fs::write(dir.join(format!("{}.mdm", v.name)), &v.bytes).unwrap();
    }
    std::fs::write(dir.join("MANIFEST"), vectors::manifest(&all)).unwrap();
    for (name, key) in [
        ("test-signer", vectors::signer()),
        ("untrusted", vectors::untrusted()),
    ] {
        std::fs::write(dir.join(format!("keys/{name}.key")), key.private_pem().unwrap()).unwrap();
        std::fs::write(dir.join(format!("keys/{name}.pub")), key.public_pem().unwrap()).unwrap();
    }
    println!("wrote {} vectors to {}", all.len(), dir.display());
}
