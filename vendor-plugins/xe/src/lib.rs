//! `mdevmig-xe`: the Intel Xe SR-IOV VF migration packet stream, bit-exact with
//! what the kernel's `xe-vfio-pci` driver (`drivers/vfio/pci/xe/main.c`) carries on
//! the VFIO migration data fd, validated as it streams before the destination
//! kernel sees it.
//!
//! - [`format`](mod@format): the 24-byte packet header, packet types, size maxima, the
//!   descriptor's KLVs, encoders;
//! - [`profile`]: device types (VF profiles `xe-vf-64m`, `xe-vf-1g`, `xe-vf-2g`,
//!   `xe-vf-4g`) and attributes (`tiles`, `gts`, `devid`, `revid`);
//! - [`validate`]: [`StreamValidator`], the streaming validator (bytes in any split,
//!   bounded memory, refuses at the first bad packet);
//! - [`XeModel`]: the simulated VF (VRAM generated on demand, pre-copy re-sends,
//!   a deliberately wrong length estimate, see [`estimate_error`]);
//! - [`XePlugin`]: the [`mdevmig_plugin_api::VendorPlugin`] (vendor `xe`, state
//!   version 1, one streamed record section `xe.packets`) and
//!   [`mdevmig_plugin_api::SimProvider`];
//! - [`codes`]: every error code;
//! - [`testing`]: valid streams for tests and fuzzers.
//!
//! The format, what the kernel checks and what it misses, and what this plugin adds
//! are in `FORMAT.md` next to this crate's `Cargo.toml`.

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
pub mod format;
pub mod pagegen;
mod plugin;
pub mod profile;
mod sim;
pub mod testing;
pub mod validate;

pub use format::{Header, PacketType, HEADER_LEN};
pub use plugin::{XePlugin, SECTION, SECTION_VERSION, WINDOW};
pub use profile::{Config, XeType, DEVICE_TYPES, XE_VF_1G, XE_VF_2G, XE_VF_4G, XE_VF_64M, XE_VF_TINY};
pub use sim::{estimate_error, XeModel, PAGES_PER_ROUND, RAW_STORE_CAP, SIM_DIRTY_KEY};
pub use validate::{PacketSink, StreamValidator, XeFormat};

/// The vendor id.
pub const VENDOR: &str = "xe";
