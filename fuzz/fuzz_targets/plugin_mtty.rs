//! Feeds arbitrary bytes to the mtty plugin's decoder and validator for both device
//! types. Nothing may panic; anything accepted must re-encode to the same bytes and
//! agree with the plugin trait's answer. When the input starts with a state the
//! validator accepts, the bytes after it are replayed as guest register accesses,
//! which must never leave a state the validator refuses (its checks are invariants
//! of the driver).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mdevmig_mtty::{validate, MttyPlugin, MttyState, MttyType};
use mdevmig_plugin_api::{DeviceInfo, VendorPlugin};

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = MttyState::parse(data) {
        assert_eq!(state.to_bytes(), data, "parse accepted what it cannot re-encode");
    }
    let plugin = MttyPlugin;
    let spec = MttyPlugin::section_spec();
    for ty in MttyType::ALL {
        let device = DeviceInfo {
            vendor: "mtty".into(),
            device_type: ty.device_type().into(),
            ..DeviceInfo::default()
        };
        let checked = validate(data, ty);
        let via_trait = plugin.validate_section(&device, &spec, data);
        assert_eq!(checked.as_ref().err(), via_trait.as_ref().err());
        if let Ok(state) = checked {
            assert_eq!(
                state.to_bytes(),
                data,
                "validate accepted what it cannot re-encode"
            );
            assert_eq!(state.mtty_type(), ty);
        }
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        assert_eq!(
            plugin.layout(&device, 1, len).is_ok(),
            data.len() == ty.state_len()
        );

        // A valid state followed by guest accesses: (port, offset | read bit, data).
        let Some((head, ops)) = data.split_at_checked(ty.state_len()) else {
            continue;
        };
        let Ok(mut state) = validate(head, ty) else {
            continue;
        };
        for op in ops.chunks_exact(3) {
            let [port, offset, value] = [op[0], op[1], op[2]];
            let ports = state.ports_mut();
            let index = usize::from(port) % ports.len();
            if offset & 0x80 == 0 {
                ports[index].guest_write(offset & 0x0f, value);
            } else {
                ports[index].guest_read(offset & 0x0f);
            }
            if let Err(e) = state.check() {
                panic!("guest access {op:02x?} broke a driver invariant: {e}");
            }
        }
        assert_eq!(validate(&state.to_bytes(), ty).as_ref(), Ok(&state));
    }
});
