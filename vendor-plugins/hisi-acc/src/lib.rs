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

/// Entry points for the fuzz target (`fuzz/fuzz_targets/plugin_hisi_acc.rs`). Not API.
#[doc(hidden)]
pub mod fuzzing {
    use std::collections::BTreeMap;

    use mdevmig_plugin_api::{DeviceInfo, VendorPlugin};

    use crate::format::{AccVfData, Destination};
    use crate::plugin::{section_spec, HisiAccPlugin, DEVICE_TYPES, VENDOR};

    /// Parses `data` as a raw state, checks that an accepted state re-encodes to the
    /// same bytes, and runs every check: against a destination that matches the state
    /// (so the content checks are reached) and through the plugin for each device type
    /// and state version.
    #[expect(
        clippy::panic,
        reason = "a fuzz target reports a broken invariant by panicking"
    )]
    pub fn parse_and_validate(data: &[u8]) {
        let plugin = HisiAccPlugin::new();
        if let Ok(state) = AccVfData::parse(data) {
            if state.to_bytes() != data {
                panic!("accepted hisi_acc state does not re-encode to its input");
            }
            if state.encoded_len() != data.len() {
                panic!("encoded_len disagrees with the input length");
            }
            let same = Destination {
                dev_id: state.dev_id,
                qp_num: state.qp_num,
                que_iso_cfg: state.que_iso_cfg,
            };
            let _ = state.check(&same, None);
            let _ = state.check(&same, Some(1));
            let _ = state.check(&same, Some(2));
        }
        for device_type in DEVICE_TYPES {
            let device = DeviceInfo {
                vendor: VENDOR.to_owned(),
                device_type: (*device_type).to_owned(),
                attributes: BTreeMap::from([
                    ("qp_num".to_owned(), "64".to_owned()),
                    ("que_iso_cfg".to_owned(), "0x1".to_owned()),
                ]),
                capabilities: Default::default(),
            };
            for version in [1u16, 2] {
                let _ = plugin.validate_section(&device, &section_spec(version), data);
            }
        }
    }
}
