//! Comparing two dumps: every difference as a [`Finding`] of a [`Class`].
//!
//! `old` is the previous release (the committed schema), `new` this build. A
//! change is **breaking** when a state that moved between two hosts of the
//! previous release no longer moves between a host of the previous release and
//! one of this release, in either direction, or when one state version now means
//! two layouts; everything else that differs is **compatible**. The rules follow
//! `compat::evaluate`: a destination loading `O..L` accepts a state of version `V`
//! with minimum `M` iff `O <= V` and `M <= L`, then judges each section against
//! its own sections of `min(V, L)`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Serialize, Serializer};

use super::dump::config_label;
use super::{
    ConfigSchema, ConversionSchema, ConvertAction, Dump, PluginSchema, RecordSchema, SectionSchema,
    TypeSchema, VersionSchema, Window, MAX_WINDOW,
};

/// Whether a difference breaks migration between the two releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Breaks migration between the releases, or gives a state version two
    /// meanings.
    Breaking,
    /// Safe both ways.
    Compatible,
}

macro_rules! classes {
    ($( $variant:ident = $id:literal, $sev:ident, $meaning:literal; )*) => {
        /// The kind of a difference; each has one stable kebab-case id and one
        /// severity (`spec/schema.md` lists them).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Class {
            $( #[doc = $meaning] $variant, )*
        }

        impl Class {
            /// Every class, with its id, severity and one-line meaning, in the
            /// order `spec/schema.md` lists them.
            pub const TABLE: &'static [(Class, &'static str, Severity, &'static str)] = &[
                $( (Class::$variant, $id, Severity::$sev, $meaning), )*
            ];

            /// The stable id.
            pub fn id(self) -> &'static str {
                match self { $( Class::$variant => $id, )* }
            }

            /// The severity.
            pub fn severity(self) -> Severity {
                match self { $( Class::$variant => Severity::$sev, )* }
            }
        }
    };
}

classes! {
    PluginRemoved = "plugin-removed", Breaking, "a plugin of the previous release is gone";
    PluginAdded = "plugin-added", Compatible, "a new plugin";
    DeviceTypeRemoved = "device-type-removed", Breaking, "a device type of the previous release is gone";
    DeviceTypeAdded = "device-type-added", Compatible, "a new device type";
    ConfigurationRemoved = "configuration-removed", Breaking, "a configuration the previous release listed is refused or no longer listed";
    ConfigurationAdded = "configuration-added", Compatible, "a new configuration";
    AttributeAdded = "attribute-added", Breaking, "a new configuration attribute, which old sources cannot supply";
    AttributeRemoved = "attribute-removed", Breaking, "an attribute old sources carry is gone";
    AttributeDefaultChanged = "attribute-default-changed", Breaking, "an attribute's default value changed";
    AttributeValueChanged = "attribute-value-changed", Breaking, "an attribute given the same value completes to another";
    LoadVersionDropped = "load-version-dropped", Breaking, "a state version the previous release produces is no longer loaded";
    LoadWindowNarrowed = "load-window-narrowed", Compatible, "a state version the previous release only loaded (never produced) is no longer loaded";
    LoadWindowWidened = "load-window-widened", Compatible, "more state versions are loaded";
    ProduceWindowChanged = "produce-window-changed", Compatible, "the produced state versions changed, and the previous release still loads what this one emits";
    DowngradePathLost = "downgrade-path-lost", Breaking, "the previous release's destinations accept no state this release emits, natively or converted";
    StateVersionAdded = "state-version-added", Compatible, "a new state version";
    CapabilityNotEnforced = "capability-not-enforced", Breaking, "a new state version's section needs a host capability, but destinations of the previous release accept it as a section that needs none";
    LayoutWithoutSectionBump = "layout-without-section-bump", Breaking, "a new state version changes a section's layout under the same section version that destinations of the previous release accept";
    MinVersionRaised = "min-version-raised", Breaking, "an existing state version declares a higher min_version";
    MinVersionLowered = "min-version-lowered", Compatible, "an existing state version declares a lower min_version";
    SectionAdded = "section-added", Breaking, "an optional section added to an existing state version";
    SectionAddedRequired = "section-added-required", Breaking, "a required section added to an existing state version";
    SectionRemoved = "section-removed", Breaking, "a section removed from an existing state version";
    SectionMadeRequired = "section-made-required", Breaking, "an optional section made required in an existing state version";
    SectionMadeOptional = "section-made-optional", Compatible, "a required section made optional";
    SectionCapabilityAdded = "section-capability-added", Breaking, "a section of an existing state version now needs a host capability";
    SectionCapabilityChanged = "section-capability-changed", Breaking, "a section of an existing state version needs another host capability";
    SectionCapabilityRemoved = "section-capability-removed", Compatible, "a section no longer needs a host capability";
    SectionVersionChanged = "section-version-changed", Breaking, "a section's own version changed within an existing state version";
    SectionKindChanged = "section-kind-changed", Breaking, "a section's kind or streamed flag changed within an existing state version";
    SectionLengthChanged = "section-length-changed", Breaking, "a section's exact length changed, appeared or went within an existing state version";
    SectionOrderChanged = "section-order-changed", Breaking, "the sections of an existing state version are in another order";
    SectionBoundShrunk = "section-bound-shrunk", Breaking, "a section's bound (max_len) shrank";
    StreamedBoundGrown = "streamed-bound-grown", Breaking, "a streamed section's bound grew within an existing state version";
    SectionBoundGrown = "section-bound-grown", Compatible, "a section's bound grew (not streamed)";
    RecordTypeAddedMandatory = "record-type-added-mandatory", Breaking, "a mandatory record type added to an existing state version";
    RecordTypeAddedOptional = "record-type-added-optional", Compatible, "an optional record type added";
    RecordTypeRemoved = "record-type-removed", Breaking, "a mandatory record type removed from an existing state version";
    RecordTypeRemovedOptional = "record-type-removed-optional", Compatible, "an optional record type removed";
    RecordTypeMadeMandatory = "record-type-made-mandatory", Breaking, "an optional record type made mandatory in an existing state version";
    RecordTypeMadeOptional = "record-type-made-optional", Compatible, "a mandatory record type made optional";
    RecordTypeRenamed = "record-type-renamed", Compatible, "a record type's name changed (its code did not)";
    ConversionRemoved = "conversion-removed", Breaking, "a conversion the previous release performed is gone";
    ConversionAdded = "conversion-added", Compatible, "a new conversion";
    ConversionDropsSection = "conversion-drops-section", Breaking, "a conversion now drops a section it kept";
    ConversionKeepsSection = "conversion-keeps-section", Compatible, "a conversion now keeps a section it dropped";
}

