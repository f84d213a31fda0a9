//! The VendorPlugin surface: types, windows, configuration, sections, layout,
//! conversion.

use std::collections::BTreeMap;

use mdevmig_hisi_acc::codes;
use mdevmig_hisi_acc::plugin::{parse_number, SECTION_NAME};
use mdevmig_hisi_acc::{AccVfData, HisiAccPlugin};
use mdevmig_plugin_api::{
    DeviceInfo, SectionConversion, SectionKind, VendorError, VendorPlugin, VersionWindow,
};

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn device(ty: &str, pairs: &[(&str, &str)]) -> DeviceInfo {
    DeviceInfo {
        vendor: "hisi_acc".into(),
        device_type: ty.into(),
        attributes: attrs(pairs),
        capabilities: Default::default(),
    }
}

#[track_caller]
fn code_of<T: std::fmt::Debug>(r: Result<T, VendorError>) -> &'static str {
    let e = r.expect_err("expected a rejection");
    assert!(codes::TABLE.iter().any(|(c, _)| *c == e.code), "{}", e.code);
    e.code
}

#[test]
fn identity_and_windows() {
    let p = HisiAccPlugin;
    assert_eq!(p.vendor(), "hisi_acc");
    assert_eq!(p.device_types(), &["hisi-sec-vf", "hisi-hpre-vf", "hisi-zip-vf"]);
    for t in p.device_types() {
        assert_eq!(p.produces(t), Some(VersionWindow::new(2, 2)));
        assert_eq!(p.loads(t), Some(VersionWindow::new(1, 2)));
    }
    assert_eq!(p.produces("mtty-1"), None);
    assert_eq!(p.loads("hisi-sec-pf"), None);
    assert!(!p.plugin_version().is_empty());
}

#[test]
fn configure_fills_dev_id_and_normalizes() {
    let p = HisiAccPlugin;
    let got = p
        .configure("hisi-zip-vf", &attrs(&[("qp_num", "0X40"), ("que_iso_cfg", "0")]))
        .unwrap();
    assert_eq!(
        got,
        attrs(&[("dev_id", "0xa251"), ("qp_num", "64"), ("que_iso_cfg", "0x0")])
    );
    // Normalized attributes configure to themselves.
    assert_eq!(p.configure("hisi-zip-vf", &got).unwrap(), got);
    let hpre = p
        .configure(
            "hisi-hpre-vf",
            &attrs(&[("dev_id", "41561"), ("qp_num", "1024"), ("que_iso_cfg", "0x1")]),
        )
        .unwrap();
    assert_eq!(hpre["dev_id"], "0xa259");
}

#[test]
fn configure_refusals() {
    let p = HisiAccPlugin;
    let ok = [("qp_num", "64"), ("que_iso_cfg", "1")];
    assert_eq!(
        code_of(p.configure("hisi-foo-vf", &attrs(&ok))),
        codes::UNKNOWN_DEVICE_TYPE
    );
    let mut extra = ok.to_vec();
    extra.push(("color", "red"));
    assert_eq!(
        code_of(p.configure("hisi-sec-vf", &attrs(&extra))),
        codes::UNKNOWN_ATTRIBUTE
    );
    assert_eq!(
        code_of(p.configure("hisi-sec-vf", &attrs(&[("qp_num", "64")]))),
        codes::MISSING_ATTRIBUTE
    );
    assert_eq!(
        code_of(p.configure("hisi-sec-vf", &attrs(&[("que_iso_cfg", "1")]))),
        codes::MISSING_ATTRIBUTE
    );
    for bad_qp in ["0", "1025", "-1", "+5", " 5", "", "0x", "5x", "4294967296", "1e3"] {
        assert_eq!(
            code_of(p.configure("hisi-sec-vf", &attrs(&[("qp_num", bad_qp), ("que_iso_cfg", "1")]))),
            codes::BAD_ATTRIBUTE,
            "{bad_qp:?}"
        );
    }
    let mut wrong_id = ok.to_vec();
    wrong_id.push(("dev_id", "0xa259"));
    assert_eq!(
        code_of(p.configure("hisi-sec-vf", &attrs(&wrong_id))),
        codes::BAD_ATTRIBUTE
    );
}

#[test]
fn parse_number_forms() {
    assert_eq!(parse_number("0"), Some(0));
    assert_eq!(parse_number("4294967295"), Some(u32::MAX));
    assert_eq!(parse_number("0xFFFFffff"), Some(u32::MAX));
    assert_eq!(parse_number("0x0a256"), Some(0xa256));
    for bad in ["", "0x", "0x-1", "+1", "1 ", "0b1", "0o7", "abc", "0x1_0"] {
        assert_eq!(parse_number(bad), None, "{bad:?}");
    }
}

