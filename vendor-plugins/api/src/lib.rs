//! The interface between mdevmig and a vendor's device-state knowledge.
//!
//! mdevmig proves *who* produced a state stream (the envelope); a vendor plugin proves
//! the state *makes sense* for the destination device before the kernel driver sees
//! it, and says which state versions it can produce and load and how the raw device
//! stream is cut into named sections.
//!
//! # The raw stream and its sections
//!
//! The kernel hands out a device's state as one opaque byte stream (the VFIO data fd).
//! A plugin describes that stream as a sequence of sections ([`SectionLayout`]). In the
//! raw stream each section is an optional fixed *framing* prefix (which the plugin
//! regenerates with [`VendorPlugin::framing`]) followed by the section's data. On the
//! source the broker strips and checks the framing and ships the data; on the
//! destination it writes the framing back in front of each kept section. A plugin
//! whose raw stream is a single structure (mtty, hisi_acc) has one section and no
//! framing.
//!
//! This crate is shared by the broker and every plugin, so it also holds the
//! panic-free [`Reader`] that all parsers of untrusted bytes use.

#![forbid(unsafe_code)]

pub mod reader;
pub mod records;
pub mod sim;

use std::collections::{BTreeMap, BTreeSet};

pub use reader::{Reader, Short, Trailing};

/// Codes this crate's default methods return, shared by every plugin; listed in
/// the broker's `spec/errors.md` with the plugins' own codes.
pub const CODES: &[(&str, &str)] = &[
    (
        "vendor.cannot_convert",
        "the plugin cannot convert the state between these versions",
    ),
    (
        "vendor.no_record_validator",
        "the plugin declares a record-structured section but has no validator for it",
    ),
    (
        "vendor.no_plugin",
        "the validator child has no plugin for the vendor and device type it was asked about",
    ),
];

/// A plugin's rejection: a stable dotted code (`vendor.mtty.bad_magic`) and a message
/// a person can act on. Codes are listed in the broker's `spec/errors.md`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VendorError {
    /// Stable dotted code, always starting with `vendor.`.
    pub code: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl VendorError {
    /// Builds an error from a code and a message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// An inclusive window of state versions, `oldest..=newest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionWindow {
    /// The oldest version in the window.
    pub oldest: u32,
    /// The newest version in the window.
    pub newest: u32,
}

impl VersionWindow {
    /// A window; callers keep `oldest <= newest`.
    pub const fn new(oldest: u32, newest: u32) -> Self {
        Self { oldest, newest }
    }

    /// True when `v` is inside the window.
    pub fn contains(&self, v: u32) -> bool {
        self.oldest <= v && v <= self.newest
    }
}

impl std::fmt::Display for VersionWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.oldest, self.newest)
    }
}

/// How a section's content is validated on the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// A structure: the broker buffers the whole section (bounded by
    /// [`SectionSpec::max_len`]) and calls [`VendorPlugin::validate_section`] once.
    Structured,
    /// Bulk data (a framebuffer, firmware blob): validated chunk by chunk with
    /// [`VendorPlugin::validate_bulk`], never buffered whole.
    Bulk,
    /// A sequence of self-describing records (Xe VF packets, mlx5 and virtio
    /// records): validated as it streams by a [`RecordValidator`] from
    /// [`VendorPlugin::record_validator`], which sees the bytes in arbitrary splits
    /// and keeps only what it must see whole (a record header, a small structure).
    Records,
}

/// What a plugin says about one named section of a state version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionSpec {
    /// Stable name, `[a-z0-9._-]{1,32}`, unique within a stream (`mtty.state`).
    pub name: String,
    /// The section's own format version.
    pub version: u16,
    /// A destination that does not know a required section must refuse the stream.
    pub required: bool,
    /// Host capability the destination needs to restore this section, if any.
    pub capability: Option<String>,
    /// The largest length this section can have; a longer one is refused. For a
    /// streamed section this is the bound the envelope header declares.
    pub max_len: u64,
    /// How the destination validates it.
    pub kind: SectionKind,
    /// The section's length is known only when the device's stream ends (a
    /// variable-length packet stream): the envelope declares `max_len` as its
    /// bound and signs the final length at the section's end. The broker's save
    /// reads a streamed section to the device's end of data, so it must be the
    /// last section of the raw stream.
    pub streamed: bool,
}