impl Serialize for Class {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// One difference. In JSON every key is present, `null` where it does not apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind of difference.
    pub class: Class,
    /// Always `class.severity()`.
    pub severity: Severity,
    /// Vendor id.
    pub plugin: String,
    /// Device type.
    pub device_type: Option<String>,
    /// The configuration (`k=v,...`; `null`: the default one).
    pub configuration: Option<String>,
    /// State version.
    pub version: Option<u32>,
    /// Section name.
    pub section: Option<String>,
    /// Record type (`name (code)`).
    pub record: Option<String>,
    /// Attribute name.
    pub attribute: Option<String>,
    /// Conversion (`from->to`).
    pub conversion: Option<String>,
    /// Why, and what to do.
    pub reason: String,
}

/// The comparison's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Every difference: the breaking ones first, each group in dump order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Breaking findings.
    pub fn breaking(&self) -> usize {
        self.count(Severity::Breaking)
    }

    /// Compatible findings.
    pub fn compatible(&self) -> usize {
        self.count(Severity::Compatible)
    }

    fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    /// `identical`, `compatible` or `breaking`.
    pub fn verdict(&self) -> &'static str {
        match (self.breaking(), self.findings.len()) {
            (0, 0) => "identical",
            (0, _) => "compatible",
            _ => "breaking",
        }
    }

    /// The findings of `class`.
    pub fn of(&self, class: Class) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.class == class)
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            verdict: &'static str,
            breaking: usize,
            compatible: usize,
            findings: &'a [Finding],
        }
        Json {
            verdict: self.verdict(),
            breaking: self.breaking(),
            compatible: self.compatible(),
            findings: &self.findings,
        }
        .serialize(s)
    }
}

/// Where a finding is: the context the comparison descends through.
#[derive(Debug, Clone, Default)]
struct At {
    plugin: String,
    device_type: Option<String>,
    configuration: Option<String>,
    version: Option<u32>,
    section: Option<String>,
}

impl At {
    fn finding(&self, class: Class, reason: String) -> Finding {
        Finding {
            class,
            severity: class.severity(),
            plugin: self.plugin.clone(),
            device_type: self.device_type.clone(),
            configuration: self.configuration.clone(),
            version: self.version,
            section: self.section.clone(),
            record: None,
            attribute: None,
            conversion: None,
            reason,
        }
    }

