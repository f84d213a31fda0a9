//! The schema checker as a library: the dump of the built-in plugins, every diff
//! class on a real dump changed in code, the two historical QEMU failures as
//! plugin changes, malformed dumps, and the gate on the committed schemas.

use std::collections::{BTreeMap, BTreeSet};

use mdevmig::schema::{
    self, Class, ConfigSchema, ConvertAction, Dump, Kind, RecordSchema, Report, SectionSchema, Severity,
    TypeSchema, VersionSchema, Window,
};
use mdevmig::{Code, Registry};
use mdevmig_plugin_api::{
    DeviceInfo, SectionConversion, SectionKind, SectionLayout, SectionSpec, VendorError, VendorPlugin,
    VersionWindow,
};

fn build() -> Dump {
    schema::dump(Registry::builtin().iter()).unwrap()
}

fn ty<'a>(d: &'a mut Dump, vendor: &str, name: &str) -> &'a mut TypeSchema {
    let p = d.plugins.iter_mut().find(|p| p.vendor == vendor).unwrap();
    p.device_types.iter_mut().find(|t| t.name == name).unwrap()
}

/// The first (default) configuration of a type.
fn cfg<'a>(d: &'a mut Dump, vendor: &str, name: &str) -> &'a mut ConfigSchema {
    &mut ty(d, vendor, name).configurations[0]
}

fn ver<'a>(d: &'a mut Dump, vendor: &str, name: &str, v: u32) -> &'a mut VersionSchema {
    cfg(d, vendor, name)
        .versions
        .iter_mut()
        .find(|x| x.version == v)
        .unwrap()
}

fn sec<'a>(d: &'a mut Dump, vendor: &str, name: &str, v: u32, section: &str) -> &'a mut SectionSchema {
    ver(d, vendor, name, v)
        .sections
        .iter_mut()
        .find(|s| s.name == section)
        .unwrap()
}

fn xe(d: &mut Dump) -> &mut SectionSchema {
    sec(d, "xe", "xe-vf-64m", 1, "xe.packets")
}

fn regs(d: &mut Dump, v: u32) -> &mut SectionSchema {
    sec(d, "simgpu", "vgpu-64m", v, "simgpu.regs")
}

fn classes(r: &Report) -> BTreeSet<Class> {
    r.findings.iter().map(|f| f.class).collect()
}

/// `new` against `old` finds exactly `expected` (each at least once), and the
/// severities the classes fix.
fn expect(old: &Dump, new: &Dump, expected: &[Class]) -> Report {
    let r = schema::diff(old, new);
    assert_eq!(
        classes(&r),
        expected.iter().copied().collect::<BTreeSet<_>>(),
        "{:#?}",
        r.findings
    );
    for f in &r.findings {
        assert_eq!(f.severity, f.class.severity());
        assert!(!f.reason.is_empty());
    }
    let breaks = expected.iter().any(|c| c.severity() == Severity::Breaking);
    assert_eq!(r.breaking() > 0, breaks);
    assert_eq!(r.verdict(), if breaks { "breaking" } else { "compatible" });
    r
}

/// `change` applied to the build's dump gives this release; the previous
/// release is the build.
fn changed(change: impl FnOnce(&mut Dump), expected: &[Class]) -> Report {
    let old = build();
    let mut new = old.clone();
    change(&mut new);
    expect(&old, &new, expected)
}

/// `change` applied to the build's dump gives the previous release; this
/// release is the build.
fn was(change: impl FnOnce(&mut Dump), expected: &[Class]) -> Report {
    let new = build();
    let mut old = new.clone();
    change(&mut old);
    expect(&old, &new, expected)
}

fn optional(name: &str) -> SectionSchema {
    SectionSchema {
        name: name.into(),
        version: 1,
        required: false,
        capability: None,
        kind: Kind::Structured,
        streamed: false,
        bound: 64,
        length: Some(64),
        records: Vec::new(),
    }
}

fn record(code: u64, name: &str, optional: bool) -> RecordSchema {
    RecordSchema {
        code,
        name: name.into(),
        optional,
    }
}

#[test]
fn the_build_against_itself_is_identical_and_the_dump_is_deterministic() {
    let (a, b) = (build(), build());
    assert_eq!(a.to_text(), b.to_text());
    let r = schema::diff(&a, &b);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(r.verdict(), "identical");
    assert_eq!(Dump::parse(&a.to_text()).unwrap(), a);
    let vendors: Vec<&str> = a.plugins.iter().map(|p| p.vendor.as_str()).collect();
    assert_eq!(vendors, ["hisi_acc", "mtty", "simgpu", "xe"]);
    assert_eq!(a.schema_format, schema::SCHEMA_FORMAT);
}

