//! Restore options for tests: the real sandbox, with this build's `mdevmig` as the
//! validator (the test binary itself is not one).
#![allow(dead_code)]

use mdevmig::broker::RestoreOptions;
use mdevmig::sandbox::Validation;

pub fn ropts() -> RestoreOptions {
    RestoreOptions {
        validation: Validation::sandbox(env!("CARGO_BIN_EXE_mdevmig")),
        ..RestoreOptions::default()
    }
}
