//! The registry of built-in vendor plugins.
//!
//! The registry picks a plugin by the vendor id in the (authenticated) header and
//! checks that the plugin claims the header's device type. It never hands one
//! vendor's state to another vendor's plugin: lookup is by exact vendor id, and a
//! plugin is only ever asked about device types it lists (seed 004: GVT-g state must
//! never reach an NVIDIA parser).

use mdevmig_plugin_api::{SimProvider, VendorPlugin};

use crate::error::{Code, Error, Result};

/// The plugins compiled into this build.
pub struct Registry {
    plugins: Vec<Box<dyn VendorPlugin>>,
    sims: Vec<(&'static str, Box<dyn SimProvider>)>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// Every built-in plugin.
    pub fn builtin() -> Self {
        Registry {
            plugins: vec![
                Box::new(mdevmig_mtty::MttyPlugin),
                Box::new(mdevmig_hisi_acc::HisiAccPlugin),
                Box::new(mdevmig_simgpu::SimGpuPlugin::new()),
                Box::new(mdevmig_xe::XePlugin::new()),
            ],
            sims: vec![
                ("mtty", Box::new(mdevmig_mtty::MttyPlugin)),
                ("simgpu", Box::new(mdevmig_simgpu::SimGpuPlugin::new())),
                ("xe", Box::new(mdevmig_xe::XePlugin::new())),
            ],
        }
    }

    /// A registry of exactly these plugins (tests, embedders).
    pub fn with(plugins: Vec<Box<dyn VendorPlugin>>) -> Self {
        Registry {
            plugins,
            sims: Vec::new(),
        }
    }

    /// The simulation provider of `vendor`, if it has one.
    pub fn sim(&self, vendor: &str) -> Option<&dyn SimProvider> {
        self.sims
            .iter()
            .find(|(v, _)| *v == vendor)
            .map(|(_, s)| s.as_ref())
    }

    /// The plugin for `vendor`, if any.
    pub fn vendor(&self, vendor: &str) -> Option<&dyn VendorPlugin> {
        self.plugins
            .iter()
            .find(|p| p.vendor() == vendor)
            .map(|p| p.as_ref())
    }

    /// The plugin for a stream's vendor and device type.
    pub fn for_state(&self, vendor: &str, device_type: &str) -> Result<&dyn VendorPlugin> {
        let p = self
            .vendor(vendor)
            .ok_or_else(|| Error::new(Code::NoPlugin, format!("no plugin handles vendor {vendor:?}")))?;
        if !p.device_types().contains(&device_type) {
            return Err(Error::new(
                Code::TypeMismatch,
                format!("plugin {vendor} does not handle device type {device_type:?}"),
            ));
        }
        Ok(p)
    }

    /// All plugins.
    pub fn iter(&self) -> impl Iterator<Item = &dyn VendorPlugin> {
        self.plugins.iter().map(|p| p.as_ref())
    }
}

/// Every error code the built-in plugins can return, with its meaning.
pub fn all_error_codes() -> Vec<(&'static str, &'static str)> {
    let mut v = Vec::new();
    v.extend_from_slice(mdevmig_plugin_api::CODES);
    v.extend_from_slice(mdevmig_mtty::codes::TABLE);
    v.extend_from_slice(mdevmig_hisi_acc::codes::TABLE);
    v.extend_from_slice(mdevmig_simgpu::codes::TABLE);
    v.extend_from_slice(mdevmig_xe::codes::TABLE);
    v.sort();
    v.dedup();
    v
}
