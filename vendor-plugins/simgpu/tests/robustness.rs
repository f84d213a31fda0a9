//! Hostile input: truncation, single-byte mutations and random bytes for every
//! structured section, and mutated, truncated and re-split raw streams for the
//! loader. Nothing panics; whatever is accepted re-encodes to the same bytes (and a
//! loaded state saves and loads again to the same digest).

mod common;

use common::*;
use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::{DeviceInfo, VendorPlugin};
use mdevmig_simgpu::record::RecordHeader;
use mdevmig_simgpu::sections::{Ctx3, Encoder, FbDirty, Regs, Telemetry};
use mdevmig_simgpu::{codes, Section, SimGpuModel, SimGpuPlugin, FRAMING_LEN, VGPU_64M};

const SMALL: [Section; 4] = [Section::Regs, Section::Telemetry, Section::Ctx3, Section::Encoder];

/// Decodes `data` as `section` and re-encodes it, if it decodes.
fn reencode(section: Section, data: &[u8]) -> Option<Vec<u8>> {
    match section {
        Section::Regs => Regs::decode(data).ok().map(|v| v.encode()),
        Section::Telemetry => Telemetry::decode(data).ok().map(|v| v.encode()),
        Section::Ctx3 => Ctx3::decode(data).ok().map(|v| v.encode()),
        Section::Encoder => Encoder::decode(data).ok().map(|v| v.encode()),
        Section::FbDirty => FbDirty::decode(data, VGPU_64M).ok().map(|v| v.encode(VGPU_64M)),
        Section::Fb => None,
    }
}

/// Validates `data` on `dev`; whatever decodes re-encodes identically, and
/// whatever validates decodes.
fn exercise(section: Section, dev: &DeviceInfo, data: &[u8]) -> bool {
    let decoded = reencode(section, data);
    if let Some(bytes) = &decoded {
        assert_eq!(bytes, data, "{section:?} decode/encode is not the identity");
    }
    let ok = SimGpuPlugin::new()
        .validate_section(dev, &section.spec(VGPU_64M), data)
        .is_ok();
    assert!(!ok || decoded.is_some());
    ok
}

fn devices() -> Vec<(Vec<(&'static str, &'static str)>, DeviceInfo)> {
    [vec![], vec![("encoder", "on"), ("ctx3", "on"), ("heads", "2")]]
        .into_iter()
        .map(|p| {
            let d = device("vgpu-64m", &p, &[]);
            (p, d)
        })
        .collect()
}

#[test]
fn truncation_and_extension_of_structured_sections_fail_cleanly() {
    for (pairs, dev) in devices() {
        let m = model(VGPU_64M, 12, &pairs);
        for s in SMALL.into_iter().chain([Section::FbDirty]) {
            let Some(full) = m.section_data(s) else { continue };
            assert!(exercise(s, &dev, &full), "{s:?}");
            let lens: Vec<usize> = if s == Section::FbDirty {
                (0..2000).chain((full.len() - 100)..full.len()).collect()
            } else {
                (0..full.len()).collect()
            };
            for len in lens {
                assert!(!exercise(s, &dev, &full[..len]), "{s:?} prefix {len}");
                let e = SimGpuPlugin::new().validate_section(&dev, &s.spec(VGPU_64M), &full[..len]);
                assert_eq!(e.unwrap_err().code, codes::BAD_LENGTH);
            }
            let mut long = full.clone();
            long.push(0);
            assert!(!exercise(s, &dev, &long));
        }
    }
}

#[test]
fn every_single_byte_mutation_is_handled() {
    for (pairs, dev) in devices() {
        for seed in [1u64, 2] {
            let m = model(VGPU_64M, seed, &pairs);
            for s in SMALL {
                let Some(base) = m.section_data(s) else { continue };
                let mut accepted = 0;
                for at in 0..base.len() {
                    for x in [0x01u8, 0x80, 0xff] {
                        let mut d = base.clone();
                        d[at] ^= x;
                        accepted += exercise(s, &dev, &d) as usize;
                    }
                }
                // Scratch registers and rate-control state take any bytes.
                assert!(accepted > 0 || s != Section::Regs);
            }
        }
    }
}

#[test]
fn random_bytes_with_valid_magic_never_panic() {
    let mut rng = TestRng(0xdead_beef);
    let (_, dev) = devices().pop().unwrap();
    let m = model(VGPU_64M, 1, &[("encoder", "on"), ("ctx3", "on"), ("heads", "2")]);
    for s in SMALL {
        let base = m.section_data(s).unwrap();
        for _ in 0..2000 {
            let mut d: Vec<u8> = (0..base.len()).map(|_| rng.next() as u8).collect();
            d[..4].copy_from_slice(&base[..4]);
            // Small values make range checks pass more often.
            for w in d.chunks_exact_mut(4).skip(1) {
                if rng.below(2) == 0 {
                    w.copy_from_slice(&(rng.below(5) as u32).to_le_bytes());
                }
            }
            exercise(s, &dev, &d);
        }
    }
}

