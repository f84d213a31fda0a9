//! [`SimGpuPlugin`]: the simulated vGPU's state as the broker sees it.
//!
//! # Versions
//!
//! | state version | sections, in stream order                                          |
//! |---------------|--------------------------------------------------------------------|
//! | 1             | `fb`, `fb-dirty`, `regs` [, `encoder`]                             |
//! | 2             | v1 + `telemetry` (optional: an older destination skips it)         |
//! | 3             | v2 + `ctx3` (required: a v2-only destination cannot load it)       |
//!
//! `encoder` is present with `encoder=on` in every version. It is **required** and
//! needs host capability `simgpu.hw-encoder`: an open encoder session is
//! guest-visible state, so a destination that does not know the section must refuse
//! it, and one that knows it but lacks the hardware must refuse too unless the
//! operator allowed skipping `simgpu.encoder` by name (see the qemu-devel thread "QEMU/KVM migration backwards compatibility broken?", 2019: the broker applies
//! that policy; the plugin only declares the capability). Marking it optional would
//! let an older destination drop it silently, which is the bug that thread is about.
//!
//! # Conversions
//!
//! Only down: `from > to`, both known, every section kept under its (unchanged)
//! spec except
//!
//! - `simgpu.telemetry` is dropped when `to` is 1 (host counters, never
//!   guest-visible);
//! - `simgpu.ctx3` is dropped when `to` is below 3 **if** the device is configured
//!   `ctx3=off`: the feature is unused, and a valid ctx3 section of such a device is
//!   the reset image (`enabled` 0, no queues), so nothing is lost. With `ctx3=on` the
//!   conversion is refused (`vendor.cannot_convert`).
//!
//! So 3→2, 3→1 and 2→1 work for `ctx3=off` devices; 2→1 always works; up-conversion
//! never does.

use std::collections::BTreeMap;

use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::{
    DeviceInfo, SectionConversion, SectionLayout, SectionSpec, SimOptions, SimProvider, VendorError,
    VendorPlugin, VersionWindow,
};

use crate::codes;
use crate::record::{self, Section, FRAMING_LEN_U64, SECTION_VERSION};
use crate::sections::{Ctx3, Encoder, FbDirty, Regs, Telemetry};
use crate::sim::SimGpuModel;
use crate::types::{device_config, gpu_type, Config, GpuType, DEVICE_TYPES, NEWEST, WINDOW};

/// The plugin for the simulated vGPU. [`SimGpuPlugin::new`] is the current
/// plugin; [`SimGpuPlugin::with_windows`] builds one that behaves like an older
/// build (for example a destination that only knows versions 1 and 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimGpuPlugin {
    produces: VersionWindow,
    loads: VersionWindow,
}

impl Default for SimGpuPlugin {
    fn default() -> Self {
        Self::new()
    }
}

impl SimGpuPlugin {
    /// Produces and loads versions 1..=3.
    pub const fn new() -> Self {
        Self {
            produces: WINDOW,
            loads: WINDOW,
        }
    }

    /// A plugin with narrower windows (inside 1..=3, `oldest <= newest`). It knows
    /// the versions up to the newest of either window and behaves as a build of
    /// that time: sections of later versions are unknown to it, and without
    /// version 3 it refuses `ctx3=on`.
    pub fn with_windows(produces: VersionWindow, loads: VersionWindow) -> Option<Self> {
        let ok = |w: VersionWindow| w.oldest >= 1 && w.oldest <= w.newest && w.newest <= NEWEST;
        (ok(produces) && ok(loads)).then_some(Self { produces, loads })
    }

    /// The newest state version this plugin knows.
    pub fn known(&self) -> u32 {
        self.produces.newest.max(self.loads.newest)
    }

    fn check_version(&self, version: u32) -> Result<(), VendorError> {
        if (1..=self.known()).contains(&version) {
            Ok(())
        } else {
            Err(VendorError::new(
                codes::UNSUPPORTED_VERSION,
                format!("simgpu state version {version} is outside 1..{}", self.known()),
            ))
        }
    }

