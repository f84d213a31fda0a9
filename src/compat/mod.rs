//! Compatibility: may this destination restore that state, and what happens to each
//! section?
//!
//! One function, [`evaluate`], decides. The restore path calls it with the
//! authenticated header; the management pre-check calls it with a source
//! descriptor. Because both go through the same code with the same policy, the
//! pre-check and the restore cannot disagree.
//!
//! The rules, in order (every failing rule adds a reason; the first one is the
//! error a restore reports):
//!
//! 1. The vendor must be the destination's (`compat.vendor_mismatch`) and a plugin
//!    must handle it (`compat.no_plugin`); the type must be the destination's
//!    (`compat.type_mismatch`).
//! 2. With the destination's load window `O..L` and the state's version `V` and
//!    minimum `M`, accept iff `O <= V` and `M <= L` (`spec/compat.md` §3). `M > L` is
//!    `compat.version_too_new` when `M == V` (the state admits no older loader) and
//!    `compat.min_version_too_new` when `M < V`; `V < O` is `compat.version_too_old`.
//!    Policy may refuse listed versions or pin one (`compat.version_refused`).
//! 3. Each section of the state, against the sections the destination's plugin knows
//!    for version `min(V, L)`:
//!    * known, the same section version, capability present (or none needed):
//!      **restore**;
//!    * known but an older section version (version 0 included): fail
//!      (`compat.section_version`) if required, skip if optional;
//!    * known but its capability is missing on this host: **skip** if the operator
//!      allowed skipping it by name, else **fail** (`compat.missing_capability`) —
//!      the qemu-devel thread "QEMU/KVM migration backwards compatibility
//!      broken?" (2019);
//!    * known but a newer section version than the destination understands: fail
//!      (`compat.section_version`) if required, skip if optional;
//!    * unknown and optional: **skip**; unknown and required: **fail**
//!      (`compat.unknown_required_section`);
//!    * the operator may also skip any optional section by name.
//!
//! A vendor with no plugin is `compat.no_plugin` unless the operator allowed it
//! by name (`allow_opaque`): then the registry answers with an opaque stand-in,
//! rules 1 and 2 still apply, its one section is sent unvalidated, and the
//! verdict says `opaque`.
//!
//! In the code, each rule group is a function: [`evaluate`] runs the identity
//! rules (vendor, type, configuration), then the plugin lookup, the version rules
//! (load window, then policy) and, when nothing failed so far, the section rules,
//! whose typed outcome for each section is a [`SectionFate`].
//!
//! A pre-check of a state against a simulated destination:
//!
//! ```
//! use mdevmig::compat::{evaluate, Action, Policy, StateClaim, StateSection};
//! use mdevmig::device::DeviceSpec;
//! use mdevmig::plugins::Registry;
//!
//! let registry = Registry::builtin();
//! // The destination: a simulated 64 MiB vGPU, with its plugin's load window.
//! let (dev, _) = mdevmig::device::open(&"sim:simgpu/vgpu-64m".parse::<DeviceSpec>()?, &registry)?;
//! let dest = dev.info();
//! let plugin = registry.vendor(&dest.vendor);
//! let load = plugin.and_then(|p| p.loads(&dest.device_type));
//!
//! // What the source's state claims to be: simgpu state version 2.
//! let section = |name: &str, required| StateSection { name: name.into(), version: 1, required };
//! let claim = StateClaim {
//!     vendor: "simgpu".into(),
//!     device_type: "vgpu-64m".into(),
//!     state_version: 2,
//!     min_version: 1,
//!     attributes: dest.attributes.clone(),
//!     sections: vec![
//!         section("simgpu.fb", true),
//!         section("simgpu.fb-dirty", true),
//!         section("simgpu.regs", true),
//!         section("simgpu.telemetry", false),
//!     ],
//! };
//!
//! let verdict = evaluate(&claim, dest, plugin, load, &Policy::default());
//! assert!(verdict.compatible);
//! assert!(verdict.sections.iter().all(|s| s.action == Action::Send));
//!
//! // Operator policy that refuses version 2: the restore's error, with its code.
//! let policy = Policy { refuse_versions: [2].into(), ..Policy::default() };
//! let verdict = evaluate(&claim, dest, plugin, load, &policy);
//! assert!(!verdict.compatible);
//! assert_eq!(verdict.error().map(|e| e.code), Some(mdevmig::Code::VersionRefused));
//! # Ok::<(), mdevmig::Error>(())
//! ```

mod descriptor;

