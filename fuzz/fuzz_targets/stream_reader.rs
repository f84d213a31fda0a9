//! A whole stream, as given and re-signed by the test key (see `mdevmig::fuzzing`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdevmig::fuzzing::fuzz_stream_reader(data));
