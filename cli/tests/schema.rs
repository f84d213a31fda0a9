//! `mdevmig schema dump` and `mdevmig schema diff` as a vendor's CI runs them:
//! exit statuses 0, 3, 2, 4 (and 1), the JSON shapes, every class found on a
//! real dump changed in code, the two historical QEMU failures, and the gate on
//! the committed schemas.

#[path = "support/cli.rs"]
mod cli;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use cli::{bin, dir, run, Dir};
use mdevmig::schema::{
    self, Class, ConvertAction, Dump, Kind, SectionSchema, Severity, VersionSchema, Window,
};
use serde_json::Value;

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/schemas");

/// This build's dump, as the binary prints it.
fn build() -> Dump {
    let (status, out, err) = run(&["schema", "dump", "--json"]);
    assert_eq!(status, 0, "{err}");
    Dump::parse(&out).unwrap()
}

fn write(d: &Dir, name: &str, dump: &Dump) -> String {
    let p = d.0.join(name);
    std::fs::write(&p, dump.to_text()).unwrap();
    p.to_string_lossy().into_owned()
}

/// `schema diff --json OLD NEW`: the status and the parsed report.
fn diff(old: &Dump, new: &Dump) -> (i32, Value, String) {
    let d = dir("schema");
    let (o, n) = (write(&d, "old.json", old), write(&d, "new.json", new));
    let (status, out, err) = run(&["--json", "schema", "diff", &o, &n]);
    (status, serde_json::from_str(&out).unwrap_or(Value::Null), err)
}

fn classes(report: &Value) -> BTreeSet<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["class"].as_str().unwrap().to_owned())
        .collect()
}

fn cfg<'a>(d: &'a mut Dump, vendor: &str, ty: &str) -> &'a mut schema::ConfigSchema {
    let p = d.plugins.iter_mut().find(|p| p.vendor == vendor).unwrap();
    let t = p.device_types.iter_mut().find(|t| t.name == ty).unwrap();
    &mut t.configurations[0]
}

fn ver<'a>(d: &'a mut Dump, vendor: &str, ty: &str, v: u32) -> &'a mut VersionSchema {
    cfg(d, vendor, ty)
        .versions
        .iter_mut()
        .find(|x| x.version == v)
        .unwrap()
}

fn sec<'a>(d: &'a mut Dump, vendor: &str, ty: &str, v: u32, name: &str) -> &'a mut SectionSchema {
    ver(d, vendor, ty, v)
        .sections
        .iter_mut()
        .find(|s| s.name == name)
        .unwrap()
}

fn window<'a>(d: &'a mut Dump, vendor: &str, ty: &str) -> &'a mut schema::TypeSchema {
    let p = d.plugins.iter_mut().find(|p| p.vendor == vendor).unwrap();
    p.device_types.iter_mut().find(|t| t.name == ty).unwrap()
}

fn regs(d: &mut Dump) -> &mut SectionSchema {
    sec(d, "simgpu", "vgpu-64m", 1, "simgpu.regs")
}

fn packets(d: &mut Dump) -> &mut SectionSchema {
    sec(d, "xe", "xe-vf-64m", 1, "xe.packets")
}

fn extra(required: bool, capability: Option<&str>) -> SectionSchema {
    SectionSchema {
        name: "simgpu.extra".into(),
        version: 1,
        required,
        capability: capability.map(String::from),
        kind: Kind::Structured,
        streamed: false,
        bound: 64,
        length: Some(64),
        records: Vec::new(),
    }
}

/// mtty-1's next release: state version 2 (min_version `min`) of `sections`,
/// converting down to 1.
fn mtty_v2(d: &mut Dump, min: u32, sections: Vec<SectionSchema>) {
    let t = window(d, "mtty", "mtty-1");
    t.produce = Some(Window { oldest: 1, newest: 2 });
    t.load = Some(Window { oldest: 1, newest: 2 });
    let conversions = vec![schema::ConversionSchema {
        to: 1,
        sections: sections
            .iter()
            .map(|s| schema::ConvertedSection {
                name: s.name.clone(),
                action: if s.name == "mtty.state" {
                    ConvertAction::Keep
                } else {
                    ConvertAction::Drop
                },
            })
            .collect(),
    }];
    t.configurations[0].versions.push(VersionSchema {
        version: 2,
        min_version: min,
        sections,
        conversions,
    });
}

