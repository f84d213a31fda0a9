//! SimGpuPlugin as the broker drives it: identity, windows, configuration,
//! sections per version, layout and framing, conversions, and what every
//! (source version, destination window) pair comes to.

mod common;

use std::collections::BTreeMap;

use common::*;
use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::{
    DeviceInfo, SectionConversion, SectionKind, SectionSpec, VendorPlugin, VersionWindow,
};
use mdevmig_simgpu::record::{min_version, RecordHeader};
use mdevmig_simgpu::{codes, Config, Section, SimGpuPlugin, FRAMING_LEN, VGPU_64M};

fn spec(name: &str, required: bool, cap: Option<&str>, max_len: u64, kind: SectionKind) -> SectionSpec {
    SectionSpec {
        name: name.into(),
        version: 1,
        required,
        capability: cap.map(String::from),
        max_len,
        kind,
        streamed: false,
    }
}

fn expected_sections(version: u32, encoder: bool) -> Vec<SectionSpec> {
    use SectionKind::*;
    let mut v = vec![
        spec("simgpu.fb", true, None, 64 << 20, Bulk),
        spec("simgpu.fb-dirty", true, None, 16 + 4100 * 256, Structured),
        spec("simgpu.regs", true, None, 4096, Structured),
    ];
    if version >= 2 {
        v.push(spec("simgpu.telemetry", false, None, 64, Structured));
    }
    if version >= 3 {
        v.push(spec("simgpu.ctx3", true, None, 272, Structured));
    }
    if encoder {
        v.push(spec(
            "simgpu.encoder",
            true,
            Some("simgpu.hw-encoder"),
            256,
            Structured,
        ));
    }
    v
}

#[test]
fn identity_and_windows() {
    let p = SimGpuPlugin::new();
    assert_eq!(p.vendor(), "simgpu");
    assert_eq!(p.device_types(), ["vgpu-64m", "vgpu-256m", "vgpu-1g"]);
    assert!(!p.plugin_version().is_empty());
    for ty in p.device_types() {
        assert_eq!(p.produces(ty), Some(VersionWindow::new(1, 3)));
        assert_eq!(p.loads(ty), Some(VersionWindow::new(1, 3)));
    }
    assert_eq!(p.produces("mtty-1"), None);
    assert_eq!(p.loads("vgpu-2g"), None);
    let w = |a, b| VersionWindow::new(a, b);
    let old = SimGpuPlugin::with_windows(w(1, 2), w(1, 2)).unwrap();
    assert_eq!(old.loads("vgpu-1g"), Some(w(1, 2)));
    assert_eq!(old.known(), 2);
    assert!(SimGpuPlugin::with_windows(w(0, 2), w(1, 2)).is_none());
    assert!(SimGpuPlugin::with_windows(w(1, 4), w(1, 2)).is_none());
    assert!(SimGpuPlugin::with_windows(w(2, 1), w(1, 2)).is_none());
    let boxed: Box<dyn VendorPlugin> = Box::new(SimGpuPlugin::new());
    assert_eq!(boxed.vendor(), "simgpu");
}

