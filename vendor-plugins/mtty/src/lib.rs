//! The mdevmig vendor plugin for the Linux kernel's `mtty` sample driver
//! (`samples/vfio-mdev/mtty.c`, VFIO migration v2 since Linux 6.7).
//!
//! `mtty` emulates a PCI card with one (`mtty-1`) or two (`mtty-2`) 16550-like serial
//! ports whose transmit side loops back into a 16-byte receive FIFO. Its migration data
//! is a raw copy of the kernel's `struct mtty_data` (a 24-byte header and one 36-byte
//! `struct serial_port` per port, host-endian), and the driver loads it back with a
//! `memcpy` after checking only the header. This crate:
//!
//! - decodes and re-encodes that structure bit-exactly ([`format`](mod@format));
//! - refuses images that break invariants the driver keeps for its own states,
//!   above all FIFO indices and counts that would make the destination kernel read or
//!   write outside its 16-byte FIFO ([`validate`](mod@validate));
//! - models what a guest's register accesses do to a port ([`uart`]), so simulated
//!   devices and tests can build states the real driver can reach;
//! - implements [`mdevmig_plugin_api::VendorPlugin`] for the broker ([`MttyPlugin`]).
//!
//! Every rejection carries a stable code listed in [`codes`].

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
mod plugin;
pub mod sim;
pub mod uart;
pub mod validate;

pub use format::{MttyState, MttyType, Rxtx, SerialPort};
pub use plugin::{MttyPlugin, SECTION_NAME, SECTION_VERSION, STATE_VERSION};
pub use validate::validate;