/// One section of a concrete raw state: its spec, its framing length in the raw
/// stream and its data length (for a streamed section, the device's estimate;
/// the broker reads it to the end of the device's data instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionLayout {
    /// What the section is.
    pub spec: SectionSpec,
    /// Bytes of plugin framing that precede the data in the raw stream.
    pub framing_len: u64,
    /// Bytes of data.
    pub len: u64,
}

/// One record type of a [`SectionKind::Records`] section, as a plugin declares it
/// for a state version ([`VendorPlugin::record_types`]): what `mdevmig schema
/// dump` reports and `mdevmig schema diff` compares between releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordTypeSpec {
    /// The type's code as the record header carries it (Xe's packet `type`, mlx5's
    /// `tag`).
    pub code: u64,
    /// A stable name for people (`descriptor`, `vram`).
    pub name: String,
    /// The stream marks records of this type optional (mlx5's `TAG_OPTIONAL`), so a
    /// destination that does not know the type skips them ([`records`]'s rule);
    /// `false`: a destination that does not know the type refuses the stream, and
    /// the plugin's own validator refuses a stream that lacks it.
    pub optional: bool,
}

/// A device instance as a plugin sees it: what must match between source and
/// destination, and what the host offers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    /// Vendor id (`mtty`, `hisi_acc`, `simgpu`).
    pub vendor: String,
    /// Device type (`mtty-2`, `vgpu-64m`).
    pub device_type: String,
    /// Configuration attributes that must match between source and destination
    /// ("shell" devices: same type, different configuration).
    pub attributes: BTreeMap<String, String>,
    /// Host capabilities present where this device lives.
    pub capabilities: BTreeSet<String>,
}

/// What a conversion does to one source section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionConversion {
    /// Ship the section unchanged, under this spec.
    Keep(SectionSpec),
    /// Leave the section out of the converted state.
    Drop,
}

/// A vendor's knowledge of its device state. Implementations must be panic-free on
/// any input: every method that sees state bytes sees untrusted bytes.
pub trait VendorPlugin: Send + Sync {
    /// Vendor id carried in the envelope header.
    fn vendor(&self) -> &str;

    /// True only for the broker's stand-in for a vendor that has no plugin, which
    /// an operator allowed by name: such state is authenticated but its content
    /// is never validated, and every report says so.
    fn opaque(&self) -> bool {
        false
    }

    /// The plugin's own software version (semver), reported in descriptors.
    fn plugin_version(&self) -> &'static str;