#[test]
fn configure_fills_defaults_and_refuses_the_unknown() {
    let p = SimGpuPlugin::new();
    let full = attrs(&[("ctx3", "off"), ("encoder", "off"), ("heads", "1")]);
    assert_eq!(p.configure("vgpu-64m", &BTreeMap::new()).unwrap(), full);
    assert_eq!(p.configure("vgpu-64m", &full).unwrap(), full);
    let set = attrs(&[("encoder", "on"), ("heads", "4")]);
    assert_eq!(
        p.configure("vgpu-1g", &set).unwrap(),
        attrs(&[("ctx3", "off"), ("encoder", "on"), ("heads", "4")])
    );
    for bad in [
        &[("encoder", "yes")][..],
        &[("ctx3", "")],
        &[("heads", "0")],
        &[("heads", "5")],
        &[("heads", "01")],
        &[("heads", "+1")],
        &[("colour", "red")],
        &[("version", "2")],
    ] {
        assert_eq!(
            p.configure("vgpu-64m", &attrs(bad)).unwrap_err().code,
            codes::ATTRIBUTE,
            "{bad:?}"
        );
    }
    assert_eq!(
        p.configure("vgpu-2g", &BTreeMap::new()).unwrap_err().code,
        codes::DEVICE_TYPE
    );
    // A build without version 3 has no ctx3 feature to turn on, but fills ctx3=off
    // so its attributes match a newer source's.
    let w = VersionWindow::new(1, 2);
    let old = SimGpuPlugin::with_windows(w, w).unwrap();
    assert_eq!(old.configure("vgpu-64m", &BTreeMap::new()).unwrap(), full);
    assert_eq!(
        old.configure("vgpu-64m", &attrs(&[("ctx3", "on")]))
            .unwrap_err()
            .code,
        codes::ATTRIBUTE
    );
}

#[test]
fn sections_per_version() {
    let p = SimGpuPlugin::new();
    for encoder in [false, true] {
        let d = device(
            "vgpu-64m",
            &[("encoder", if encoder { "on" } else { "off" })],
            &[],
        );
        for v in 1..=3 {
            assert_eq!(
                p.sections(&d, v).unwrap(),
                expected_sections(v, encoder),
                "v{v} encoder {encoder}"
            );
        }
        for v in [0, 4] {
            assert_eq!(p.sections(&d, v).unwrap_err().code, codes::UNSUPPORTED_VERSION);
        }
    }
    let w = VersionWindow::new(1, 2);
    let old = SimGpuPlugin::with_windows(w, w).unwrap();
    let d = device("vgpu-64m", &[], &[]);
    assert_eq!(old.sections(&d, 3).unwrap_err().code, codes::UNSUPPORTED_VERSION);
    assert_eq!(old.sections(&d, 2).unwrap(), expected_sections(2, false));
    // Device checks.
    let mut bad = d.clone();
    bad.device_type = "vgpu-2g".into();
    assert_eq!(p.sections(&bad, 1).unwrap_err().code, codes::DEVICE_TYPE);
    let mut bad = d.clone();
    bad.attributes.insert("heads".into(), "9".into());
    assert_eq!(p.sections(&bad, 1).unwrap_err().code, codes::ATTRIBUTE);
    // Sizes of the other types; the 1g state is over 1 GiB.
    let d = device("vgpu-1g", &[], &[]);
    let s = p.sections(&d, 3).unwrap();
    assert_eq!(s[0].max_len, 1 << 30);
    assert_eq!(s[1].max_len, 16 + 4100 * 1024);
    let d = device("vgpu-256m", &[], &[]);
    assert_eq!(p.sections(&d, 1).unwrap()[0].max_len, 256 << 20);
}

#[test]
fn min_version_is_the_newest_required_section() {
    for encoder in [false, true] {
        let c = Config {
            encoder,
            ctx3: false,
            heads: 1,
        };
        assert_eq!(min_version(1, c), 1);
        assert_eq!(min_version(2, c), 1, "telemetry is optional");
        assert_eq!(min_version(3, c), 3, "ctx3 is required");
    }
}