fn fuzz_raw(seed: u64, pairs: &[(&str, &str)]) -> (SimGpuModel, Vec<u8>) {
    let mut m = SimGpuModel::fuzz_model(seed, &attrs(pairs));
    m.guest_activity(3);
    m.begin_save();
    let pre = m.precopy_len() as usize;
    let mut raw = vec![0u8; m.raw_len() as usize];
    assert_eq!(m.read_raw(0, &mut raw[..pre]), pre);
    m.guest_activity(2);
    let n = m.read_raw(pre as u64, &mut raw[pre..]);
    assert_eq!(pre + n, raw.len());
    (m, raw)
}

/// Loads `raw` into a fresh fuzz device; if accepted, saves it and loads that into
/// another one, which must reach the same digest.
fn load_checked(raw: &[u8], pairs: &[(&str, &str)], rng: &mut TestRng) -> Option<[u8; 32]> {
    let mut d = SimGpuModel::fuzz_model(1, &attrs(pairs));
    let before = d.digest();
    if load_split(&mut d, raw, rng).is_err() {
        assert_eq!(d.digest(), before);
        return None;
    }
    let digest = d.digest();
    let again = read_all(&mut d, 5000);
    let mut e = SimGpuModel::fuzz_model(2, &attrs(pairs));
    load_split(&mut e, &again, rng).unwrap();
    assert_eq!(e.digest(), digest);
    Some(digest)
}

#[test]
fn fuzz_model_round_trips_with_precopy() {
    let mut rng = TestRng(5);
    for pairs in [&[][..], &[("encoder", "on"), ("ctx3", "on")]] {
        let (mut src, raw) = fuzz_raw(9, pairs);
        assert!(raw.len() < 100_000);
        assert_eq!(load_checked(&raw, pairs, &mut rng), Some(src.digest()));
    }
}

#[test]
fn mutated_raw_streams_never_panic() {
    let pairs = [("encoder", "on"), ("ctx3", "on")];
    let (mut src, raw) = fuzz_raw(4, &pairs);
    let mut rng = TestRng(31337);
    let mut accepted = 0;
    for i in 0..3000 {
        let mut r = raw.clone();
        for _ in 0..1 + rng.below(3) {
            // Mostly hit the headers and small sections (the last ~20 KiB).
            let at = if i % 2 == 0 {
                raw.len() - 1 - rng.below(22_000)
            } else {
                rng.below(raw.len())
            };
            r[at] ^= 1 << rng.below(8);
        }
        if let Some(d) = load_checked(&r, &pairs, &mut rng) {
            accepted += 1;
            if r == raw {
                assert_eq!(d, src.digest());
            }
        }
    }
    assert!(accepted > 0);
}

/// Offsets where a record starts.
fn record_starts(raw: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < raw.len() {
        out.push(off);
        let h = RecordHeader::decode(raw[off..off + FRAMING_LEN].try_into().unwrap()).unwrap();
        off += FRAMING_LEN + h.length as usize;
    }
    out
}

#[test]
fn truncated_raw_streams_fail_cleanly() {
    let pairs = [("encoder", "on")];
    let (_, raw) = fuzz_raw(4, &pairs);
    let starts = record_starts(&raw);
    assert_eq!(starts.len(), 6);
    // Cutting before telemetry, ctx3 or encoder leaves a stream the device cannot
    // tell from one whose later sections the broker left out (an older version, a
    // skipped section): it loads. The envelope's trailer is what catches such a
    // truncation. Every other cut fails.
    let boundary: Vec<usize> = starts[3..].to_vec();
    let mut rng = TestRng(1);
    let mut cuts: Vec<usize> = (0..200).collect();
    cuts.extend((raw.len() - 6000)..raw.len());
    cuts.extend((0..300).map(|_| rng.below(raw.len())));
    cuts.extend(starts.iter().flat_map(|s| s.saturating_sub(2)..s + 3));
    for cut in cuts {
        let mut d = SimGpuModel::fuzz_model(1, &attrs(&pairs));
        let r = load_split(&mut d, &raw[..cut], &mut rng);
        if boundary.contains(&cut) {
            assert!(r.is_ok(), "cut {cut}: {r:?}");
            continue;
        }
        let e = r.unwrap_err();
        assert!(
            [codes::TRUNCATED, codes::MISSING_SECTION].contains(&e.code),
            "cut {cut}: {e:?}"
        );
    }
}

#[test]
fn random_streams_never_panic() {
    let mut rng = TestRng(77);
    for _ in 0..2000 {
        let len = rng.below(300);
        let raw: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert!(load_checked(&raw, &[], &mut rng).is_none());
    }
}