fn mtty_state(d: &mut Dump) -> SectionSchema {
    sec(d, "mtty", "mtty-1", 1, "mtty.state").clone()
}

/// Which side of the comparison a change makes.
#[derive(Clone, Copy)]
enum Side {
    /// The change is this release's.
    New,
    /// The change was the previous release's (this release undoes it).
    Old,
}

type Change = fn(&mut Dump);

/// Every class, as a change to the real dump and the classes it must produce.
fn cases() -> Vec<(Class, Side, Change, &'static [Class])> {
    use Class as C;
    const NEW_VERSION: &[Class] = &[
        C::StateVersionAdded,
        C::LoadWindowWidened,
        C::ProduceWindowChanged,
    ];
    vec![
        (
            C::PluginRemoved,
            Side::New,
            |d| d.plugins.retain(|p| p.vendor != "mtty"),
            &[],
        ),
        (
            C::PluginAdded,
            Side::Old,
            |d| d.plugins.retain(|p| p.vendor != "mtty"),
            &[],
        ),
        (
            C::DeviceTypeRemoved,
            Side::New,
            |d| d.plugins[1].device_types.truncate(1),
            &[],
        ),
        (
            C::DeviceTypeAdded,
            Side::Old,
            |d| d.plugins[1].device_types.truncate(1),
            &[],
        ),
        (
            C::ConfigurationRemoved,
            Side::New,
            |d| window(d, "xe", "xe-vf-1g").configurations.truncate(3),
            &[],
        ),
        (
            C::ConfigurationAdded,
            Side::Old,
            |d| window(d, "xe", "xe-vf-1g").configurations.truncate(3),
            &[],
        ),
        (
            C::AttributeAdded,
            Side::New,
            |d| {
                cfg(d, "mtty", "mtty-1")
                    .attributes
                    .insert("fifo".into(), "16".into());
            },
            &[],
        ),
        (
            C::AttributeRemoved,
            Side::New,
            |d| {
                cfg(d, "mtty", "mtty-1").attributes.clear();
            },
            &[],
        ),
        (
            C::AttributeDefaultChanged,
            Side::New,
            |d| {
                cfg(d, "mtty", "mtty-1")
                    .attributes
                    .insert("ports".into(), "4".into());
            },
            &[],
        ),
        (
            C::AttributeValueChanged,
            Side::New,
            |d| {
                cfg(d, "hisi_acc", "hisi-sec-vf")
                    .attributes
                    .insert("qp_num".into(), "0x40".into());
            },
            &[],
        ),
        (
            C::LoadVersionDropped,
            Side::New,
            |d| window(d, "hisi_acc", "hisi-sec-vf").load = Some(Window { oldest: 1, newest: 1 }),
            &[],
        ),
        (
            C::LoadWindowNarrowed,
            Side::New,
            |d| window(d, "hisi_acc", "hisi-sec-vf").load = Some(Window { oldest: 2, newest: 2 }),
            &[],
        ),
        (
            C::LoadWindowWidened,
            Side::Old,
            |d| window(d, "hisi_acc", "hisi-sec-vf").load = Some(Window { oldest: 2, newest: 2 }),
            &[],
        ),
        (
            C::ProduceWindowChanged,
            Side::New,
            |d| window(d, "hisi_acc", "hisi-sec-vf").produce = Some(Window { oldest: 1, newest: 2 }),
            &[],
        ),
        (
            C::DowngradePathLost,
            Side::New,
            |d| {
                let mut s = mtty_state(d);
                s.version = 2;
                mtty_v2(d, 2, vec![s]);
                ver(d, "mtty", "mtty-1", 2).conversions.clear();
            },
            NEW_VERSION,
        ),
        (
            C::StateVersionAdded,
            Side::New,
            |d| {
                let s = mtty_state(d);
                mtty_v2(d, 1, vec![s]);
            },
            NEW_VERSION,
        ),
        (
            C::CapabilityNotEnforced,
            Side::New,
            |d| {
                let mut s = mtty_state(d);
                s.capability = Some("mtty.fifo64".into());
                mtty_v2(d, 1, vec![s]);
            },
            NEW_VERSION,
        ),
        (
            C::LayoutWithoutSectionBump,
            Side::New,
            |d| {
                let mut s = mtty_state(d);
                s.kind = Kind::Bulk;
                mtty_v2(d, 1, vec![s]);
            },
            NEW_VERSION,
        ),
        (
            C::MinVersionRaised,
            Side::New,
            |d| ver(d, "simgpu", "vgpu-64m", 2).min_version = 2,
            &[],
        ),
        (
            C::MinVersionLowered,
            Side::Old,
            |d| ver(d, "simgpu", "vgpu-64m", 2).min_version = 2,
            &[],
        ),
        (
            C::SectionAdded,
            Side::New,
            |d| ver(d, "simgpu", "vgpu-64m", 1).sections.push(extra(false, None)),
            &[],
        ),
        (
            C::SectionAddedRequired,
            Side::New,
            |d| ver(d, "simgpu", "vgpu-64m", 1).sections.push(extra(true, None)),
            &[],
        ),
        (
            C::SectionRemoved,
            Side::Old,
            |d| ver(d, "simgpu", "vgpu-64m", 1).sections.push(extra(false, None)),
            &[],
        ),
        (
            C::SectionMadeRequired,
            Side::New,
            |d| sec(d, "simgpu", "vgpu-64m", 2, "simgpu.telemetry").required = true,
            &[],
        ),
        (
            C::SectionMadeOptional,
            Side::Old,
            |d| sec(d, "simgpu", "vgpu-64m", 2, "simgpu.telemetry").required = true,
            &[],
        ),
        (
            C::SectionCapabilityAdded,
            Side::New,
            |d| regs(d).capability = Some("simgpu.x".into()),
            &[],
        ),
        (
            C::SectionCapabilityChanged,
            Side::New,
            |d| {
                regs(d).capability = Some("simgpu.y".into());
            },
            &[],
        ),
        (
            C::SectionCapabilityRemoved,
            Side::Old,
            |d| regs(d).capability = Some("simgpu.x".into()),
            &[],
        ),
        (C::SectionVersionChanged, Side::New, |d| regs(d).version = 7, &[]),
        (
            C::SectionKindChanged,
            Side::New,
            |d| regs(d).kind = Kind::Records,
            &[],
        ),
        (C::SectionLengthChanged, Side::New, |d| regs(d).length = None, &[]),
        (
            C::SectionOrderChanged,
            Side::New,
            |d| ver(d, "simgpu", "vgpu-64m", 1).sections.reverse(),
            &[],
        ),
        (C::SectionBoundShrunk, Side::New, |d| regs(d).bound = 1, &[]),
        (C::StreamedBoundGrown, Side::New, |d| packets(d).bound += 1, &[]),
        (C::SectionBoundGrown, Side::New, |d| regs(d).bound += 1, &[]),
        (
            C::RecordTypeAddedMandatory,
            Side::New,
            |d| {
                packets(d).records.push(schema::RecordSchema {
                    code: 9,
                    name: "ctx".into(),
                    optional: false,
                })
            },
            &[],
        ),
        (
            C::RecordTypeAddedOptional,
            Side::New,
            |d| {
                packets(d).records.push(schema::RecordSchema {
                    code: 9,
                    name: "ctx".into(),
                    optional: true,
                })
            },
            &[],
        ),
        (
            C::RecordTypeRemoved,
            Side::New,
            |d| packets(d).records.truncate(5),
            &[],
        ),
        (
            C::RecordTypeRemovedOptional,
            Side::Old,
            |d| {
                packets(d).records.push(schema::RecordSchema {
                    code: 9,
                    name: "ctx".into(),
                    optional: true,
                })
            },
            &[],
        ),
        (
            C::RecordTypeMadeMandatory,
            Side::Old,
            |d| packets(d).records[0].optional = true,
            &[],
        ),
        (
            C::RecordTypeMadeOptional,
            Side::New,
            |d| packets(d).records[0].optional = true,
            &[],
        ),
        (
            C::RecordTypeRenamed,
            Side::New,
            |d| packets(d).records[0].name = "desc".into(),
            &[],
        ),
        (
            C::ConversionRemoved,
            Side::New,
            |d| ver(d, "simgpu", "vgpu-64m", 3).conversions.clear(),
            &[],
        ),
        (
            C::ConversionAdded,
            Side::Old,
            |d| ver(d, "simgpu", "vgpu-64m", 3).conversions.clear(),
            &[],
        ),
        (
            C::ConversionDropsSection,
            Side::New,
            |d| ver(d, "simgpu", "vgpu-64m", 3).conversions[0].sections[0].action = ConvertAction::Drop,
            &[],
        ),
        (
            C::ConversionKeepsSection,
            Side::Old,
            |d| ver(d, "simgpu", "vgpu-64m", 3).conversions[0].sections[0].action = ConvertAction::Drop,
            &[],
        ),
    ]
}