#[test]
fn the_dump_says_what_the_plugins_declare() {
    let mut d = build();
    let hisi = ty(&mut d, "hisi_acc", "hisi-zip-vf").clone();
    assert_eq!(hisi.produce, Some(Window { oldest: 2, newest: 2 }));
    assert_eq!(hisi.load, Some(Window { oldest: 1, newest: 2 }));
    assert_eq!(hisi.configurations[0].attributes["qp_num"], "64");
    let mtty = cfg(&mut d, "mtty", "mtty-2").clone();
    assert_eq!(mtty.attributes, BTreeMap::from([("ports".into(), "2".into())]));
    let s = &mtty.versions[0].sections[0];
    assert_eq!(
        (s.name.as_str(), s.kind, s.length, s.required),
        ("mtty.state", Kind::Structured, Some(96), true)
    );
    // simgpu: v2 adds optional telemetry (min_version 1), v3 required ctx3 (3);
    // 3 converts to 2 and 1; with encoder=on its section needs the capability.
    assert_eq!(ver(&mut d, "simgpu", "vgpu-64m", 2).min_version, 1);
    let v3 = ver(&mut d, "simgpu", "vgpu-64m", 3).clone();
    assert_eq!(v3.min_version, 3);
    let tos: Vec<u32> = v3.conversions.iter().map(|c| c.to).collect();
    assert_eq!(tos, [1, 2]);
    let to1 = &v3.conversions[0].sections;
    assert!(to1
        .iter()
        .any(|s| s.name == "simgpu.telemetry" && s.action == ConvertAction::Drop));
    let gpu = ty(&mut d, "simgpu", "vgpu-64m");
    let enc = gpu
        .configurations
        .iter()
        .find(|c| c.config.get("encoder").map(String::as_str) == Some("on"))
        .unwrap();
    let encoder = enc.versions[0]
        .sections
        .iter()
        .find(|s| s.name == "simgpu.encoder")
        .unwrap();
    assert_eq!(encoder.capability.as_deref(), Some("simgpu.hw-encoder"));
    assert!(encoder.required);
    // Xe: one streamed record section; six mandatory packet types.
    let packets = xe(&mut d).clone();
    assert_eq!(
        (packets.kind, packets.streamed, packets.length),
        (Kind::Records, true, None)
    );
    let codes: Vec<(u64, &str, bool)> = packets
        .records
        .iter()
        .map(|r| (r.code, r.name.as_str(), r.optional))
        .collect();
    assert_eq!(
        codes,
        [
            (1, "descriptor", false),
            (2, "trailer", false),
            (3, "ggtt", false),
            (4, "mmio", false),
            (5, "guc", false),
            (6, "vram", false)
        ]
    );
    assert_eq!(ty(&mut d, "xe", "xe-vf-1g").configurations.len(), 4);
}

// ---- breaking, each class ----

#[test]
fn plugin_device_type_and_configuration_removed() {
    changed(
        |d| d.plugins.retain(|p| p.vendor != "mtty"),
        &[Class::PluginRemoved],
    );
    changed(
        |d| d.plugins[1].device_types.retain(|t| t.name != "mtty-2"),
        &[Class::DeviceTypeRemoved],
    );
    changed(
        |d| {
            ty(d, "simgpu", "vgpu-64m")
                .configurations
                .retain(|c| !c.config.contains_key("encoder"))
        },
        &[Class::ConfigurationRemoved],
    );
}

#[test]
fn attributes_added_removed_or_changed() {
    changed(
        |d| {
            cfg(d, "mtty", "mtty-1")
                .attributes
                .insert("fifo".into(), "16".into());
        },
        &[Class::AttributeAdded],
    );
    changed(
        |d| {
            cfg(d, "mtty", "mtty-1").attributes.remove("ports");
        },
        &[Class::AttributeRemoved],
    );
    let r = changed(
        |d| {
            cfg(d, "mtty", "mtty-1")
                .attributes
                .insert("ports".into(), "2".into());
        },
        &[Class::AttributeDefaultChanged],
    );
    assert_eq!(r.findings[0].attribute.as_deref(), Some("ports"));
    changed(
        |d| {
            cfg(d, "hisi_acc", "hisi-sec-vf")
                .attributes
                .insert("qp_num".into(), "0x40".into());
        },
        &[Class::AttributeValueChanged],
    );
}

#[test]
fn a_version_the_previous_release_produced_dropped_from_the_load_window() {
    // hisi_acc produces 2 and loads 1..2: loading only 1 refuses its own state.
    let r = changed(
        |d| ty(d, "hisi_acc", "hisi-zip-vf").load = Some(Window { oldest: 1, newest: 1 }),
        &[Class::LoadVersionDropped],
    );
    assert_eq!(r.findings[0].version, Some(2));
    // Dropping 1, which it only loaded, is compatible.
    changed(
        |d| ty(d, "hisi_acc", "hisi-zip-vf").load = Some(Window { oldest: 2, newest: 2 }),
        &[Class::LoadWindowNarrowed],
    );
}

