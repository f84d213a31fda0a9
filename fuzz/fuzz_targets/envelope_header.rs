//! One envelope header: decode, re-encode, stream-read (see `mdevmig::fuzzing`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdevmig::fuzzing::fuzz_envelope_header(data));