pub(crate) use descriptor::min_version_for;
pub use descriptor::{
    check, describe, labels, load_policy, parse_policy, CheckResult, Descriptor, Kinds, Labels, SectionDesc,
    VersionDesc, Window, LABEL_HORIZON, LABEL_PREFIX, MAX_DESCRIPTOR, SCHEMA,
};

use std::collections::{BTreeMap, BTreeSet};

use mdevmig_plugin_api::{DeviceInfo, SectionSpec, VendorPlugin, VersionWindow};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Code, Error, Result};

/// Operator policy: the same on the pre-check and the restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Sections that may be skipped by name: optional ones, and ones whose host
    /// capability is missing here.
    pub allow_skip: BTreeSet<String>,
    /// The state version the source must emit.
    pub pin_version: Option<u32>,
    /// State versions this destination refuses.
    pub refuse_versions: BTreeSet<u32>,
    /// Vendors with no plugin whose state may travel unvalidated (authenticated,
    /// type and configuration matched, content unchecked). Empty by default:
    /// a vendor without a plugin is refused unless the operator names it here.
    pub allow_opaque: BTreeSet<String>,
    /// Most bytes of sections a restore may read and discard (optional sections
    /// this destination skips). `None`: [`DEFAULT_MAX_SKIPPED`]. Skipped data is
    /// verified but useless; without a bound a 96-byte mtty state could carry a
    /// terabyte of it.
    pub max_skipped_bytes: Option<u64>,
    /// Refuse streams that are not bound to a session nonce this host issued.
    pub require_session: bool,
}

/// The default bound on skipped section bytes: 16 MiB, above any optional
/// section the built-in plugins define (telemetry, encoder state).
pub const DEFAULT_MAX_SKIPPED: u64 = 16 << 20;

impl Policy {
    /// The bound on skipped section bytes in force.
    pub fn max_skipped(&self) -> u64 {
        self.max_skipped_bytes.unwrap_or(DEFAULT_MAX_SKIPPED)
    }
}

/// What happens to a section (`action` in JSON: `send`, `skip` or `fail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Sent and restored.
    Send,
    /// Left out (by the source) or dropped (by the destination).
    Skip,
    /// Makes the migration impossible.
    Fail,
}

/// One section as the state carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSection {
    /// Name.
    pub name: String,
    /// Section version.
    pub version: u16,
    /// Required flag.
    pub required: bool,
}

impl From<&SectionSpec> for StateSection {
    fn from(s: &SectionSpec) -> Self {
        StateSection {
            name: s.name.clone(),
            version: s.version,
            required: s.required,
        }
    }
}

/// What a state claims to be: from an authenticated header or a source descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateClaim {
    /// Vendor id.
    pub vendor: String,
    /// Device type.
    pub device_type: String,
    /// State version.
    pub state_version: u32,
    /// Minimum loader version.
    pub min_version: u32,
    /// The source device's configuration attributes.
    pub attributes: BTreeMap<String, String>,
    /// Sections in stream order.
    pub sections: Vec<StateSection>,
}

/// A reason with its stable code and a sentence a person can act on. In JSON:
/// `{"code": "compat.…", "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Stable code (see `spec/errors.md`).
    #[serde(serialize_with = "code_string")]
    pub code: Code,
    /// What to do about it.
    pub message: String,
}

/// A code as its dotted string, the form `spec/errors.md` documents.
fn code_string<S: Serializer>(code: &Code, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(code.as_str())
}

impl Reason {
    /// A reason with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Reason {
            code,
            message: message.into(),
        }
    }
}

/// A section version other than the one the destination understands for the
/// state version concerned (newer, or older: version 0 included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionSkew {
    /// The section's version in the state.
    pub version: u16,
    /// The version the destination's plugin reads.
    pub understood: u16,
}

impl VersionSkew {
    /// The state's section is newer than the destination's.
    pub fn is_newer(&self) -> bool {
        self.version > self.understood
    }
}

/// Why a section is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipCause {
    /// Optional, and unknown to the destination's plugin.
    Unknown,
    /// Optional, in a section version the destination does not read.
    Version(VersionSkew),
    /// Needs a host capability the destination lacks; the operator allowed
    /// skipping it by name.
    CapabilityAllowed {
        /// The missing capability.
        capability: String,
    },
    /// Optional, and the operator skips it by name.
    Operator,
}