    fn version(&self, v: u32) -> At {
        At {
            version: Some(v),
            ..self.clone()
        }
    }

    fn section(&self, name: &str) -> At {
        At {
            section: Some(name.to_owned()),
            ..self.clone()
        }
    }
}

/// Every difference between the previous release's dump `old` and `new`.
pub fn diff(old: &Dump, new: &Dump) -> Report {
    let mut out = Vec::new();
    for o in &old.plugins {
        let at = At {
            plugin: o.vendor.clone(),
            ..At::default()
        };
        match new.plugin(&o.vendor) {
            None => out.push(at.finding(
                Class::PluginRemoved,
                format!(
                    "plugin {} is gone: every state its previous release produced is refused (compat.no_plugin)",
                    o.vendor
                ),
            )),
            Some(n) => plugin_findings(&at, o, n, &mut out),
        }
    }
    for n in new.plugins.iter().filter(|n| old.plugin(&n.vendor).is_none()) {
        let at = At {
            plugin: n.vendor.clone(),
            ..At::default()
        };
        out.push(at.finding(Class::PluginAdded, format!("plugin {} is new", n.vendor)));
    }
    let mut findings = dedup(out);
    findings.sort_by_key(|f| f.severity);
    Report { findings }
}

/// Drops a finding that repeats an earlier one of the same plugin and device
/// type but another configuration (a change every configuration shares is
/// reported once, for the first configuration).
fn dedup(findings: Vec<Finding>) -> Vec<Finding> {
    let mut seen = HashSet::new();
    findings
        .into_iter()
        .filter(|f| {
            seen.insert((
                f.class,
                f.plugin.clone(),
                f.device_type.clone(),
                f.version,
                f.section.clone(),
                f.record.clone(),
                f.attribute.clone(),
                f.conversion.clone(),
                f.reason.clone(),
            ))
        })
        .collect()
}

fn plugin_findings(at: &At, o: &PluginSchema, n: &PluginSchema, out: &mut Vec<Finding>) {
    let find = |p: &PluginSchema, name: &str| p.device_types.iter().find(|t| t.name == name).cloned();
    for ot in &o.device_types {
        let at = At {
            device_type: Some(ot.name.clone()),
            ..at.clone()
        };
        match find(n, &ot.name) {
            None => out.push(at.finding(
                Class::DeviceTypeRemoved,
                format!(
                    "device type {} is gone: its state from the previous release is refused (compat.no_plugin)",
                    ot.name
                ),
            )),
            Some(nt) => type_findings(&at, ot, &nt, out),
        }
    }
    for nt in n.device_types.iter().filter(|t| find(o, &t.name).is_none()) {
        let at = At {
            device_type: Some(nt.name.clone()),
            ..at.clone()
        };
        out.push(at.finding(Class::DeviceTypeAdded, format!("device type {} is new", nt.name)));
    }
}

fn type_findings(at: &At, o: &TypeSchema, n: &TypeSchema, out: &mut Vec<Finding>) {
    let find = |t: &TypeSchema, c: &BTreeMap<String, String>| {
        t.configurations.iter().find(|x| x.config == *c).cloned()
    };
    for oc in &o.configurations {
        let at = At {
            configuration: config_label(&oc.config),
            ..at.clone()
        };
        match find(n, &oc.config) {
            None => out.push(at.finding(
                Class::ConfigurationRemoved,
                format!(
                    "{} is no longer a configuration of the schema (configure refuses it, or the plugin stopped listing it): devices configured so cannot be migrated to this release",
                    at.configuration.as_deref().unwrap_or("the default configuration")
                ),
            )),
            Some(nc) => {
                attribute_findings(&at, oc, &nc, out);
                window_findings(&at, (o, oc), (n, &nc), out);
                version_findings(&at, (o.load, oc), &nc, out);
            }
        }
    }
    for nc in n.configurations.iter().filter(|c| find(o, &c.config).is_none()) {
        let at = At {
            configuration: config_label(&nc.config),
            ..at.clone()
        };
        let label = at
            .configuration
            .clone()
            .unwrap_or_else(|| "the default configuration".into());
        out.push(at.finding(
            Class::ConfigurationAdded,
            format!("{label} is a new configuration"),
        ));
    }
}

