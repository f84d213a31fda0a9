//! Plugin schemas: what every built-in plugin says about its state, dumped as
//! JSON, and the difference between two dumps classified as breaking or
//! compatible.
//!
//! QEMU compares the vmstate dumps of two builds (`scripts/vmstate-static-checker.py`)
//! because state formats have changed meaning between releases: a subsection whose
//! presence a destination could not tell apart read into the wrong fields (Paolo
//! Bonzini, "savevm: define new unambiguous migration format", qemu-devel, 2011),
//! and state that depended on a host capability reached destinations without it
//! ("QEMU/KVM migration backwards compatibility broken?", qemu-devel, 2019). A
//! vendor plugin's release can break loading yesterday's state the same way;
//! [`diff`] says so before the release ships.
//!
//! * [`dump()`] asks each plugin, for each device type, configuration and state
//!   version, what [`VendorPlugin`](mdevmig_plugin_api::VendorPlugin) declares:
//!   windows, attributes, `min_version`, sections with their flags and bounds,
//!   record types, conversions. The result is a [`Dump`], deterministic (sorted),
//!   so the committed copies under `spec/schemas/` diff cleanly.
//! * [`load`] reads a dump from a file, a directory of them, or stdin, through a
//!   size cap, and checks it ([`Dump::parse`]); a malformed dump is
//!   `format.bad_schema`, an oversized one `limit.input_too_large`.
//! * [`diff()`] compares the previous release's dump with this one and returns
//!   every [`Finding`], each of a [`Class`] whose [`Severity`] is fixed.
//!
//! `spec/schema.md` documents the JSON field by field and every class.

mod diff;
mod dump;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::compat::Window;
use crate::error::{Code, Error, Result};
pub use diff::{diff, Class, Finding, Report, Severity};
pub use dump::{dump, dump_plugin};

/// The shape version of a dump; a reader refuses any other.
pub const SCHEMA_FORMAT: u32 = 1;

/// Largest schema file read (the whole build's dump is a few hundred KiB).
pub const MAX_SCHEMA_FILE: u64 = 4 << 20;

/// Most `.json` files a schema directory may hold.
pub const MAX_SCHEMA_FILES: usize = 64;

/// Widest produce or load window a dump may declare (every version in it is
/// listed), and most versions a configuration may list.
pub const MAX_WINDOW: u32 = 1024;

/// Caps on a dump's lists, so that comparing two dumps stays cheap whatever they
/// say: plugins, device types per plugin, configurations per type, attributes per
/// configuration (the envelope header's own cap), sections per state version
/// (the header's cap), record types per section, conversions per version.
pub const LIST_CAPS: ListCaps = ListCaps {
    plugins: 64,
    device_types: 256,
    configurations: 64,
    attributes: 16,
    sections: 64,
    records: 1024,
    conversions: 1024,
};

/// See [`LIST_CAPS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCaps {
    /// Plugins in a dump.
    pub plugins: usize,
    /// Device types of a plugin.
    pub device_types: usize,
    /// Configurations of a device type.
    pub configurations: usize,
    /// Completed attributes (and given ones) of a configuration.
    pub attributes: usize,
    /// Sections of a state version.
    pub sections: usize,
    /// Record types of a section.
    pub records: usize,
    /// Conversions from a state version.
    pub conversions: usize,
}

fn capped(what: &str, n: usize, cap: usize) -> Result<()> {
    if n > cap {
        return Err(bad(format!("{n} {what}, more than the {cap} a schema may list")));
    }
    Ok(())
}

/// A dump: the schemas of some plugins (one, or the whole build).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dump {
    /// Always [`SCHEMA_FORMAT`].
    pub schema_format: u32,
    /// The plugins, by vendor id.
    pub plugins: Vec<PluginSchema>,
    /// Tolerated when read back (a command's `ok`); never written.
    #[serde(default, skip_serializing)]
    pub ok: Option<bool>,
}

/// One plugin's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSchema {
    /// Vendor id.
    pub vendor: String,
    /// The plugin's own version (informative; not compared).
    pub plugin_version: String,
    /// Its device types, by name.
    pub device_types: Vec<TypeSchema>,
}

