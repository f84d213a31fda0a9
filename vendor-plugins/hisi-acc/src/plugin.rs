//! [`HisiAccPlugin`]: the [`VendorPlugin`] for HiSilicon ACC VFs.
//!
//! # Versions
//!
//! | state version | magic              | who writes it                           |
//! |---------------|--------------------|-----------------------------------------|
//! | 1             | `ACC_DEV_MAGIC_V1` | kernels before the 2025 XQE-address fix |
//! | 2             | `ACC_DEV_MAGIC_V2` | current kernels (`major_ver` 1)         |
//!
//! The plugin describes a current kernel: it produces version 2 and loads 1 and 2
//! (the current driver still accepts V1 states and repairs their EQE/AEQE
//! addresses). It converts nothing: V1 and V2 differ in the magic bytes, in
//! `major_ver`/`minor_ver` and, for 1 to 2, in the recomputed `eqe_dma`/`aeqe_dma`,
//! so a conversion would have to rewrite the state, which
//! [`SectionConversion::Keep`] cannot express.
//!
//! # Configuration attributes
//!
//! | key           | required | normalized form | meaning                         |
//! |---------------|----------|-----------------|---------------------------------|
//! | `dev_id`      | no       | `0xa256`        | VF PCI device id; defaults to, and must equal, the type's |
//! | `qp_num`      | yes      | `64` (decimal)  | queue pairs of the VF, 1..=1024 |
//! | `que_iso_cfg` | yes      | `0x1` (hex)     | PF `QM_QUE_ISO_CFG_V` value     |
//!
//! Values are accepted in decimal or `0x` hexadecimal, without sign or spaces.

use std::collections::BTreeMap;

use mdevmig_plugin_api::{
    DeviceInfo, SectionConversion, SectionKind, SectionLayout, SectionSpec, VendorError, VendorPlugin,
    VersionWindow,
};

use crate::codes;
use crate::format::{
    AccVfData, Destination, ACC_VF_DATA_LEN, MAX_QP_NUM, PCI_DEVICE_ID_HPRE_VF, PCI_DEVICE_ID_SEC_VF,
    PCI_DEVICE_ID_ZIP_VF, QM_MATCH_SIZE,
};

/// Vendor id carried in the envelope.
pub const VENDOR: &str = "hisi_acc";
/// The one section of a hisi_acc state.
pub const SECTION_NAME: &str = "hisi_acc.vf_data";
/// The device types: the VFs of the three accelerators.
pub const DEVICE_TYPES: &[&str] = &["hisi-sec-vf", "hisi-hpre-vf", "hisi-zip-vf"];
/// State versions the plugin produces.
pub const PRODUCES: VersionWindow = VersionWindow::new(2, 2);
/// State versions the plugin loads.
pub const LOADS: VersionWindow = VersionWindow::new(1, 2);

/// Attribute key: VF PCI device id.
pub const ATTR_DEV_ID: &str = "dev_id";
/// Attribute key: queue pairs of the VF.
pub const ATTR_QP_NUM: &str = "qp_num";
/// Attribute key: PF queue-isolation configuration.
pub const ATTR_QUE_ISO_CFG: &str = "que_iso_cfg";

/// The PCI device id of a device type's VF.
pub fn device_id_for_type(device_type: &str) -> Option<u32> {
    match device_type {
        "hisi-sec-vf" => Some(PCI_DEVICE_ID_SEC_VF),
        "hisi-hpre-vf" => Some(PCI_DEVICE_ID_HPRE_VF),
        "hisi-zip-vf" => Some(PCI_DEVICE_ID_ZIP_VF),
        _ => None,
    }
}

