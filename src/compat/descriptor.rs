//! Device descriptors, the management pre-check, and scheduler labels.
//!
//! A [`Descriptor`] says everything a destination needs to decide about a device's
//! state without touching the device: vendor, type, the plugin's produce and load
//! windows, the configuration attributes that must match, host capabilities, and
//! the sections of every state version. `spec/compat.md` documents the JSON and the
//! algorithm; `spec/descriptor.schema.json` is its JSON Schema.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::Path;

use mdevmig_plugin_api::{
    DeviceInfo, SectionConversion, SectionKind, SectionSpec, VendorPlugin, VersionWindow,
};
use serde::{Deserialize, Serialize};

use super::{evaluate, Policy, Reason, StateClaim, StateSection, Verdict};
use crate::device::{flag_names, MigrationDevice};
use crate::error::{Code, Error, Result};
use crate::plugins::Registry;

/// The schema id every descriptor carries.
pub const SCHEMA: &str = "mdevmig.descriptor/1";

/// Largest descriptor accepted (a real one is a few KiB).
pub const MAX_DESCRIPTOR: u64 = 1 << 20;

/// An inclusive version window in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Oldest version.
    pub oldest: u32,
    /// Newest version.
    pub newest: u32,
}

impl From<VersionWindow> for Window {
    fn from(w: VersionWindow) -> Self {
        Window {
            oldest: w.oldest,
            newest: w.newest,
        }
    }
}

impl Window {
    /// The window, if it is not empty and starts at version 1 or later.
    fn window(self) -> Option<VersionWindow> {
        (1 <= self.oldest && self.oldest <= self.newest)
            .then_some(VersionWindow::new(self.oldest, self.newest))
    }
}

/// `oldest..newest`, as [`VersionWindow`] shows itself.
impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.oldest, self.newest)
    }
}

/// One section of a state version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionDesc {
    /// Section name.
    pub name: String,
    /// Section version.
    pub version: u16,
    /// Required flag.
    pub required: bool,
    /// Host capability needed to restore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// `structured`, `bulk` or `records`.
    pub kind: String,
    /// The section's length is known only at the end of the device's stream; the
    /// envelope carries a bound for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub streamed: bool,
}

impl From<&SectionSpec> for SectionDesc {
    fn from(s: &SectionSpec) -> Self {
        SectionDesc {
            name: s.name.clone(),
            version: s.version,
            required: s.required,
            capability: s.capability.clone(),
            kind: kind_name(s.kind).into(),
            streamed: s.streamed,
        }
    }
}

impl SectionDesc {
    /// The section as a state carries it.
    fn state_section(&self) -> StateSection {
        StateSection {
            name: self.name.clone(),
            version: self.version,
            required: self.required,
        }
    }

    /// The section as a plugin describes it, unbounded (a descriptor carries no
    /// length bound).
    fn spec(&self) -> SectionSpec {
        SectionSpec {
            name: self.name.clone(),
            version: self.version,
            required: self.required,
            capability: self.capability.clone(),
            max_len: u64::MAX,
            kind: parse_kind(&self.kind).unwrap_or(SectionKind::Structured),
            streamed: self.streamed,
        }
    }
}

/// A section kind's name in a descriptor.
fn kind_name(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Structured => "structured",
        SectionKind::Bulk => "bulk",
        SectionKind::Records => "records",
    }
}

/// The section kind a descriptor names; `None` for a name that is not one.
fn parse_kind(name: &str) -> Option<SectionKind> {
    match name {
        "structured" => Some(SectionKind::Structured),
        "bulk" => Some(SectionKind::Bulk),
        "records" => Some(SectionKind::Records),
        _ => None,
    }
}

/// What a state version looks like for this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionDesc {
    /// The minimum loader version a state of this version declares.
    pub min_version: u32,
    /// Its sections, in stream order.
    pub sections: Vec<SectionDesc>,
}