#[test]
fn layout_and_framing_match_the_raw_stream() {
    let p = SimGpuPlugin::new();
    for (pairs, v) in [
        (&[][..], 1u32),
        (&[("encoder", "on")], 2),
        (&[("encoder", "on"), ("ctx3", "on")], 3),
    ] {
        let d = device("vgpu-64m", pairs, &[]);
        let vs = v.to_string();
        let mut mp = pairs.to_vec();
        mp.push(("version", &vs));
        let mut m = model(VGPU_64M, 4, &mp);
        let raw = read_all(&mut m, 1 << 20);
        let layout = p.layout(&d, v, raw.len() as u64).unwrap();
        assert_eq!(
            layout.iter().map(|l| l.spec.clone()).collect::<Vec<_>>(),
            p.sections(&d, v).unwrap()
        );
        let mut off = 0usize;
        for l in &layout {
            assert_eq!(l.framing_len, FRAMING_LEN as u64);
            assert_eq!(l.len, l.spec.max_len);
            let framing = p.framing(&l.spec, l.len);
            assert_eq!(framing.len(), FRAMING_LEN);
            assert_eq!(
                &raw[off..off + FRAMING_LEN],
                framing.as_slice(),
                "{}",
                l.spec.name
            );
            let h = RecordHeader::decode(framing.as_slice().try_into().unwrap()).unwrap();
            assert_eq!(h.length, l.len);
            assert_eq!(Some(h.tag), Section::from_name(&l.spec.name).map(Section::tag));
            let data = &raw[off + FRAMING_LEN..off + FRAMING_LEN + l.len as usize];
            match l.spec.kind {
                SectionKind::Structured => p.validate_section(&d, &l.spec, data).unwrap(),
                SectionKind::Bulk => p.validate_bulk(&d, &l.spec, 0, data).unwrap(),
                SectionKind::Records => panic!("simgpu has no record-structured section"),
            }
            off += FRAMING_LEN + l.len as usize;
        }
        assert_eq!(off, raw.len());
        for wrong in [raw.len() as u64 - 1, raw.len() as u64 + 1, 0] {
            assert_eq!(p.layout(&d, v, wrong).unwrap_err().code, codes::BAD_LENGTH);
        }
    }
    // Framing depends only on name, version and length; unknown names have none.
    let s = spec("simgpu.regs", false, Some("x"), 1, SectionKind::Bulk);
    assert_eq!(
        p.framing(&s, 4096),
        p.framing(
            &spec("simgpu.regs", true, None, 4096, SectionKind::Structured),
            4096
        )
    );
    assert!(p
        .framing(&spec("simgpu.nope", true, None, 1, SectionKind::Structured), 1)
        .is_empty());
}

#[test]
fn validate_bulk_checks_bounds_only() {
    let p = SimGpuPlugin::new();
    let d = device("vgpu-64m", &[], &[]);
    let fb = &expected_sections(1, false)[0];
    let end = 64u64 << 20;
    p.validate_bulk(&d, fb, 0, &[0xff; 4096]).unwrap();
    p.validate_bulk(&d, fb, end - 3, &[1, 2, 3]).unwrap();
    p.validate_bulk(&d, fb, end, &[]).unwrap();
    for (off, len) in [(end - 2, 3usize), (end, 1), (u64::MAX, 1), (u64::MAX - 1, 4)] {
        assert_eq!(
            p.validate_bulk(&d, fb, off, &vec![0; len]).unwrap_err().code,
            codes::BULK_RANGE
        );
    }
    let regs = &expected_sections(1, false)[2];
    assert_eq!(
        p.validate_bulk(&d, regs, 0, &[0]).unwrap_err().code,
        codes::UNKNOWN_SECTION
    );
}

fn plan_names(plan: &[SectionConversion], specs: &[SectionSpec]) -> Vec<String> {
    plan.iter()
        .zip(specs)
        .filter_map(|(c, s)| match c {
            SectionConversion::Keep(k) => {
                assert_eq!(k.name, s.name);
                Some(k.name.clone())
            }
            SectionConversion::Drop => None,
        })
        .collect()
}

