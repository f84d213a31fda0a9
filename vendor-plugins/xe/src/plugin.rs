//! [`XePlugin`]: the Xe VF packet stream as the broker sees it.
//!
//! One state version (1, produced and loaded), one section: `xe.packets`, the
//! whole raw packet stream, [`SectionKind::Records`], streamed (its length is known
//! only at the device's end of data), required, without framing. Its `max_len` is
//! [`Config::max_stream_len`]: the descriptor at its cap, every resource once at its
//! maximum (VRAM in chunks, GuC at 8 MiB per GT), twice the VRAM in re-sends with a
//! header per re-sent page, and the trailer. The destination validates it with
//! [`StreamValidator`] as it streams.
//!
//! Its record types ([`VendorPlugin::record_types`]) are the six packet types the
//! driver defines (`xe_sriov_packet_types.h`), all mandatory: Xe headers have no
//! optional flag, so a destination refuses a type it does not know, and the
//! validator refuses a stream without a descriptor, a trailer, or any GT's GuC
//! and MMIO or tile's GGTT and VRAM. The schema dump covers the four layouts the
//! bound depends on: `tiles` 1 or 2, `gts` 1 or 2 (`devid` and `revid` change
//! only the descriptor's content).

use std::collections::BTreeMap;

use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::{
    DeviceInfo, RecordTypeSpec, RecordValidator, SectionKind, SectionLayout, SectionSpec, SimOptions,
    SimProvider, VendorError, VendorPlugin, VersionWindow,
};

use crate::codes;
use crate::format::PacketType;
use crate::profile::{self, device_config, xe_type, Config, XeType, DEVICE_TYPES};
use crate::sim::XeModel;
use crate::validate::StreamValidator;

/// The section name.
pub const SECTION: &str = "xe.packets";
/// The section's format version (the packet header version).
pub const SECTION_VERSION: u16 = 1;
/// The state versions produced and loaded.
pub const WINDOW: VersionWindow = VersionWindow::new(1, 1);

/// The Xe VF plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XePlugin;

impl XePlugin {
    /// The plugin.
    pub const fn new() -> Self {
        XePlugin
    }

    /// The section of a device configured `config`.
    pub fn section(config: Config) -> SectionSpec {
        SectionSpec {
            name: SECTION.to_owned(),
            version: SECTION_VERSION,
            required: true,
            capability: None,
            max_len: config.max_stream_len(),
            kind: SectionKind::Records,
            streamed: true,
        }
    }

    fn check_version(version: u32) -> Result<(), VendorError> {
        if WINDOW.contains(version) {
            Ok(())
        } else {
            Err(VendorError::new(
                codes::UNSUPPORTED_VERSION,
                format!("xe state version {version} is outside {WINDOW}"),
            ))
        }
    }

    fn check_section(spec: &SectionSpec) -> Result<(), VendorError> {
        if spec.name == SECTION && spec.version == SECTION_VERSION && spec.kind == SectionKind::Records {
            Ok(())
        } else {
            Err(VendorError::new(
                codes::UNKNOWN_SECTION,
                format!(
                    "xe has one section, {SECTION} version {SECTION_VERSION} (records), not {} version {}",
                    spec.name, spec.version
                ),
            ))
        }
    }
}

impl VendorPlugin for XePlugin {
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
        XeType::from_name(device_type).map(|_| WINDOW)
    }

    fn loads(&self, device_type: &str) -> Option<VersionWindow> {
        XeType::from_name(device_type).map(|_| WINDOW)
    }

    fn configure(
        &self,
        device_type: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, VendorError> {
        profile::configure(device_type, attributes)
    }

    fn sections(&self, device: &DeviceInfo, version: u32) -> Result<Vec<SectionSpec>, VendorError> {
        let config = device_config(device)?;
        Self::check_version(version)?;
        Ok(vec![Self::section(config)])
    }

    fn layout(
        &self,
        device: &DeviceInfo,
        version: u32,
        raw_len: u64,
    ) -> Result<Vec<SectionLayout>, VendorError> {
        let config = device_config(device)?;
        Self::check_version(version)?;
        Ok(vec![SectionLayout {
            spec: Self::section(config),
            framing_len: 0,
            len: raw_len,
        }])
    }

    fn validate_section(
        &self,
        device: &DeviceInfo,
        spec: &SectionSpec,
        data: &[u8],
    ) -> Result<(), VendorError> {
        let _ = (device, data);
        Self::check_section(spec)?;
        Err(VendorError::new(
            codes::RECORD_STRUCTURED,
            format!("{SECTION} is a packet stream, validated as it streams by the record validator"),
        ))
    }

    fn record_validator(
        &self,
        device: &DeviceInfo,
        spec: &SectionSpec,
    ) -> Result<Box<dyn RecordValidator>, VendorError> {
        Self::check_section(spec)?;
        let config = device_config(device)?;
        Ok(Box::new(StreamValidator::new(&config)))
    }

    fn record_types(&self, device: &DeviceInfo, version: u32, section: &SectionSpec) -> Vec<RecordTypeSpec> {
        let known = Self::check_section(section).is_ok()
            && Self::check_version(version).is_ok()
            && device_config(device).is_ok();
        if !known {
            return Vec::new();
        }
        // The validator's own test of a type ([`PacketType::is_known`]), over
        // every value the header's type byte can hold.
        (0..=u8::MAX)
            .map(PacketType)
            .filter(|t| t.is_known())
            .map(|t| RecordTypeSpec {
                code: u64::from(t.0),
                name: t.to_string(),
                optional: false,
            })
            .collect()
    }

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
            set(&[(profile::ATTR_GTS, "1")]),
            set(&[(profile::ATTR_TILES, "2")]),
            set(&[(profile::ATTR_TILES, "2"), (profile::ATTR_GTS, "1")]),
        ]
    }
}

impl SimProvider for XePlugin {
    fn sim_model(&self, device_type: &str, opts: &SimOptions) -> Result<Box<dyn SimModel>, VendorError> {
        let ty = xe_type(device_type)?;
        Ok(Box::new(XeModel::new(ty, opts)?))
    }

    fn sim_options(&self) -> &'static [&'static str] {
        &[crate::SIM_DIRTY_KEY]
    }
}