#[test]
fn every_class_is_found_with_its_severity_and_exit_status() {
    let base = build();
    let mut seen = BTreeSet::new();
    for (class, side, change, also) in cases() {
        let mut changed = base.clone();
        if class == Class::SectionCapabilityChanged {
            regs(&mut changed).capability = Some("simgpu.x".into());
        }
        let mut other = changed.clone();
        change(&mut other);
        let (old, new) = match side {
            Side::New => (&changed, &other),
            Side::Old => (&other, &changed),
        };
        let (status, report, err) = diff(old, new);
        let mut expected: BTreeSet<String> = also.iter().map(|c| c.id().to_owned()).collect();
        expected.insert(class.id().to_owned());
        assert_eq!(classes(&report), expected, "{}: {report:#}", class.id());
        let breaks = expected.iter().any(|id| {
            Class::TABLE
                .iter()
                .any(|(_, i, s, _)| i == id && *s == Severity::Breaking)
        });
        assert_eq!(status, if breaks { 3 } else { 0 }, "{}: {err}", class.id());
        assert_eq!(report["verdict"], if breaks { "breaking" } else { "compatible" });
        for f in report["findings"].as_array().unwrap() {
            let sev = Class::TABLE
                .iter()
                .find(|(_, i, _, _)| *i == f["class"])
                .unwrap()
                .2;
            assert_eq!(
                f["severity"],
                if sev == Severity::Breaking {
                    "breaking"
                } else {
                    "compatible"
                }
            );
        }
        if breaks {
            assert!(err.contains("error[compat.breaking_change]"), "{err}");
        }
        seen.insert(class);
    }
    let all: BTreeSet<Class> = Class::TABLE.iter().map(|(c, _, _, _)| *c).collect();
    assert_eq!(seen, all, "a class without a case");
}

