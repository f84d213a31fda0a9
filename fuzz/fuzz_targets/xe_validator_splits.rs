//! An Xe packet stream (raw, or a valid xe-vf-tiny stream mutated) validated whole
//! and in pieces sized by the input: same outcome, same code (see
//! `fuzz/src/xe_splits.rs`).
#![no_main]
use libfuzzer_sys::fuzz_target;

use mdevmig_testkit::xe_splits;

fuzz_target!(|data: &[u8]| xe_splits::run(data));