fn attribute_findings(at: &At, o: &ConfigSchema, n: &ConfigSchema, out: &mut Vec<Finding>) {
    let mut push = |class, key: &str, reason: String| {
        let mut f = at.finding(class, reason);
        f.attribute = Some(key.to_owned());
        out.push(f);
    };
    for (k, ov) in &o.attributes {
        match n.attributes.get(k) {
            None => push(
                Class::AttributeRemoved,
                k,
                format!(
                    "attribute {k} is gone: states of the previous release carry {k}={ov}, and a destination compares every attribute of either side (compat.config_mismatch); keep accepting it"
                ),
            ),
            Some(nv) if nv != ov && !o.config.contains_key(k) => push(
                Class::AttributeDefaultChanged,
                k,
                format!(
                    "attribute {k} defaults to {nv}, was {ov}: a device created with defaults no longer matches one of the previous release (compat.config_mismatch); keep the default"
                ),
            ),
            Some(nv) if nv != ov => push(
                Class::AttributeValueChanged,
                k,
                format!(
                    "attribute {k} given as {} now completes to {nv}, was {ov} (compat.config_mismatch)",
                    o.config.get(k).map_or("", String::as_str)
                ),
            ),
            Some(_) => {}
        }
    }
    for (k, nv) in n
        .attributes
        .iter()
        .filter(|(k, _)| !o.attributes.contains_key(*k))
    {
        push(
            Class::AttributeAdded,
            k,
            format!(
                "attribute {k} (default {nv}) is new: states of the previous release cannot carry it, and a destination compares every attribute of either side (compat.config_mismatch); add it under a new device type instead"
            ),
        );
    }
}

/// The minimum version a state of `v` declares in `c` (`v` when not listed).
fn min_of(c: &ConfigSchema, v: u32) -> u32 {
    c.versions
        .iter()
        .find(|x| x.version == v)
        .map_or(v, |x| x.min_version)
}

/// `compat::evaluate`'s version rule: a destination loading `load` accepts a
/// state of `v` with minimum `m`.
fn accepts(load: Option<Window>, v: u32, m: u32) -> bool {
    load.is_some_and(|l| l.oldest <= v && m <= l.newest)
}

/// The versions of a window, at most [`MAX_WINDOW`] of them (a parsed dump's
/// windows are never wider).
fn range(w: Option<Window>) -> impl Iterator<Item = u32> {
    w.into_iter()
        .flat_map(|w| w.oldest..=w.newest)
        .take(MAX_WINDOW as usize)
}

fn shown(w: Option<Window>) -> String {
    w.map_or_else(|| "nothing".to_owned(), |w| w.to_string())
}

/// The load and produce windows, from the previous release's sources to this
/// release's destinations and back.
fn window_findings(
    at: &At,
    (o, oc): (&TypeSchema, &ConfigSchema),
    (n, nc): (&TypeSchema, &ConfigSchema),
    out: &mut Vec<Finding>,
) {
    for v in range(o.produce) {
        let m = min_of(oc, v);
        if !accepts(n.load, v, m) {
            out.push(at.version(v).finding(
                Class::LoadVersionDropped,
                format!(
                    "the previous release produces state version {v} (min_version {m}) and this release loads {}: its destinations refuse that state; keep loading {v} while a release in service produces it",
                    shown(n.load)
                ),
            ));
        }
    }
    for v in range(o.load).filter(|v| !o.produce.is_some_and(|w| w.oldest <= *v && *v <= w.newest)) {
        if !n.load.is_some_and(|w| w.oldest <= v && v <= w.newest) {
            out.push(at.version(v).finding(
                Class::LoadWindowNarrowed,
                format!("state version {v} is no longer loaded; the previous release loaded but never produced it"),
            ));
        }
    }
    if range(n.load).any(|v| !o.load.is_some_and(|w| w.oldest <= v && v <= w.newest)) {
        out.push(at.finding(
            Class::LoadWindowWidened,
            format!("loads {}, was {}", shown(n.load), shown(o.load)),
        ));
    }
    if o.produce != n.produce {
        out.push(at.finding(
            Class::ProduceWindowChanged,
            format!("produces {}, was {}", shown(n.produce), shown(o.produce)),
        ));
    }
    downgrade_findings(at, (o, oc), (n, nc), out);
}

/// The states a source emits for a destination: its native (newest produced)
/// version and every version it converts that one to, each with its minimum.
fn emits(t: &TypeSchema, c: &ConfigSchema) -> Vec<(u32, u32)> {
    let Some(native) = t.produce.map(|w| w.newest) else {
        return Vec::new();
    };
    let mut out = vec![(native, min_of(c, native))];
    if let Some(v) = c.versions.iter().find(|v| v.version == native) {
        out.extend(v.conversions.iter().map(|x| (x.to, min_of(c, x.to))));
    }
    out
}

