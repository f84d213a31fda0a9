//! Whole streams with streamed sections: bytes re-signed by the test key, or a
//! script of signed records; checked against an independent model of
//! spec/wire-format.md §4-5 (see `fuzz/src/streamed.rs`).
#![no_main]
use libfuzzer_sys::fuzz_target;

use mdevmig_testkit::streamed;

fuzz_target!(|data: &[u8]| streamed::run(data));
