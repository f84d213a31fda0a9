//! [`MttyPlugin`]: the mtty driver's state as the broker sees it.
//!
//! The raw stream is one `struct mtty_data` with no framing, so a state has exactly
//! one section, `mtty.state`, whose data is the whole stream. State version 1 is the
//! kernel's `mtty_data` 1.0 (`MTTY_MAJOR_VER` 1, `MTTY_MINOR_VER` 0), the only
//! version any kernel has shipped (6.7 onwards); the plugin produces and loads only
//! it and converts nothing.
//!
//! The device type decides everything: `mtty-1` has one port and a 60-byte state,
//! `mtty-2` two ports and 96 bytes. The only configuration attribute is `ports`,
//! which [`configure`](VendorPlugin::configure) fills in and which must match the
//! type; the driver has nothing else to configure.

use std::collections::BTreeMap;

use mdevmig_plugin_api::{
    DeviceInfo, SectionKind, SectionLayout, SectionSpec, VendorError, VendorPlugin, VersionWindow,
};

use crate::codes;
use crate::format::{MttyType, MAX_STATE_LEN};
use crate::validate::validate;

/// The one section's name.
pub const SECTION_NAME: &str = "mtty.state";
/// The one section's format version.
pub const SECTION_VERSION: u16 = 1;
/// The state version this plugin produces and loads (kernel `mtty_data` 1.0).
pub const STATE_VERSION: u32 = 1;

const DEVICE_TYPES: &[&str] = &["mtty-1", "mtty-2"];
const WINDOW: VersionWindow = VersionWindow::new(STATE_VERSION, STATE_VERSION);
/// The attribute naming the port count.
const PORTS: &str = "ports";

/// The vendor plugin for the kernel's `mtty` sample driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct MttyPlugin;

impl MttyPlugin {
    /// The section spec of every mtty state. `max_len` is the largest state of any
    /// type; [`VendorPlugin::layout`] and [`VendorPlugin::validate_section`] insist on
    /// the exact length of the device's type.
    pub fn section_spec() -> SectionSpec {
        SectionSpec {
            name: SECTION_NAME.to_owned(),
            version: SECTION_VERSION,
            required: true,
            capability: None,
            max_len: u64::try_from(MAX_STATE_LEN).unwrap_or(u64::MAX),
            kind: SectionKind::Structured,
            streamed: false,
        }
    }
}

/// The type of `device_type`, or a [`codes::DEVICE_TYPE`] error.
fn mtty_type(device_type: &str) -> Result<MttyType, VendorError> {
    MttyType::from_device_type(device_type).ok_or_else(|| {
        VendorError::new(
            codes::DEVICE_TYPE,
            format!("mtty has device types mtty-1 and mtty-2, not {device_type:?}"),
        )
    })
}

/// Checks `attributes` against `ty` and returns them completed.
fn complete_attributes(
    ty: MttyType,
    attributes: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, VendorError> {
    let ports = ty.nr_ports().to_string();
    for (key, value) in attributes {
        if key != PORTS {
            return Err(VendorError::new(
                codes::ATTRIBUTE,
                format!("mtty has no attribute {key:?}; its only attribute is \"ports\""),
            ));
        }
        if *value != ports {
            return Err(VendorError::new(
                codes::ATTRIBUTE,
                format!(
                    "attribute ports={value:?} does not match {}, which has {ports} port(s)",
                    ty.device_type()
                ),
            ));
        }
    }
    Ok(BTreeMap::from([(PORTS.to_owned(), ports)]))
}

/// The type of `device`, its attributes checked.
fn device_type(device: &DeviceInfo) -> Result<MttyType, VendorError> {
    let ty = mtty_type(&device.device_type)?;
    complete_attributes(ty, &device.attributes)?;
    Ok(ty)
}

fn check_version(version: u32) -> Result<(), VendorError> {
    if WINDOW.contains(version) {
        Ok(())
    } else {
        Err(VendorError::new(
            codes::UNSUPPORTED_VERSION,
            format!("mtty state version {version} is outside {WINDOW}"),
        ))
    }
}

impl VendorPlugin for MttyPlugin {
    fn vendor(&self) -> &'static str {
        "mtty"
    }

    fn plugin_version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn device_types(&self) -> &'static [&'static str] {
        DEVICE_TYPES
    }

    fn produces(&self, device_type: &str) -> Option<VersionWindow> {
        MttyType::from_device_type(device_type).map(|_| WINDOW)
    }

    fn loads(&self, device_type: &str) -> Option<VersionWindow> {
        MttyType::from_device_type(device_type).map(|_| WINDOW)
    }

    fn configure(
        &self,
        device_type: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, VendorError> {
        complete_attributes(mtty_type(device_type)?, attributes)
    }

    fn sections(&self, device: &DeviceInfo, version: u32) -> Result<Vec<SectionSpec>, VendorError> {
        device_type(device)?;
        check_version(version)?;
        Ok(vec![Self::section_spec()])
    }

    fn layout(
        &self,
        device: &DeviceInfo,
        version: u32,
        raw_len: u64,
    ) -> Result<Vec<SectionLayout>, VendorError> {
        let ty = device_type(device)?;
        check_version(version)?;
        if u64::try_from(ty.state_len()).ok() != Some(raw_len) {
            return Err(VendorError::new(
                codes::BAD_LENGTH,
                format!(
                    "an {} state is {} bytes, not {raw_len}",
                    ty.device_type(),
                    ty.state_len()
                ),
            ));
        }
        Ok(vec![SectionLayout {
            spec: Self::section_spec(),
            framing_len: 0,
            len: raw_len,
        }])
    }

    fn expected_len(&self, device: &DeviceInfo, version: u32, _spec: &SectionSpec) -> Option<u64> {
        check_version(version).ok()?;
        u64::try_from(device_type(device).ok()?.state_len()).ok()
    }

    fn validate_section(
        &self,
        device: &DeviceInfo,
        spec: &SectionSpec,
        data: &[u8],
    ) -> Result<(), VendorError> {
        let ty = device_type(device)?;
        if spec.name != SECTION_NAME || spec.version != SECTION_VERSION {
            return Err(VendorError::new(
                codes::UNKNOWN_SECTION,
                format!(
                    "mtty has only section {SECTION_NAME} version {SECTION_VERSION}, not {} \
                     version {}",
                    spec.name, spec.version
                ),
            ));
        }
        validate(data, ty).map(|_| ())
    }
}
