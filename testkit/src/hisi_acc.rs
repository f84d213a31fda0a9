//! The `plugin_hisi_acc` fuzz target's body (`fuzz/fuzz_targets/plugin_hisi_acc.rs`),
//! which `tests/mutation.rs` also runs on the committed regressions and seeds.

use std::collections::BTreeMap;

use mdevmig_plugin_api::{DeviceInfo, VendorPlugin};

use mdevmig_hisi_acc::format::{AccVfData, Destination};
use mdevmig_hisi_acc::plugin::{section_spec, HisiAccPlugin, DEVICE_TYPES, VENDOR};

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