#[test]
fn the_json_report_has_a_fixed_shape() {
    let base = build();
    let mut new = base.clone();
    regs(&mut new).capability = Some("simgpu.x".into());
    packets(&mut new).bound += 1;
    let (status, report, _) = diff(&base, &new);
    assert_eq!(status, 3);
    let keys: BTreeSet<&str> = report.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["ok", "verdict", "breaking", "compatible", "findings"])
    );
    assert_eq!(report["breaking"], 2);
    assert_eq!(report["compatible"], 0);
    let f = &report["findings"][0];
    let keys: BTreeSet<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
    let want = [
        "class",
        "severity",
        "plugin",
        "device_type",
        "configuration",
        "version",
        "section",
        "record",
        "attribute",
        "conversion",
        "reason",
    ];
    assert_eq!(keys, want.into_iter().collect());
    assert_eq!(f["plugin"], "simgpu");
    assert_eq!(f["device_type"], "vgpu-64m");
    assert_eq!(f["configuration"], Value::Null);
    assert_eq!(f["version"], 1);
    assert_eq!(f["section"], "simgpu.regs");
    assert_eq!(report["findings"][1]["class"], "streamed-bound-grown");
}

#[test]
fn text_output_lists_findings_then_a_summary() {
    let base = build();
    let mut new = base.clone();
    ver(&mut new, "simgpu", "vgpu-64m", 1)
        .sections
        .push(extra(false, None));
    regs(&mut new).bound += 1;
    let d = dir("schema-text");
    let (o, n) = (write(&d, "old.json", &base), write(&d, "new.json", &new));
    let (status, out, err) = run(&["schema", "diff", &o, &n]);
    assert_eq!(status, 3, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("breaking   section-added "), "{out}");
    assert!(
        lines[0].contains("simgpu/vgpu-64m v1: section simgpu.extra"),
        "{out}"
    );
    assert!(lines[1].starts_with("compatible section-bound-grown "), "{out}");
    assert_eq!(lines[2], "1 breaking, 1 compatible: BREAKING");
    assert!(
        err.contains("error[compat.breaking_change]: 1 breaking change(s); the first: section-added"),
        "{err}"
    );
    // Compatible only: exit 0.
    let n = write(&d, "grown.json", &{
        let mut g = base.clone();
        regs(&mut g).bound += 1;
        g
    });
    let (status, out, _) = run(&["schema", "diff", &o, &n]);
    assert_eq!(status, 0);
    assert!(
        out.ends_with("0 breaking, 1 compatible: nothing breaks\n"),
        "{out}"
    );
}

