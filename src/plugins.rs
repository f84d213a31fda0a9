//! The registry of built-in vendor plugins.
//!
//! The registry picks a plugin by the vendor id in the (authenticated) header and
//! checks that the plugin claims the header's device type. It never hands one
//! vendor's state to another vendor's plugin: lookup is by exact vendor id, and a
//! plugin is only ever asked about device types it lists (the libvir-list thread on mdev device-state versions, 2018: GVT-g state must
//! never reach an NVIDIA parser).

use std::collections::BTreeMap;

use mdevmig_plugin_api::{
    DeviceInfo, SectionKind, SectionLayout, SectionSpec, SimProvider, VendorError, VendorPlugin,
    VersionWindow,
};

use crate::error::{Code, Error, Result};

/// The plugins compiled into this build.
pub struct Registry {
    plugins: Vec<Box<dyn VendorPlugin>>,
    sims: Vec<(&'static str, Box<dyn SimProvider>)>,
    opaque: Vec<OpaquePlugin>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// The state versions this host loads for `dest`: its plugin's load window,
    /// narrowed to `pinned` (an operator's pin) when given; `None` without a
    /// plugin for the device or when the two do not overlap.
    pub fn load_window(
        &self,
        dest: &mdevmig_plugin_api::DeviceInfo,
        pinned: Option<mdevmig_plugin_api::VersionWindow>,
    ) -> Option<mdevmig_plugin_api::VersionWindow> {
        let plugin = self.vendor(&dest.vendor)?;
        crate::compat::effective_window(plugin.loads(&dest.device_type), pinned)
    }

    /// The device info of a `vendor`/`device_type` device with configuration
    /// `attributes` (completed and checked by its plugin) and host
    /// `capabilities`.
    pub fn device_info(
        &self,
        vendor: &str,
        device_type: &str,
        attributes: &BTreeMap<String, String>,
        capabilities: std::collections::BTreeSet<String>,
    ) -> Result<mdevmig_plugin_api::DeviceInfo> {
        let plugin = self.for_state(vendor, device_type)?;
        let attributes = plugin.configure(device_type, attributes)?;
        Ok(mdevmig_plugin_api::DeviceInfo {
            vendor: vendor.into(),
            device_type: device_type.into(),
            attributes,
            capabilities,
        })
    }

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
            opaque: Vec::new(),
        }
    }

    /// The same registry, also answering for each of `vendors` that has no
    /// plugin with an [`OpaquePlugin`]: the operator's explicit choice to move
    /// state it cannot validate. A vendor that has a plugin keeps it.
    pub fn allow_opaque<'a>(mut self, vendors: impl IntoIterator<Item = &'a String>) -> Self {
        for v in vendors {
            if self.plugins.iter().all(|p| p.vendor() != v.as_str())
                && self.opaque.iter().all(|o| o.vendor != *v)
            {
                self.opaque.push(OpaquePlugin { vendor: v.clone() });
            }
        }
        self
    }

    /// A registry of exactly these plugins (tests, embedders).
    pub fn with(plugins: Vec<Box<dyn VendorPlugin>>) -> Self {
        Registry {
            plugins,
            sims: Vec::new(),
            opaque: Vec::new(),
        }
    }

    /// The simulation provider of `vendor`, if it has one.
    pub fn sim(&self, vendor: &str) -> Option<&dyn SimProvider> {
        self.sims
            .iter()
            .find(|(v, _)| *v == vendor)
            .map(|(_, s)| s.as_ref())
    }

    /// The plugin for `vendor`, if any (an opaque stand-in only where allowed).
    pub fn vendor(&self, vendor: &str) -> Option<&dyn VendorPlugin> {
        self.plugins
            .iter()
            .find(|p| p.vendor() == vendor)
            .map(|p| p.as_ref())
            .or_else(|| {
                self.opaque
                    .iter()
                    .find(|o| o.vendor == vendor)
                    .map(|o| o as &dyn VendorPlugin)
            })
    }

    /// The plugin for a stream's vendor and device type.
    pub fn for_state(&self, vendor: &str, device_type: &str) -> Result<&dyn VendorPlugin> {
        let p = self
            .vendor(vendor)
            .ok_or_else(|| {
                Error::new(
                    Code::NoPlugin,
                    format!(
                        "no plugin handles vendor {vendor:?}; to move its state unvalidated, an operator must allow it by name (--allow-opaque {vendor}, or allow_opaque in the policy)"
                    ),
                )
            })?;
        if !p.opaque() && !p.device_types().contains(&device_type) {
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

/// The bound on an opaque vendor's state: the envelope's streamed section for it
/// declares this, and a source device that yields more is refused. 256 GiB is
/// above the device memory of any single GPU partition sold today.
pub const OPAQUE_MAX_LEN: u64 = 256 << 30;

/// The single section an opaque vendor's state travels in.
pub const OPAQUE_SECTION: &str = "opaque.state";

/// A stand-in for a vendor whose state format is closed (NVIDIA's vGPU, say),
/// used only when the operator allows that vendor by name (policy
/// `allow_opaque`, flag `--allow-opaque`). The state travels authenticated and
/// bound to its header like any other, as one streamed section read to the
/// device's end of data, but nothing checks its content: the kernel driver is
/// the only validator. Device type and configuration attributes still have to
/// match exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaquePlugin {
    vendor: String,
}

impl OpaquePlugin {
    fn spec() -> SectionSpec {
        SectionSpec {
            name: OPAQUE_SECTION.into(),
            version: 1,
            required: true,
            capability: None,
            max_len: OPAQUE_MAX_LEN,
            kind: SectionKind::Bulk,
            streamed: true,
        }
    }
}

impl VendorPlugin for OpaquePlugin {
    fn vendor(&self) -> &str {
        &self.vendor
    }

    fn opaque(&self) -> bool {
        true
    }

    fn plugin_version(&self) -> &'static str {
        "opaque"
    }

    fn device_types(&self) -> &'static [&'static str] {
        &[]
    }

    fn produces(&self, _device_type: &str) -> Option<VersionWindow> {
        Some(VersionWindow::new(1, 1))
    }

    fn loads(&self, _device_type: &str) -> Option<VersionWindow> {
        Some(VersionWindow::new(1, 1))
    }

    fn configure(
        &self,
        _device_type: &str,
        attributes: &BTreeMap<String, String>,
    ) -> std::result::Result<BTreeMap<String, String>, VendorError> {
        Ok(attributes.clone())
    }

    fn sections(
        &self,
        _device: &DeviceInfo,
        _version: u32,
    ) -> std::result::Result<Vec<SectionSpec>, VendorError> {
        Ok(vec![Self::spec()])
    }

    fn layout(
        &self,
        _device: &DeviceInfo,
        _version: u32,
        raw_len: u64,
    ) -> std::result::Result<Vec<SectionLayout>, VendorError> {
        Ok(vec![SectionLayout {
            spec: Self::spec(),
            framing_len: 0,
            len: raw_len,
        }])
    }

    fn validate_section(
        &self,
        _device: &DeviceInfo,
        _spec: &SectionSpec,
        _data: &[u8],
    ) -> std::result::Result<(), VendorError> {
        Ok(())
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
