// Trivial stand-in for /bin/mdevmig in the harness smoke test (built static).
fn main() {
    println!("hello from a static Rust binary in the guest (pid {})", std::process::id());
}
