//! A whole stream, as given and re-signed by the test key (see `mdevmig_testkit`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdevmig_testkit::fuzz_stream_reader(data));
