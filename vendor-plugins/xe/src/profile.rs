//! Device types (VF profiles by VRAM size) and configuration attributes.
//!
//! | type         | VF VRAM (all tiles) | GGTT range per tile | GGTT payload | VRAM chunk | offered |
//! |--------------|--------------------:|--------------------:|-------------:|-----------:|---------|
//! | `xe-vf-64m`  | 64 MiB              | 64 MiB              | 128 KiB      | 512 MiB    | yes     |
//! | `xe-vf-1g`   | 1 GiB               | 256 MiB             | 512 KiB      | 512 MiB    | yes     |
//! | `xe-vf-2g`   | 2 GiB               | 256 MiB             | 512 KiB      | 512 MiB    | yes     |
//! | `xe-vf-4g`   | 4 GiB               | 256 MiB             | 512 KiB      | 512 MiB    | yes     |
//! | `xe-vf-tiny` | 256 KiB             | 1 MiB               | 2 KiB        | 64 KiB     | no (tests, fuzzing) |
//!
//! VRAM is split evenly between the tiles; each tile's primary GT sends its tile's
//! VRAM in chunks of at most the chunk size (the driver's
//! `VF_VRAM_STATE_CHUNK_MAX_SIZE`, 512 MiB; the hidden test type uses 64 KiB so
//! that its stream has several VRAM packets). The GGTT payload is one 8-byte PTE
//! per 4 KiB of the VF's GGTT range.
//!
//! | attribute | values                         | default  | meaning |
//! |-----------|--------------------------------|----------|---------|
//! | `tiles`   | `1`, `2`                       | `1`      | tiles the VF spans |
//! | `gts`     | `1`, `2`                       | `2`      | GTs per tile: primary only, or primary + media |
//! | `devid`   | `0x` + 1..4 lowercase hex      | `0xe20b` | PCI device id the descriptor must carry |
//! | `revid`   | `0x` + 1..2 lowercase hex      | `0x00`   | PCI revision id the descriptor must carry |
//!
//! GT ids are numbered as the driver numbers them (`xe_device_types.h`,
//! `info.max_gt_per_tile`: GT ids allocated to each tile): GT `t × gts + k` is GT
//! `k` of tile `t`, `k = 0` the primary GT, `k = 1` the media GT. Values are
//! normalised (`devid=0xE20B` is refused: attribute values are lowercase;
//! `devid=0xe20` becomes `0x0e20`).

use std::collections::BTreeMap;

use mdevmig_plugin_api::{DeviceInfo, VendorError};

use crate::codes;
use crate::format::{
    DESCRIPTOR_LEN, DESCRIPTOR_MAX, GGTT_PAGE, GGTT_PTE_LEN, GUC_MAX, HEADER_LEN_U64, MMIO_LEN,
    PAGE_SIZE_U64, VRAM_CHUNK_MAX,
};

/// Attribute key: tiles.
pub const ATTR_TILES: &str = "tiles";
/// Attribute key: GTs per tile.
pub const ATTR_GTS: &str = "gts";
/// Attribute key: PCI device id.
pub const ATTR_DEVID: &str = "devid";
/// Attribute key: PCI revision id.
pub const ATTR_REVID: &str = "revid";
/// Default PCI device id (a Battlemage device, `INTEL_BMG_IDS` in
/// `include/drm/intel/pciids.h`, one of the devices `xe-vfio-pci` binds).
pub const DEFAULT_DEVID: u16 = 0xe20b;

/// Largest tile count a configuration may have.
pub const MAX_TILES: usize = 2;
/// Largest GT count (tiles × GTs per tile).
pub const MAX_GTS: usize = 4;

/// An Xe VF profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct XeType {
    name: &'static str,
    vram: u64,
    ggtt_range: u64,
    chunk: u64,
}

/// `xe-vf-64m`.
pub const XE_VF_64M: XeType = XeType {
    name: "xe-vf-64m",
    vram: 64 << 20,
    ggtt_range: 64 << 20,
    chunk: VRAM_CHUNK_MAX,
};
/// `xe-vf-1g`.
pub const XE_VF_1G: XeType = XeType {
    name: "xe-vf-1g",
    vram: 1 << 30,
    ggtt_range: 256 << 20,
    chunk: VRAM_CHUNK_MAX,
};
/// `xe-vf-2g`.
pub const XE_VF_2G: XeType = XeType {
    name: "xe-vf-2g",
    vram: 2 << 30,
    ggtt_range: 256 << 20,
    chunk: VRAM_CHUNK_MAX,
};
/// `xe-vf-4g`.
pub const XE_VF_4G: XeType = XeType {
    name: "xe-vf-4g",
    vram: 4 << 30,
    ggtt_range: 256 << 20,
    chunk: VRAM_CHUNK_MAX,
};
/// `xe-vf-tiny`: 256 KiB of VRAM for tests and fuzzing; not offered by the plugin.
pub const XE_VF_TINY: XeType = XeType {
    name: "xe-vf-tiny",
    vram: 256 << 10,
    ggtt_range: 1 << 20,
    chunk: 64 << 10,
};

