//! One envelope header: decode, re-encode, stream-read (see `mdevmig_testkit`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdevmig_testkit::fuzz_envelope_header(data));