    fn device(&self, device: &DeviceInfo) -> Result<(GpuType, Config), VendorError> {
        device_config(device, self.known() >= 3)
    }

    /// The known section for `spec`, or an [`codes::UNKNOWN_SECTION`] error.
    fn section(&self, spec: &SectionSpec) -> Result<Section, VendorError> {
        Section::from_name(&spec.name)
            .filter(|s| spec.version == SECTION_VERSION && s.since() <= self.known())
            .ok_or_else(|| {
                VendorError::new(
                    codes::UNKNOWN_SECTION,
                    format!(
                        "simgpu (state versions up to {}) has no section {} version {}",
                        self.known(),
                        spec.name,
                        spec.version
                    ),
                )
            })
    }

    /// A simulated device of `ty` for this plugin.
    pub fn model(&self, ty: GpuType, opts: &SimOptions) -> Result<SimGpuModel, VendorError> {
        SimGpuModel::build(ty, opts, self.produces, self.known())
    }
}

fn cannot_convert(message: String) -> VendorError {
    VendorError::new(codes::CANNOT_CONVERT, message)
}

impl VendorPlugin for SimGpuPlugin {
    fn vendor(&self) -> &'static str {
        crate::VENDOR
    }

    fn plugin_version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn device_types(&self) -> &'static [&'static str] {
        DEVICE_TYPES
    }

    fn produces(&self, device_type: &str) -> Option<VersionWindow> {
        GpuType::from_name(device_type).map(|_| self.produces)
    }

    fn loads(&self, device_type: &str) -> Option<VersionWindow> {
        GpuType::from_name(device_type).map(|_| self.loads)
    }

    fn configure(
        &self,
        device_type: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, VendorError> {
        gpu_type(device_type)?;
        Config::parse(attributes, self.known() >= 3).map(Config::to_attributes)
    }

    fn sections(&self, device: &DeviceInfo, version: u32) -> Result<Vec<SectionSpec>, VendorError> {
        let (ty, config) = self.device(device)?;
        self.check_version(version)?;
        Ok(record::sections_of(version, config)
            .into_iter()
            .map(|s| s.spec(ty))
            .collect())
    }

    fn layout(
        &self,
        device: &DeviceInfo,
        version: u32,
        raw_len: u64,
    ) -> Result<Vec<SectionLayout>, VendorError> {
        let (ty, config) = self.device(device)?;
        self.check_version(version)?;
        let want = record::raw_len(ty, version, config);
        if raw_len != want {
            return Err(VendorError::new(
                codes::BAD_LENGTH,
                format!(
                    "a version {version} {} state configured {:?} is {want} bytes, not {raw_len}",
                    ty.name(),
                    config
                ),
            ));
        }
        Ok(record::sections_of(version, config)
            .into_iter()
            .map(|s| SectionLayout {
                spec: s.spec(ty),
                framing_len: FRAMING_LEN_U64,
                len: s.data_len(ty),
            })
            .collect())
    }

    fn framing(&self, spec: &SectionSpec, len: u64) -> Vec<u8> {
        record::framing(spec, len)
    }

    fn expected_len(&self, device: &DeviceInfo, _version: u32, spec: &SectionSpec) -> Option<u64> {
        let (ty, _) = self.device(device).ok()?;
        self.section(spec).ok().map(|s| s.data_len(ty))
    }

    fn validate_section(
        &self,
        device: &DeviceInfo,
        spec: &SectionSpec,
        data: &[u8],
    ) -> Result<(), VendorError> {
        let (ty, config) = self.device(device)?;
        validate(ty, config, self.section(spec)?, data)
    }

    fn validate_bulk(
        &self,
        device: &DeviceInfo,
        spec: &SectionSpec,
        offset: u64,
        data: &[u8],
    ) -> Result<(), VendorError> {
        let (ty, _) = self.device(device)?;
        if self.section(spec)? != Section::Fb {
            return Err(VendorError::new(
                codes::UNKNOWN_SECTION,
                format!("{} is not a bulk section", spec.name),
            ));
        }
        let end = u64::try_from(data.len()).ok().and_then(|n| offset.checked_add(n));
        match end {
            Some(end) if end <= ty.fb_len() => Ok(()),
            _ => Err(VendorError::new(
                codes::BULK_RANGE,
                format!(
                    "{} bytes at offset {offset} run past the {}-byte framebuffer",
                    data.len(),
                    ty.fb_len()
                ),
            )),
        }
    }

    /// The configurations whose sections or conversions differ: `encoder` adds
    /// `simgpu.encoder` (with its capability), `ctx3=on` refuses down-conversion
    /// past version 3 (`heads` changes neither).
    fn schema_configurations(&self, device_type: &str) -> Vec<BTreeMap<String, String>> {
        let _ = device_type;
        let set = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        vec![
            set(&[]),
            set(&[(crate::types::ATTR_ENCODER, "on")]),
            set(&[(crate::types::ATTR_CTX3, "on")]),
            set(&[
                (crate::types::ATTR_CTX3, "on"),
                (crate::types::ATTR_ENCODER, "on"),
            ]),
        ]
    }

    fn convert(
        &self,
        device: &DeviceInfo,
        from: u32,
        to: u32,
        sections: &[SectionSpec],
    ) -> Result<Vec<SectionConversion>, VendorError> {
        let (ty, config) = self.device(device)?;
        self.check_version(from)?;
        self.check_version(to)?;
        if to > from {
            return Err(cannot_convert(format!(
                "simgpu converts only to older state versions, not {from} to {to}"
            )));
        }
        let mut plan = Vec::with_capacity(sections.len());
        for spec in sections {
            let section = self.section(spec)?;
            if !section.present(from, config) {
                return Err(VendorError::new(
                    codes::UNKNOWN_SECTION,
                    format!(
                        "{} is not a section of a version {from} state of this device",
                        spec.name
                    ),
                ));
            }
            let step = if section.present(to, config) {
                SectionConversion::Keep(section.spec(ty))
            } else if section == Section::Ctx3 && config.ctx3 {
                return Err(cannot_convert(format!(
                    "simgpu.ctx3 is in use (ctx3=on); state version {to} cannot carry it"
                )));
            } else {
                SectionConversion::Drop
            };
            plan.push(step);
        }
        Ok(plan)
    }
}