#[test]
fn min_version_raised_in_an_existing_version() {
    changed(
        |d| ver(d, "simgpu", "vgpu-64m", 2).min_version = 2,
        &[Class::MinVersionRaised],
    );
}

#[test]
fn sections_added_removed_or_made_required_in_an_existing_version() {
    let r = changed(
        |d| {
            ver(d, "simgpu", "vgpu-64m", 1)
                .sections
                .push(optional("simgpu.extra"))
        },
        &[Class::SectionAdded],
    );
    assert_eq!(r.findings[0].section.as_deref(), Some("simgpu.extra"));
    assert_eq!(r.findings[0].version, Some(1));
    changed(
        |d| {
            let mut s = optional("simgpu.extra");
            s.required = true;
            ver(d, "simgpu", "vgpu-64m", 1).sections.push(s);
        },
        &[Class::SectionAddedRequired],
    );
    changed(
        |d| {
            ver(d, "simgpu", "vgpu-64m", 2)
                .sections
                .retain(|s| s.name != "simgpu.telemetry")
        },
        &[Class::SectionRemoved],
    );
    changed(
        |d| sec(d, "simgpu", "vgpu-64m", 2, "simgpu.telemetry").required = true,
        &[Class::SectionMadeRequired],
    );
}

#[test]
fn section_capabilities_gained_or_changed() {
    changed(
        |d| regs(d, 1).capability = Some("simgpu.regs-v2".into()),
        &[Class::SectionCapabilityAdded],
    );
    changed(
        |d| {
            let gpu = ty(d, "simgpu", "vgpu-64m");
            let enc = gpu
                .configurations
                .iter_mut()
                .find(|c| c.config.contains_key("encoder"))
                .unwrap();
            for s in enc.versions.iter_mut().flat_map(|v| &mut v.sections) {
                if s.name == "simgpu.encoder" {
                    s.capability = Some("simgpu.hw-encoder2".into());
                }
            }
        },
        &[Class::SectionCapabilityChanged],
    );
}

#[test]
fn section_version_kind_length_order_changed_without_a_state_version_bump() {
    changed(|d| regs(d, 1).version = 2, &[Class::SectionVersionChanged]);
    changed(|d| regs(d, 1).kind = Kind::Bulk, &[Class::SectionKindChanged]);
    changed(|d| xe(d).streamed = false, &[Class::SectionKindChanged]);
    changed(|d| regs(d, 1).length = Some(8192), &[Class::SectionLengthChanged]);
    changed(
        |d| ver(d, "simgpu", "vgpu-64m", 1).sections.swap(0, 1),
        &[Class::SectionOrderChanged],
    );
}

#[test]
fn bounds_shrunk_or_a_streamed_bound_grown() {
    changed(|d| regs(d, 1).bound -= 1, &[Class::SectionBoundShrunk]);
    changed(|d| xe(d).bound -= 4096, &[Class::SectionBoundShrunk]);
    changed(|d| xe(d).bound += 4096, &[Class::StreamedBoundGrown]);
}

#[test]
fn record_types_added_mandatory_removed_or_made_mandatory() {
    let r = changed(
        |d| xe(d).records.push(record(7, "vfio-ctx", false)),
        &[Class::RecordTypeAddedMandatory],
    );
    assert_eq!(r.findings[0].record.as_deref(), Some("vfio-ctx (7)"));
    changed(
        |d| xe(d).records.retain(|r| r.code != 6),
        &[Class::RecordTypeRemoved],
    );
    was(
        |d| xe(d).records[4].optional = true,
        &[Class::RecordTypeMadeMandatory],
    );
}

#[test]
fn conversions_removed_or_dropping_a_section() {
    let r = changed(
        |d| ver(d, "simgpu", "vgpu-64m", 3).conversions.retain(|c| c.to != 2),
        &[Class::ConversionRemoved],
    );
    assert_eq!(r.findings[0].conversion.as_deref(), Some("3->2"));
    changed(
        |d| {
            let c = &mut ver(d, "simgpu", "vgpu-64m", 3).conversions[1];
            assert_eq!(c.to, 2);
            c.sections[2].action = ConvertAction::Drop;
        },
        &[Class::ConversionDropsSection],
    );
}

