//! `mdevmig plugins`: what this build can migrate, so people and scripts need not
//! read the README to find out.
//!
//! For each built-in plugin: its vendor id and version, its device types with
//! their default configuration attributes, the state versions it produces and
//! loads, whether its state is exact-length (a structure whose size is known
//! before the first byte) or streamed (a record stream whose length is known at
//! the device's end of data), and whether `sim:<vendor>/<type>` simulates it.

use std::collections::BTreeMap;

use mdevmig_plugin_api::{DeviceInfo, VendorPlugin, VersionWindow};
use serde_json::{json, Value};

use super::output::Out;
use mdevmig::error::Result;
use mdevmig::plugins::Registry;

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

fn window(w: Option<VersionWindow>) -> Value {
    w.map_or(Value::Null, |w| json!({"oldest": w.oldest, "newest": w.newest}))
}

/// One plugin as JSON.
fn plugin_json(registry: &Registry, p: &dyn VendorPlugin) -> Value {
    let simulated = registry.sim(p.vendor()).is_some();
    let types: Vec<Value> = p
        .device_types()
        .iter()
        .map(|t| {
            let attributes = p.configure(t, &BTreeMap::new()).unwrap_or_default();
            json!({
                "name": t,
                "attributes": attributes,
                "produce": window(p.produces(t)),
                "load": window(p.loads(t)),
                "stream": shape(p, t, &attributes),
                "sim": if simulated { json!(format!("sim:{}/{t}", p.vendor())) } else { Value::Null },
            })
        })
        .collect();
    // The plugin-wide figures summarise its types (they agree in every built-in
    // plugin; the per-type entries are exact).
    let first = p.device_types().first().copied().unwrap_or_default();
    let streamed = types.iter().any(|t| t["stream"] == "streamed");
    json!({
        "vendor": p.vendor(),
        "plugin_version": p.plugin_version(),
        "device_types": types,
        "produce": window(p.produces(first)),
        "load": window(p.loads(first)),
        "stream": if streamed { "streamed" } else { "exact" },
        "simulated": simulated,
    })
}

/// Runs `mdevmig plugins`.
pub fn run(out: Out) -> Result<()> {
    let registry = Registry::builtin();
    let plugins: Vec<Value> = registry.iter().map(|p| plugin_json(&registry, p)).collect();
    let mut text = String::new();
    for p in &plugins {
        let w = |v: &Value| {
            if v.is_null() {
                "none".to_string()
            } else {
                format!("{}..{}", v["oldest"], v["newest"])
            }
        };
        text.push_str(&format!(
            "{} (plugin {}): {} state, produces {}, loads {}{}\n",
            p["vendor"].as_str().unwrap_or_default(),
            p["plugin_version"].as_str().unwrap_or_default(),
            p["stream"].as_str().unwrap_or_default(),
            w(&p["produce"]),
            w(&p["load"]),
            if p["simulated"] == true {
                ", simulated as sim:<vendor>/<type>"
            } else {
                ""
            },
        ));
        for t in p["device_types"].as_array().into_iter().flatten() {
            let attrs: Vec<String> = t["attributes"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            text.push_str(&format!(
                "  {:<16} {}\n",
                t["name"].as_str().unwrap_or_default(),
                if attrs.is_empty() {
                    "-".into()
                } else {
                    attrs.join(" ")
                }
            ));
        }
    }
    out.ok(&text, json!({ "plugins": plugins }));
    Ok(())
}