impl SkipCause {
    /// The sentence the verdict gives for skipping `section`.
    pub fn message(&self, section: &str) -> String {
        match self {
            SkipCause::Unknown => format!("optional section {section} is unknown to the destination"),
            SkipCause::Version(k) => format!(
                "optional section {section} v{} is {} than the destination's v{}",
                k.version,
                if k.is_newer() { "newer" } else { "older" },
                k.understood
            ),
            SkipCause::CapabilityAllowed { capability } => {
                format!("host lacks {capability}; operator allowed skipping {section}")
            }
            SkipCause::Operator => format!("operator policy skips optional section {section}"),
        }
    }
}

/// Why a section makes the migration impossible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Required, and unknown to the destination's plugin
    /// (`compat.unknown_required_section`).
    UnknownRequired,
    /// Required, in a section version the destination does not read
    /// (`compat.section_version`).
    Version(VersionSkew),
    /// Needs a host capability the destination lacks, and the operator did not
    /// allow skipping it (`compat.missing_capability`).
    MissingCapability {
        /// The missing capability.
        capability: String,
    },
}

impl Refusal {
    /// The stable code of this refusal.
    pub fn code(&self) -> Code {
        match self {
            Refusal::UnknownRequired => Code::UnknownRequiredSection,
            Refusal::Version(_) => Code::SectionVersion,
            Refusal::MissingCapability { .. } => Code::MissingCapability,
        }
    }

    /// The sentence the verdict gives for refusing because of `section`.
    pub fn message(&self, section: &str) -> String {
        match self {
            Refusal::UnknownRequired => {
                format!("required section {section} is unknown to the destination plugin; upgrade it")
            }
            Refusal::Version(k) if k.is_newer() => format!(
                "section {section} is version {}; the destination understands up to {}; upgrade the destination plugin",
                k.version, k.understood
            ),
            Refusal::Version(k) => format!(
                "section {section} is version {}; the destination reads it as version {} only",
                k.version, k.understood
            ),
            Refusal::MissingCapability { capability: cap } => format!(
                "section {section} needs host capability {cap}, which the destination lacks; use a host with {cap}, or allow skipping {section} if the guest can live without it"
            ),
        }
    }
}

/// What the section rules decide for one section, with the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionFate {
    /// Sent and restored.
    Send,
    /// Left out (by the source) or dropped (by the destination).
    Skip(SkipCause),
    /// Makes the migration impossible.
    Refuse(Refusal),
}

impl SectionFate {
    /// The action this fate takes.
    pub fn action(&self) -> Action {
        match self {
            SectionFate::Send => Action::Send,
            SectionFate::Skip(_) => Action::Skip,
            SectionFate::Refuse(_) => Action::Fail,
        }
    }

    /// Why `section` is skipped or refused; `None` when it is sent.
    pub fn message(&self, section: &str) -> Option<String> {
        match self {
            SectionFate::Send => None,
            SectionFate::Skip(cause) => Some(cause.message(section)),
            SectionFate::Refuse(refusal) => Some(refusal.message(section)),
        }
    }
}

/// A section's fate. In JSON: `{"name", "action", "reason"}`, `reason` only for
/// a skipped or refused section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionVerdict {
    /// Section name.
    pub name: String,
    /// What happens to it: always `fate.action()`.
    pub action: Action,
    /// What happens to it, and why.
    pub fate: SectionFate,
    /// The destination's spec for it, when known.
    pub spec: Option<SectionSpec>,
}

impl SectionVerdict {
    /// The verdict `fate` for the state's section `section`, with the
    /// destination's `spec` for it.
    pub fn new(section: &StateSection, spec: Option<SectionSpec>, fate: SectionFate) -> Self {
        SectionVerdict {
            name: section.name.clone(),
            action: fate.action(),
            fate,
            spec,
        }
    }

    /// Why the section is skipped or refused; `None` when it is sent.
    pub fn reason(&self) -> Option<String> {
        self.fate.message(&self.name)
    }

    /// The reason the migration fails because of this section, if it does.
    pub fn refusal(&self) -> Option<Reason> {
        match &self.fate {
            SectionFate::Refuse(r) => Some(Reason::new(r.code(), r.message(&self.name))),
            _ => None,
        }
    }
}

impl Serialize for SectionVerdict {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            name: &'a str,
            action: Action,
            #[serde(skip_serializing_if = "Option::is_none")]
            reason: Option<String>,
        }
        Json {
            name: &self.name,
            action: self.action,
            reason: self.reason(),
        }
        .serialize(s)
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// True when the state can be restored.
    pub compatible: bool,
    /// The state version concerned.
    pub state_version: u32,
    /// Per-section fate.
    pub sections: Vec<SectionVerdict>,
    /// Every reason the migration cannot happen (empty when compatible).
    pub reasons: Vec<Reason>,
    /// The vendor has no plugin here and the operator allowed its state opaque:
    /// authenticated, but its content is not validated by anything but the
    /// kernel driver.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub opaque: bool,
}