/// A device descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Vendor id.
    pub vendor: String,
    /// Device type.
    pub device_type: String,
    /// Backend that described it (`sim`, `file`, `vfio`).
    pub backend: String,
    /// VFIO migration flags by name.
    pub migration_flags: Vec<String>,
    /// Versions this host's plugin produces for the device (absent: none).
    pub produce: Option<Window>,
    /// Versions this host's plugin loads for the device (absent: none).
    pub load: Option<Window>,
    /// Configuration attributes that must match.
    pub attributes: BTreeMap<String, String>,
    /// Host capabilities.
    pub capabilities: BTreeSet<String>,
    /// Every version in the produce and load windows: its sections.
    pub versions: BTreeMap<String, VersionDesc>,
    /// mdevmig version.
    pub broker_version: String,
    /// Vendor plugin version.
    pub plugin_version: String,
    /// The vendor has no plugin on this host and the operator allowed its state
    /// opaque: it is authenticated but never validated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub opaque: bool,
    /// Present in `describe --json` output; ignored when read back.
    #[serde(default, skip_serializing)]
    pub ok: Option<bool>,
}

impl Descriptor {
    /// Reads a descriptor from a file or `-` (stdin), through a size cap
    /// ([`MAX_DESCRIPTOR`], `limit.input_too_large`).
    pub fn load(path: &str) -> Result<Self> {
        let src: Box<dyn Read> = if path == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(std::fs::File::open(path).map_err(|e| Error::io(Code::IoOpen, path, &e))?)
        };
        let text = crate::fsutil::read_capped(
            src,
            MAX_DESCRIPTOR,
            path,
            "descriptor larger than 1 MiB",
            Code::BadDescriptor,
        )?;
        Self::parse(&text).map_err(|e| Error::new(e.code, format!("{path}: {}", e.message)))
    }

    /// Parses and checks a descriptor.
    pub fn parse(text: &str) -> Result<Self> {
        let d: Descriptor =
            serde_json::from_str(text).map_err(|e| Error::new(Code::BadDescriptor, e.to_string()))?;
        if d.schema != SCHEMA {
            return Err(Error::new(
                Code::BadDescriptor,
                format!("schema {:?}, expected {SCHEMA:?}", d.schema),
            ));
        }
        for w in [d.produce, d.load].into_iter().flatten() {
            if w.window().is_none() {
                return Err(Error::new(
                    Code::BadDescriptor,
                    format!("version window {}..{} is empty", w.oldest, w.newest),
                ));
            }
        }
        d.check_strings()?;
        for (v, vd) in &d.versions {
            let n: u32 = v
                .parse()
                .ok()
                .filter(|n: &u32| n.to_string() == *v)
                .ok_or_else(|| {
                    Error::new(Code::BadDescriptor, format!("version key {v:?} is not a number"))
                })?;
            if vd.min_version == 0 || vd.min_version > n {
                return Err(Error::new(
                    Code::BadDescriptor,
                    format!("version {n}: min_version {} out of 1..={n}", vd.min_version),
                ));
            }
        }
        Ok(d)
    }

    /// Every name in a descriptor follows the envelope's alphabets (`wire-format.md`
    /// §2-3), so a descriptor from management cannot carry control characters or
    /// look-alike text into a terminal, a log or a header; the free-text version
    /// strings are printable ASCII.
    fn check_strings(&self) -> Result<()> {
        use crate::codec::limits::{MAX_ATTR_LEN, MAX_SECTION_NAME_LEN, MAX_TYPE_LEN, MAX_VENDOR_LEN};
        let bad = |e: Error| Error::new(Code::BadDescriptor, e.message);
        crate::codec::check_name("vendor", self.vendor.as_bytes(), MAX_VENDOR_LEN).map_err(bad)?;
        crate::codec::check_name("device_type", self.device_type.as_bytes(), MAX_TYPE_LEN).map_err(bad)?;
        for (k, v) in &self.attributes {
            crate::codec::check_name("attribute name", k.as_bytes(), MAX_ATTR_LEN).map_err(bad)?;
            crate::codec::header::check_value(v.as_bytes()).map_err(bad)?;
        }
        for c in &self.capabilities {
            crate::codec::check_name("capability", c.as_bytes(), MAX_SECTION_NAME_LEN).map_err(bad)?;
        }
        for s in self.versions.values().flat_map(|v| &v.sections) {
            crate::codec::check_name("section name", s.name.as_bytes(), MAX_SECTION_NAME_LEN).map_err(bad)?;
            if let Some(c) = &s.capability {
                crate::codec::check_name("capability", c.as_bytes(), MAX_SECTION_NAME_LEN).map_err(bad)?;
            }
            if parse_kind(&s.kind).is_none() {
                return Err(Error::new(
                    Code::BadDescriptor,
                    format!("section {}: kind is not structured, bulk or records", s.name),
                ));
            }
        }
        for f in &self.migration_flags {
            if !matches!(f.as_str(), "STOP_COPY" | "P2P" | "PRE_COPY") {
                return Err(Error::new(
                    Code::BadDescriptor,
                    "migration_flags has a name other than STOP_COPY, P2P, PRE_COPY",
                ));
            }
        }
        for (what, v) in [
            ("backend", &self.backend),
            ("broker_version", &self.broker_version),
            ("plugin_version", &self.plugin_version),
        ] {
            if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::new(
                    Code::BadDescriptor,
                    format!("{what} is not 1..64 printable ASCII characters"),
                ));
            }
        }
        Ok(())
    }

    /// The device info this descriptor describes.
    pub fn info(&self) -> DeviceInfo {
        DeviceInfo {
            vendor: self.vendor.clone(),
            device_type: self.device_type.clone(),
            attributes: self.attributes.clone(),
            capabilities: self.capabilities.clone(),
        }
    }

    fn version(&self, v: u32) -> Option<&VersionDesc> {
        self.versions.get(&v.to_string())
    }

    /// The claim of a state of version `v` with minimum `min_version` and
    /// `sections`, from the device this descriptor describes.
    fn claim(&self, v: u32, min_version: u32, sections: Vec<StateSection>) -> StateClaim {
        StateClaim {
            vendor: self.vendor.clone(),
            device_type: self.device_type.clone(),
            state_version: v,
            min_version,
            attributes: self.attributes.clone(),
            sections,
        }
    }
}