/// mtty-1 of the next release: state version 2 with `sections` and `min_version`,
/// produced and loaded beside 1, converting down to 1 when `down`.
fn mtty_v2(d: &mut Dump, min_version: u32, sections: Vec<SectionSchema>, down: bool) {
    let t = ty(d, "mtty", "mtty-1");
    t.produce = Some(Window { oldest: 1, newest: 2 });
    t.load = Some(Window { oldest: 1, newest: 2 });
    let c = &mut t.configurations[0];
    let names: Vec<String> = sections.iter().map(|s| s.name.clone()).collect();
    let conversions = if down {
        vec![schema::ConversionSchema {
            to: 1,
            sections: names
                .into_iter()
                .map(|name| schema::ConvertedSection {
                    action: if name == "mtty.state" {
                        ConvertAction::Keep
                    } else {
                        ConvertAction::Drop
                    },
                    name,
                })
                .collect(),
        }]
    } else {
        Vec::new()
    };
    c.versions.push(VersionSchema {
        version: 2,
        min_version,
        sections,
        conversions,
    });
}

fn mtty_state(d: &mut Dump) -> SectionSchema {
    sec(d, "mtty", "mtty-1", 1, "mtty.state").clone()
}

const NEW_VERSION: [Class; 3] = [
    Class::StateVersionAdded,
    Class::LoadWindowWidened,
    Class::ProduceWindowChanged,
];

#[test]
fn a_new_version_the_previous_release_cannot_load_needs_a_conversion_down() {
    let with = |down: bool| {
        move |d: &mut Dump| {
            let mut s = mtty_state(d);
            s.version = 2;
            s.length = Some(72);
            s.bound = 72;
            mtty_v2(d, 2, vec![s], down);
        }
    };
    let mut lost = NEW_VERSION.to_vec();
    lost.push(Class::DowngradePathLost);
    changed(with(false), &lost);
    changed(with(true), &NEW_VERSION);
}

#[test]
fn a_new_version_must_bump_a_section_whose_meaning_changes() {
    // Version 2 (min_version 1: every required section is known to a v1 loader)
    // keeps mtty.state v1 but gives it a capability or another length: v1
    // destinations accept the state and read the section as theirs.
    let cap = |d: &mut Dump| {
        let mut s = mtty_state(d);
        s.capability = Some("mtty.fifo64".into());
        mtty_v2(d, 1, vec![s], true);
    };
    let mut expected = NEW_VERSION.to_vec();
    expected.push(Class::CapabilityNotEnforced);
    changed(cap, &expected);
    let len = |d: &mut Dump| {
        let mut s = mtty_state(d);
        s.length = Some(72);
        s.bound = 72;
        mtty_v2(d, 1, vec![s], true);
    };
    let mut expected = NEW_VERSION.to_vec();
    expected.push(Class::LayoutWithoutSectionBump);
    changed(len, &expected);
}

#[test]
fn a_new_version_old_destinations_accept_must_keep_their_required_sections_and_records() {
    // Version 2 with min_version 1: v1 destinations accept it and restore it as
    // their v1. Without mtty.state, which their v1 requires, they refuse it.
    let dropped = |d: &mut Dump| mtty_v2(d, 1, vec![optional("mtty.extra")], true);
    let mut expected = NEW_VERSION.to_vec();
    expected.push(Class::LayoutWithoutSectionBump);
    let r = changed(dropped, &expected);
    assert!(
        r.findings
            .iter()
            .any(|f| f.reason.contains("vendor.missing_section")),
        "{r:?}"
    );
    // A section version 2 requires that their v1 does not know.
    let unknown = |d: &mut Dump| {
        let s = mtty_state(d);
        let mut extra = optional("mtty.extra");
        extra.required = true;
        mtty_v2(d, 1, vec![s, extra], true);
    };
    let r = changed(unknown, &expected);
    assert!(
        r.findings
            .iter()
            .any(|f| f.reason.contains("compat.unknown_required_section")),
        "{r:?}"
    );
    // The same in Xe's packet stream: version 2 keeps xe.packets v1 but adds a
    // mandatory packet type, which v1 destinations refuse.
    let r = changed(xe_v2_with_packet(false), &expected);
    assert!(
        r.findings
            .iter()
            .any(|f| f.record.as_deref() == Some("newpkt (7)")),
        "{r:?}"
    );
    // An optional one is fine: they skip it.
    changed(xe_v2_with_packet(true), &NEW_VERSION);
}

/// Xe's next release: state version 2 (min_version 1) is version 1 with one
/// more packet type in xe.packets, still at section version 1.
fn xe_v2_with_packet(optional: bool) -> impl FnOnce(&mut Dump) {
    move |d: &mut Dump| {
        let t = ty(d, "xe", "xe-vf-1g");
        t.produce = Some(Window { oldest: 1, newest: 2 });
        t.load = Some(Window { oldest: 1, newest: 2 });
        for c in &mut t.configurations {
            let mut v2 = c.versions[0].clone();
            v2.version = 2;
            v2.min_version = 1;
            v2.sections[0].records.push(record(7, "newpkt", optional));
            c.versions.push(v2);
        }
    }
}

