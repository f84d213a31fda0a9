//! Raw bytes as a hisi_acc `struct acc_vf_data`: parse, re-encode, validate through
//! the plugin. Panics only if an accepted state does not re-encode to its input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdevmig_testkit::hisi_acc::parse_and_validate(data));
