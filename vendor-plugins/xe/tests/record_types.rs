//! The record types the plugin declares (`record_types`, what `mdevmig schema
//! dump` reports) are exactly the ones its validator enforces: every declared
//! type is accepted, every other value of the type byte is refused, and every
//! declared type is mandatory: the validator refuses a stream without it.

use std::collections::{BTreeMap, BTreeSet};

use mdevmig_plugin_api::{DeviceInfo, VendorPlugin};
use mdevmig_xe::format::{Header, PacketType, HEADER_LEN};
use mdevmig_xe::testing::packets;
use mdevmig_xe::{codes, Config, StreamValidator, XePlugin, XE_VF_TINY};

fn declared() -> Vec<mdevmig_plugin_api::RecordTypeSpec> {
    let p = XePlugin::new();
    let device = DeviceInfo {
        vendor: "xe".into(),
        device_type: "xe-vf-64m".into(),
        attributes: p.configure("xe-vf-64m", &BTreeMap::new()).unwrap(),
        ..DeviceInfo::default()
    };
    let spec = p.sections(&device, 1).unwrap().remove(0);
    p.record_types(&device, 1, &spec)
}

fn run(config: &Config, stream: &[u8]) -> Result<(), &'static str> {
    let mut v = StreamValidator::new(config);
    v.feed(stream).map_err(|e| e.code)?;
    v.finish().map_err(|e| e.code)
}

fn type_of(packet: &[u8]) -> u8 {
    packet[1]
}

#[test]
fn the_declared_types_are_the_six_driver_types_all_mandatory() {
    let d = declared();
    let got: Vec<(u64, &str, bool)> = d.iter().map(|r| (r.code, r.name.as_str(), r.optional)).collect();
    assert_eq!(
        got,
        [
            (1, "descriptor", false),
            (2, "trailer", false),
            (3, "ggtt", false),
            (4, "mmio", false),
            (5, "guc", false),
            (6, "vram", false)
        ]
    );
    // Only for the plugin's section and versions.
    let p = XePlugin::new();
    let device = DeviceInfo {
        vendor: "xe".into(),
        device_type: "xe-vf-64m".into(),
        ..DeviceInfo::default()
    };
    let mut spec = p.sections(&device, 1).unwrap().remove(0);
    assert!(p.record_types(&device, 2, &spec).is_empty());
    spec.name = "xe.other".into();
    assert!(p.record_types(&device, 1, &spec).is_empty());
}

#[test]
fn every_declared_type_is_accepted_and_every_other_refused() {
    let config = Config::new(XE_VF_TINY);
    let pkts = packets(&config, 3);
    let codes_declared: BTreeSet<u8> = declared().iter().map(|r| u8::try_from(r.code).unwrap()).collect();
    // A valid stream carries each declared type, and only those.
    assert_eq!(run(&config, &pkts.concat()), Ok(()));
    let present: BTreeSet<u8> = pkts.iter().map(|p| type_of(p)).collect();
    assert_eq!(present, codes_declared);
    // Any other type byte, in place of the MMIO packet's, is refused as unknown
    // (Xe headers have no optional flag, so nothing is skipped).
    let mmio = pkts
        .iter()
        .position(|p| type_of(p) == PacketType::MMIO.0)
        .unwrap();
    for ty in (0..=u8::MAX).filter(|t| !codes_declared.contains(t)) {
        let mut p = pkts.clone();
        let mut h = Header::decode(p[mmio][..HEADER_LEN].try_into().unwrap());
        h.ty = PacketType(ty);
        p[mmio][..HEADER_LEN].copy_from_slice(&h.encode());
        assert_eq!(
            run(&config, &p.concat()),
            Err(codes::UNKNOWN_TYPE),
            "type {ty:#04x}"
        );
    }
}

#[test]
fn every_declared_type_is_mandatory() {
    let config = Config::new(XE_VF_TINY);
    let pkts = packets(&config, 4);
    for r in declared() {
        assert!(!r.optional);
        let code = u8::try_from(r.code).unwrap();
        let without: Vec<u8> = pkts
            .iter()
            .filter(|p| type_of(p) != code)
            .flatten()
            .copied()
            .collect();
        let refused = run(&config, &without);
        assert!(refused.is_err(), "a stream without {} is accepted", r.name);
        let expected = match code {
            1 => codes::DESCRIPTOR_NOT_FIRST,
            2 => codes::MISSING_TRAILER,
            _ => codes::MISSING_PACKET,
        };
        assert_eq!(refused, Err(expected), "{}", r.name);
    }
}
