//! `mdevmig-validator`: the restore's sandboxed validator as a program of its own,
//! with every built-in vendor plugin, for embedders that cannot start themselves
//! as the validator (`Validation::sandbox("/path/to/mdevmig-validator")`).
//! It only ever runs as the child that [`mdevmig::sandbox::Sandbox`] starts.

fn main() -> std::process::ExitCode {
    match mdevmig::sandbox::child_entry(&mdevmig::plugins::Registry::builtin()) {
        Some(status) => std::process::ExitCode::from(status),
        None => {
            eprintln!("mdevmig-validator: started by the mdevmig sandbox only");
            std::process::ExitCode::from(2)
        }
    }
}
