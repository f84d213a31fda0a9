//! Restore options for tests: the real sandbox, with this build's
//! `mdevmig-validator` as the child (the test binary itself is not one).
#![allow(dead_code)]

use mdevmig::broker::RestoreOptions;

pub fn ropts() -> RestoreOptions {
    mdevmig_testkit::sandboxed_restore(env!("CARGO_BIN_EXE_mdevmig-validator"))
}