#[test]
fn the_ambiguous_subsection_and_the_missing_capability_are_caught() {
    let base = build();
    // A subsection added to a version destinations already load (qemu-devel,
    // "savevm: define new unambiguous migration format", 2011).
    let mut sub = base.clone();
    for c in &mut window(&mut sub, "simgpu", "vgpu-256m").configurations {
        c.versions[1].sections.push(extra(false, None));
    }
    let (status, report, _) = diff(&base, &sub);
    assert_eq!(
        (status, classes(&report)),
        (3, BTreeSet::from(["section-added".to_owned()]))
    );
    assert_eq!(
        report["findings"].as_array().unwrap().len(),
        1,
        "one finding for every configuration"
    );
    // State that comes to depend on a host capability (qemu-devel, "QEMU/KVM
    // migration backwards compatibility broken?", 2019), in an existing version...
    let mut cap = base.clone();
    sec(&mut cap, "simgpu", "vgpu-1g", 2, "simgpu.telemetry").capability = Some("simgpu.perf".into());
    let (status, report, _) = diff(&base, &cap);
    assert_eq!(
        (status, classes(&report)),
        (3, BTreeSet::from(["section-capability-added".to_owned()]))
    );
    // ...or in a new one that the previous release's destinations still accept.
    let mut v2 = base.clone();
    let mut s = mtty_state(&mut v2);
    s.capability = Some("mtty.fifo64".into());
    mtty_v2(&mut v2, 1, vec![s]);
    let (status, report, _) = diff(&base, &v2);
    assert_eq!(status, 3);
    assert!(classes(&report).contains("capability-not-enforced"));
    // Harmless: a new optional section in a new state version.
    let mut ok = base.clone();
    let s = mtty_state(&mut ok);
    let mut fifo = extra(false, None);
    fifo.name = "mtty.fifo".into();
    mtty_v2(&mut ok, 1, vec![s, fifo]);
    let (status, report, err) = diff(&base, &ok);
    assert_eq!(status, 0, "{err}");
    assert_eq!(report["verdict"], "compatible");
    assert_eq!(report["breaking"], 0);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["schema", "diff", "-", "-"][..],
        &["schema", "diff", "a.json"],
        &["schema", "diff", "a.json", "b.json", "--against-build"],
        &["schema", "diff"],
        &["schema", "dump", "--plugin", "nvidia"],
        &["schema", "frobnicate"],
        &["schema", "diff", "a.json", "b.json", "--bogus"],
    ] {
        let (status, out, err) = run(args);
        assert_eq!(status, 2, "{args:?}: {out}{err}");
        assert!(err.contains("error[usage.bad_arguments]"), "{args:?}: {err}");
    }
    let (status, out, _) = run(&[
        "--json",
        "schema",
        "diff",
        SPEC,
        "--against-build",
        "--plugin",
        "nvidia",
    ]);
    assert_eq!(status, 2);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["code"], "usage.bad_arguments");
}