/// Back to the previous release: its destinations took its own sources' state;
/// do they take something this release emits?
fn downgrade_findings(
    at: &At,
    (o, oc): (&TypeSchema, &ConfigSchema),
    (n, nc): (&TypeSchema, &ConfigSchema),
    out: &mut Vec<Finding>,
) {
    let before = emits(o, oc).iter().any(|(v, m)| accepts(o.load, *v, *m));
    let now = emits(n, nc);
    if before && !now.iter().any(|(v, m)| accepts(o.load, *v, *m)) {
        let list: Vec<String> = now
            .iter()
            .map(|(v, m)| format!("{v} (min_version {m})"))
            .collect();
        out.push(at.finding(
            Class::DowngradePathLost,
            format!(
                "the previous release's destinations load {} and this release emits {}: none of it is accepted, so a device cannot migrate back; add a conversion down to a version they load",
                shown(o.load),
                if list.is_empty() { "nothing".to_owned() } else { list.join(", ") }
            ),
        ));
    }
}

fn version_findings(
    at: &At,
    (load, oc): (Option<Window>, &ConfigSchema),
    nc: &ConfigSchema,
    out: &mut Vec<Finding>,
) {
    for nv in &nc.versions {
        let at = at.version(nv.version);
        match oc.versions.iter().find(|v| v.version == nv.version) {
            Some(ov) => version_pair(&at, ov, nv, out),
            None => {
                let list: Vec<String> = nv
                    .sections
                    .iter()
                    .map(|s| format!("{}{}", s.name, if s.required { "" } else { " (optional)" }))
                    .collect();
                out.push(at.finding(
                    Class::StateVersionAdded,
                    format!(
                        "state version {} is new (min_version {}): {}",
                        nv.version,
                        nv.min_version,
                        list.join(", ")
                    ),
                ));
                old_view_findings(&at, (load, oc), nv, out);
            }
        }
    }
}

/// A new state version `n` the previous release's destinations (loading `load`)
/// accept by its min_version: they judge each section against their own
/// sections of `min(V, L)`, so a section they know under the same section
/// version must mean the same to them.
fn old_view_findings(
    at: &At,
    (load, oc): (Option<Window>, &ConfigSchema),
    n: &VersionSchema,
    out: &mut Vec<Finding>,
) {
    let Some(l) = load.filter(|_| accepts(load, n.version, n.min_version)) else {
        return;
    };
    let seen_as = n.version.min(l.newest);
    let Some(theirs) = oc.versions.iter().find(|v| v.version == seen_as) else {
        return;
    };
    let v = n.version;
    for s in &n.sections {
        let Some(k) = theirs
            .sections
            .iter()
            .find(|k| k.name == s.name && k.version == s.version)
        else {
            continue;
        };
        let at = at.section(&s.name);
        let intro = format!(
            "the previous release's destinations accept state version {v} (min_version {}) and restore section {} v{} as their own of state version {seen_as}",
            n.min_version, s.name, s.version
        );
        if let Some(c) = s
            .capability
            .as_ref()
            .filter(|c| k.capability.as_ref() != Some(*c))
        {
            out.push(at.finding(
                Class::CapabilityNotEnforced,
                format!(
                    "{intro}, which needs no capability {c}: they load it on hosts without {c}; bump the section's version (or raise min_version) with the capability"
                ),
            ));
        }
        if s.kind != k.kind || s.streamed != k.streamed || s.length != k.length || s.bound > k.bound {
            out.push(at.finding(
                Class::LayoutWithoutSectionBump,
                format!(
                    "{intro}, whose kind, length or bound differs: they read or refuse it as the old layout; bump the section's version with its layout"
                ),
            ));
        }
        unknown_mandatory_records(&at, &intro, s, k, out);
    }
    required_sections_seen_by_old(at, theirs, n, seen_as, out);
}

/// Record types section `s` makes mandatory that the old destinations' section
/// `k` (the same name and section version) does not have: they refuse the
/// stream at the first such record.
fn unknown_mandatory_records(
    at: &At,
    intro: &str,
    s: &SectionSchema,
    k: &SectionSchema,
    out: &mut Vec<Finding>,
) {
    for r in s
        .records
        .iter()
        .filter(|r| !r.optional && !k.records.iter().any(|o| o.code == r.code))
    {
        let mut f = at.finding(
            Class::LayoutWithoutSectionBump,
            format!(
                "{intro}, which has no mandatory record type {} ({}): they refuse the stream at it; bump the section's version with the record type",
                r.name, r.code
            ),
        );
        f.record = Some(format!("{} ({})", r.name, r.code));
        out.push(f);
    }
}

