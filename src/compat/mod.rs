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

pub mod descriptor;

use std::collections::BTreeSet;

use mdevmig_plugin_api::{DeviceInfo, SectionSpec, VendorPlugin, VersionWindow};
use serde::{Deserialize, Serialize};

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

/// What happens to a section.
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
    pub attributes: std::collections::BTreeMap<String, String>,
    /// Sections in stream order.
    pub sections: Vec<StateSection>,
}

/// A reason with its stable code and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Stable code.
    pub code: &'static str,
    /// What to do about it.
    pub message: String,
}

/// A section's fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SectionVerdict {
    /// Section name.
    pub name: String,
    /// What happens to it.
    pub action: Action,
    /// Why (skip and fail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The destination's spec for it, when known.
    #[serde(skip)]
    pub spec: Option<SectionSpec>,
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
    /// The first reason as an error (for the restore path).
    pub fn into_result(self) -> Result<Verdict> {
        if self.compatible {
            return Ok(self);
        }
        let first = self
            .reasons
            .first()
            .map(|r| {
                (
                    Code::from_str_code(r.code).unwrap_or(Code::Internal),
                    r.message.clone(),
                )
            })
            .unwrap_or((Code::Internal, "incompatible without a reason".into()));
        Err(Error::new(first.0, first.1))
    }
}

fn reason(code: Code, message: String) -> Reason {
    Reason {
        code: code.as_str(),
        message,
    }
}

