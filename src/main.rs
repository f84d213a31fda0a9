//! The `mdevmig` binary: all work happens in the library.
fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(mdevmig::cli::main())
}