    /// Device types this plugin handles.
    fn device_types(&self) -> &'static [&'static str];

    /// State versions this plugin can produce for `device_type`.
    fn produces(&self, device_type: &str) -> Option<VersionWindow>;

    /// State versions this plugin can load for `device_type`.
    fn loads(&self, device_type: &str) -> Option<VersionWindow>;

    /// Completes and checks a device's configuration attributes (defaults filled
    /// in, unknown keys refused).
    fn configure(
        &self,
        device_type: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, VendorError>;

    /// Sections a state of `version` has for `device`, in stream order, as far as
    /// they are known before seeing the state (names, versions, flags, bounds).
    fn sections(&self, device: &DeviceInfo, version: u32) -> Result<Vec<SectionSpec>, VendorError>;

    /// The exact layout of a raw state of `raw_len` bytes at `version`.
    fn layout(
        &self,
        device: &DeviceInfo,
        version: u32,
        raw_len: u64,
    ) -> Result<Vec<SectionLayout>, VendorError>;

    /// The exact length `spec`'s data must have in a state of `version` for
    /// `device`, when the plugin fixes it (a framebuffer of the type's size, a
    /// structure of the configured port count); `None` when it varies. The
    /// broker refuses a stream whose section table disagrees before any byte of
    /// it reaches the device.
    fn expected_len(&self, device: &DeviceInfo, version: u32, spec: &SectionSpec) -> Option<u64> {
        let _ = (device, version, spec);
        None
    }

    /// The framing bytes that precede `spec`'s data of `len` bytes in the raw stream
    /// (empty for plugins without framing).
    fn framing(&self, spec: &SectionSpec, len: u64) -> Vec<u8> {
        let _ = (spec, len);
        Vec::new()
    }

    /// Validates a whole structured section against the destination device.
    fn validate_section(
        &self,
        device: &DeviceInfo,
        spec: &SectionSpec,
        data: &[u8],
    ) -> Result<(), VendorError>;

    /// Validates `data` found at `offset` inside a bulk section.
    fn validate_bulk(
        &self,
        device: &DeviceInfo,
        spec: &SectionSpec,
        offset: u64,
        data: &[u8],
    ) -> Result<(), VendorError> {
        let _ = (device, spec, offset, data);
        Ok(())
    }

    /// A streaming validator for one [`SectionKind::Records`] section of a state
    /// bound for `device`. The default refuses: a plugin that declares record
    /// sections must provide one.
    fn record_validator(
        &self,
        device: &DeviceInfo,
        spec: &SectionSpec,
    ) -> Result<Box<dyn RecordValidator>, VendorError> {
        let _ = device;
        Err(VendorError::new(
            "vendor.no_record_validator",
            format!(
                "{} has no record validator for section {}",
                self.vendor(),
                spec.name
            ),
        ))
    }

    /// The record types a [`SectionKind::Records`] section `section` of a state of
    /// `version` for `device` carries, in any order: exactly the types its
    /// [`RecordValidator`] accepts. The default declares none (a plugin without
    /// record sections). `mdevmig schema diff` flags a new mandatory type in an
    /// existing state version: destinations of the previous release refuse it.
    fn record_types(&self, device: &DeviceInfo, version: u32, section: &SectionSpec) -> Vec<RecordTypeSpec> {
        let _ = (device, version, section);
        Vec::new()
    }

    /// The configurations of `device_type` whose state a schema dump covers, each
    /// as the attributes given to [`VendorPlugin::configure`] (which fills in the
    /// rest). The default is the default configuration only (no attribute given);
    /// a plugin whose sections, bounds or conversions depend on an attribute lists
    /// one configuration per value that changes them, and a plugin whose type has
    /// attributes without a default lists a configuration that gives them.
    fn schema_configurations(&self, device_type: &str) -> Vec<BTreeMap<String, String>> {
        let _ = device_type;
        vec![BTreeMap::new()]
    }

    /// Plans converting a state of version `from` into version `to`, section by
    /// section (one entry per section of `sections`). The default converts nothing.
    fn convert(
        &self,
        device: &DeviceInfo,
        from: u32,
        to: u32,
        sections: &[SectionSpec],
    ) -> Result<Vec<SectionConversion>, VendorError> {
        let _ = (device, sections);
        Err(VendorError::new(
            "vendor.cannot_convert",
            format!("{} cannot convert state version {from} to {to}", self.vendor()),
        ))
    }
}

/// Validates a record-structured section as it streams (see [`records`] for the
/// driver that most plugins build one from).
///
/// The broker calls [`RecordValidator::feed`] with the section's verified bytes in
/// stream order and in whatever pieces the envelope's chunks cut them into (a
/// piece may end inside a record header), then [`RecordValidator::finish`] once
/// the section's final length is authenticated. Either may refuse; the first
/// refusal ends the section. Memory must stay bounded whatever the stream says.
pub trait RecordValidator: Send {
    /// The next bytes of the section.
    fn feed(&mut self, data: &[u8]) -> Result<(), VendorError>;
    /// The section ended: refuse a record cut short or a missing end marker.
    fn finish(&mut self) -> Result<(), VendorError>;
}

/// Options a simulated device passes to its model: the seed and the spec's
/// remaining `key=value` pairs.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// Seed of the deterministic state.
    pub seed: u64,
    /// Device attributes as configured.
    pub attributes: BTreeMap<String, String>,
}

/// A plugin that can also simulate its device.
pub trait SimProvider: Send + Sync {
    /// A fresh simulated device state of `device_type`.
    fn sim_model(&self, device_type: &str, opts: &SimOptions) -> Result<Box<dyn sim::SimModel>, VendorError>;

    /// Keys of a `sim:` spec that steer the simulation (how busy the guest is)
    /// rather than configure the device: they reach [`SimOptions::attributes`]
    /// but not [`VendorPlugin::configure`], and are not device attributes.
    fn sim_options(&self) -> &'static [&'static str] {
        &[]
    }
}