/// The offered device type names, in [`XeType::OFFERED`] order.
pub const DEVICE_TYPES: &[&str] = &["xe-vf-64m", "xe-vf-1g", "xe-vf-2g", "xe-vf-4g"];

impl XeType {
    /// The offered types.
    pub const OFFERED: [XeType; 4] = [XE_VF_64M, XE_VF_1G, XE_VF_2G, XE_VF_4G];

    /// An offered type by name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::OFFERED.into_iter().find(|t| t.name == name)
    }

    /// An offered type or the hidden test type by name.
    pub fn from_name_any(name: &str) -> Option<Self> {
        Self::from_name(name).or((name == XE_VF_TINY.name).then_some(XE_VF_TINY))
    }

    /// The type name.
    pub const fn name(self) -> &'static str {
        self.name
    }

    /// VF VRAM over all tiles, bytes.
    pub const fn vram(self) -> u64 {
        self.vram
    }

    /// Bytes of GGTT address space the VF has on each tile.
    pub const fn ggtt_range(self) -> u64 {
        self.ggtt_range
    }

    /// Largest VRAM packet the simulated device produces.
    pub const fn chunk(self) -> u64 {
        self.chunk
    }
}

/// A device's completed configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The profile.
    pub ty: XeType,
    /// Tiles, 1..=2.
    pub tiles: u8,
    /// GTs per tile, 1..=2.
    pub gts: u8,
    /// PCI device id.
    pub devid: u16,
    /// PCI revision id.
    pub revid: u8,
}

fn attr_err(message: String) -> VendorError {
    VendorError::new(codes::ATTRIBUTE, message)
}

fn parse_hex(key: &str, value: &str, digits: usize) -> Result<u32, VendorError> {
    let hex = value.strip_prefix("0x").unwrap_or("");
    let ok = !hex.is_empty()
        && hex.len() <= digits
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !ok {
        return Err(attr_err(format!(
            "attribute {key}={value:?} must be 0x and 1 to {digits} lowercase hex digits"
        )));
    }
    u32::from_str_radix(hex, 16).map_err(|_| attr_err(format!("attribute {key}={value:?} is not hex")))
}

fn one_or_two(key: &str, value: &str) -> Result<u8, VendorError> {
    match value {
        "1" => Ok(1),
        "2" => Ok(2),
        _ => Err(attr_err(format!("attribute {key}={value:?} must be 1 or 2"))),
    }
}

impl Config {
    /// The default configuration of `ty`.
    pub const fn new(ty: XeType) -> Self {
        Config {
            ty,
            tiles: 1,
            gts: 2,
            devid: DEFAULT_DEVID,
            revid: 0,
        }
    }

    /// Parses attributes over the defaults; unknown keys are refused.
    pub fn parse(ty: XeType, attributes: &BTreeMap<String, String>) -> Result<Self, VendorError> {
        let mut c = Config::new(ty);
        for (key, value) in attributes {
            match key.as_str() {
                ATTR_TILES => c.tiles = one_or_two(key, value)?,
                ATTR_GTS => c.gts = one_or_two(key, value)?,
                ATTR_DEVID => c.devid = u16::try_from(parse_hex(key, value, 4)?).unwrap_or(u16::MAX),
                ATTR_REVID => c.revid = u8::try_from(parse_hex(key, value, 2)?).unwrap_or(u8::MAX),
                _ => {
                    return Err(attr_err(format!(
                        "xe has no attribute {key:?}; it has tiles, gts, devid and revid"
                    )))
                }
            }
        }
        Ok(c)
    }