#[test]
fn conversion_rules() {
    let p = SimGpuPlugin::new();
    for encoder in ["off", "on"] {
        let off = device("vgpu-64m", &[("ctx3", "off"), ("encoder", encoder)], &[]);
        let on = device("vgpu-64m", &[("ctx3", "on"), ("encoder", encoder)], &[]);
        for from in 1..=3u32 {
            for to in 1..=3u32 {
                let specs = p.sections(&off, from).unwrap();
                let r = p.convert(&off, from, to, &specs);
                if to > from {
                    assert_eq!(r.unwrap_err().code, codes::CANNOT_CONVERT);
                    continue;
                }
                // Keeps exactly the target version's sections, under its specs.
                let plan = r.unwrap();
                let kept: Vec<SectionSpec> = plan
                    .iter()
                    .filter_map(|c| match c {
                        SectionConversion::Keep(s) => Some(s.clone()),
                        SectionConversion::Drop => None,
                    })
                    .collect();
                assert_eq!(kept, p.sections(&off, to).unwrap(), "{from}->{to}");
                let _ = plan_names(&plan, &specs);
                // ctx3=on: anything that drops ctx3 is refused.
                let specs = p.sections(&on, from).unwrap();
                let r = p.convert(&on, from, to, &specs);
                if from == 3 && to < 3 {
                    assert_eq!(r.unwrap_err().code, codes::CANNOT_CONVERT);
                } else {
                    assert_eq!(
                        plan_names(&r.unwrap(), &specs).len(),
                        p.sections(&on, to).unwrap().len()
                    );
                }
            }
        }
        // A section not in the source version, or unknown, is refused.
        let v1 = p.sections(&off, 1).unwrap();
        let v3 = p.sections(&off, 3).unwrap();
        assert_eq!(
            p.convert(&off, 1, 1, &v3).unwrap_err().code,
            codes::UNKNOWN_SECTION
        );
        let mut odd = v1.clone();
        odd[2].version = 2;
        assert_eq!(
            p.convert(&off, 1, 1, &odd).unwrap_err().code,
            codes::UNKNOWN_SECTION
        );
        assert_eq!(
            p.convert(&off, 4, 1, &v1).unwrap_err().code,
            codes::UNSUPPORTED_VERSION
        );
    }
}

/// What a broker concludes for a stream of version `v` (minimum `m`) and a
/// destination loading `w`, using only the plugins' answers.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Shipped as is; the destination skips `skipped` (unknown optional) sections.
    Direct { skipped: Vec<String> },
    /// Converted down to `to`.
    Converted { to: u32 },
    /// Refused with this code.
    Refused(&'static str),
}

fn outcome(src: &SimGpuPlugin, sdev: &DeviceInfo, v: u32, w: VersionWindow) -> Outcome {
    let dst = SimGpuPlugin::with_windows(w, w).unwrap();
    let Ok(dattrs) = dst.configure(&sdev.device_type, &sdev.attributes) else {
        return Outcome::Refused(codes::ATTRIBUTE);
    };
    let ddev = DeviceInfo {
        attributes: dattrs,
        ..sdev.clone()
    };
    let specs = src.sections(sdev, v).unwrap();
    let cfg = Config {
        encoder: sdev.attributes["encoder"] == "on",
        ctx3: sdev.attributes["ctx3"] == "on",
        heads: 1,
    };
    let m = min_version(v, cfg);
    if w.oldest <= v && m <= w.newest {
        let known: Vec<String> = dst
            .sections(&ddev, v.min(w.newest))
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        let mut skipped = Vec::new();
        for s in &specs {
            if !known.contains(&s.name) {
                assert!(
                    !s.required,
                    "a required section unknown to a destination with M <= L"
                );
                skipped.push(s.name.clone());
            }
        }
        return Outcome::Direct { skipped };
    }
    if v < w.oldest {
        return Outcome::Refused(src.convert(sdev, v, w.oldest, &specs).unwrap_err().code);
    }
    match src.convert(sdev, v, w.newest, &specs) {
        Ok(plan) => {
            let kept: Vec<String> = plan_names(&plan, &specs);
            let want: Vec<String> = dst
                .sections(&ddev, w.newest)
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect();
            assert_eq!(kept, want);
            Outcome::Converted { to: w.newest }
        }
        Err(e) => Outcome::Refused(e.code),
    }
}