/// Parses `123` or `0x7b` (also `0X7B`) into a u32; no sign, no spaces, no empty
/// digits.
pub fn parse_number(s: &str) -> Option<u32> {
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

fn known_type(device_type: &str) -> Result<u32, VendorError> {
    device_id_for_type(device_type).ok_or_else(|| {
        VendorError::new(
            codes::UNKNOWN_DEVICE_TYPE,
            format!(
                "device type {device_type:?} is not one of {}",
                DEVICE_TYPES.join(", ")
            ),
        )
    })
}

fn supported_version(version: u32) -> Result<u16, VendorError> {
    let v = u16::try_from(version).ok().filter(|_| LOADS.contains(version));
    v.ok_or_else(|| {
        VendorError::new(
            codes::UNSUPPORTED_VERSION,
            format!("hisi_acc state version {version} is not one of {LOADS}"),
        )
    })
}

fn number_attr(attributes: &BTreeMap<String, String>, key: &'static str) -> Result<Option<u32>, VendorError> {
    let Some(raw) = attributes.get(key) else {
        return Ok(None);
    };
    parse_number(raw).map(Some).ok_or_else(|| {
        VendorError::new(
            codes::BAD_ATTRIBUTE,
            format!("attribute {key}={raw:?} is not a decimal or 0x-hex 32-bit number"),
        )
    })
}

fn required(value: Option<u32>, key: &'static str) -> Result<u32, VendorError> {
    value.ok_or_else(|| {
        VendorError::new(
            codes::MISSING_ATTRIBUTE,
            format!("attribute {key} is required for hisi_acc devices"),
        )
    })
}

/// Checks a device type's attributes and returns the destination they describe.
/// Unknown keys, malformed numbers, a `dev_id` other than the type's and a `qp_num`
/// outside `1..=1024` are refused; a missing `dev_id` is the type's.
pub fn destination_for(
    device_type: &str,
    attributes: &BTreeMap<String, String>,
) -> Result<Destination, VendorError> {
    let type_dev_id = known_type(device_type)?;
    if let Some(key) = attributes
        .keys()
        .find(|k| ![ATTR_DEV_ID, ATTR_QP_NUM, ATTR_QUE_ISO_CFG].contains(&k.as_str()))
    {
        return Err(VendorError::new(
            codes::UNKNOWN_ATTRIBUTE,
            format!("attribute {key:?} is not one of {ATTR_DEV_ID}, {ATTR_QP_NUM}, {ATTR_QUE_ISO_CFG}"),
        ));
    }
    let dev_id = number_attr(attributes, ATTR_DEV_ID)?.unwrap_or(type_dev_id);
    if dev_id != type_dev_id {
        return Err(VendorError::new(
            codes::BAD_ATTRIBUTE,
            format!(
                "dev_id {dev_id:#06x} is not the PCI device id of a {device_type} \
                 ({type_dev_id:#06x})"
            ),
        ));
    }
    let qp_num = required(number_attr(attributes, ATTR_QP_NUM)?, ATTR_QP_NUM)?;
    if qp_num == 0 || qp_num > MAX_QP_NUM {
        return Err(VendorError::new(
            codes::BAD_ATTRIBUTE,
            format!("qp_num {qp_num} is outside 1..={MAX_QP_NUM}"),
        ));
    }
    let que_iso_cfg = required(number_attr(attributes, ATTR_QUE_ISO_CFG)?, ATTR_QUE_ISO_CFG)?;
    Ok(Destination {
        dev_id,
        qp_num,
        que_iso_cfg,
    })
}

/// The attributes of a destination in normalized form.
pub fn normalized_attributes(dest: &Destination) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ATTR_DEV_ID.to_owned(), format!("{:#06x}", dest.dev_id)),
        (ATTR_QP_NUM.to_owned(), dest.qp_num.to_string()),
        (ATTR_QUE_ISO_CFG.to_owned(), format!("{:#x}", dest.que_iso_cfg)),
    ])
}

/// The section spec of a state `version` (assumed supported).
pub fn section_spec(version: u16) -> SectionSpec {
    SectionSpec {
        name: SECTION_NAME.to_owned(),
        version,
        required: true,
        capability: None,
        max_len: u64::try_from(ACC_VF_DATA_LEN).unwrap_or(u64::MAX),
        kind: SectionKind::Structured,
        streamed: false,
    }
}