/// The same destinations restore state version `n` against their sections of
/// `seen_as`: a section they require that `n` lacks, or one `n` requires that
/// they do not know, makes them refuse every such state.
fn required_sections_seen_by_old(
    at: &At,
    theirs: &VersionSchema,
    n: &VersionSchema,
    seen_as: u32,
    out: &mut Vec<Finding>,
) {
    let v = n.version;
    let intro = format!(
        "the previous release's destinations accept state version {v} (min_version {}) and restore it as their state version {seen_as}",
        n.min_version
    );
    for k in theirs.sections.iter().filter(|k| k.required) {
        if !n.sections.iter().any(|s| s.name == k.name) {
            out.push(at.section(&k.name).finding(
                Class::LayoutWithoutSectionBump,
                format!(
                    "{intro}, which requires section {}; version {v} lacks it: they refuse it (vendor.missing_section); raise min_version above {seen_as}, or keep the section",
                    k.name
                ),
            ));
        }
    }
    for s in n.sections.iter().filter(|s| s.required) {
        if !theirs.sections.iter().any(|k| k.name == s.name) {
            out.push(at.section(&s.name).finding(
                Class::LayoutWithoutSectionBump,
                format!(
                    "{intro}, which does not know section {}, required in version {v}: they refuse it (compat.unknown_required_section); raise min_version above {seen_as}, or make the section optional",
                    s.name
                ),
            ));
        }
    }
}

fn version_pair(at: &At, o: &VersionSchema, n: &VersionSchema, out: &mut Vec<Finding>) {
    let v = o.version;
    if n.min_version > o.min_version {
        out.push(at.finding(
            Class::MinVersionRaised,
            format!(
                "state version {v} declares min_version {}, was {}: destinations loading up to {} accepted it and now refuse it (compat.min_version_too_new); make the change in a new state version",
                n.min_version,
                o.min_version,
                n.min_version - 1
            ),
        ));
    } else if n.min_version < o.min_version {
        out.push(at.finding(
            Class::MinVersionLowered,
            format!(
                "state version {v} declares min_version {}, was {}",
                n.min_version, o.min_version
            ),
        ));
    }
    section_findings(at, &o.sections, &n.sections, out);
    conversion_findings(at, &o.conversions, &n.conversions, out);
}

fn section_findings(at: &At, o: &[SectionSchema], n: &[SectionSchema], out: &mut Vec<Finding>) {
    let v = at.version.unwrap_or_default();
    for os in o {
        match n.iter().find(|s| s.name == os.name) {
            Some(ns) => section_pair(&at.section(&os.name), os, ns, out),
            None => out.push(at.section(&os.name).finding(
                Class::SectionRemoved,
                format!(
                    "{} section {} is gone from state version {v}: this release's destinations {} it in the previous release's states, and state version {v} now means two layouts; remove it in a new state version",
                    if os.required { "required" } else { "optional" },
                    os.name,
                    if os.required { "refuse (compat.unknown_required_section)" } else { "silently skip" }
                ),
            )),
        }
    }
    for ns in n.iter().filter(|s| o.iter().all(|x| x.name != s.name)) {
        let (class, effect) = if ns.required {
            (
                Class::SectionAddedRequired,
                "the previous release's destinations refuse this release's states (compat.unknown_required_section), and this release's destinations find it missing from the previous release's (vendor.missing_section)",
            )
        } else {
            (
                Class::SectionAdded,
                "the state version now means two layouts: the previous release's sources never send it, so this release's destinations restore their states without it, and the previous release's destinations drop it from this release's (the ambiguity of qemu-devel, \"savevm: define new unambiguous migration format\", 2011)",
            )
        };
        out.push(at.section(&ns.name).finding(
            class,
            format!(
                "section {} is added to existing state version {v}: {effect}; add it in a new state version",
                ns.name
            ),
        ));
    }
    let order = |a: &[SectionSchema], b: &[SectionSchema]| -> Vec<String> {
        a.iter()
            .filter(|s| b.iter().any(|x| x.name == s.name))
            .map(|s| s.name.clone())
            .collect()
    };
    let (before, after) = (order(o, n), order(n, o));
    if before != after {
        out.push(at.finding(
            Class::SectionOrderChanged,
            format!(
                "the sections of state version {v} are in the order {}, were {}: destinations refuse a stream in another order (vendor.section_order)",
                after.join(", "),
                before.join(", ")
            ),
        ));
    }
}

