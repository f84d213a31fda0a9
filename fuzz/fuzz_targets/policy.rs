//! An operator policy document (see `mdevmig_testkit`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdevmig_testkit::fuzz_policy(data));
