//! The QMP service's message framing (see `mdevmig_serve::wire`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdevmig_serve::wire::fuzzing::framer(data));
