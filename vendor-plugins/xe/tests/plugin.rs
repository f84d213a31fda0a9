//! The plugin as the broker uses it: windows, configuration, the one streamed
//! record section, the record validator over a simulated stream, the sim provider.

use std::collections::BTreeMap;

use mdevmig_plugin_api::{DeviceInfo, SectionKind, SimOptions, SimProvider, VendorPlugin};
use mdevmig_xe::testing::read_stream;
use mdevmig_xe::{codes, XePlugin, SECTION};

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn device(ty: &str, pairs: &[(&str, &str)]) -> DeviceInfo {
    DeviceInfo {
        vendor: "xe".into(),
        device_type: ty.into(),
        attributes: XePlugin.configure(ty, &attrs(pairs)).unwrap(),
        ..DeviceInfo::default()
    }
}

#[test]
fn identity_windows_and_configuration() {
    let p = XePlugin::new();
    assert_eq!(p.vendor(), "xe");
    assert_eq!(
        p.device_types(),
        &["xe-vf-64m", "xe-vf-1g", "xe-vf-2g", "xe-vf-4g"]
    );
    for t in p.device_types() {
        assert_eq!(p.produces(t).map(|w| (w.oldest, w.newest)), Some((1, 1)));
        assert_eq!(p.loads(t).map(|w| (w.oldest, w.newest)), Some((1, 1)));
    }
    assert!(p.produces("xe-vf-tiny").is_none());
    assert_eq!(
        p.configure("xe-vf-64m", &attrs(&[("x", "1")])).unwrap_err().code,
        codes::ATTRIBUTE
    );
    assert_eq!(
        p.configure("vgpu-64m", &attrs(&[])).unwrap_err().code,
        codes::DEVICE_TYPE
    );
}

#[test]
fn one_streamed_record_section() {
    let p = XePlugin;
    let d = device("xe-vf-1g", &[]);
    let s = p.sections(&d, 1).unwrap();
    assert_eq!(s.len(), 1);
    let spec = &s[0];
    assert_eq!(spec.name, SECTION);
    assert_eq!(spec.kind, SectionKind::Records);
    assert!(spec.streamed && spec.required && spec.capability.is_none());
    // Every resource once plus twice the VRAM in re-sends.
    assert!(
        spec.max_len > 3 << 30 && spec.max_len < (3 << 30) + (64 << 20),
        "{}",
        spec.max_len
    );
    assert_eq!(p.sections(&d, 2).unwrap_err().code, codes::UNSUPPORTED_VERSION);
    let l = p.layout(&d, 1, 12345).unwrap();
    assert_eq!((l[0].framing_len, l[0].len), (0, 12345));
    assert_eq!(&l[0].spec, spec);
    assert!(p.framing(spec, 10).is_empty());
    assert_eq!(
        p.validate_section(&d, spec, &[]).unwrap_err().code,
        codes::RECORD_STRUCTURED
    );
    let mut other = spec.clone();
    other.name = "xe.other".into();
    assert_eq!(
        p.record_validator(&d, &other).err().unwrap().code,
        codes::UNKNOWN_SECTION
    );
}

#[test]
fn the_record_validator_checks_a_simulated_stream_against_the_destination() {
    let p = XePlugin;
    let opts = SimOptions {
        seed: 5,
        attributes: attrs(&[("tiles", "2")]),
    };
    let mut m = p.sim_model("xe-vf-64m", &opts).unwrap();
    let stream = read_stream(m.as_mut());
    let dst = device("xe-vf-64m", &[("tiles", "2")]);
    let spec = p.sections(&dst, 1).unwrap().remove(0);
    assert!((stream.len() as u64) < spec.max_len);
    let mut v = p.record_validator(&dst, &spec).unwrap();
    for piece in stream.chunks(1 << 20 | 5) {
        v.feed(piece).unwrap();
    }
    v.finish().unwrap();
    // A destination with one tile, or another device id, refuses it.
    for (pairs, code) in [
        (&[][..], codes::UNKNOWN_TILE),
        (
            &[("tiles", "2"), ("devid", "0xe20c")][..],
            codes::DESCRIPTOR_MISMATCH,
        ),
    ] {
        let mut v = p.record_validator(&device("xe-vf-64m", pairs), &spec).unwrap();
        let r = stream
            .chunks(65536)
            .try_for_each(|c| v.feed(c))
            .and_then(|()| v.finish());
        assert_eq!(r.unwrap_err().code, code);
    }
    // The sim provider builds the device the crate's model builds.
    assert!(p.sim_model("xe-vf-tiny", &opts).is_err());
    let mut again = p.sim_model("xe-vf-64m", &opts).unwrap();
    assert_eq!(read_stream(again.as_mut()), stream);
}