/// The minimum version a state of `target` declares: the oldest loader version
/// that knows every required section of it.
pub(crate) fn min_version_for(plugin: &dyn VendorPlugin, info: &DeviceInfo, target: u32) -> u32 {
    let Ok(ours) = plugin.sections(info, target) else {
        return target;
    };
    let oldest = [
        plugin.produces(&info.device_type),
        plugin.loads(&info.device_type),
    ]
    .into_iter()
    .flatten()
    .map(|w| w.oldest)
    .min()
    .unwrap_or(1)
    .max(1);
    (oldest..=target)
        .find(|v| {
            plugin.sections(info, *v).is_ok_and(|theirs| {
                ours.iter()
                    .filter(|s| s.required)
                    .all(|r| theirs.iter().any(|t| t.name == r.name && t.version >= r.version))
            })
        })
        .unwrap_or(target)
}

/// Describes a device as its host's plugin sees it.
pub fn describe(
    dev: &dyn MigrationDevice,
    registry: &Registry,
    narrowed: Option<VersionWindow>,
) -> Result<Descriptor> {
    let info = dev.info();
    let plugin = registry.for_state(&info.vendor, &info.device_type)?;
    let produce = super::effective_window(plugin.produces(&info.device_type), narrowed);
    let load = super::effective_window(plugin.loads(&info.device_type), narrowed);
    let mut versions = BTreeMap::new();
    let lo = [produce, load]
        .iter()
        .flatten()
        .map(|w| w.oldest)
        .min()
        .unwrap_or(1);
    let hi = [produce, load]
        .iter()
        .flatten()
        .map(|w| w.newest)
        .max()
        .unwrap_or(0);
    for v in lo..=hi {
        if let Ok(secs) = plugin.sections(info, v) {
            versions.insert(
                v.to_string(),
                VersionDesc {
                    min_version: min_version_for(plugin, info, v),
                    sections: secs.iter().map(SectionDesc::from).collect(),
                },
            );
        }
    }
    Ok(Descriptor {
        schema: SCHEMA.into(),
        vendor: info.vendor.clone(),
        device_type: info.device_type.clone(),
        backend: dev.backend().into(),
        migration_flags: flag_names(dev.migration_flags())
            .into_iter()
            .map(String::from)
            .collect(),
        produce: produce.map(Window::from),
        load: load.map(Window::from),
        attributes: info.attributes.clone(),
        capabilities: info.capabilities.clone(),
        versions,
        broker_version: env!("CARGO_PKG_VERSION").into(),
        plugin_version: plugin.plugin_version().into(),
        opaque: plugin.opaque(),
        ok: None,
    })
}

