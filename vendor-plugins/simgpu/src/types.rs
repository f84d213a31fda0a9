//! Device types and configuration attributes.
//!
//! | type        | framebuffer         | pages (4 KiB) | `fb-dirty` capacity |
//! |-------------|---------------------|---------------|---------------------|
//! | `vgpu-64m`  | 64 MiB              | 16,384        | 256 pages (1 MiB)   |
//! | `vgpu-256m` | 256 MiB             | 65,536        | 1,024 pages (4 MiB) |
//! | `vgpu-1g`   | 1 GiB               | 262,144       | 1,024 pages (4 MiB) |
//!
//! The `fb-dirty` capacity is `min(fb / 64, 4 MiB)` in pages.
//!
//! | attribute | values          | default | meaning |
//! |-----------|-----------------|---------|---------|
//! | `encoder` | `on`, `off`     | `off`   | the device has a hardware video-encoder session; its state (`simgpu.encoder`) needs host capability `simgpu.hw-encoder` |
//! | `ctx3`    | `on`, `off`     | `off`   | the v3 context-queue feature is enabled (its state is `simgpu.ctx3`) |
//! | `heads`   | `1`..`4`        | `1`     | display heads; must match between source and destination |

use std::collections::BTreeMap;

use mdevmig_plugin_api::{DeviceInfo, VendorError, VersionWindow};

use crate::codes;

/// The newest state version this crate knows.
pub const NEWEST: u32 = 3;
/// The default produce and load window, 1..=3.
pub const WINDOW: VersionWindow = VersionWindow::new(1, NEWEST);

/// Bytes in a framebuffer page, the unit of dirty tracking.
pub const PAGE_SIZE: usize = 4096;
/// [`PAGE_SIZE`] as a u64.
pub const PAGE_SIZE_U64: u64 = 4096;

/// Attribute key: hardware encoder present.
pub const ATTR_ENCODER: &str = "encoder";
/// Attribute key: v3 context queues enabled.
pub const ATTR_CTX3: &str = "ctx3";
/// Attribute key: display heads.
pub const ATTR_HEADS: &str = "heads";
/// Simulator option (not a configuration attribute): the state version a simulated
/// device produces, `version=N` in [`mdevmig_plugin_api::SimOptions::attributes`].
pub const SIM_VERSION_KEY: &str = "version";

/// A simgpu device type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GpuType {
    name: &'static str,
    fb_pages: u32,
    dirty_cap: u32,
}

/// `vgpu-64m`.
pub const VGPU_64M: GpuType = GpuType {
    name: "vgpu-64m",
    fb_pages: 16_384,
    dirty_cap: 256,
};
/// `vgpu-256m`.
pub const VGPU_256M: GpuType = GpuType {
    name: "vgpu-256m",
    fb_pages: 65_536,
    dirty_cap: 1024,
};
/// `vgpu-1g`.
pub const VGPU_1G: GpuType = GpuType {
    name: "vgpu-1g",
    fb_pages: 262_144,
    dirty_cap: 1024,
};
/// A 64 KiB type for fuzzing the loader; not offered by the plugin.
pub(crate) const VGPU_FUZZ: GpuType = GpuType {
    name: "vgpu-fuzz",
    fb_pages: 16,
    dirty_cap: 4,
};

/// The device type names, in [`GpuType::ALL`] order.
pub const DEVICE_TYPES: &[&str] = &["vgpu-64m", "vgpu-256m", "vgpu-1g"];

impl GpuType {
    /// The three types.
    pub const ALL: [GpuType; 3] = [VGPU_64M, VGPU_256M, VGPU_1G];

    /// The type of an mdev type name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name == name)
    }

    /// The mdev type name.
    pub const fn name(self) -> &'static str {
        self.name
    }

    /// Framebuffer pages.
    pub const fn fb_pages(self) -> u32 {
        self.fb_pages
    }

    /// Framebuffer bytes.
    pub fn fb_len(self) -> u64 {
        u64::from(self.fb_pages).saturating_mul(PAGE_SIZE_U64)
    }

    /// Pages the `fb-dirty` section can carry.
    pub const fn dirty_cap(self) -> u32 {
        self.dirty_cap
    }
}

/// A device's completed configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `encoder=on`.
    pub encoder: bool,
    /// `ctx3=on`.
    pub ctx3: bool,
    /// `heads`, 1..=4.
    pub heads: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            encoder: false,
            ctx3: false,
            heads: 1,
        }
    }
}

fn on_off(key: &str, value: &str) -> Result<bool, VendorError> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(VendorError::new(
            codes::ATTRIBUTE,
            format!("attribute {key}={value:?} must be \"on\" or \"off\""),
        )),
    }
}

impl Config {
    /// Parses attributes, filling defaults; `ctx3_known` is false in plugin builds
    /// that predate state version 3 (they refuse `ctx3=on`).
    pub fn parse(attributes: &BTreeMap<String, String>, ctx3_known: bool) -> Result<Self, VendorError> {
        let mut c = Config::default();
        for (key, value) in attributes {
            match key.as_str() {
                ATTR_ENCODER => c.encoder = on_off(key, value)?,
                ATTR_CTX3 => c.ctx3 = on_off(key, value)?,
                ATTR_HEADS => {
                    c.heads = match value.as_str() {
                        "1" => 1,
                        "2" => 2,
                        "3" => 3,
                        "4" => 4,
                        _ => {
                            return Err(VendorError::new(
                                codes::ATTRIBUTE,
                                format!("attribute heads={value:?} must be 1, 2, 3 or 4"),
                            ))
                        }
                    }
                }
                _ => {
                    return Err(VendorError::new(
                        codes::ATTRIBUTE,
                        format!("simgpu has no attribute {key:?}; it has encoder, ctx3 and heads"),
                    ))
                }
            }
        }
        if c.ctx3 && !ctx3_known {
            return Err(VendorError::new(
                codes::ATTRIBUTE,
                "ctx3=on needs state version 3, which this simgpu plugin does not know",
            ));
        }
        Ok(c)
    }

    /// The completed attribute map.
    pub fn to_attributes(self) -> BTreeMap<String, String> {
        let word = |b: bool| if b { "on" } else { "off" }.to_owned();
        BTreeMap::from([
            (ATTR_CTX3.to_owned(), word(self.ctx3)),
            (ATTR_ENCODER.to_owned(), word(self.encoder)),
            (ATTR_HEADS.to_owned(), self.heads.to_string()),
        ])
    }
}

/// The type named by `device_type`, or a [`codes::DEVICE_TYPE`] error.
pub fn gpu_type(device_type: &str) -> Result<GpuType, VendorError> {
    GpuType::from_name(device_type).ok_or_else(|| {
        VendorError::new(
            codes::DEVICE_TYPE,
            format!(
                "simgpu has device types {}, not {device_type:?}",
                DEVICE_TYPES.join(", ")
            ),
        )
    })
}

/// The type and configuration of `device`.
pub fn device_config(device: &DeviceInfo, ctx3_known: bool) -> Result<(GpuType, Config), VendorError> {
    let ty = gpu_type(&device.device_type)?;
    let config = Config::parse(&device.attributes, ctx3_known)?;
    Ok((ty, config))
}