/// One device type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeSchema {
    /// Device type name.
    pub name: String,
    /// State versions produced (`null`: none).
    #[serde(deserialize_with = "present")]
    pub produce: Option<Window>,
    /// State versions loaded (`null`: none).
    #[serde(deserialize_with = "present")]
    pub load: Option<Window>,
    /// The configurations the plugin lists for the schema, by `config`.
    pub configurations: Vec<ConfigSchema>,
}

/// The state of one configuration of a device type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSchema {
    /// The attributes given to `configure` (empty: the default configuration).
    pub config: BTreeMap<String, String>,
    /// The attributes `configure` completed them to: every key a state header
    /// carries, defaults filled in.
    pub attributes: BTreeMap<String, String>,
    /// Every state version of the produce and load windows, ascending.
    pub versions: Vec<VersionSchema>,
}

/// One state version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSchema {
    /// The state version.
    pub version: u32,
    /// The minimum loader version its states declare.
    pub min_version: u32,
    /// Its sections, in stream order.
    pub sections: Vec<SectionSchema>,
    /// The conversions from this version the plugin performs, by `to`.
    pub conversions: Vec<ConversionSchema>,
}

/// How a destination validates a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Buffered whole and validated once.
    Structured,
    /// Validated chunk by chunk.
    Bulk,
    /// A stream of self-describing records.
    Records,
}

/// One section of a state version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionSchema {
    /// Section name.
    pub name: String,
    /// The section's own format version.
    pub version: u16,
    /// A destination that does not know it must refuse the state.
    pub required: bool,
    /// Host capability a destination needs to restore it.
    #[serde(deserialize_with = "present")]
    pub capability: Option<String>,
    /// How it is validated.
    pub kind: Kind,
    /// Its length is known only at the device's end of data.
    pub streamed: bool,
    /// The largest length a destination accepts (`max_len`); for a streamed
    /// section, the bound the envelope header declares.
    pub bound: u64,
    /// The exact length the plugin fixes for this configuration, if it does.
    #[serde(deserialize_with = "present")]
    pub length: Option<u64>,
    /// For a `records` section, its record types by code; empty otherwise.
    pub records: Vec<RecordSchema>,
}

/// One record type of a `records` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSchema {
    /// The type's code in the record header.
    pub code: u64,
    /// Its name.
    pub name: String,
    /// The stream marks it optional: a destination that does not know it skips it.
    pub optional: bool,
}

/// A conversion from the enclosing state version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionSchema {
    /// The state version converted to.
    pub to: u32,
    /// What happens to each source section, in stream order.
    pub sections: Vec<ConvertedSection>,
}

/// What a conversion does with one source section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvertedSection {
    /// The source section's name.
    pub name: String,
    /// `keep` or `drop`.
    pub action: ConvertAction,
}

/// A section's fate in a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvertAction {
    /// Carried into the converted state.
    Keep,
    /// Left out of it.
    Drop,
}

/// Only the format number, read first so that a dump of another shape is refused
/// for its format, not for a field this build does not know.
#[derive(Deserialize)]
struct Probe {
    schema_format: Option<u32>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(Code::BadSchema, message)
}

impl Dump {
    /// The canonical text of a dump: pretty JSON and a final newline, the bytes
    /// `mdevmig schema dump --json` prints and `spec/schemas/` holds.
    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parses and checks a dump (at most [`MAX_SCHEMA_FILE`] bytes).
    pub fn parse(text: &str) -> Result<Dump> {
        if text.len() as u64 > MAX_SCHEMA_FILE {
            return Err(Error::new(Code::InputTooLarge, "schema larger than 4 MiB"));
        }
        let probe: Probe = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        match probe.schema_format {
            Some(SCHEMA_FORMAT) => {}
            Some(f) => {
                return Err(bad(format!(
                    "schema_format {f}; this build reads schema_format {SCHEMA_FORMAT} only"
                )))
            }
            None => return Err(bad("no schema_format: not a plugin schema dump")),
        }
        let d: Dump = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        d.check()?;
        Ok(d)
    }

    /// The dump restricted to `vendor`'s plugin.
    pub fn only(mut self, vendor: &str) -> Dump {
        self.plugins.retain(|p| p.vendor == vendor);
        self
    }