/// Validates one whole section of a device of `ty` configured `config`.
pub(crate) fn validate(
    ty: GpuType,
    config: Config,
    section: Section,
    data: &[u8],
) -> Result<(), VendorError> {
    match section {
        Section::Fb => {
            if u64::try_from(data.len()).ok() == Some(ty.fb_len()) {
                Ok(())
            } else {
                Err(VendorError::new(
                    codes::BAD_LENGTH,
                    format!("simgpu.fb: {} bytes, not {}", data.len(), ty.fb_len()),
                ))
            }
        }
        Section::FbDirty => FbDirty::decode(data, ty).map(|_| ()),
        Section::Regs => Regs::decode(data)?.check(ty, config),
        Section::Telemetry => Telemetry::decode(data)?.check(),
        Section::Ctx3 => Ctx3::decode(data)?.check(config),
        Section::Encoder => {
            if !config.encoder {
                return Err(VendorError::new(
                    codes::ENCODER_MISMATCH,
                    "simgpu.encoder for a device configured encoder=off",
                ));
            }
            Encoder::decode(data)?.check(config)
        }
    }
}

impl SimProvider for SimGpuPlugin {
    fn sim_model(&self, device_type: &str, opts: &SimOptions) -> Result<Box<dyn SimModel>, VendorError> {
        let model = self.model(gpu_type(device_type)?, opts)?;
        Ok(Box::new(model))
    }
}