/// Which kinds of migration are possible (as NVML reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Kinds {
    /// The running VM's device state moves: the verdict is compatible.
    pub live: bool,
    /// The VM is shut down and started on the destination with a fresh device of
    /// the same vendor, type and configuration; no device state moves.
    pub cold: bool,
}

/// The pre-check's answer.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// The decision for the state the source should emit.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The state version the source should emit: its default when compatible,
    /// else the newest version it can convert to that the destination accepts.
    pub emit_version: u32,
    /// Optional sections the source should leave out (the destination skips them).
    pub omit: Vec<String>,
    /// Possible migration kinds.
    pub kinds: Kinds,
    /// The source's default state is refused, but converting to `emit_version`
    /// (what `save --for` does) is accepted.
    pub convertible: bool,
}

/// A reason the source cannot emit the state version asked for.
fn cannot_convert(message: String) -> Reason {
    Reason::new(Code::CannotConvert, message)
}

/// The claim a source would make at version `v`, converting from its native version
/// through the plugin when needed. Errors when the plugin cannot convert.
fn claim_at(
    source: &Descriptor,
    plugin: &dyn VendorPlugin,
    v: u32,
) -> std::result::Result<StateClaim, Reason> {
    let produce = source
        .produce
        .and_then(Window::window)
        .ok_or_else(|| cannot_convert(format!("the source's plugin produces no {} state", source.vendor)))?;
    let native = produce.newest;
    let vd = source.version(v).ok_or_else(|| {
        cannot_convert(format!(
            "the source does not describe {} state version {v}",
            source.vendor
        ))
    })?;
    let sections = if v >= native {
        vd.sections.iter().map(SectionDesc::state_section).collect()
    } else {
        converted_sections(source, plugin, native, v)?
    };
    Ok(source.claim(v, vd.min_version, sections))
}

/// The sections of the source's `native` state converted down to version `v` by
/// the plugin.
fn converted_sections(
    source: &Descriptor,
    plugin: &dyn VendorPlugin,
    native: u32,
    v: u32,
) -> std::result::Result<Vec<StateSection>, Reason> {
    let nd = source.version(native).ok_or_else(|| {
        cannot_convert(format!(
            "the source does not describe its native version {native}"
        ))
    })?;
    let specs: Vec<SectionSpec> = nd.sections.iter().map(SectionDesc::spec).collect();
    let plan = plugin.convert(&source.info(), native, v, &specs).map_err(|e| {
        cannot_convert(format!(
            "the source cannot convert {} state {native} to {v}: {}",
            source.vendor, e.message
        ))
    })?;
    Ok(plan
        .iter()
        .filter_map(|c| match c {
            SectionConversion::Keep(s) => Some(StateSection::from(s)),
            SectionConversion::Drop => None,
        })
        .collect())
}

/// The claim the source makes at version `v` (without a plugin, no sections: the
/// decision stops before they matter), or why it cannot make one.
fn claim_for(
    source: &Descriptor,
    plugin: Option<&dyn VendorPlugin>,
    v: u32,
) -> std::result::Result<StateClaim, Reason> {
    match plugin {
        Some(p) => claim_at(source, p, v),
        None => Ok(source.claim(
            v,
            source.version(v).map(|d| d.min_version).unwrap_or(v),
            Vec::new(),
        )),
    }
}