    /// The plugin of `vendor`, if the dump has it.
    pub fn plugin(&self, vendor: &str) -> Option<&PluginSchema> {
        self.plugins.iter().find(|p| p.vendor == vendor)
    }

    /// Every name is a bounded printable token, every list free of duplicates,
    /// every window non-empty and at most [`MAX_WINDOW`] wide.
    fn check(&self) -> Result<()> {
        capped("plugins", self.plugins.len(), LIST_CAPS.plugins)?;
        unique("vendor", self.plugins.iter().map(|p| p.vendor.as_str()))?;
        for p in &self.plugins {
            name("vendor", &p.vendor)?;
            value("plugin_version", &p.plugin_version)?;
            capped("device types", p.device_types.len(), LIST_CAPS.device_types)?;
            unique("device type", p.device_types.iter().map(|t| t.name.as_str()))?;
            for t in &p.device_types {
                check_type(t).map_err(|e| bad(format!("{} {}: {}", p.vendor, t.name, e.message)))?;
            }
        }
        Ok(())
    }
}

fn check_type(t: &TypeSchema) -> Result<()> {
    name("device type", &t.name)?;
    for w in [t.produce, t.load].into_iter().flatten() {
        let width = w.newest.checked_sub(w.oldest);
        if w.oldest == 0 || width.is_none_or(|d| d >= MAX_WINDOW) {
            return Err(bad(format!(
                "window {w} is empty, starts at 0 or is wider than {MAX_WINDOW}"
            )));
        }
    }
    capped("configurations", t.configurations.len(), LIST_CAPS.configurations)?;
    let configs: BTreeSet<&BTreeMap<String, String>> = t.configurations.iter().map(|c| &c.config).collect();
    if configs.len() != t.configurations.len() {
        return Err(bad("a configuration is listed twice"));
    }
    for c in &t.configurations {
        capped(
            "attributes",
            c.config.len().max(c.attributes.len()),
            LIST_CAPS.attributes,
        )?;
        capped("state versions", c.versions.len(), MAX_WINDOW as usize)?;
        for (k, v) in c.config.iter().chain(&c.attributes) {
            name("attribute", k)?;
            value("attribute value", v)?;
        }
        unique("state version", c.versions.iter().map(|v| v.version.to_string()))?;
        c.versions.iter().try_for_each(check_version)?;
        listed(t, c)?;
    }
    Ok(())
}

/// Every version the type produces or loads is listed in each configuration:
/// the diff would otherwise have to guess what an unlisted one declares.
fn listed(t: &TypeSchema, c: &ConfigSchema) -> Result<()> {
    for w in [t.produce, t.load].into_iter().flatten() {
        for v in w.oldest..=w.newest {
            if !c.versions.iter().any(|x| x.version == v) {
                return Err(bad(format!(
                    "device type {}: state version {v} is in a window but not listed for configuration {:?}",
                    t.name, c.config
                )));
            }
        }
    }
    Ok(())
}

fn check_version(v: &VersionSchema) -> Result<()> {
    if v.version == 0 || v.min_version == 0 || v.min_version > v.version {
        return Err(bad(format!(
            "state version {} with min_version {}: both from 1, min_version at most the version",
            v.version, v.min_version
        )));
    }
    capped("sections", v.sections.len(), LIST_CAPS.sections)?;
    capped("conversions", v.conversions.len(), LIST_CAPS.conversions)?;
    unique("section", v.sections.iter().map(|s| s.name.as_str()))?;
    for s in &v.sections {
        name("section", &s.name)?;
        capped("record types", s.records.len(), LIST_CAPS.records)?;
        if let Some(c) = &s.capability {
            name("capability", c)?;
        }
        unique("record code", s.records.iter().map(|r| r.code.to_string()))?;
        for r in &s.records {
            name("record", &r.name)?;
        }
    }
    unique("conversion", v.conversions.iter().map(|c| c.to.to_string()))?;
    for c in &v.conversions {
        if c.to == 0 || c.to == v.version {
            return Err(bad(format!(
                "state version {}: a conversion to {}",
                v.version, c.to
            )));
        }
        capped("converted sections", c.sections.len(), LIST_CAPS.sections)?;
        for s in &c.sections {
            name("section", &s.name)?;
        }
    }
    Ok(())
}