// ---- compatible, each class ----

#[test]
fn new_plugins_types_configurations_and_windows_are_compatible() {
    was(
        |d| d.plugins.retain(|p| p.vendor != "mtty"),
        &[Class::PluginAdded],
    );
    was(
        |d| d.plugins[1].device_types.retain(|t| t.name != "mtty-2"),
        &[Class::DeviceTypeAdded],
    );
    was(
        |d| {
            ty(d, "simgpu", "vgpu-64m")
                .configurations
                .retain(|c| !c.config.contains_key("encoder"))
        },
        &[Class::ConfigurationAdded],
    );
    was(
        |d| ty(d, "hisi_acc", "hisi-zip-vf").load = Some(Window { oldest: 2, newest: 2 }),
        &[Class::LoadWindowWidened],
    );
    changed(
        |d| ty(d, "hisi_acc", "hisi-zip-vf").produce = Some(Window { oldest: 1, newest: 2 }),
        &[Class::ProduceWindowChanged],
    );
    changed(
        |d| ver(d, "simgpu", "vgpu-64m", 3).min_version = 2,
        &[Class::MinVersionLowered],
    );
}

#[test]
fn a_new_optional_section_in_a_new_version_is_compatible() {
    let r = changed(
        |d| {
            let s = mtty_state(d);
            mtty_v2(d, 1, vec![s, optional("mtty.fifo")], true);
        },
        &NEW_VERSION,
    );
    assert_eq!(r.breaking(), 0);
}

#[test]
fn relaxed_sections_are_compatible() {
    was(
        |d| sec(d, "simgpu", "vgpu-64m", 2, "simgpu.telemetry").required = true,
        &[Class::SectionMadeOptional],
    );
    changed(
        |d| sec(d, "simgpu", "vgpu-64m", 2, "simgpu.regs").required = false,
        &[Class::SectionMadeOptional],
    );
    was(
        |d| regs(d, 1).capability = Some("simgpu.regs-v2".into()),
        &[Class::SectionCapabilityRemoved],
    );
    changed(|d| regs(d, 1).bound += 1, &[Class::SectionBoundGrown]);
}

#[test]
fn relaxed_record_types_are_compatible() {
    changed(
        |d| xe(d).records.push(record(0x80, "telemetry", true)),
        &[Class::RecordTypeAddedOptional],
    );
    was(
        |d| xe(d).records.push(record(0x80, "telemetry", true)),
        &[Class::RecordTypeRemovedOptional],
    );
    changed(
        |d| xe(d).records[4].optional = true,
        &[Class::RecordTypeMadeOptional],
    );
    changed(
        |d| xe(d).records[4].name = "guc-state".into(),
        &[Class::RecordTypeRenamed],
    );
}

#[test]
fn added_conversions_are_compatible() {
    was(
        |d| ver(d, "simgpu", "vgpu-64m", 3).conversions.retain(|c| c.to != 2),
        &[Class::ConversionAdded],
    );
    was(
        |d| ver(d, "simgpu", "vgpu-64m", 3).conversions[1].sections[2].action = ConvertAction::Drop,
        &[Class::ConversionKeepsSection],
    );
}

#[test]
fn a_change_every_configuration_shares_is_reported_once() {
    let r = changed(
        |d| {
            for c in &mut ty(d, "simgpu", "vgpu-64m").configurations {
                let v1 = c.versions.iter_mut().find(|v| v.version == 1).unwrap();
                v1.sections
                    .iter_mut()
                    .find(|s| s.name == "simgpu.regs")
                    .unwrap()
                    .version = 2;
            }
        },
        &[Class::SectionVersionChanged],
    );
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].configuration, None);
    assert_eq!(r.findings[0].device_type.as_deref(), Some("vgpu-64m"));
}

#[test]
fn every_class_is_documented_in_spec_with_its_severity() {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/schema.md")).unwrap();
    let mut documented = BTreeMap::new();
    for line in spec.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() >= 4
            && cells[1].starts_with('`')
            && (cells[2] == "breaking" || cells[2] == "compatible")
        {
            documented.insert(cells[1].trim_matches('`').to_string(), cells[2].to_string());
        }
    }
    let ids: BTreeSet<&str> = Class::TABLE.iter().map(|(_, id, _, _)| *id).collect();
    assert_eq!(ids.len(), Class::TABLE.len());
    for (class, id, severity, _) in Class::TABLE {
        assert_eq!(class.id(), *id);
        assert_eq!(class.severity(), *severity);
        let sev = if *severity == Severity::Breaking {
            "breaking"
        } else {
            "compatible"
        };
        assert_eq!(
            documented.get(*id).map(String::as_str),
            Some(sev),
            "spec/schema.md row for {id}"
        );
        assert!(id.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{id}");
    }
    assert_eq!(
        documented.len(),
        Class::TABLE.len(),
        "spec/schema.md lists a class the code lacks"
    );
}

