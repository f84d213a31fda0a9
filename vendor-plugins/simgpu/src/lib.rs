//! `simgpu`: a simulated vGPU rich enough to exercise everything a real mdevmig
//! vendor plugin needs — a multi-section raw stream with per-record framing, a
//! gigabyte-sized bulk framebuffer, three state versions (an optional section in
//! v2, a required one in v3), a section bound to a host capability, configuration
//! attributes that must match ("shell" devices), down-conversion, and pre-copy with
//! dirty-page tracking.
//!
//! - [`types`]: device types (`vgpu-64m`, `vgpu-256m`, `vgpu-1g`) and attributes
//!   (`encoder`, `ctx3`, `heads`);
//! - [`record`]: the raw stream's 32-byte record framing and the section list of
//!   each state version;
//! - [`sections`]: the structured sections, decoded and re-encoded bit-exactly,
//!   and their range checks;
//! - [`fbgen`]: the framebuffer's generated pixels;
//! - [`SimGpuPlugin`]: the [`mdevmig_plugin_api::VendorPlugin`] and
//!   [`mdevmig_plugin_api::SimProvider`];
//! - [`SimGpuModel`]: the simulated device.
//!
//! The byte-exact format is in the modules above and in `FORMAT.md` next to this
//! crate's `Cargo.toml`. Every rejection carries a stable code listed in [`codes`].
//!
//! # Raw stream
//!
//! A sequence of records, each a 32-byte header followed by its data, in tag order:
//!
//! ```text
//! header: "SGPU" | tag u16 | version u16 | flags u32 | reserved u32 (0)
//!         | length u64 | check u64 (FNV-1a 64 of the first 24 bytes)
//! ```
//!
//! | tag | section            | kind       | required | data bytes                          | versions |
//! |----:|--------------------|------------|----------|-------------------------------------|----------|
//! | 1   | `simgpu.fb`        | Bulk       | yes      | 64 MiB / 256 MiB / 1 GiB            | 1-3      |
//! | 2   | `simgpu.fb-dirty`  | Structured | yes      | 16 + 4100 × (256 / 1024 / 1024)     | 1-3      |
//! | 3   | `simgpu.regs`      | Structured | yes      | 4096                                | 1-3      |
//! | 4   | `simgpu.telemetry` | Structured | no       | 64                                  | 2-3      |
//! | 5   | `simgpu.ctx3`      | Structured | yes      | 272                                 | 3        |
//! | 6   | `simgpu.encoder`   | Structured | yes, capability `simgpu.hw-encoder` | 256 (`encoder=on` only) | 1-3 |

#![forbid(unsafe_code)]
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]
#![warn(missing_docs)]

pub mod codes;
mod fb;
pub mod fbgen;
mod load;
mod plugin;
pub mod record;
pub mod sections;
mod sim;
mod state;
pub mod types;

pub use plugin::SimGpuPlugin;
pub use record::{Section, ENCODER_CAPABILITY, FRAMING_LEN};
pub use sim::{SimGpuModel, PAGES_PER_ROUND};
pub use types::{Config, GpuType, DEVICE_TYPES, NEWEST, PAGE_SIZE, VGPU_1G, VGPU_256M, VGPU_64M, WINDOW};

/// The vendor id.
pub const VENDOR: &str = "simgpu";
