//! Valid packet streams for tests and fuzzers.
//!
//! [`packets`] builds the packets of a valid stream for any configuration without
//! the simulated device (small, fast, easy to edit packet by packet); tests that
//! need a stream a real producer would make use the simulated device.

use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::SimOptions;

use crate::format::{encode_descriptor, packet, trailer, PacketType};
use crate::profile::{Config, XeType};
use crate::sim::XeModel;

/// Deterministic filler bytes.
fn filler(seed: u64, len: u64) -> Vec<u8> {
    let mut x = seed ^ 0x5851_f42d_4c95_7f2d;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            x.to_le_bytes().get(7).copied().unwrap_or(0)
        })
        .collect()
}

/// The packets of a valid stream for `config`, in the driver's per-GT order
/// (descriptor; per GT: GuC, GGTT on primary GTs, MMIO, VRAM chunks; trailer).
/// Payloads are filler derived from `seed`. Meant for small configurations
/// ([`crate::XE_VF_TINY`]): VRAM is materialised.
pub fn packets(config: &Config, seed: u64) -> Vec<Vec<u8>> {
    let mut out = vec![packet(
        PacketType::DESCRIPTOR,
        0,
        0,
        0,
        &encode_descriptor(u32::from(config.devid), u32::from(config.revid)),
    )];
    for gt in 0..config.gt_count() {
        let tile = config.gt_tile(gt).unwrap_or(0);
        let s = seed.wrapping_add(u64::from(gt));
        out.push(packet(PacketType::GUC, tile, gt, 0, &filler(s, 256)));
        if config.is_primary(gt) {
            out.push(packet(
                PacketType::GGTT,
                tile,
                gt,
                0,
                &filler(s ^ 1, config.ggtt_len()),
            ));
        }
        out.push(packet(PacketType::MMIO, tile, gt, 0, &filler(s ^ 2, 16)));
        if config.is_primary(gt) {
            let mut at = 0;
            while at < config.vram_per_tile() {
                let n = config.ty.chunk().min(config.vram_per_tile().saturating_sub(at));
                out.push(packet(PacketType::VRAM, tile, gt, at, &filler(s ^ at, n)));
                at = at.saturating_add(n);
            }
        }
    }
    out.push(trailer().to_vec());
    out
}

/// [`packets`] joined.
pub fn stream(config: &Config, seed: u64) -> Vec<u8> {
    packets(config, seed).concat()
}

/// The whole raw stream of `model`'s save (from `begin_save` to the end of data),
/// read in 1 MiB pieces.
pub fn read_stream(model: &mut dyn SimModel) -> Vec<u8> {
    model.begin_save();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let at = u64::try_from(out.len()).unwrap_or(u64::MAX);
        let n = model.read_raw(at, &mut buf);
        match buf.get(..n) {
            Some(b) if n > 0 => out.extend_from_slice(b),
            _ => return out,
        }
    }
}

/// A valid raw stream of a simulated `device_type` device (default attributes)
/// seeded `seed`, as its save produces it, with `1 + seed mod 48` pages dirtied
/// while it ran (so the stream has VRAM re-sends); empty for an unknown type.
/// Any type works, the hidden `xe-vf-tiny` (256 KiB of VRAM, about 330 KiB of
/// stream) included, but the stream is held in memory: use small types.
pub fn valid_stream(device_type: &str, seed: u64) -> Vec<u8> {
    let Some(ty) = XeType::from_name_any(device_type) else {
        return Vec::new();
    };
    let mut opts = SimOptions {
        seed,
        ..SimOptions::default()
    };
    let dirty = 1u64.saturating_add(seed % 48);
    opts.attributes
        .insert(crate::sim::SIM_DIRTY_KEY.to_owned(), dirty.to_string());
    match XeModel::new(ty, &opts) {
        Ok(mut m) => read_stream(&mut m),
        Err(_) => Vec::new(),
    }
}
