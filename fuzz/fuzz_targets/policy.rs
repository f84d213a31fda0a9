//! An operator policy document (see `mdevmig::fuzzing`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdevmig::fuzzing::fuzz_policy(data));
