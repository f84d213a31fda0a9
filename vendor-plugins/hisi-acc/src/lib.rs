//! mdevmig vendor plugin for HiSilicon ACC (SEC, HPRE, ZIP) virtual functions.
//!
//! The Linux driver `hisi_acc_vfio_pci` migrates an ACC VF as one raw
//! `struct acc_vf_data` (176 bytes, or its first 40 bytes when the guest driver is
//! not ready). The driver checks only the magic, the V2 major version, the VF device
//! id, the queue-pair count and the queue-isolation setting; it then programs the
//! registers and the four queue DMA addresses from the stream into the device. This
//! crate parses that structure bit-exactly ([`mod@format`]), checks it against the
//! destination before the kernel sees it, and exposes the result to the broker as
//! [`HisiAccPlugin`] ([`plugin`]). Error codes are in [`codes`].

#![forbid(unsafe_code)]
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::as_conversions
)]

pub mod codes;
pub mod format;
pub mod plugin;

pub use format::{AccVfData, Destination, Magic, QmRegs, ACC_VF_DATA_LEN, QM_MATCH_SIZE};
pub use plugin::HisiAccPlugin;