#[test]
fn sections_and_layout() {
    let p = HisiAccPlugin;
    let d = device("hisi-sec-vf", &[("qp_num", "64"), ("que_iso_cfg", "1")]);
    for v in [1u32, 2] {
        let s = p.sections(&d, v).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, SECTION_NAME);
        assert_eq!(u32::from(s[0].version), v);
        assert!(s[0].required);
        assert_eq!(s[0].capability, None);
        assert_eq!(s[0].max_len, 176);
        assert_eq!(s[0].kind, SectionKind::Structured);
        for len in [176u64, 40] {
            let l = p.layout(&d, v, len).unwrap();
            assert_eq!(l.len(), 1);
            assert_eq!((l[0].framing_len, l[0].len), (0, len));
            assert_eq!(l[0].spec, s[0]);
            assert!(p.framing(&l[0].spec, len).is_empty());
        }
        for len in [0u64, 39, 41, 175, 177, u64::MAX] {
            assert_eq!(code_of(p.layout(&d, v, len)), codes::BAD_LENGTH);
        }
    }
    for v in [0u32, 3, 65536 + 2] {
        assert_eq!(code_of(p.sections(&d, v)), codes::UNSUPPORTED_VERSION);
        assert_eq!(code_of(p.layout(&d, v, 176)), codes::UNSUPPORTED_VERSION);
    }
    let other = device("vgpu-64m", &[]);
    assert_eq!(code_of(p.sections(&other, 2)), codes::UNKNOWN_DEVICE_TYPE);
}

#[test]
fn validate_section_refusals_outside_the_bytes() {
    let p = HisiAccPlugin;
    let d = device("hisi-sec-vf", &[("qp_num", "64"), ("que_iso_cfg", "1")]);
    let data = AccVfData::sample(0xa256, 64, 1, true).to_bytes();
    let mut spec = p.sections(&d, 2).unwrap().remove(0);
    p.validate_section(&d, &spec, &data).unwrap();
    spec.name = "hisi_acc.other".into();
    assert_eq!(
        code_of(p.validate_section(&d, &spec, &data)),
        codes::UNKNOWN_SECTION
    );
    let mut spec = p.sections(&d, 2).unwrap().remove(0);
    spec.version = 3;
    assert_eq!(
        code_of(p.validate_section(&d, &spec, &data)),
        codes::UNSUPPORTED_VERSION
    );
    let spec = p.sections(&d, 2).unwrap().remove(0);
    let missing = device("hisi-sec-vf", &[("que_iso_cfg", "1")]);
    assert_eq!(
        code_of(p.validate_section(&missing, &spec, &data)),
        codes::MISSING_ATTRIBUTE
    );
    // A zip VF destination refuses a sec VF state (dev_id comes from the type).
    let zip = device("hisi-zip-vf", &[("qp_num", "64"), ("que_iso_cfg", "1")]);
    assert_eq!(
        code_of(p.validate_section(&zip, &spec, &data)),
        codes::DEV_ID_MISMATCH
    );
}

#[test]
fn convert_keeps_same_version_and_refuses_to_fake_a_rewrite() {
    let p = HisiAccPlugin;
    let d = device("hisi-hpre-vf", &[("qp_num", "8"), ("que_iso_cfg", "0")]);
    let s2 = p.sections(&d, 2).unwrap();
    assert_eq!(
        p.convert(&d, 2, 2, &s2).unwrap(),
        vec![SectionConversion::Keep(s2[0].clone())]
    );
    let s1 = p.sections(&d, 1).unwrap();
    assert_eq!(code_of(p.convert(&d, 2, 1, &s2)), codes::CANNOT_CONVERT);
    assert_eq!(code_of(p.convert(&d, 1, 2, &s1)), codes::CANNOT_CONVERT);
    assert_eq!(code_of(p.convert(&d, 2, 3, &s2)), codes::UNSUPPORTED_VERSION);
}

#[test]
fn samples_validate_for_every_type_and_version() {
    let p = HisiAccPlugin;
    for (ty, id) in [
        ("hisi-sec-vf", 0xa256),
        ("hisi-hpre-vf", 0xa259),
        ("hisi-zip-vf", 0xa251),
    ] {
        let d = device(ty, &[("qp_num", "2"), ("que_iso_cfg", "0x0")]);
        for (v, v2) in [(1u32, false), (2, true)] {
            let spec = p.sections(&d, v).unwrap().remove(0);
            let full = AccVfData::sample(id, 2, 0, v2);
            p.validate_section(&d, &spec, &full.to_bytes()).unwrap();
            p.validate_section(&d, &spec, &full.match_only().to_bytes())
                .unwrap();
        }
    }
}

#[test]
fn code_table_is_unique_and_namespaced() {
    let mut seen = std::collections::BTreeSet::new();
    for (code, meaning) in codes::TABLE {
        assert!(code.starts_with("vendor."), "{code}");
        assert!(seen.insert(*code), "duplicate {code}");
        assert!(!meaning.is_empty());
    }
    // Every `codes::NAME` the sources use is in the table.
    let src = concat!(
        include_str!("../src/format.rs"),
        include_str!("../src/plugin.rs"),
        include_str!("../src/lib.rs")
    );
    let consts = include_str!("../src/codes.rs");
    for (i, _) in src.match_indices("codes::") {
        let name: String = src[i + 7..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        let decl = format!("pub const {name}: &str = \"");
        let at = consts
            .find(&decl)
            .unwrap_or_else(|| panic!("{name} not declared"));
        let code: String = consts[at + decl.len()..]
            .chars()
            .take_while(|c| *c != '"')
            .collect();
        assert!(seen.contains(code.as_str()), "{code} missing from TABLE");
    }
}