#[test]
fn every_source_version_and_destination_window() {
    use Outcome::*;
    let src = SimGpuPlugin::new();
    let skip_tm = || Direct {
        skipped: vec!["simgpu.telemetry".into()],
    };
    let direct = || Direct { skipped: vec![] };
    // (v, oldest, newest) -> outcome, for ctx3=off and ctx3=on.
    let cases: &[(u32, u32, u32, Outcome, Outcome)] = &[
        (1, 1, 1, direct(), Refused(codes::ATTRIBUTE)),
        (1, 1, 2, direct(), Refused(codes::ATTRIBUTE)),
        (1, 1, 3, direct(), direct()),
        (1, 2, 2, Refused(codes::CANNOT_CONVERT), Refused(codes::ATTRIBUTE)),
        (
            1,
            2,
            3,
            Refused(codes::CANNOT_CONVERT),
            Refused(codes::CANNOT_CONVERT),
        ),
        (
            1,
            3,
            3,
            Refused(codes::CANNOT_CONVERT),
            Refused(codes::CANNOT_CONVERT),
        ),
        (2, 1, 1, skip_tm(), Refused(codes::ATTRIBUTE)),
        (2, 1, 2, direct(), Refused(codes::ATTRIBUTE)),
        (2, 1, 3, direct(), direct()),
        (2, 2, 2, direct(), Refused(codes::ATTRIBUTE)),
        (2, 2, 3, direct(), direct()),
        (
            2,
            3,
            3,
            Refused(codes::CANNOT_CONVERT),
            Refused(codes::CANNOT_CONVERT),
        ),
        (3, 1, 1, Converted { to: 1 }, Refused(codes::ATTRIBUTE)),
        (3, 1, 2, Converted { to: 2 }, Refused(codes::ATTRIBUTE)),
        (3, 1, 3, direct(), direct()),
        (3, 2, 2, Converted { to: 2 }, Refused(codes::ATTRIBUTE)),
        (3, 2, 3, direct(), direct()),
        (3, 3, 3, direct(), direct()),
    ];
    for (v, o, n, want_off, want_on) in cases {
        let w = VersionWindow::new(*o, *n);
        for (ctx3, want) in [("off", want_off), ("on", want_on)] {
            let sdev = device(
                "vgpu-64m",
                &[("ctx3", ctx3), ("encoder", "on")],
                &["simgpu.hw-encoder"],
            );
            if ctx3 == "on" && *v < 3 {
                // A ctx3=on source only produces v3; its v1/v2 rows are about the
                // destination's configuration alone.
                if matches!(want, Refused(c) if *c == codes::ATTRIBUTE) {
                    let dst = SimGpuPlugin::with_windows(w, w).unwrap();
                    assert!(dst.configure("vgpu-64m", &sdev.attributes).is_err());
                }
                continue;
            }
            assert_eq!(&outcome(&src, &sdev, *v, w), want, "v{v} -> {w} ctx3={ctx3}");
        }
    }
    // A ctx3=off 3->2 conversion drops exactly ctx3; a model's raw stream is the
    // sum of its sections and their framing.
    let sdev = device("vgpu-64m", &[], &[]);
    let specs = src.sections(&sdev, 3).unwrap();
    let plan = src.convert(&sdev, 3, 2, &specs).unwrap();
    assert_eq!(plan[4], SectionConversion::Drop);
    assert_eq!(specs[4].name, "simgpu.ctx3");
    let m = model(VGPU_64M, 0, &[]);
    assert_eq!(m.raw_len(), p_len(&src, &sdev));
}

fn p_len(p: &SimGpuPlugin, d: &DeviceInfo) -> u64 {
    p.sections(d, 3)
        .unwrap()
        .iter()
        .map(|s| s.max_len + FRAMING_LEN as u64)
        .sum()
}