fn section_pair(at: &At, o: &SectionSchema, n: &SectionSchema, out: &mut Vec<Finding>) {
    let (name, v) = (&o.name, at.version.unwrap_or_default());
    let mut push = |class, reason: String| out.push(at.finding(class, reason));
    match (o.required, n.required) {
        (false, true) => push(
            Class::SectionMadeRequired,
            format!(
                "section {name} is required in state version {v}, was optional: destinations of releases that do not know it, which skipped it, now refuse the state (compat.unknown_required_section); make it required in a new state version"
            ),
        ),
        (true, false) => push(
            Class::SectionMadeOptional,
            format!("section {name} is optional in state version {v}, was required"),
        ),
        _ => {}
    }
    capability_findings(name, v, o, n, &mut push);
    if o.version != n.version {
        push(
            Class::SectionVersionChanged,
            format!(
                "section {name} is version {} in state version {v}, was {}: each side refuses the other's (compat.section_version); bump the state version with it",
                n.version, o.version
            ),
        );
    }
    layout_findings(name, v, o, n, &mut push);
    record_findings(at, &o.records, &n.records, out);
}

fn capability_findings(
    name: &str,
    v: u32,
    o: &SectionSchema,
    n: &SectionSchema,
    push: &mut impl FnMut(Class, String),
) {
    match (&o.capability, &n.capability) {
        (None, Some(c)) => push(
            Class::SectionCapabilityAdded,
            format!(
                "section {name} of state version {v} now needs host capability {c}: the previous release's destinations restore it on hosts without {c} (the 2019 qemu-devel report of state that depends on KVM capabilities), and this release's refuse the previous release's state there (compat.missing_capability); declare the capability in a new state version"
            ),
        ),
        (Some(a), Some(b)) if a != b => push(
            Class::SectionCapabilityChanged,
            format!(
                "section {name} of state version {v} needs host capability {b}, was {a}: the two releases check different host capabilities for the same state; change it in a new state version"
            ),
        ),
        (Some(c), None) => push(
            Class::SectionCapabilityRemoved,
            format!("section {name} of state version {v} no longer needs host capability {c}"),
        ),
        _ => {}
    }
}

fn layout_findings(
    name: &str,
    v: u32,
    o: &SectionSchema,
    n: &SectionSchema,
    push: &mut impl FnMut(Class, String),
) {
    let shape = |s: &SectionSchema| {
        format!("{:?}{}", s.kind, if s.streamed { ", streamed" } else { "" }).to_lowercase()
    };
    if o.kind != n.kind || o.streamed != n.streamed {
        push(
            Class::SectionKindChanged,
            format!(
                "section {name} of state version {v} is {}, was {}: each release validates the other's bytes as something they are not; change the layout in a new state version",
                shape(n),
                shape(o)
            ),
        );
    }
    if o.length != n.length {
        let len = |l: Option<u64>| l.map_or("variable".to_owned(), |l| format!("{l} bytes"));
        push(
            Class::SectionLengthChanged,
            format!(
                "section {name} of state version {v} is {}, was {}: destinations refuse the other release's length (vendor.section_length); change the layout in a new state version",
                len(n.length),
                len(o.length)
            ),
        );
    }
    if n.bound < o.bound {
        push(
            Class::SectionBoundShrunk,
            format!(
                "section {name} of state version {v} is bounded at {} bytes, was {}: this release's destinations refuse the previous release's longer sections (limit.section_too_large)",
                n.bound, o.bound
            ),
        );
    } else if n.bound > o.bound && (o.streamed || n.streamed) {
        push(
            Class::StreamedBoundGrown,
            format!(
                "streamed section {name} of state version {v} is bounded at {} bytes, was {}: a stream's header declares the source's bound, and the previous release's destinations refuse one above theirs (limit.section_too_large); grow it in a new state version",
                n.bound, o.bound
            ),
        );
    } else if n.bound > o.bound {
        push(
            Class::SectionBoundGrown,
            format!(
                "section {name} of state version {v} is bounded at {} bytes, was {}",
                n.bound, o.bound
            ),
        );
    }
}

