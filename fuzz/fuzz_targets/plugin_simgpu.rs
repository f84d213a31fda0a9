//! Feeds arbitrary bytes to the simgpu plugin. The first byte picks a mode:
//!
//! - `% 3 == 0`: the rest is one structured section, validated as `simgpu.regs`,
//!   `telemetry`, `ctx3`, `encoder` and `fb-dirty` on two device configurations;
//!   whatever decodes must re-encode to the same bytes, and whatever validates must
//!   decode.
//! - `% 3 == 1`: the rest is a raw stream loaded into a small (64 KiB framebuffer)
//!   simulated device, split at points derived from the first byte.
//! - `% 3 == 2`: the rest is a list of `(offset u24 LE, xor u8)` mutations applied
//!   to a valid raw stream of that device (saved with pre-copy and guest activity),
//!   which is then loaded.
//!
//! Nothing may panic, and a load that succeeds must save and load again to the same
//! digest.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::{DeviceInfo, VendorPlugin};
use mdevmig_simgpu::sections::{Ctx3, Encoder, FbDirty, Regs, Telemetry};
use mdevmig_simgpu::{GpuType, Section, SimGpuModel, SimGpuPlugin, VGPU_64M};

fn attrs(encoder: bool, ctx3: bool) -> BTreeMap<String, String> {
    let w = |b: bool| if b { "on" } else { "off" }.to_owned();
    BTreeMap::from([
        ("encoder".to_owned(), w(encoder)),
        ("ctx3".to_owned(), w(ctx3)),
        ("heads".to_owned(), "1".to_owned()),
    ])
}

fn reencode(section: Section, ty: GpuType, data: &[u8]) -> Option<Vec<u8>> {
    match section {
        Section::Regs => Regs::decode(data).ok().map(|v| v.encode()),
        Section::Telemetry => Telemetry::decode(data).ok().map(|v| v.encode()),
        Section::Ctx3 => Ctx3::decode(data).ok().map(|v| v.encode()),
        Section::Encoder => Encoder::decode(data).ok().map(|v| v.encode()),
        Section::FbDirty => FbDirty::decode(data, ty).ok().map(|v| v.encode(ty)),
        Section::Fb => None,
    }
}

fn structured(data: &[u8]) {
    let plugin = SimGpuPlugin::new();
    for (encoder, ctx3) in [(false, false), (true, true)] {
        let device = DeviceInfo {
            vendor: "simgpu".into(),
            device_type: VGPU_64M.name().into(),
            attributes: attrs(encoder, ctx3),
            ..DeviceInfo::default()
        };
        for section in [
            Section::Regs,
            Section::Telemetry,
            Section::Ctx3,
            Section::Encoder,
            Section::FbDirty,
        ] {
            let decoded = reencode(section, VGPU_64M, data);
            if let Some(bytes) = &decoded {
                assert_eq!(bytes, data, "{section:?} accepted what it cannot re-encode");
            }
            let valid = plugin.validate_section(&device, &section.spec(VGPU_64M), data);
            assert!(
                valid.is_err() || decoded.is_some(),
                "{section:?} validated but does not decode"
            );
        }
    }
}

/// Loads `raw` in pieces; on success saves and reloads, which must give the same
/// digest.
fn load(raw: &[u8], attributes: &BTreeMap<String, String>, mut split: u64) {
    let mut device = SimGpuModel::fuzz_model(1, attributes);
    device.begin_load();
    let mut rest = raw;
    while !rest.is_empty() {
        split ^= split << 13;
        split ^= split >> 7;
        split ^= split << 17;
        let n = usize::try_from(split % 9000).unwrap_or(1).max(1).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        if device.load_data(piece).is_err() {
            device.abort_load();
            return;
        }
        rest = tail;
    }
    if device.end_load().is_err() {
        return;
    }
    let digest = device.digest();
    let len = usize::try_from(device.raw_len()).unwrap_or(0);
    let mut again = vec![0u8; len];
    assert_eq!(
        device.read_raw(0, &mut again),
        len,
        "a loaded fuzz device cannot be saved"
    );
    let mut other = SimGpuModel::fuzz_model(2, attributes);
    other.begin_load();
    other.load_data(&again).expect("re-saved stream refused");
    other.end_load().expect("re-saved stream refused at end");
    assert_eq!(other.digest(), digest, "save/load changed the state");
}

/// A valid raw stream of the fuzz device (v3, encoder and ctx3 on), saved with
/// pre-copy and guest activity.
fn base_stream() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut m = SimGpuModel::fuzz_model(7, &attrs(true, true));
        m.guest_activity(3);
        m.begin_save();
        let pre = usize::try_from(m.precopy_len()).unwrap_or(0);
        let mut raw = vec![0u8; usize::try_from(m.raw_len()).unwrap_or(0)];
        let n = m.read_raw(0, &mut raw[..pre]);
        m.guest_activity(2);
        let rest = m.read_raw(u64::try_from(n).unwrap_or(0), &mut raw[n..]);
        raw.truncate(n + rest);
        raw
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let seed = u64::from(selector) | 1;
    match selector % 3 {
        0 => structured(body),
        1 => load(body, &attrs(selector & 8 != 0, selector & 16 != 0), seed),
        _ => {
            let mut raw = base_stream().to_vec();
            for m in body.chunks_exact(4) {
                let at = usize::from(m[0]) | usize::from(m[1]) << 8 | usize::from(m[2]) << 16;
                let len = raw.len();
                raw[at % len] ^= m[3];
            }
            load(&raw, &attrs(true, true), seed);
        }
    }
});
