//! Shared helpers: devices, whole-stream reads, a seeded RNG, and a broker-like
//! transfer (strip and check framing, convert, validate, re-frame, load).

#![allow(dead_code)]

use std::collections::BTreeMap;

use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::{DeviceInfo, SectionConversion, SectionKind, SimOptions, VendorError, VendorPlugin};
use mdevmig_simgpu::{GpuType, SimGpuModel, SimGpuPlugin};
use sha2::{Digest, Sha256};

/// xorshift64*, for split points and mutations.
pub struct TestRng(pub u64);

impl TestRng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A device as the broker would describe it: configured attributes, capabilities.
pub fn device(ty: &str, pairs: &[(&str, &str)], caps: &[&str]) -> DeviceInfo {
    let attributes = SimGpuPlugin::new().configure(ty, &attrs(pairs)).unwrap();
    DeviceInfo {
        vendor: "simgpu".into(),
        device_type: ty.into(),
        attributes,
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
    }
}

pub fn model(ty: GpuType, seed: u64, pairs: &[(&str, &str)]) -> SimGpuModel {
    SimGpuModel::new(
        ty,
        &SimOptions {
            seed,
            attributes: attrs(pairs),
        },
    )
    .unwrap()
}

/// The whole raw stream, read in `chunk`-byte pieces.
pub fn read_all(m: &mut dyn SimModel, chunk: usize) -> Vec<u8> {
    let len = m.raw_len() as usize;
    let mut out = vec![0u8; len];
    let mut off = 0;
    while off < len {
        let end = (off + chunk).min(len);
        let n = m.read_raw(off as u64, &mut out[off..end]);
        assert!(n > 0, "read_raw stopped at {off} of {len}");
        off += n;
    }
    assert_eq!(m.read_raw(len as u64, &mut [0u8; 16]), 0);
    out
}

/// SHA-256 of `m`'s raw stream.
pub fn stream_sha(m: &mut dyn SimModel) -> [u8; 32] {
    let len = m.raw_len();
    let mut buf = vec![0u8; 1 << 20];
    let mut h = Sha256::new();
    let mut off = 0u64;
    while off < len {
        let n = m.read_raw(off, &mut buf);
        assert!(n > 0);
        h.update(&buf[..n]);
        off += n as u64;
    }
    h.finalize().into()
}

/// Loads `raw` into `m`, split at random points.
pub fn load_split(m: &mut dyn SimModel, raw: &[u8], rng: &mut TestRng) -> Result<(), VendorError> {
    m.begin_load();
    let mut off = 0;
    while off < raw.len() {
        let n = match rng.below(4) {
            0 => 1 + rng.below(7),
            1 => 1 + rng.below(100),
            2 => 1 + rng.below(10_000),
            _ => 1 + rng.below(3 << 20),
        };
        let end = (off + n).min(raw.len());
        if let Err(e) = m.load_data(&raw[off..end]) {
            m.abort_load();
            return Err(e);
        }
        off = end;
    }
    m.end_load()
}

/// What a broker does between a source and a destination: cut the source stream
/// with the source plugin's layout, check each framing against `framing()`, plan
/// the conversion to `to`, drop sections the destination skips (unknown optional
/// ones, and those named in `skip`), validate the rest with the destination plugin,
/// re-insert the destination plugin's framing and load.
pub fn transfer(
    src: (&SimGpuPlugin, &DeviceInfo, &[u8], u32),
    dst: (&SimGpuPlugin, &DeviceInfo, &mut dyn SimModel),
    to: u32,
    skip: &[&str],
    rng: &mut TestRng,
) -> Result<(), VendorError> {
    let (sp, sdev, raw, version) = src;
    let (dp, ddev, dm) = dst;
    let layouts = sp.layout(sdev, version, raw.len() as u64)?;
    let specs: Vec<_> = layouts.iter().map(|l| l.spec.clone()).collect();
    let plan = if to == version {
        specs.iter().cloned().map(SectionConversion::Keep).collect()
    } else {
        sp.convert(sdev, version, to, &specs)?
    };
    assert_eq!(plan.len(), layouts.len());
    // The sections the destination knows: those of the newest version it loads.
    let dv = dp.loads(&ddev.device_type).unwrap().newest.min(to);
    let known: Vec<String> = dp.sections(ddev, dv)?.into_iter().map(|s| s.name).collect();
    let mut out = Vec::with_capacity(raw.len());
    let mut off = 0usize;
    for (l, step) in layouts.iter().zip(plan) {
        let framing = &raw[off..off + l.framing_len as usize];
        assert_eq!(framing, sp.framing(&l.spec, l.len).as_slice(), "{}", l.spec.name);
        let data = &raw[off + l.framing_len as usize..off + (l.framing_len + l.len) as usize];
        off += (l.framing_len + l.len) as usize;
        let SectionConversion::Keep(spec) = step else {
            continue;
        };
        if skip.contains(&spec.name.as_str()) {
            continue;
        }
        if !known.contains(&spec.name) {
            if spec.required {
                return Err(VendorError::new("test.unknown_required", spec.name.clone()));
            }
            continue;
        }
        if let Some(cap) = &spec.capability {
            if !ddev.capabilities.contains(cap) {
                return Err(VendorError::new("test.missing_capability", cap.clone()));
            }
        }
        match spec.kind {
            SectionKind::Structured => dp.validate_section(ddev, &spec, data)?,
            SectionKind::Bulk => {
                for (i, c) in data.chunks(1 << 20).enumerate() {
                    dp.validate_bulk(ddev, &spec, (i << 20) as u64, c)?;
                }
            }
            SectionKind::Records => {
                let mut r = dp.record_validator(ddev, &spec)?;
                r.feed(data)?;
                r.finish()?;
            }
        }
        out.extend_from_slice(&dp.framing(&spec, l.len));
        out.extend_from_slice(data);
    }
    assert_eq!(off, raw.len());
    load_split(dm, &out, rng)
}