fn record_findings(at: &At, o: &[RecordSchema], n: &[RecordSchema], out: &mut Vec<Finding>) {
    let v = at.version.unwrap_or_default();
    let mut push = |class, r: &RecordSchema, reason: String| {
        let mut f = at.finding(class, reason);
        f.record = Some(format!("{} ({})", r.name, r.code));
        out.push(f);
    };
    for or in o {
        let r = format!("record type {} ({})", or.name, or.code);
        match (n.iter().find(|x| x.code == or.code), or.optional) {
            (None, false) => push(
                Class::RecordTypeRemoved,
                or,
                format!("mandatory {r} is gone from state version {v}: this release's destinations refuse the previous release's streams that carry it; remove it in a new state version"),
            ),
            (None, true) => push(Class::RecordTypeRemovedOptional, or, format!("optional {r} is gone from state version {v}; destinations skip it")),
            (Some(nr), _) => record_pair(&r, v, or, nr, &mut push),
        }
    }
    for nr in n.iter().filter(|x| o.iter().all(|y| y.code != x.code)) {
        let r = format!("record type {} ({})", nr.name, nr.code);
        if nr.optional {
            push(
                Class::RecordTypeAddedOptional,
                nr,
                format!("optional {r} is new in state version {v}; destinations that do not know it skip it"),
            );
        } else {
            push(
                Class::RecordTypeAddedMandatory,
                nr,
                format!("mandatory {r} is added to existing state version {v}: the previous release's destinations refuse a stream that carries it (an unknown mandatory record); add it in a new state version, or mark it optional"),
            );
        }
    }
}

fn record_pair(
    r: &str,
    v: u32,
    o: &RecordSchema,
    n: &RecordSchema,
    push: &mut impl FnMut(Class, &RecordSchema, String),
) {
    match (o.optional, n.optional) {
        (true, false) => push(
            Class::RecordTypeMadeMandatory,
            n,
            format!("{r} is mandatory in state version {v}, was optional: destinations that do not know it skipped it and now refuse the stream, and the validator now refuses the previous release's streams without it; make it mandatory in a new state version"),
        ),
        (false, true) => push(Class::RecordTypeMadeOptional, n, format!("{r} is optional in state version {v}, was mandatory")),
        _ => {}
    }
    if o.name != n.name {
        push(
            Class::RecordTypeRenamed,
            n,
            format!("{r} is now named {}", n.name),
        );
    }
}

fn conversion_findings(at: &At, o: &[ConversionSchema], n: &[ConversionSchema], out: &mut Vec<Finding>) {
    let from = at.version.unwrap_or_default();
    let mut push = |class, to: u32, section: Option<&str>, reason: String| {
        let mut f = at.finding(class, reason);
        f.conversion = Some(format!("{from}->{to}"));
        f.section = section.map(str::to_owned);
        out.push(f);
    };
    for oc in o {
        match n.iter().find(|c| c.to == oc.to) {
            Some(nc) => plan_findings(from, oc, nc, &mut push),
            None => push(
                Class::ConversionRemoved,
                oc.to,
                None,
                format!(
                    "the conversion of state version {from} to {0} is gone: a source can no longer emit {0} for destinations that load it",
                    oc.to
                ),
            ),
        }
    }
    for nc in n.iter().filter(|c| o.iter().all(|x| x.to != c.to)) {
        push(
            Class::ConversionAdded,
            nc.to,
            None,
            format!("state version {from} now converts to {}", nc.to),
        );
    }
}

/// One conversion in both releases: the sections both plans name, kept by one
/// and dropped by the other.
fn plan_findings(
    from: u32,
    o: &ConversionSchema,
    n: &ConversionSchema,
    push: &mut impl FnMut(Class, u32, Option<&str>, String),
) {
    let to = o.to;
    let kept = |c: &ConversionSchema| -> BTreeSet<String> {
        c.sections
            .iter()
            .filter(|s| s.action == ConvertAction::Keep)
            .map(|s| s.name.clone())
            .collect()
    };
    let named: BTreeSet<&str> = o.sections.iter().map(|s| s.name.as_str()).collect();
    let (was, now) = (kept(o), kept(n));
    for s in n.sections.iter().filter(|s| named.contains(s.name.as_str())) {
        match (was.contains(&s.name), now.contains(&s.name)) {
            (true, false) => push(
                Class::ConversionDropsSection,
                to,
                Some(&s.name),
                format!(
                    "converting state version {from} to {to} drops section {}, which it kept: the converted state loses it",
                    s.name
                ),
            ),
            (false, true) => push(
                Class::ConversionKeepsSection,
                to,
                Some(&s.name),
                format!("converting state version {from} to {to} keeps section {}, which it dropped", s.name),
            ),
            _ => {}
        }
    }
}