// ---- the two QEMU failures, as plugin changes dumped through the library ----

/// A one-type plugin whose versions are lists of sections; `(from, to)` pairs
/// convert by keeping the sections `to` has.
#[derive(Clone)]
struct Toy {
    produce: VersionWindow,
    load: VersionWindow,
    versions: BTreeMap<u32, Vec<SectionSpec>>,
    converts: Vec<(u32, u32)>,
}

fn toy_section(name: &str, version: u16, required: bool, capability: Option<&str>) -> SectionSpec {
    SectionSpec {
        name: name.into(),
        version,
        required,
        capability: capability.map(String::from),
        max_len: 512,
        kind: SectionKind::Structured,
        streamed: false,
    }
}

impl Toy {
    /// The previous release: version 1, one required `toy.cpu`.
    fn previous() -> Toy {
        Toy {
            produce: VersionWindow::new(1, 1),
            load: VersionWindow::new(1, 1),
            versions: BTreeMap::from([(1, vec![toy_section("toy.cpu", 1, true, None)])]),
            converts: Vec::new(),
        }
    }

    /// This release adds state version 2 with `sections`.
    fn with_v2(sections: Vec<SectionSpec>, down: bool) -> Toy {
        let mut t = Toy::previous();
        t.produce = VersionWindow::new(1, 2);
        t.load = VersionWindow::new(1, 2);
        t.versions.insert(2, sections);
        if down {
            t.converts.push((2, 1));
        }
        t
    }

    fn dump(&self) -> Dump {
        schema::dump([self as &dyn VendorPlugin]).unwrap()
    }
}

impl VendorPlugin for Toy {
    fn vendor(&self) -> &str {
        "toy"
    }
    fn plugin_version(&self) -> &'static str {
        "1.0.0"
    }
    fn device_types(&self) -> &'static [&'static str] {
        &["toy-1"]
    }
    fn produces(&self, _: &str) -> Option<VersionWindow> {
        Some(self.produce)
    }
    fn loads(&self, _: &str) -> Option<VersionWindow> {
        Some(self.load)
    }
    fn configure(
        &self,
        _: &str,
        a: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, VendorError> {
        Ok(a.clone())
    }
    fn sections(&self, _: &DeviceInfo, v: u32) -> Result<Vec<SectionSpec>, VendorError> {
        self.versions
            .get(&v)
            .cloned()
            .ok_or(VendorError::new("vendor.toy.version", "no such version"))
    }
    fn layout(&self, _: &DeviceInfo, _: u32, _: u64) -> Result<Vec<SectionLayout>, VendorError> {
        Err(VendorError::new("vendor.toy.layout", "no device"))
    }
    fn validate_section(&self, _: &DeviceInfo, _: &SectionSpec, _: &[u8]) -> Result<(), VendorError> {
        Ok(())
    }
    fn convert(
        &self,
        _: &DeviceInfo,
        from: u32,
        to: u32,
        s: &[SectionSpec],
    ) -> Result<Vec<SectionConversion>, VendorError> {
        let target = self
            .versions
            .get(&to)
            .filter(|_| self.converts.contains(&(from, to)));
        let target = target.ok_or(VendorError::new("vendor.cannot_convert", "no"))?;
        Ok(s.iter()
            .map(|s| match target.iter().find(|t| t.name == s.name) {
                Some(t) => SectionConversion::Keep(t.clone()),
                None => SectionConversion::Drop,
            })
            .collect())
    }
}

#[test]
fn an_ambiguous_subsection_added_to_an_existing_version_is_breaking() {
    // "savevm: define new unambiguous migration format" (qemu-devel, 2011): a
    // subsection added to a version its destinations already load.
    let mut new = Toy::previous();
    new.versions
        .get_mut(&1)
        .unwrap()
        .push(toy_section("toy.cpu.xsave", 1, false, None));
    let r = expect(&Toy::previous().dump(), &new.dump(), &[Class::SectionAdded]);
    assert_eq!(r.findings[0].section.as_deref(), Some("toy.cpu.xsave"));
    assert_eq!(r.findings[0].version, Some(1));
    // The same subsection in a new state version is harmless.
    let sections = vec![
        toy_section("toy.cpu", 1, true, None),
        toy_section("toy.cpu.xsave", 1, false, None),
    ];
    let r = expect(
        &Toy::previous().dump(),
        &Toy::with_v2(sections, true).dump(),
        &NEW_VERSION,
    );
    assert_eq!(r.verdict(), "compatible");
    // Without the conversion it is harmless too: a v1 destination accepts v2
    // (min_version 1) and skips the optional subsection.
    let sections = vec![
        toy_section("toy.cpu", 1, true, None),
        toy_section("toy.cpu.xsave", 1, false, None),
    ];
    expect(
        &Toy::previous().dump(),
        &Toy::with_v2(sections, false).dump(),
        &NEW_VERSION,
    );
}

