//! The plugin's stable error codes, in one table.
//!
//! Every [`VendorError`](mdevmig_plugin_api::VendorError) this crate returns carries
//! one of these codes. They never change meaning once released; the broker's
//! `spec/errors.md` lists them, and a test in this crate checks that every code used
//! in the source appears in [`TABLE`].

/// The raw state is neither 40 bytes (match data only) nor 176 bytes (the whole
/// `struct acc_vf_data`).
pub const BAD_LENGTH: &str = "vendor.hisi_acc.bad_length";
/// `acc_magic` is neither `ACC_DEV_MAGIC_V1` nor `ACC_DEV_MAGIC_V2`, or it is not the
/// magic of the state version the section claims.
pub const BAD_MAGIC: &str = "vendor.hisi_acc.bad_magic";
/// A V2 state whose `major_ver` is not the driver's `ACC_DRV_MAJOR_VER` (1).
pub const BAD_VERSION: &str = "vendor.hisi_acc.bad_version";
/// `dev_id` is not the destination VF's PCI device id.
pub const DEV_ID_MISMATCH: &str = "vendor.hisi_acc.dev_id_mismatch";
/// `qp_num` is not the number of queue pairs the destination VF was given.
pub const QP_NUM_MISMATCH: &str = "vendor.hisi_acc.qp_num_mismatch";
/// `que_iso_cfg` is not the destination PF's queue-isolation setting.
pub const QUE_ISO_CFG_MISMATCH: &str = "vendor.hisi_acc.que_iso_cfg_mismatch";
/// `vf_qm_state` is not `QM_READY` (0) or `QM_NOT_READY` (1), or a whole state is not
/// `QM_READY`.
pub const BAD_QM_STATE: &str = "vendor.hisi_acc.bad_qm_state";
/// `qp_base` does not fit the 16-bit queue-base field of the VF table.
pub const BAD_QP_BASE: &str = "vendor.hisi_acc.bad_qp_base";
/// Some but not all of the four queue DMA addresses are zero, or one is not 32-byte
/// aligned.
pub const BAD_DMA_ADDRESS: &str = "vendor.hisi_acc.bad_dma_address";
/// A V2 state's `eqe_dma`/`aeqe_dma` disagree with the base address held in the
/// EQC/AEQC words the same state programs into the device.
pub const DMA_MISMATCH: &str = "vendor.hisi_acc.dma_mismatch";
/// The device type is not one of the three ACC VF types.
pub const UNKNOWN_DEVICE_TYPE: &str = "vendor.hisi_acc.unknown_device_type";
/// The state version is neither 1 (V1 magic) nor 2 (V2 magic).
pub const UNSUPPORTED_VERSION: &str = "vendor.hisi_acc.unsupported_version";
/// A section other than `hisi_acc.vf_data` was handed to the plugin.
pub const UNKNOWN_SECTION: &str = "vendor.hisi_acc.unknown_section";
/// A required configuration attribute (`qp_num`, `que_iso_cfg`) is missing.
pub const MISSING_ATTRIBUTE: &str = "vendor.hisi_acc.missing_attribute";
/// A configuration attribute this plugin does not know was given.
pub const UNKNOWN_ATTRIBUTE: &str = "vendor.hisi_acc.unknown_attribute";
/// A configuration attribute is not a number, is out of range, or contradicts the
/// device type.
pub const BAD_ATTRIBUTE: &str = "vendor.hisi_acc.bad_attribute";
/// The requested state-version conversion would need the bytes rewritten (shared code,
/// the same as the plugin API's default `convert`).
pub const CANNOT_CONVERT: &str = "vendor.cannot_convert";

/// Every code with its one-line meaning, in the order above.
pub const TABLE: &[(&str, &str)] = &[
    (
        BAD_LENGTH,
        "the raw state is neither 40 (match data only) nor 176 bytes",
    ),
    (
        BAD_MAGIC,
        "acc_magic is not ACC_DEV_MAGIC_V1/V2, or not the one the state version implies",
    ),
    (
        BAD_VERSION,
        "a V2 state's major_ver is not the driver's ACC_DRV_MAJOR_VER (1)",
    ),
    (
        DEV_ID_MISMATCH,
        "dev_id is not the destination VF's PCI device id",
    ),
    (
        QP_NUM_MISMATCH,
        "qp_num is not the destination VF's queue-pair count",
    ),
    (
        QUE_ISO_CFG_MISMATCH,
        "que_iso_cfg is not the destination PF's queue-isolation setting",
    ),
    (
        BAD_QM_STATE,
        "vf_qm_state is not QM_READY/QM_NOT_READY, or a whole state is not QM_READY",
    ),
    (
        BAD_QP_BASE,
        "qp_base does not fit the 16-bit VF-table queue-base field",
    ),
    (
        BAD_DMA_ADDRESS,
        "some but not all queue DMA addresses are zero, or one is not 32-byte aligned",
    ),
    (
        DMA_MISMATCH,
        "a V2 state's eqe_dma/aeqe_dma disagree with its EQC/AEQC base words",
    ),
    (
        UNKNOWN_DEVICE_TYPE,
        "the device type is not hisi-sec-vf, hisi-hpre-vf or hisi-zip-vf",
    ),
    (
        UNSUPPORTED_VERSION,
        "the state version is neither 1 (V1 magic) nor 2 (V2 magic)",
    ),
    (UNKNOWN_SECTION, "a section other than hisi_acc.vf_data was given"),
    (
        MISSING_ATTRIBUTE,
        "a required attribute (qp_num, que_iso_cfg) is missing",
    ),
    (
        UNKNOWN_ATTRIBUTE,
        "an attribute other than dev_id, qp_num, que_iso_cfg was given",
    ),
    (
        BAD_ATTRIBUTE,
        "an attribute is not a number, is out of range or contradicts the type",
    ),
    (
        CANNOT_CONVERT,
        "the plugin cannot convert the state between these versions",
    ),
];