/// The pre-check: may the state of the device `source` describes go to `dest`?
///
/// The verdict is about the state the source emits by default: its native
/// version, or the version policy pins. That claim goes through [`evaluate`], the
/// function the restore uses, with the same policy, so a restore of that stream
/// reaches the same verdict and the same first reason. When it is incompatible, the
/// newest other version the source can convert down to and the destination accepts
/// is offered as `emit_version` (what `save --for` emits), with a reason saying so.
pub fn check(
    source: &Descriptor,
    dest: &DeviceInfo,
    registry: &Registry,
    load: Option<VersionWindow>,
    policy: &Policy,
) -> CheckResult {
    let plugin = registry
        .vendor(&dest.vendor)
        .filter(|_| source.vendor == dest.vendor);
    let produce = source.produce.and_then(Window::window);
    let native = produce.map(|w| w.newest).unwrap_or(0);
    let v0 = policy.pin_version.unwrap_or(native);
    let cold = source.vendor == dest.vendor
        && source.device_type == dest.device_type
        && source.attributes == dest.attributes;
    let run = |v: u32| -> Verdict {
        match claim_for(source, plugin, v) {
            Ok(c) => evaluate(&c, dest, plugin, load, policy),
            Err(r) => Verdict::refused(v, vec![r]),
        }
    };
    let verdict = run(v0);
    if verdict.compatible || policy.pin_version.is_some() {
        return finish(v0, verdict, None, cold);
    }
    // Incompatible as emitted: is there a version the source can convert to? Only
    // versions the descriptor describes can be claimed, so the candidates are its
    // entries, newest first: the work follows the descriptor's size, never the
    // width of a window it declares (1..4294967295 is a valid window).
    let mut candidates: Vec<u32> = source
        .versions
        .keys()
        .filter_map(|k| k.parse::<u32>().ok())
        .filter(|v| produce.is_some_and(|w| w.oldest <= *v) && *v < v0)
        .collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    let alternative = candidates
        .into_iter()
        .map(|v| (v, run(v)))
        .find(|(_, vd)| vd.compatible);
    finish(v0, verdict, alternative, cold)
}

/// The pre-check's answer from the verdict at the default version `v0` and the
/// version the source can convert to instead, if any.
fn finish(v0: u32, mut verdict: Verdict, alternative: Option<(u32, Verdict)>, cold: bool) -> CheckResult {
    let (emit, plan) = match &alternative {
        Some((v, alt)) => {
            verdict.reasons.push(Reason::new(
                Code::VersionTooNew,
                format!(
                    "the source can convert its state down to version {v}, which this destination restores: save with --for this destination's descriptor (or --state-version {v})"
                ),
            ));
            (*v, alt)
        }
        None => (v0, &verdict),
    };
    let omit = plan.skipped().map(String::from).collect();
    let live = verdict.compatible || alternative.is_some();
    CheckResult {
        verdict,
        emit_version: emit,
        omit,
        kinds: Kinds { live, cold },
        convertible: alternative.is_some(),
    }
}

/// Reads an operator policy file (JSON, see `spec/compat.md`), at most
/// [`MAX_DESCRIPTOR`] bytes (`limit.input_too_large`).
pub fn load_policy(path: &Path) -> Result<Policy> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
    let text = crate::fsutil::read_capped(
        f,
        MAX_DESCRIPTOR,
        path.display(),
        "policy larger than 1 MiB",
        Code::BadDescriptor,
    )?;
    parse_policy(&text).map_err(|e| Error::new(e.code, format!("{}: {}", path.display(), e.message)))
}