#[test]
fn state_that_comes_to_need_a_host_capability_is_breaking() {
    // "QEMU/KVM migration backwards compatibility broken?" (qemu-devel, 2019):
    // CPU state that depends on a KVM capability reached hosts without it.
    let kvm = Some("toy.kvm-xsave");
    let mut new = Toy::previous();
    new.versions.insert(1, vec![toy_section("toy.cpu", 1, true, kvm)]);
    expect(
        &Toy::previous().dump(),
        &new.dump(),
        &[Class::SectionCapabilityAdded],
    );
    // In a new state version but under the same section version, v1
    // destinations accept the state (min_version 1) and never check it.
    let same = Toy::with_v2(vec![toy_section("toy.cpu", 1, true, kvm)], true);
    let mut breaking = NEW_VERSION.to_vec();
    breaking.push(Class::CapabilityNotEnforced);
    expect(&Toy::previous().dump(), &same.dump(), &breaking);
    // Done right: the section's version is bumped (min_version becomes 2, v1
    // destinations refuse v2) and 2 converts down to 1 for them.
    let bumped = Toy::with_v2(vec![toy_section("toy.cpu", 2, true, kvm)], true);
    assert_eq!(
        bumped.dump().plugins[0].device_types[0].configurations[0].versions[1].min_version,
        2
    );
    expect(&Toy::previous().dump(), &bumped.dump(), &NEW_VERSION);
    // Without the conversion the previous release's destinations get nothing.
    let stranded = Toy::with_v2(vec![toy_section("toy.cpu", 2, true, kvm)], false);
    let mut lost = NEW_VERSION.to_vec();
    lost.push(Class::DowngradePathLost);
    expect(&Toy::previous().dump(), &stranded.dump(), &lost);
}

// ---- malformed dumps ----

fn refused(text: &str) -> Code {
    Dump::parse(text).unwrap_err().code
}

#[test]
fn malformed_dumps_are_refused_with_their_code() {
    let good = build().only("mtty").to_text();
    assert!(Dump::parse(&good).is_ok());
    assert_eq!(refused("not json"), Code::BadSchema);
    assert_eq!(refused("[]"), Code::BadSchema);
    assert_eq!(refused("{}"), Code::BadSchema);
    assert_eq!(
        refused(r#"{"schema_format": 2, "anything": []}"#),
        Code::BadSchema
    );
    let e = Dump::parse(r#"{"schema_format": 2}"#).unwrap_err();
    assert!(e.message.contains("schema_format 2"), "{}", e.message);
    assert_eq!(
        refused(&good.replace("\"plugin_version\"", "\"extra\": 1, \"plugin_version\"")),
        Code::BadSchema
    );
    assert_eq!(
        refused(&good.replace("\"structured\"", "\"blob\"")),
        Code::BadSchema
    );
    assert_eq!(
        refused(&good.replace("\"min_version\": 1", "\"min_version\": 2")),
        Code::BadSchema
    );
    assert_eq!(
        refused(&good.replace("\"oldest\": 1", "\"oldest\": 0")),
        Code::BadSchema
    );
    assert_eq!(
        refused(&good.replace("\"newest\": 1", "\"newest\": 4000")),
        Code::BadSchema
    );
    assert_eq!(
        refused(&good.replace("\"mtty.state\"", "\"mtty\\u001b[2K\"")),
        Code::BadSchema
    );
    assert_eq!(
        refused(&good.replace("\"bound\": 96", "\"bound\": -1")),
        Code::BadSchema
    );
    let mut twice = build().only("mtty");
    twice.plugins.push(twice.plugins[0].clone());
    assert_eq!(refused(&twice.to_text()), Code::BadSchema);
    let mut many = build().only("mtty");
    let v1 = &mut many.plugins[0].device_types[0].configurations[0].versions[0];
    v1.sections = (0..65).map(|i| optional(&format!("mtty.s{i}"))).collect();
    let e = Dump::parse(&many.to_text()).unwrap_err();
    assert_eq!(e.code, Code::BadSchema);
    assert!(
        e.message.contains("65 sections, more than the 64"),
        "{}",
        e.message
    );
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(refused(&deep), Code::BadSchema);
    let huge = format!(
        "{{\"schema_format\": 1, \"plugins\": [], \"pad\": \"{}\"}}",
        "x".repeat(4 << 20)
    );
    assert_eq!(refused(&huge), Code::InputTooLarge);
    // A dump read back with a command's "ok" member is accepted.
    assert!(Dump::parse(&good.replacen('{', "{\"ok\": true,", 1)).is_ok());
}

#[test]
fn a_directory_of_dumps_merges_and_refuses_a_vendor_twice() {
    let dir = tempfile::tempdir().unwrap();
    let all = build();
    for p in &all.plugins {
        let one = all.clone().only(&p.vendor);
        std::fs::write(dir.path().join(format!("{}.json", p.vendor)), one.to_text()).unwrap();
    }
    std::fs::write(dir.path().join("README"), "not a schema").unwrap();
    let merged = schema::load(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(merged, all);
    std::fs::write(dir.path().join("copy.json"), all.clone().only("xe").to_text()).unwrap();
    let e = schema::load(dir.path().to_str().unwrap()).unwrap_err();
    assert_eq!(e.code, Code::BadSchema);
    assert!(e.message.contains("vendor xe"), "{}", e.message);
    // A directory's entries are read one level deep: a directory (or a link to
    // one, even to itself) named *.json is refused, never followed.
    std::fs::remove_file(dir.path().join("copy.json")).unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("loop.json")).unwrap();
    assert_eq!(
        schema::load(dir.path().to_str().unwrap()).unwrap_err().code,
        Code::NotRegular
    );
    std::fs::remove_file(dir.path().join("loop.json")).unwrap();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b' '; (4 << 20) + 1]).unwrap();
    assert_eq!(
        schema::load(big.to_str().unwrap()).unwrap_err().code,
        Code::InputTooLarge
    );
    assert_eq!(
        schema::load("/nonexistent/schema.json").unwrap_err().code,
        Code::IoOpen
    );
}