/// A name: 1..=64 printable ASCII characters, no space.
fn name(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(format!(
            "{what} {s:?} is not 1..64 printable ASCII characters"
        )));
    }
    Ok(())
}

/// A value: 1..=256 printable ASCII characters, no space.
fn value(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 256 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(format!(
            "{what} {s:?} is not 1..256 printable ASCII characters"
        )));
    }
    Ok(())
}

fn unique<S: AsRef<str>>(what: &str, items: impl Iterator<Item = S>) -> Result<()> {
    let mut seen = BTreeSet::new();
    for i in items {
        if !seen.insert(i.as_ref().to_owned()) {
            return Err(bad(format!("{what} {:?} is listed twice", i.as_ref())));
        }
    }
    Ok(())
}

/// Reads a dump: `-` (stdin), a file, or a directory whose `.json` files are
/// merged (each vendor in one file only). Every file is read through
/// [`MAX_SCHEMA_FILE`].
pub fn load(path: &str) -> Result<Dump> {
    if path == "-" {
        return read_one(std::io::stdin(), "stdin");
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::io(Code::IoOpen, path, &e))?;
    if meta.is_dir() {
        return load_dir(Path::new(path));
    }
    load_file(Path::new(path), &meta)
}

/// A regular file (a symlink to one counts), never a directory: a directory's
/// entries are read one level deep only.
fn load_file(path: &Path, meta: &std::fs::Metadata) -> Result<Dump> {
    let name = path.display().to_string();
    if !meta.is_file() {
        return Err(Error::new(
            Code::NotRegular,
            format!("{name}: a schema is a regular file, or a directory of them"),
        ));
    }
    let f = std::fs::File::open(path).map_err(|e| Error::io(Code::IoOpen, &name, &e))?;
    read_one(f, &name)
}

fn read_one(src: impl Read, name: &str) -> Result<Dump> {
    let text = crate::fsutil::read_capped(
        src,
        MAX_SCHEMA_FILE,
        name,
        "schema larger than 4 MiB",
        Code::BadSchema,
    )?;
    Dump::parse(&text).map_err(|e| Error::new(e.code, format!("{name}: {}", e.message)))
}

fn load_dir(dir: &Path) -> Result<Dump> {
    let shown = dir.display().to_string();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(Code::IoOpen, &shown, &e))? {
        let p = entry.map_err(|e| Error::io(Code::IoRead, &shown, &e))?.path();
        if p.extension().is_some_and(|x| x == "json") {
            files.push(p);
            if files.len() > MAX_SCHEMA_FILES {
                return Err(Error::new(
                    Code::InputTooLarge,
                    format!("{shown}: more than {MAX_SCHEMA_FILES} schema files"),
                ));
            }
        }
    }
    files.sort();
    let mut dumps = Vec::new();
    for f in &files {
        let name = f.display().to_string();
        let meta = std::fs::metadata(f).map_err(|e| Error::io(Code::IoOpen, &name, &e))?;
        dumps.push((name, load_file(f, &meta)?));
    }
    merge(dumps)
}

/// One dump of the plugins of `dumps` (name, dump); a vendor in two of them is
/// refused.
pub fn merge(dumps: Vec<(String, Dump)>) -> Result<Dump> {
    let mut from: BTreeMap<String, String> = BTreeMap::new();
    let mut plugins = Vec::new();
    for (name, d) in dumps {
        for p in d.plugins {
            if let Some(first) = from.insert(p.vendor.clone(), name.clone()) {
                return Err(bad(format!("vendor {} is in both {first} and {name}", p.vendor)));
            }
            plugins.push(p);
        }
    }
    plugins.sort_by(|a, b| a.vendor.cmp(&b.vendor));
    Ok(Dump {
        schema_format: SCHEMA_FORMAT,
        plugins,
        ok: None,
    })
}

/// An `Option` field that must be present, as `null` or a value: serde reads a
/// missing `Option` as `None`, which would let a truncated schema say "no
/// capability" or "variable length" where the file says nothing.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}