/// Parses an operator policy (JSON, see `spec/compat.md`) of at most
/// [`MAX_DESCRIPTOR`] bytes (`limit.input_too_large`).
pub fn parse_policy(text: &str) -> Result<Policy> {
    if text.len() as u64 > MAX_DESCRIPTOR {
        return Err(Error::new(Code::InputTooLarge, "policy larger than 1 MiB"));
    }
    serde_json::from_str(text).map_err(|e| Error::new(Code::BadDescriptor, e.to_string()))
}

/// Label prefix (a DNS subdomain, as Kubernetes label keys take).
pub const LABEL_PREFIX: &str = "mdevmig.io/";

/// How far past the newest known version range labels reach, so a host still
/// matches VMs from sources a few plugin releases ahead.
pub const LABEL_HORIZON: u32 = 4;

/// Scheduler labels: what a host offers, and what a VM's state requires. A VM fits a
/// host iff every required label is among the host's offered labels with the same
/// value (a set-membership test; usable as Kubernetes node labels and node
/// selectors, or Node Feature Discovery feature files).
#[derive(Debug, Clone, Serialize)]
pub struct Labels {
    /// Labels this host offers as a destination.
    pub offers: BTreeMap<String, String>,
    /// Labels a VM whose device this is requires of a destination.
    pub requires: BTreeMap<String, String>,
}

/// The labels of a device on this host.
pub fn labels(d: &Descriptor) -> Labels {
    let base = format!("{LABEL_PREFIX}{}.{}", d.vendor, d.device_type);
    let mut offers = BTreeMap::new();
    let mut requires = BTreeMap::new();
    offers.insert(base.clone(), "true".to_string());
    requires.insert(base.clone(), "true".to_string());
    for (k, v) in &d.attributes {
        offers.insert(format!("{base}.{k}"), v.clone());
        requires.insert(format!("{base}.{k}"), v.clone());
    }
    for c in &d.capabilities {
        offers.insert(format!("{LABEL_PREFIX}cap.{c}"), "true".into());
    }
    // Versions: a host loading O..L accepts a state of version V with minimum M iff
    // O <= V and M <= L. The host offers one label per (V, M) it accepts, V up to a
    // horizon past its newest version; the VM requires the label of the state its
    // source emits by default. (States a source could convert down to are the
    // pre-check's business: `check` and `save --for`.)
    if let Some(load) = d.load.and_then(Window::window) {
        let top = load.newest.saturating_add(LABEL_HORIZON);
        for v in load.oldest..=top {
            for m in 1..=v.min(load.newest) {
                offers.insert(format!("{base}.state-v{v}-m{m}"), "load".into());
            }
        }
    }
    if let Some(produce) = d.produce.and_then(Window::window) {
        let v = produce.newest;
        if let Some(vd) = d.version(v) {
            requires.insert(format!("{base}.state-v{v}-m{}", vd.min_version), "load".into());
            for s in vd.sections.iter().filter(|s| s.required) {
                if let Some(c) = &s.capability {
                    requires.insert(format!("{LABEL_PREFIX}cap.{c}"), "true".into());
                }
            }
        }
    }
    Labels { offers, requires }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_reads_refuse_one_byte_past_the_cap() {
        let read =
            |bytes: &[u8], code| crate::fsutil::read_capped(bytes, 4, "f", "larger than 4 bytes", code);
        assert_eq!(read(b"abcd", Code::BadDescriptor).unwrap(), "abcd");
        assert_eq!(
            read(b"abcde", Code::BadDescriptor).unwrap_err(),
            Error::new(Code::InputTooLarge, "f: larger than 4 bytes")
        );
        let not_text = read(b"\xff", Code::BadKeyFile).unwrap_err();
        assert_eq!(not_text.code, Code::BadKeyFile);
        assert!(not_text.message.starts_with("f: "), "{}", not_text.message);
    }

    #[test]
    fn section_kinds_round_trip_through_their_names() {
        for kind in [SectionKind::Structured, SectionKind::Bulk, SectionKind::Records] {
            assert_eq!(parse_kind(kind_name(kind)), Some(kind));
        }
        assert_eq!(parse_kind("blob"), None);
    }
}