/// Decides whether `dest` (with its plugin and load window) may restore `state`.
pub fn evaluate(
    state: &StateClaim,
    dest: &DeviceInfo,
    plugin: Option<&dyn VendorPlugin>,
    load: Option<VersionWindow>,
    policy: &Policy,
) -> Verdict {
    let mut reasons = Vec::new();
    let mut sections = Vec::new();
    let v = state.state_version;
    if state.vendor != dest.vendor {
        reasons.push(reason(
            Code::VendorMismatch,
            format!(
                "the state is {} device state and the destination is a {} device; state never crosses vendors",
                state.vendor, dest.vendor
            ),
        ));
    } else if state.device_type != dest.device_type {
        reasons.push(reason(
            Code::TypeMismatch,
            format!(
                "the state is for a {} and the destination device is a {}; create a {} on the destination",
                state.device_type, dest.device_type, state.device_type
            ),
        ));
    }
    if reasons.is_empty() {
        let keys: BTreeSet<&String> = state.attributes.keys().chain(dest.attributes.keys()).collect();
        for k in keys {
            let (a, b) = (state.attributes.get(k), dest.attributes.get(k));
            if a != b {
                let show = |v: Option<&String>| v.map(|v| format!("{k}={v}")).unwrap_or(format!("no {k}"));
                reasons.push(reason(
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
    }
    let (plugin, load) = match (plugin, load) {
        (Some(p), Some(l)) if reasons.is_empty() => (p, l),
        (Some(_), Some(_)) => {
            return Verdict {
                compatible: false,
                state_version: v,
                sections,
                reasons,
                opaque: false,
            }
        }
        (None, _) | (_, None) if reasons.is_empty() => {
            reasons.push(reason(
                Code::NoPlugin,
                format!(
                    "no {} plugin on the destination loads {}; install one",
                    state.vendor, state.device_type
                ),
            ));
            return Verdict {
                compatible: false,
                state_version: v,
                sections,
                reasons,
                opaque: false,
            };
        }
        _ => {
            return Verdict {
                compatible: false,
                state_version: v,
                sections,
                reasons,
                opaque: false,
            }
        }
    };
    let vendor = &state.vendor;
    let m = state.min_version;
    if m > load.newest {
        let msg = format!(
            "destination plugin loads {vendor} state {load}; source emits {v} with minimum {m}; upgrade the destination plugin or pin the source to {}",
            load.newest
        );
        if m == v {
            reasons.push(reason(Code::VersionTooNew, msg));
        } else {
            reasons.push(reason(Code::MinVersionTooNew, msg));
        }
    } else if v < load.oldest {
        reasons.push(reason(
            Code::VersionTooOld,
            format!(
                "destination plugin loads {vendor} state {load} and no longer {v}; upgrade the source plugin or use a destination that still loads {v}"
            ),
        ));
    }
    if policy.refuse_versions.contains(&v) {
        reasons.push(reason(
            Code::VersionRefused,
            format!("operator policy refuses {vendor} state version {v}"),
        ));
    }
    if let Some(pin) = policy.pin_version {
        if pin != v {
            reasons.push(reason(
                Code::VersionRefused,
                format!("operator policy pins {vendor} state to version {pin}; the state is version {v}"),
            ));
        }
    }
    // A loader older than the state knows the sections of its own newest version;
    // the state's newer parts must be optional sections it can skip (the section
    // rule below refuses unknown required ones).
    let known = if reasons.is_empty() {
        plugin.sections(dest, v.min(load.newest)).unwrap_or_default()
    } else {
        Vec::new()
    };
    if reasons.is_empty() {
        for s in &state.sections {
            let spec = known.iter().find(|k| k.name == s.name).cloned();
            let allowed = policy.allow_skip.contains(&s.name);
            let (action, why, code) = match &spec {
                None if s.required => (
                    Action::Fail,
                    format!(
                        "required section {} is unknown to the destination plugin; upgrade it",
                        s.name
                    ),
                    Some(Code::UnknownRequiredSection),
                ),
                None => (
                    Action::Skip,
                    format!("optional section {} is unknown to the destination", s.name),
                    None,
                ),
                Some(k) if s.version > k.version => {
                    if s.required {
                        (
                            Action::Fail,
                            format!(
                                "section {} is version {}; the destination understands up to {}; upgrade the destination plugin",
                                s.name, s.version, k.version
                            ),
                            Some(Code::SectionVersion),
                        )
                    } else {
                        (
                            Action::Skip,
                            format!(
                                "optional section {} v{} is newer than the destination's v{}",
                                s.name, s.version, k.version
                            ),
                            None,
                        )
                    }
                }
                // An older section version than the destination's spec for this
                // state version: no built-in plugin reads older section formats,
                // and reading one as the newer format (version 0 as version 1) is
                // the bug, so it is refused like a newer one.
                Some(k) if s.version < k.version => {
                    if s.required {
                        (
                            Action::Fail,
                            format!(
                                "section {} is version {}; the destination reads it as version {} only",
                                s.name, s.version, k.version
                            ),
                            Some(Code::SectionVersion),
                        )
                    } else {
                        (
                            Action::Skip,
                            format!(
                                "optional section {} v{} is older than the destination's v{}",
                                s.name, s.version, k.version
                            ),
                            None,
                        )
                    }
                }
                Some(k) => match &k.capability {
                    Some(cap) if !dest.capabilities.contains(cap) => {
                        if allowed {
                            (
                                Action::Skip,
                                format!("host lacks {cap}; operator allowed skipping {}", s.name),
                                None,
                            )
                        } else {
                            (
                                Action::Fail,
                                format!(
                                    "section {} needs host capability {cap}, which the destination lacks; use a host with {cap}, or allow skipping {} if the guest can live without it",
                                    s.name, s.name
                                ),
                                Some(Code::MissingCapability),
                            )
                        }
                    }
                    _ if allowed && !s.required => (
                        Action::Skip,
                        format!("operator policy skips optional section {}", s.name),
                        None,
                    ),
                    _ => (Action::Send, String::new(), None),
                },
            };
            if let Some(code) = code {
                reasons.push(reason(code, why.clone()));
            }
            sections.push(SectionVerdict {
                name: s.name.clone(),
                action,
                reason: (!why.is_empty()).then_some(why),
                spec,
            });
        }
    }
    Verdict {
        compatible: reasons.is_empty(),
        state_version: v,
        sections,
        reasons,
        opaque: plugin.opaque(),
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