impl Verdict {
    /// Incompatible for `reasons`, decided before any section was looked at.
    pub(crate) fn refused(state_version: u32, reasons: Vec<Reason>) -> Verdict {
        Verdict {
            compatible: false,
            state_version,
            sections: Vec::new(),
            reasons,
            opaque: false,
        }
    }

    /// The error a restore reports for this verdict: its first reason; `None`
    /// when the verdict is compatible.
    pub fn error(&self) -> Option<Error> {
        if self.compatible {
            return None;
        }
        Some(match self.reasons.first() {
            Some(r) => Error::new(r.code, r.message.clone()),
            None => Error::new(Code::Internal, "incompatible without a reason"),
        })
    }

    /// The names of the sections this verdict skips, in stream order.
    pub fn skipped(&self) -> impl Iterator<Item = &str> {
        self.sections
            .iter()
            .filter(|s| s.action == Action::Skip)
            .map(|s| s.name.as_str())
    }

    /// The verdict when compatible, else its first reason as an error (for the
    /// restore path).
    pub fn into_result(self) -> Result<Verdict> {
        match self.error() {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }
}

/// Decides whether `dest` (with its plugin and load window) may restore `state`.
///
/// The rule groups run in the order of the module documentation, and a group
/// that fails ends the decision; within the configuration, version and section
/// groups every failing rule adds its reason.
pub fn evaluate(
    state: &StateClaim,
    dest: &DeviceInfo,
    plugin: Option<&dyn VendorPlugin>,
    load: Option<VersionWindow>,
    policy: &Policy,
) -> Verdict {
    let v = state.state_version;
    let identity = identity_rules(state, dest);
    if !identity.is_empty() {
        return Verdict::refused(v, identity);
    }
    let (Some(plugin), Some(load)) = (plugin, load) else {
        return Verdict::refused(v, vec![no_plugin(state)]);
    };
    let mut reasons = version_rules(state, load, policy);
    // A loader older than the state knows the sections of its own newest version;
    // the state's newer parts must be optional sections it can skip (the section
    // rules refuse unknown required ones).
    let sections = if reasons.is_empty() {
        section_rules(state, dest, plugin, v.min(load.newest), policy)
    } else {
        Vec::new()
    };
    reasons.extend(sections.iter().filter_map(SectionVerdict::refusal));
    Verdict {
        compatible: reasons.is_empty(),
        state_version: v,
        sections,
        reasons,
        opaque: plugin.opaque(),
    }
}

/// `spec/compat.md` §3 rules 1 and 2: the vendor, then the type, then every
/// configuration attribute.
fn identity_rules(state: &StateClaim, dest: &DeviceInfo) -> Vec<Reason> {
    if state.vendor != dest.vendor {
        return vec![Reason::new(
            Code::VendorMismatch,
            format!(
                "the state is {} device state and the destination is a {} device; state never crosses vendors",
                state.vendor, dest.vendor
            ),
        )];
    }
    if state.device_type != dest.device_type {
        return vec![Reason::new(
            Code::TypeMismatch,
            format!(
                "the state is for a {} and the destination device is a {}; create a {} on the destination",
                state.device_type, dest.device_type, state.device_type
            ),
        )];
    }
    config_rules(state, dest)
}

/// Same type, and every attribute in either set equal on both sides.
fn config_rules(state: &StateClaim, dest: &DeviceInfo) -> Vec<Reason> {
    let keys: BTreeSet<&String> = state.attributes.keys().chain(dest.attributes.keys()).collect();
    let mut reasons = Vec::new();
    for k in keys {
        let (a, b) = (state.attributes.get(k), dest.attributes.get(k));
        if a != b {
            let show = |v: Option<&String>| v.map(|v| format!("{k}={v}")).unwrap_or(format!("no {k}"));
            reasons.push(Reason::new(
                Code::ConfigMismatch,
                format!(
                    "same type {}, different configuration: the source has {}, the destination {}; create the destination device with {}",
                    state.device_type,
                    show(a),
                    show(b),
                    show(a)
                ),
            ));
        }
    }
    reasons
}

/// `spec/compat.md` §3 rule 3: no plugin for the vendor, or it loads nothing for
/// the type.
fn no_plugin(state: &StateClaim) -> Reason {
    Reason::new(
        Code::NoPlugin,
        format!(
            "no {} plugin on the destination loads {}; install one",
            state.vendor, state.device_type
        ),
    )
}

/// `spec/compat.md` §3 rule 4: the load window, then operator policy on
/// versions.
fn version_rules(state: &StateClaim, load: VersionWindow, policy: &Policy) -> Vec<Reason> {
    window_rule(state, load)
        .into_iter()
        .chain(policy_version_rules(state, policy))
        .collect()
}

/// Accept iff `O <= V` and `M <= L`.
fn window_rule(state: &StateClaim, load: VersionWindow) -> Option<Reason> {
    let (vendor, v, m) = (&state.vendor, state.state_version, state.min_version);
    if m > load.newest {
        let code = if m == v {
            Code::VersionTooNew
        } else {
            Code::MinVersionTooNew
        };
        return Some(Reason::new(
            code,
            format!(
                "destination plugin loads {vendor} state {load}; source emits {v} with minimum {m}; upgrade the destination plugin or pin the source to {}",
                load.newest
            ),
        ));
    }
    (v < load.oldest).then(|| {
        Reason::new(
            Code::VersionTooOld,
            format!(
                "destination plugin loads {vendor} state {load} and no longer {v}; upgrade the source plugin or use a destination that still loads {v}"
            ),
        )
    })
}

/// The versions policy refuses, and the one it pins.
fn policy_version_rules(state: &StateClaim, policy: &Policy) -> Vec<Reason> {
    let (vendor, v) = (&state.vendor, state.state_version);
    let mut reasons = Vec::new();
    if policy.refuse_versions.contains(&v) {
        reasons.push(Reason::new(
            Code::VersionRefused,
            format!("operator policy refuses {vendor} state version {v}"),
        ));
    }
    if let Some(pin) = policy.pin_version.filter(|pin| *pin != v) {
        reasons.push(Reason::new(
            Code::VersionRefused,
            format!("operator policy pins {vendor} state to version {pin}; the state is version {v}"),
        ));
    }
    reasons
}

/// `spec/compat.md` §3 rule 5: every section of the state against the sections
/// the destination's plugin knows at version `at`.
fn section_rules(
    state: &StateClaim,
    dest: &DeviceInfo,
    plugin: &dyn VendorPlugin,
    at: u32,
    policy: &Policy,
) -> Vec<SectionVerdict> {
    let known = plugin.sections(dest, at).unwrap_or_default();
    state
        .sections
        .iter()
        .map(|s| {
            let spec = known.iter().find(|k| k.name == s.name).cloned();
            let allowed = policy.allow_skip.contains(&s.name);
            let fate = section_fate(s, spec.as_ref(), &dest.capabilities, allowed);
            SectionVerdict::new(s, spec, fate)
        })
        .collect()
}

/// One section's fate: `known` is the destination's spec for it, `allowed` says
/// whether the operator allows skipping it by name.
fn section_fate(
    s: &StateSection,
    known: Option<&SectionSpec>,
    capabilities: &BTreeSet<String>,
    allowed: bool,
) -> SectionFate {
    let Some(k) = known else {
        return if s.required {
            SectionFate::Refuse(Refusal::UnknownRequired)
        } else {
            SectionFate::Skip(SkipCause::Unknown)
        };
    };
    // An older section version than the destination's spec for this state
    // version is refused like a newer one: no built-in plugin reads older section
    // formats, and reading one as the newer format (version 0 as version 1) is
    // the bug.
    if s.version != k.version {
        let skew = VersionSkew {
            version: s.version,
            understood: k.version,
        };
        return if s.required {
            SectionFate::Refuse(Refusal::Version(skew))
        } else {
            SectionFate::Skip(SkipCause::Version(skew))
        };
    }
    match &k.capability {
        Some(cap) if !capabilities.contains(cap) => {
            let capability = cap.clone();
            if allowed {
                SectionFate::Skip(SkipCause::CapabilityAllowed { capability })
            } else {
                SectionFate::Refuse(Refusal::MissingCapability { capability })
            }
        }
        _ if allowed && !s.required => SectionFate::Skip(SkipCause::Operator),
        _ => SectionFate::Send,
    }
}

/// The claim an authenticated header makes.
pub fn claim_of(h: &crate::codec::Header) -> StateClaim {
    StateClaim {
        vendor: h.vendor.clone(),
        device_type: h.device_type.clone(),
        state_version: h.state_version,
        min_version: h.min_version,
        attributes: h.attributes.clone(),
        sections: h
            .sections
            .iter()
            .map(|s| StateSection {
                name: s.name.clone(),
                version: s.version,
                required: s.required(),
            })
            .collect(),
    }
}

/// The window a plugin loads on this host, narrowed by a host override.
pub fn effective_window(
    base: Option<VersionWindow>,
    narrowed: Option<VersionWindow>,
) -> Option<VersionWindow> {
    match (base, narrowed) {
        (Some(b), Some(n)) => {
            let w = VersionWindow::new(b.oldest.max(n.oldest), b.newest.min(n.newest));
            (w.oldest <= w.newest).then_some(w)
        }
        (b, None) => b,
        (None, Some(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdevmig_plugin_api::SectionKind;
    use serde_json::json;

    fn section(version: u16, required: bool) -> StateSection {
        StateSection {
            name: "v.s".into(),
            version,
            required,
        }
    }

    fn spec(version: u16, capability: Option<&str>) -> SectionSpec {
        SectionSpec {
            name: "v.s".into(),
            version,
            required: true,
            capability: capability.map(String::from),
            max_len: 64,
            kind: SectionKind::Structured,
            streamed: false,
        }
    }

    #[test]
    fn every_section_rule_has_its_fate() {
        use {Refusal as R, SectionFate as F, SkipCause as S};
        let caps = BTreeSet::from(["v.cap".to_string()]);
        let fate = |s: StateSection, known: Option<SectionSpec>, allowed| {
            section_fate(&s, known.as_ref(), &caps, allowed)
        };
        let skew = |version, understood| VersionSkew { version, understood };
        let capability = || "v.other".to_string();
        let (other, here) = (Some("v.other"), Some("v.cap"));
        assert_eq!(fate(section(1, true), None, false), F::Refuse(R::UnknownRequired));
        assert_eq!(fate(section(1, false), None, true), F::Skip(S::Unknown));
        assert_eq!(
            fate(section(2, true), Some(spec(1, None)), true),
            F::Refuse(R::Version(skew(2, 1)))
        );
        assert_eq!(
            fate(section(0, false), Some(spec(1, None)), false),
            F::Skip(S::Version(skew(0, 1)))
        );
        assert_eq!(
            fate(section(1, true), Some(spec(1, other)), false),
            F::Refuse(R::MissingCapability {
                capability: capability()
            })
        );
        assert_eq!(
            fate(section(1, true), Some(spec(1, other)), true),
            F::Skip(S::CapabilityAllowed {
                capability: capability()
            })
        );
        assert_eq!(
            fate(section(1, false), Some(spec(1, here)), true),
            F::Skip(S::Operator)
        );
        assert_eq!(fate(section(1, true), Some(spec(1, here)), true), F::Send);
        assert_eq!(fate(section(1, false), Some(spec(1, None)), false), F::Send);
    }

    #[test]
    fn reasons_and_sections_keep_their_json() {
        let refused = SectionVerdict::new(
            &section(2, true),
            Some(spec(1, None)),
            SectionFate::Refuse(Refusal::Version(VersionSkew {
                version: 2,
                understood: 1,
            })),
        );
        let message =
            "section v.s is version 2; the destination understands up to 1; upgrade the destination plugin";
        assert_eq!(
            serde_json::to_value(&refused).unwrap(),
            json!({"name": "v.s", "action": "fail", "reason": message})
        );
        assert_eq!(
            serde_json::to_value(refused.refusal().unwrap()).unwrap(),
            json!({"code": "compat.section_version", "message": message})
        );
        let sent = SectionVerdict::new(&section(1, true), None, SectionFate::Send);
        assert_eq!(
            serde_json::to_value(&sent).unwrap(),
            json!({"name": "v.s", "action": "send"})
        );
        assert_eq!(sent.refusal(), None);
    }

    #[test]
    fn a_verdict_fails_with_its_first_reason() {
        let first = Reason::new(Code::VersionTooOld, "first");
        let v = Verdict::refused(3, vec![first, Reason::new(Code::VersionRefused, "second")]);
        assert_eq!(v.error(), Some(Error::new(Code::VersionTooOld, "first")));
        assert_eq!(v.into_result().unwrap_err().code, Code::VersionTooOld);
        let ok = Verdict {
            compatible: true,
            ..Verdict::refused(3, Vec::new())
        };
        assert_eq!(ok.error(), None);
    }
}