    /// The completed, normalised attribute map.
    pub fn to_attributes(self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (ATTR_DEVID.to_owned(), format!("{:#06x}", self.devid)),
            (ATTR_GTS.to_owned(), self.gts.to_string()),
            (ATTR_REVID.to_owned(), format!("{:#04x}", self.revid)),
            (ATTR_TILES.to_owned(), self.tiles.to_string()),
        ])
    }

    /// GTs on the device.
    pub fn gt_count(self) -> u8 {
        self.tiles.saturating_mul(self.gts)
    }

    /// The tile GT `gt` belongs to, if the device has that GT.
    pub fn gt_tile(self, gt: u8) -> Option<u8> {
        (gt < self.gt_count()).then(|| gt.checked_div(self.gts).unwrap_or(0))
    }

    /// True when GT `gt` is its tile's primary GT (the one that carries GGTT and
    /// VRAM).
    pub fn is_primary(self, gt: u8) -> bool {
        gt.checked_rem(self.gts) == Some(0)
    }

    /// The primary GT of tile `tile`.
    pub fn primary_gt(self, tile: u8) -> u8 {
        tile.saturating_mul(self.gts)
    }

    /// VF VRAM on each tile.
    pub fn vram_per_tile(self) -> u64 {
        self.ty.vram.checked_div(u64::from(self.tiles)).unwrap_or(0)
    }

    /// VRAM pages on each tile.
    pub fn pages_per_tile(self) -> u64 {
        self.vram_per_tile() / PAGE_SIZE_U64
    }

    /// GGTT payload bytes per tile.
    pub fn ggtt_len(self) -> u64 {
        (self.ty.ggtt_range / GGTT_PAGE).saturating_mul(GGTT_PTE_LEN)
    }

    /// Allowance for VRAM re-sends (pre-copy rounds): twice the VF's VRAM in
    /// payload, plus a header per re-sent 4 KiB page.
    pub fn resend_allowance(self) -> u64 {
        let vram2 = self.ty.vram.saturating_mul(2);
        vram2.saturating_add((vram2 / PAGE_SIZE_U64).saturating_mul(HEADER_LEN_U64))
    }

    /// The longest stream this configuration accepts: the descriptor (at its cap),
    /// every resource once with its headers (VRAM in chunks), the re-send
    /// allowance, and the trailer.
    pub fn max_stream_len(self) -> u64 {
        let h = HEADER_LEN_U64;
        let per_tile = self.vram_per_tile();
        let chunks = per_tile.div_ceil(self.ty.chunk.max(1));
        let vram = per_tile
            .saturating_add(chunks.saturating_mul(h))
            .saturating_add(h.saturating_add(self.ggtt_len()))
            .saturating_mul(u64::from(self.tiles));
        let per_gt = h
            .saturating_add(GUC_MAX)
            .saturating_add(h)
            .saturating_add(MMIO_LEN)
            .saturating_mul(u64::from(self.gt_count()));
        h.saturating_add(DESCRIPTOR_MAX)
            .saturating_add(vram)
            .saturating_add(per_gt)
            .saturating_add(self.resend_allowance())
            .saturating_add(h)
    }

    /// The descriptor this device writes.
    pub fn descriptor_len(self) -> u64 {
        DESCRIPTOR_LEN
    }
}

/// The offered type named `device_type`, or a [`codes::DEVICE_TYPE`] error.
pub fn xe_type(device_type: &str) -> Result<XeType, VendorError> {
    XeType::from_name(device_type).ok_or_else(|| {
        VendorError::new(
            codes::DEVICE_TYPE,
            format!(
                "xe has device types {}, not {device_type:?}",
                DEVICE_TYPES.join(", ")
            ),
        )
    })
}

/// Completes `attrs` for `device_type`: defaults filled in, values normalised,
/// unknown keys refused.
pub fn configure(
    device_type: &str,
    attrs: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, VendorError> {
    Config::parse(xe_type(device_type)?, attrs).map(Config::to_attributes)
}

/// The configuration of `device` (an offered type).
pub fn device_config(device: &DeviceInfo) -> Result<Config, VendorError> {
    Config::parse(xe_type(&device.device_type)?, &device.attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_normalisation_and_refusals() {
        let full = configure("xe-vf-64m", &attrs(&[])).unwrap();
        assert_eq!(
            full,
            attrs(&[
                ("devid", "0xe20b"),
                ("gts", "2"),
                ("revid", "0x00"),
                ("tiles", "1")
            ])
        );
        // Completing a completed map changes nothing.
        assert_eq!(configure("xe-vf-64m", &full).unwrap(), full);
        let c = configure(
            "xe-vf-1g",
            &attrs(&[("devid", "0xe20"), ("revid", "0x3"), ("tiles", "2")]),
        )
        .unwrap();
        assert_eq!(c["devid"], "0x0e20");
        assert_eq!(c["revid"], "0x03");
        for bad in [
            ("devid", "0xE20B"),
            ("devid", "e20b"),
            ("devid", "0x12345"),
            ("revid", "0x100"),
            ("tiles", "3"),
            ("gts", "0"),
            ("vram", "1"),
        ] {
            let e = configure("xe-vf-64m", &attrs(&[bad])).unwrap_err();
            assert_eq!(e.code, codes::ATTRIBUTE, "{bad:?}");
        }
        assert_eq!(
            configure("xe-vf-tiny", &attrs(&[])).unwrap_err().code,
            codes::DEVICE_TYPE
        );
        // Every value fits the attribute charset and length.
        for v in full.values().chain(c.values()) {
            assert!((1..=32).contains(&v.len()));
            assert!(v
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._:+-".contains(&b)));
        }
    }

    #[test]
    fn topology() {
        let c = Config {
            tiles: 2,
            ..Config::new(XE_VF_1G)
        };
        assert_eq!(c.gt_count(), 4);
        assert_eq!(c.gt_tile(3), Some(1));
        assert_eq!(c.gt_tile(4), None);
        assert!(c.is_primary(2) && !c.is_primary(3));
        assert_eq!(c.vram_per_tile(), 512 << 20);
        assert_eq!(c.ggtt_len(), 512 << 10);
        assert!(c.max_stream_len() > 3 * (1 << 30));
    }
}