// ---- the gate: the committed schemas are this build's ----

/// `spec/schemas/<vendor>.json` for every built-in plugin equals a fresh dump.
/// To regenerate after a change: `MDEVMIG_BLESS_SCHEMAS=1 cargo test -p mdevmig
/// --test schema committed` (refuses a breaking change; `=breaking` writes it
/// anyway, for a change the release notes announce), or `mdevmig schema dump
/// --plugin <vendor> --json > spec/schemas/<vendor>.json`.
#[test]
fn committed_schemas_are_this_builds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/schemas");
    let bless = std::env::var("MDEVMIG_BLESS_SCHEMAS").unwrap_or_default();
    let all = build();
    let mut stale = Vec::new();
    for p in &all.plugins {
        let file = dir.join(format!("{}.json", p.vendor));
        let fresh = all.clone().only(&p.vendor).to_text();
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        if committed == fresh {
            continue;
        }
        if !bless.is_empty() {
            if let Ok(old) = Dump::parse(&committed) {
                let r = schema::diff(&old, &all.clone().only(&p.vendor));
                assert!(
                    r.breaking() == 0 || bless == "breaking",
                    "not blessing {}: {} breaking change(s): {:#?}",
                    p.vendor,
                    r.breaking(),
                    r.findings
                );
            }
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&file, &fresh).unwrap();
            continue;
        }
        stale.push(file.display().to_string());
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from this build's plugins: run `mdevmig schema diff spec/schemas --against-build` to see how, then regenerate with MDEVMIG_BLESS_SCHEMAS=1 cargo test -p mdevmig --test schema committed"
    );
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = all.plugins.iter().map(|p| format!("{}.json", p.vendor)).collect();
    assert_eq!(
        files, expected,
        "spec/schemas/ holds one file per built-in plugin and nothing else"
    );
}

#[test]
fn a_member_left_out_is_a_malformed_schema_not_a_null() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/schemas/mtty.json")).unwrap();
    for member in ["\"length\"", "\"capability\"", "\"produce\"", "\"load\""] {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        fn strip(v: &mut serde_json::Value, key: &str) -> bool {
            match v {
                serde_json::Value::Object(m) => {
                    if m.remove(key).is_some() {
                        return true;
                    }
                    m.values_mut().any(|x| strip(x, key))
                }
                serde_json::Value::Array(a) => a.iter_mut().any(|x| strip(x, key)),
                _ => false,
            }
        }
        assert!(strip(&mut v, member.trim_matches('"')), "{member}");
        let e = schema::Dump::parse(&v.to_string()).unwrap_err();
        assert_eq!(e.code, mdevmig::Code::BadSchema, "{member}: {e:?}");
    }
}

#[test]
fn a_window_version_a_configuration_does_not_list_is_a_malformed_schema() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/schemas/mtty.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["plugins"][0]["device_types"][0]["load"]["newest"] = serde_json::json!(2);
    let e = schema::Dump::parse(&v.to_string()).unwrap_err();
    assert_eq!(e.code, mdevmig::Code::BadSchema, "{e:?}");
    assert!(e.message.contains("state version 2"), "{e:?}");
}
