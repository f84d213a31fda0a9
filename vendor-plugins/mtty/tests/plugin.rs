//! MttyPlugin as the broker drives it.

use std::collections::BTreeMap;

use mdevmig_mtty::{codes, MttyPlugin, MttyState, MttyType};
use mdevmig_plugin_api::{DeviceInfo, SectionKind, SectionLayout, SectionSpec, VendorPlugin, VersionWindow};

fn device(ty: &str) -> DeviceInfo {
    DeviceInfo {
        vendor: "mtty".into(),
        device_type: ty.into(),
        ..DeviceInfo::default()
    }
}

fn expected_spec() -> SectionSpec {
    SectionSpec {
        name: "mtty.state".into(),
        version: 1,
        required: true,
        capability: None,
        max_len: 96,
        kind: SectionKind::Structured,
        streamed: false,
    }
}

#[test]
fn identity_and_version_windows() {
    let p = MttyPlugin;
    assert_eq!(p.vendor(), "mtty");
    assert_eq!(p.device_types(), ["mtty-1", "mtty-2"]);
    assert!(!p.plugin_version().is_empty());
    for ty in p.device_types() {
        assert_eq!(p.produces(ty), Some(VersionWindow::new(1, 1)));
        assert_eq!(p.loads(ty), Some(VersionWindow::new(1, 1)));
    }
    // Usable as a trait object, as the broker holds plugins.
    let boxed: Box<dyn VendorPlugin> = Box::new(MttyPlugin);
    assert_eq!(boxed.vendor(), "mtty");
}

#[test]
fn configure_fills_in_the_port_count() {
    let p = MttyPlugin;
    for (ty, ports) in [("mtty-1", "1"), ("mtty-2", "2")] {
        let want = BTreeMap::from([("ports".to_owned(), ports.to_owned())]);
        assert_eq!(p.configure(ty, &BTreeMap::new()).unwrap(), want);
        assert_eq!(p.configure(ty, &want).unwrap(), want);
        // A completed configuration is accepted everywhere a device is.
        let mut d = device(ty);
        d.attributes = want;
        assert!(p.sections(&d, 1).is_ok());
    }
}

#[test]
fn one_structured_required_section_without_framing() {
    let p = MttyPlugin;
    for ty in MttyType::ALL {
        let d = device(ty.device_type());
        assert_eq!(p.sections(&d, 1).unwrap(), vec![expected_spec()]);
        let len = ty.state_len() as u64;
        assert_eq!(
            p.layout(&d, 1, len).unwrap(),
            vec![SectionLayout {
                spec: expected_spec(),
                framing_len: 0,
                len,
            }]
        );
        assert!(p.framing(&expected_spec(), len).is_empty());
    }
}

#[test]
fn states_of_the_destination_type_validate() {
    let p = MttyPlugin;
    for ty in MttyType::ALL {
        let d = device(ty.device_type());
        for state in [MttyState::default_for(ty), MttyState::busy_for(ty)] {
            p.validate_section(&d, &expected_spec(), &state.to_bytes())
                .unwrap();
        }
    }
}

#[test]
fn a_state_of_the_other_type_is_refused_by_port_count() {
    let p = MttyPlugin;
    let two = MttyState::busy_for(MttyType::Mtty2).to_bytes();
    let one = MttyState::busy_for(MttyType::Mtty1).to_bytes();
    let e = p.validate_section(&device("mtty-1"), &expected_spec(), &two);
    assert_eq!(e.unwrap_err().code, codes::PORT_COUNT);
    let e = p.validate_section(&device("mtty-2"), &expected_spec(), &one);
    assert_eq!(e.unwrap_err().code, codes::PORT_COUNT);
}

#[test]
fn conversion_is_not_offered() {
    let p = MttyPlugin;
    let e = p.convert(&device("mtty-2"), 1, 2, &[expected_spec()]);
    assert_eq!(e.unwrap_err().code, "vendor.cannot_convert");
}
