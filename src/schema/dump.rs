//! Building a [`Dump`] from plugins.

use std::collections::BTreeMap;

use mdevmig_plugin_api::{
    DeviceInfo, SectionConversion, SectionKind, SectionSpec, VendorPlugin, VersionWindow,
};

use super::{
    ConfigSchema, ConversionSchema, ConvertAction, ConvertedSection, Dump, Kind, PluginSchema, RecordSchema,
    SectionSchema, TypeSchema, VersionSchema, Window, MAX_WINDOW, SCHEMA_FORMAT,
};
use crate::error::{Code, Error, Result};

/// The dump of `plugins`, sorted by vendor.
pub fn dump<'a>(plugins: impl IntoIterator<Item = &'a dyn VendorPlugin>) -> Result<Dump> {
    let mut out = plugins.into_iter().map(dump_plugin).collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| a.vendor.cmp(&b.vendor));
    Ok(Dump {
        schema_format: SCHEMA_FORMAT,
        plugins: out,
        ok: None,
    })
}

/// One plugin's schema: every device type (by name), every configuration the
/// plugin lists for it that `configure` accepts (by its attributes), every state
/// version of the produce and load windows.
///
/// A version whose sections the plugin cannot give is left out; a window that is
/// empty, starts at 0 or is wider than [`MAX_WINDOW`] is an internal error (a
/// plugin bug the dump must not hide).
pub fn dump_plugin(p: &dyn VendorPlugin) -> Result<PluginSchema> {
    let mut types = p
        .device_types()
        .iter()
        .map(|t| dump_type(p, t))
        .collect::<Result<Vec<_>>>()?;
    types.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(PluginSchema {
        vendor: p.vendor().to_owned(),
        plugin_version: p.plugin_version().to_owned(),
        device_types: types,
    })
}

fn checked(p: &dyn VendorPlugin, t: &str, w: Option<VersionWindow>) -> Result<Option<VersionWindow>> {
    match w {
        Some(w) if w.oldest == 0 || w.newest < w.oldest || w.newest - w.oldest >= MAX_WINDOW => {
            Err(Error::new(
                Code::Internal,
                format!(
                    "{} {t}: window {w} is empty, starts at 0 or is wider than {MAX_WINDOW}",
                    p.vendor()
                ),
            ))
        }
        w => Ok(w),
    }
}

fn dump_type(p: &dyn VendorPlugin, t: &str) -> Result<TypeSchema> {
    let produce = checked(p, t, p.produces(t))?;
    let load = checked(p, t, p.loads(t))?;
    let mut configurations: Vec<ConfigSchema> = Vec::new();
    for config in p.schema_configurations(t) {
        if configurations.iter().any(|c| c.config == config) {
            continue;
        }
        let Ok(attributes) = p.configure(t, &config) else {
            continue;
        };
        let info = DeviceInfo {
            vendor: p.vendor().to_owned(),
            device_type: t.to_owned(),
            attributes: attributes.clone(),
            capabilities: Default::default(),
        };
        configurations.push(ConfigSchema {
            config,
            attributes,
            versions: dump_versions(p, &info, produce, load),
        });
    }
    configurations.sort_by(|a, b| a.config.cmp(&b.config));
    Ok(TypeSchema {
        name: t.to_owned(),
        produce: produce.map(Window::from),
        load: load.map(Window::from),
        configurations,
    })
}

/// Every version of the union of the two windows (both already checked).
fn dump_versions(
    p: &dyn VendorPlugin,
    info: &DeviceInfo,
    produce: Option<VersionWindow>,
    load: Option<VersionWindow>,
) -> Vec<VersionSchema> {
    let windows = [produce, load];
    let lo = windows.iter().flatten().map(|w| w.oldest).min().unwrap_or(1);
    let hi = windows.iter().flatten().map(|w| w.newest).max().unwrap_or(0);
    let mut out = Vec::new();
    for v in lo..=hi {
        let Ok(specs) = p.sections(info, v) else {
            continue;
        };
        let conversions = if produce.is_some_and(|w| w.contains(v)) {
            (lo..=hi)
                .filter(|to| *to != v)
                .filter_map(|to| conversion(p, info, v, to, &specs))
                .collect()
        } else {
            Vec::new()
        };
        out.push(VersionSchema {
            version: v,
            min_version: crate::compat::min_version_for(p, info, v),
            sections: specs.iter().map(|s| section(p, info, v, s)).collect(),
            conversions,
        });
    }
    out
}

fn conversion(
    p: &dyn VendorPlugin,
    info: &DeviceInfo,
    from: u32,
    to: u32,
    specs: &[SectionSpec],
) -> Option<ConversionSchema> {
    let plan = p.convert(info, from, to, specs).ok()?;
    if plan.len() != specs.len() {
        return None;
    }
    let sections = specs
        .iter()
        .zip(&plan)
        .map(|(s, c)| ConvertedSection {
            name: s.name.clone(),
            action: match c {
                SectionConversion::Keep(_) => ConvertAction::Keep,
                SectionConversion::Drop => ConvertAction::Drop,
            },
        })
        .collect();
    Some(ConversionSchema { to, sections })
}

fn section(p: &dyn VendorPlugin, info: &DeviceInfo, v: u32, s: &SectionSpec) -> SectionSchema {
    let mut records: Vec<RecordSchema> = if s.kind == SectionKind::Records {
        p.record_types(info, v, s)
            .into_iter()
            .map(|r| RecordSchema {
                code: r.code,
                name: r.name,
                optional: r.optional,
            })
            .collect()
    } else {
        Vec::new()
    };
    records.sort_by_key(|r| r.code);
    records.dedup_by_key(|r| r.code);
    SectionSchema {
        name: s.name.clone(),
        version: s.version,
        required: s.required,
        capability: s.capability.clone(),
        kind: match s.kind {
            SectionKind::Structured => Kind::Structured,
            SectionKind::Bulk => Kind::Bulk,
            SectionKind::Records => Kind::Records,
        },
        streamed: s.streamed,
        bound: s.max_len,
        length: p.expected_len(info, v, s),
        records,
    }
}

/// The attributes of a configuration as one label (`ctx3=on,encoder=on`); `None`
/// for the default configuration.
pub(crate) fn config_label(config: &BTreeMap<String, String>) -> Option<String> {
    (!config.is_empty()).then(|| {
        config
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}
