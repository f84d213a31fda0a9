//! `mdevmig plugins`: what this build can migrate, so people and scripts need not
//! read the README to find out.
//!
//! For each built-in plugin: its vendor id and version, its device types with
//! their default configuration attributes, the state versions it produces and
//! loads, whether its state is exact-length (a structure whose size is known
//! before the first byte) or streamed (a record stream whose length is known at
//! the device's end of data), and whether `sim:<vendor>/<type>` simulates it.

use std::collections::BTreeMap;

use mdevmig_plugin_api::{DeviceInfo, VendorPlugin};
use serde::Serialize;
use serde_json::json;

use super::migrate::attributes_text;
use super::output::Out;
use mdevmig::compat::Window;
use mdevmig::plugins::Registry;
use mdevmig::Result;

/// One device type of a plugin, as `plugins --json` prints it.
#[derive(Serialize)]
struct TypeReport {
    name: &'static str,
    attributes: BTreeMap<String, String>,
    produce: Option<Window>,
    load: Option<Window>,
    stream: &'static str,
    sim: Option<String>,
}

/// One plugin, as `plugins --json` prints it.
#[derive(Serialize)]
struct PluginReport<'a> {
    vendor: &'a str,
    plugin_version: &'static str,
    device_types: Vec<TypeReport>,
    produce: Option<Window>,
    load: Option<Window>,
    stream: &'static str,
    simulated: bool,
}

/// The shape of a plugin's state for one device type at its newest version.
fn shape(p: &dyn VendorPlugin, device_type: &str, attributes: &BTreeMap<String, String>) -> &'static str {
    let Some(version) = p.produces(device_type).or(p.loads(device_type)).map(|w| w.newest) else {
        return "exact";
    };
    let info = DeviceInfo {
        vendor: p.vendor().into(),
        device_type: device_type.into(),
        attributes: attributes.clone(),
        capabilities: Default::default(),
    };
    match p.sections(&info, version) {
        Ok(s) if s.iter().any(|s| s.streamed) => "streamed",
        _ => "exact",
    }
}

/// One plugin's report.
fn plugin_report<'a>(registry: &Registry, p: &'a dyn VendorPlugin) -> PluginReport<'a> {
    let simulated = registry.sim(p.vendor()).is_some();
    let types: Vec<TypeReport> = p
        .device_types()
        .iter()
        .map(|&t| {
            let attributes = p.configure(t, &BTreeMap::new()).unwrap_or_default();
            TypeReport {
                name: t,
                produce: p.produces(t).map(Window::from),
                load: p.loads(t).map(Window::from),
                stream: shape(p, t, &attributes),
                sim: simulated.then(|| format!("sim:{}/{t}", p.vendor())),
                attributes,
            }
        })
        .collect();
    // The plugin-wide figures summarise its types (they agree in every built-in
    // plugin; the per-type entries are exact).
    let first = p.device_types().first().copied().unwrap_or_default();
    let streamed = types.iter().any(|t| t.stream == "streamed");
    PluginReport {
        vendor: p.vendor(),
        plugin_version: p.plugin_version(),
        device_types: types,
        produce: p.produces(first).map(Window::from),
        load: p.loads(first).map(Window::from),
        stream: if streamed { "streamed" } else { "exact" },
        simulated,
    }
}

/// A plugin's lines of `mdevmig plugins` text.
fn plugin_text(p: &PluginReport<'_>) -> String {
    let w = |w: Option<Window>| w.map_or("none".into(), |w| w.to_string());
    let mut text = format!(
        "{} (plugin {}): {} state, produces {}, loads {}{}\n",
        p.vendor,
        p.plugin_version,
        p.stream,
        w(p.produce),
        w(p.load),
        if p.simulated {
            ", simulated as sim:<vendor>/<type>"
        } else {
            ""
        },
    );
    for t in &p.device_types {
        text.push_str(&format!("  {:<16} {}\n", t.name, attributes_text(&t.attributes)));
    }
    text
}

/// Runs `mdevmig plugins`.
pub fn run(out: Out) -> Result<()> {
    let registry = Registry::builtin();
    let plugins: Vec<PluginReport<'_>> = registry.iter().map(|p| plugin_report(&registry, p)).collect();
    let text: String = plugins.iter().map(plugin_text).collect();
    out.ok(&text, json!({ "plugins": plugins }));
    Ok(())
}