#[test]
fn malformed_or_oversized_schemas_exit_4_and_missing_ones_1() {
    let d = dir("schema-bad");
    let good = format!("{SPEC}/mtty.json");
    let bad = d.0.join("bad.json");
    for (text, code) in [
        ("{", "format.bad_schema"),
        ("{\"schema_format\": 9, \"plugins\": 1}", "format.bad_schema"),
        ("{\"plugins\": []}", "format.bad_schema"),
        ("{\"schema_format\": 1, \"plugins\": [{\"vendor\": \"\\u001b[31m\", \"plugin_version\": \"1\", \"device_types\": []}]}", "format.bad_schema"),
    ] {
        std::fs::write(&bad, text).unwrap();
        let (status, out, err) = run(&["--json", "schema", "diff", &good, bad.to_str().unwrap()]);
        assert_eq!(status, 4, "{text}: {err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["error"]["code"], code, "{text}");
        assert!(!err.contains('\u{1b}'), "a control character reached the terminal");
    }
    std::fs::write(&bad, vec![b' '; (4 << 20) + 1]).unwrap();
    let (status, _, err) = run(&["schema", "diff", bad.to_str().unwrap(), &good]);
    assert_eq!(status, 4);
    assert!(err.contains("error[limit.input_too_large]"), "{err}");
    let (status, _, err) = run(&["schema", "diff", "/nonexistent.json", &good]);
    assert_eq!(status, 1);
    assert!(err.contains("error[io.open]"), "{err}");
    // A schema on stdin, capped the same way.
    let mut child = Command::new(bin())
        .args(["schema", "diff", "-", &good])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(&vec![b' '; (4 << 20) + 100]);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(4));
}

#[test]
fn stdin_a_file_and_a_directory_are_all_schemas() {
    let good = format!("{SPEC}/xe.json");
    let mut child = Command::new(bin())
        .args([
            "--json",
            "schema",
            "diff",
            "-",
            "--against-build",
            "--plugin",
            "xe",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&good).unwrap())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "identical");
    // One plugin's file against the whole committed directory, filtered.
    let (status, out, _) = run(&["--json", "schema", "diff", &good, SPEC, "--plugin", "xe"]);
    assert_eq!(status, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["verdict"],
        "identical"
    );
    // Unfiltered, the other plugins are new to it: compatible.
    let (status, out, _) = run(&["--json", "schema", "diff", &good, SPEC]);
    assert_eq!(status, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(classes(&v), BTreeSet::from(["plugin-added".to_owned()]));
    assert_eq!(v["compatible"], 3);
}

/// The gate CI runs: the committed schemas are this build's, byte for byte, and
/// the diff against the build finds nothing. Regenerate with `mdevmig schema
/// dump --plugin <vendor> --json > spec/schemas/<vendor>.json`.
#[test]
fn the_committed_schemas_are_this_builds() {
    let (status, text, err) = run(&["--json", "schema", "diff", SPEC, "--against-build"]);
    assert_eq!(status, 0, "{text}{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["verdict"],
        "identical",
        "{text}"
    );
    for p in build().plugins {
        let (status, out, _) = run(&["schema", "dump", "--json", "--plugin", &p.vendor]);
        assert_eq!(status, 0);
        let committed = std::fs::read_to_string(format!("{SPEC}/{}.json", p.vendor)).unwrap();
        assert!(
            out == committed,
            "spec/schemas/{0}.json is stale: mdevmig schema dump --plugin {0} --json > spec/schemas/{0}.json",
            p.vendor
        );
    }
}

#[test]
fn the_dump_for_people_names_every_plugin() {
    let (status, out, _) = run(&["schema", "dump"]);
    assert_eq!(status, 0);
    for v in ["hisi_acc (plugin", "mtty (plugin", "simgpu (plugin", "xe (plugin"] {
        assert!(out.contains(v), "{out}");
    }
    assert!(
        out.contains("xe.packets v1 required records streamed bound"),
        "{out}"
    );
    assert!(
        out.contains("records 1=descriptor 2=trailer 3=ggtt 4=mmio 5=guc 6=vram"),
        "{out}"
    );
    assert!(
        out.contains("simgpu.encoder v1 required structured bound 256 length 256 needs simgpu.hw-encoder"),
        "{out}"
    );
}
