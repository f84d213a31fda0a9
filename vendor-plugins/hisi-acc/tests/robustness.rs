//! Hostile input: every truncation, and a deterministic mutation loop. Nothing may
//! panic, and whatever parses must re-encode to the same bytes.

use std::collections::BTreeMap;

use mdevmig_hisi_acc::codes;
use mdevmig_hisi_acc::plugin::section_spec;
use mdevmig_hisi_acc::{AccVfData, HisiAccPlugin, ACC_VF_DATA_LEN, QM_MATCH_SIZE};
use mdevmig_plugin_api::{DeviceInfo, VendorPlugin};
use mdevmig_testkit::hisi_acc::parse_and_validate;

fn sec_device() -> DeviceInfo {
    DeviceInfo {
        vendor: "hisi_acc".into(),
        device_type: "hisi-sec-vf".into(),
        attributes: BTreeMap::from([("qp_num".into(), "64".into()), ("que_iso_cfg".into(), "1".into())]),
        capabilities: Default::default(),
    }
}

fn seeds() -> Vec<(Vec<u8>, u16)> {
    let v2 = AccVfData::sample(0xa256, 64, 1, true);
    let v1 = AccVfData::sample(0xa256, 64, 1, false);
    vec![
        (v2.to_bytes(), 2),
        (v1.to_bytes(), 1),
        (v2.match_only().to_bytes(), 2),
        (v1.match_only().to_bytes(), 1),
    ]
}

#[test]
fn every_truncation_fails_except_the_match_data_boundary() {
    let p = HisiAccPlugin;
    let d = sec_device();
    for (full, version) in seeds() {
        let spec = section_spec(version);
        p.validate_section(&d, &spec, &full).unwrap();
        for n in 0..full.len() {
            let prefix = &full[..n];
            let parsed = AccVfData::parse(prefix);
            let validated = p.validate_section(&d, &spec, prefix);
            if n == QM_MATCH_SIZE {
                // A whole state cut at 40 bytes *is* a match-data-only state, exactly
                // as the kernel would take it (it skips the restore). Only the
                // envelope's authenticated lengths can tell the two apart.
                assert_eq!(parsed.unwrap().to_bytes(), prefix);
                assert!(validated.is_ok());
            } else {
                assert_eq!(parsed.unwrap_err().code, codes::BAD_LENGTH, "len {n}");
                assert_eq!(validated.unwrap_err().code, codes::BAD_LENGTH, "len {n}");
            }
        }
    }
}

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutation_loop_never_panics_and_round_trips() {
    let p = HisiAccPlugin;
    let d = sec_device();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds = seeds();
    let interesting: [u64; 8] = [0, 1, 31, 32, 0xffff, 0x1_0000, u64::MAX, 0x8000_0000];
    let mut accepted = 0usize;
    for round in 0..20_000 {
        let (seed, version) = &seeds[round % seeds.len()];
        let mut b = seed.clone();
        for _ in 0..=rng.below(4) {
            match rng.below(6) {
                0 => {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
                2 if b.len() >= 8 => {
                    // An interesting 64-bit value at an aligned field offset.
                    let off = rng.below(b.len() / 4 - 1) * 4;
                    let v = interesting[rng.below(interesting.len())];
                    let n = if off.is_multiple_of(8) && off + 8 <= b.len() {
                        8
                    } else {
                        4
                    };
                    b[off..off + n].copy_from_slice(&v.to_le_bytes()[..n]);
                }
                3 => {
                    let n = rng.below(b.len() + 1);
                    b.truncate(n);
                    if b.is_empty() {
                        b.push(0);
                    }
                }
                4 if b.len() < ACC_VF_DATA_LEN + 8 => b.push(rng.next() as u8),
                _ => {}
            }
        }
        parse_and_validate(&b);
        if let Ok(s) = AccVfData::parse(&b) {
            assert_eq!(s.to_bytes(), b);
        }
        let r = p.validate_section(&d, &section_spec(*version), &b);
        if let Err(e) = &r {
            assert!(codes::TABLE.iter().any(|(c, _)| *c == e.code), "{}", e.code);
        } else {
            accepted += 1;
        }
        let _ = p.layout(&d, u32::from(*version), b.len() as u64);
    }
    // The loop must exercise the accepting path too, not only rejections.
    assert!(accepted > 100, "only {accepted} mutants accepted");
}

#[test]
fn random_bytes_of_both_lengths_never_panic() {
    let mut rng = Rng(42);
    for len in [QM_MATCH_SIZE, ACC_VF_DATA_LEN] {
        for _ in 0..2_000 {
            let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            parse_and_validate(&b);
        }
    }
}