/// The hisi_acc vendor plugin. Stateless.
#[derive(Debug, Clone, Copy, Default)]
pub struct HisiAccPlugin;

impl HisiAccPlugin {
    /// A plugin.
    pub const fn new() -> Self {
        HisiAccPlugin
    }
}

impl VendorPlugin for HisiAccPlugin {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn plugin_version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn device_types(&self) -> &'static [&'static str] {
        DEVICE_TYPES
    }

    fn produces(&self, device_type: &str) -> Option<VersionWindow> {
        device_id_for_type(device_type).map(|_| PRODUCES)
    }

    fn loads(&self, device_type: &str) -> Option<VersionWindow> {
        device_id_for_type(device_type).map(|_| LOADS)
    }

    fn configure(
        &self,
        device_type: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, VendorError> {
        destination_for(device_type, attributes).map(|d| normalized_attributes(&d))
    }

    /// `qp_num` and `que_iso_cfg` have no default, so the schema dump's one
    /// configuration gives them (a VF of 64 queue pairs, isolation 0x1); the
    /// section does not depend on their values.
    fn schema_configurations(&self, device_type: &str) -> Vec<BTreeMap<String, String>> {
        let _ = device_type;
        vec![BTreeMap::from([
            (ATTR_QP_NUM.to_owned(), "64".to_owned()),
            (ATTR_QUE_ISO_CFG.to_owned(), "0x1".to_owned()),
        ])]
    }

    fn sections(&self, device: &DeviceInfo, version: u32) -> Result<Vec<SectionSpec>, VendorError> {
        known_type(&device.device_type)?;
        let v = supported_version(version)?;
        Ok(vec![section_spec(v)])
    }

    fn layout(
        &self,
        device: &DeviceInfo,
        version: u32,
        raw_len: u64,
    ) -> Result<Vec<SectionLayout>, VendorError> {
        known_type(&device.device_type)?;
        let v = supported_version(version)?;
        let ok = [ACC_VF_DATA_LEN, QM_MATCH_SIZE]
            .iter()
            .any(|n| u64::try_from(*n).ok() == Some(raw_len));
        if !ok {
            return Err(VendorError::new(
                codes::BAD_LENGTH,
                format!(
                    "raw hisi_acc state is {raw_len} bytes; it must be {ACC_VF_DATA_LEN} \
                     (struct acc_vf_data) or {QM_MATCH_SIZE} (match data only)"
                ),
            ));
        }
        Ok(vec![SectionLayout {
            spec: section_spec(v),
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
        if spec.name != SECTION_NAME {
            return Err(VendorError::new(
                codes::UNKNOWN_SECTION,
                format!("section {:?} is not {SECTION_NAME}", spec.name),
            ));
        }
        let version = u32::from(spec.version);
        supported_version(version)?;
        let dest = destination_for(&device.device_type, &device.attributes)?;
        let state = AccVfData::parse(data)?;
        state.check(&dest, Some(version))
    }

    fn convert(
        &self,
        device: &DeviceInfo,
        from: u32,
        to: u32,
        sections: &[SectionSpec],
    ) -> Result<Vec<SectionConversion>, VendorError> {
        known_type(&device.device_type)?;
        supported_version(from)?;
        supported_version(to)?;
        if from == to {
            return Ok(sections
                .iter()
                .map(|s| SectionConversion::Keep(s.clone()))
                .collect());
        }
        Err(VendorError::new(
            codes::CANNOT_CONVERT,
            format!(
                "hisi_acc cannot convert state version {from} to {to} without rewriting \
                 it: the magic differs, V2 carries major/minor versions where V1 has \
                 reserved bytes, and V1's eqe_dma/aeqe_dma are wrong (the driver \
                 recomputes them from the EQC/AEQC words)"
            ),
        ))
    }
}
