//! `struct acc_vf_data`: the HiSilicon ACC VF migration state, bit for bit.
//!
//! The Linux driver `drivers/vfio/pci/hisilicon/hisi_acc_vfio_pci.{c,h}` hands out a
//! VF's state as a raw copy of `struct acc_vf_data`: no header, no length, no
//! checksum. The same C struct serves both magics; the magic only decides how the
//! driver interprets two spots in it (see "V1 and V2" below).
//!
//! # Byte layout
//!
//! All fields are host-endian in the kernel (the struct is copied from memory). The
//! hardware only exists in HiSilicon Kunpeng arm64 SoCs running little-endian, so the
//! stream is little-endian; this module reads and writes it as little-endian
//! explicitly, so that a validator on any host gives the same answer. There is no
//! implicit padding: every field sits at its natural alignment and `sizeof` is 176.
//!
//! ```text
//!  off  size  field              meaning / where the driver gets or puts it
//!  ---  ----  -----------------  ------------------------------------------------
//!    0     8  acc_magic          V1 0xCDCDCDCDFEEDAACC, V2 0xAACCFEEDDECADEDE
//!    8     4  qp_num             VF queue pairs (VFT, 10-bit field + 1: 1..=1024);
//!                                must equal the destination's
//!   12     4  dev_id             VF PCI device id (0xa256 SEC, 0xa259 HPRE,
//!                                0xa251 ZIP); must equal the destination's
//!   16     4  que_iso_cfg        PF register QM_QUE_ISO_CFG_V; must equal the
//!                                destination PF's
//!   20     4  qp_base            VFT queue base (16-bit field); not compared
//!   24     4  vf_qm_state        QM_READY = 0, QM_NOT_READY = 1
//!   28     2  major_ver          V2 only (ACC_DRV_MAJOR_VER = 1); V1: reserved
//!   30     2  minor_ver          V2 only (ACC_DRV_MINOR_VER = 0); V1: reserved
//!   32     8  qm_rsv_state[2]    reserved (V1 declares qm_rsv_state[3] at 28..40)
//!  ---------  QM_MATCH_SIZE = 40: a state may end here ("match data only")
//!   40     4  aeq_int_mask       VF register 0x0004
//!   44     4  eq_int_mask        VF register 0x000c
//!   48     4  ifc_int_source     VF register 0x0020
//!   52     4  ifc_int_mask       VF register 0x0024
//!   56     4  ifc_int_set        VF register 0x002c
//!   60     4  page_size          VF register 0x0034
//!   64    28  qm_eqc_dw[7]       EQ context words (VF 0x8000..): dw0 head|tail<<16,
//!                                dw1 EQE base low, dw2 EQE base high, ...
//!   92    28  qm_aeqc_dw[7]      AEQ context words (VF 0x8020..), same shape
//!  120    20  qm_rsv_regs[5]     reserved
//!  140     4  padding            reserved
//!  144     8  eqe_dma            event-queue ring
//!  152     8  aeqe_dma           async-event-queue ring
//!  160     8  sqc_dma            SQ context table (mailbox QM_MB_CMD_SQC_BT)
//!  168     8  cqc_dma            CQ context table (mailbox QM_MB_CMD_CQC_BT)
//!  176        end = sizeof(struct acc_vf_data)
//! ```
//!
//! # Why a state may be 40 bytes
//!
//! `vf_qm_state_save()` stops after the match part (`total_length = QM_MATCH_SIZE`)
//! when the guest has not brought the VF's queue manager up, and with PRE_COPY the
//! match part is read out early, before `vf_qm_state` is set (so it reads 0 there).
//! On load, `vf_qm_load_data()` returns success without touching the device when
//! exactly 40 bytes arrived, and `-EINVAL` for anything between 40 and 176. So the
//! two lengths this module accepts are 40 and 176; nothing else is a state.
//!
//! # V1 and V2
//!
//! Kernels before the 2025 fix "hisi_acc_vfio_pci: fix XQE dma address error" write
//! V1. They built `eqe_dma`/`aeqe_dma` from the wrong context words
//! (`dw[1] << 32 | dw[0]`, i.e. base-low and head/tail). Current kernels write V2,
//! with the right words (`dw[2] << 32 | dw[1]`), and put `major_ver`/`minor_ver` in
//! the first reserved word. Loading a V1 state, `vf_qm_version_check()` recomputes
//! the two addresses from the context words; loading V2 it requires
//! `major_ver == 1` and ignores `minor_ver`. This module therefore validates, for V1,
//! the addresses the driver will *use* (from the context words), not the stored ones.
//!
//! # Limits and why
//!
//! * DMA addresses are 32-byte aligned: the guest's `hisi_qm_memory_init()` carves
//!   the EQE ring, AEQE ring, SQC table and CQC table out of one
//!   `dma_alloc_coherent()` buffer with `QMC_ALIGN(sz) = ALIGN(sz, 32)` between them
//!   (32 bytes is also `sizeof(struct qm_sqc)` and `sizeof(struct qm_cqc)`, the
//!   hardware's context-entry size), and the buffer itself is page aligned.
//! * All four addresses zero is accepted: the guest driver never set the queues up,
//!   and the kernel (since "bugfix live migration function without VF device
//!   driver") then skips the restore and marks the VF not ready. Some zero and some
//!   not is never produced by a real guest, and would make the kernel silently skip
//!   the restore of a running VF, so it is refused.
//! * `qp_base` comes from a 16-bit field (`QM_SQC_VFT_BASE_MASK_V2`); `qp_num` from a
//!   10-bit field plus one, so `1..=1024` (checked when configuring the destination,
//!   and by equality here).
//! * Reserved words are not checked: the source leaves them zero (the migration file
//!   is `kzalloc`ed), but V2's minor version exists so that a later driver can use
//!   them, and the driver ignores them on load.

use mdevmig_plugin_api::{Reader, VendorError};

use crate::codes;

/// `sizeof(struct acc_vf_data)`.
pub const ACC_VF_DATA_LEN: usize = 176;
/// `QM_MATCH_SIZE = offsetofend(struct acc_vf_data, qm_rsv_state)`.
pub const QM_MATCH_SIZE: usize = 40;
/// Alignment every non-zero queue DMA address must have (`QMC_ALIGN`).
pub const DMA_ALIGN: u64 = 32;
/// `ACC_DRV_MAJOR_VER`: the only V2 major version the driver loads.
pub const ACC_DRV_MAJOR_VER: u16 = 1;
/// `ACC_DRV_MINOR_VER`: what a current driver writes.
pub const ACC_DRV_MINOR_VER: u16 = 0;
/// `QM_READY` (`enum qm_vf_state` in `include/linux/hisi_acc_qm.h`).
pub const QM_READY: u32 = 0;
/// `QM_NOT_READY`.
pub const QM_NOT_READY: u32 = 1;
/// Largest `qp_num` the VF table can express (`QM_SQC_VFT_NUM_MASK_V2 + 1`).
pub const MAX_QP_NUM: u32 = 1024;
/// Largest `qp_base` the VF table can express (`QM_SQC_VFT_BASE_MASK_V2`).
pub const MAX_QP_BASE: u32 = 0xffff;
/// Index of the ring base's low word in `qm_eqc_dw`/`qm_aeqc_dw` (`QM_XQC_ADDR_LOW`).
pub const XQC_ADDR_LOW: usize = 1;
/// Index of the ring base's high word (`QM_XQC_ADDR_HIGH`).
pub const XQC_ADDR_HIGH: usize = 2;

/// PCI device id of the SEC VF (`PCI_DEVICE_ID_HUAWEI_SEC_VF`).
pub const PCI_DEVICE_ID_SEC_VF: u32 = 0xa256;
/// PCI device id of the HPRE VF (`PCI_DEVICE_ID_HUAWEI_HPRE_VF`).
pub const PCI_DEVICE_ID_HPRE_VF: u32 = 0xa259;
/// PCI device id of the ZIP VF (`PCI_DEVICE_ID_HUAWEI_ZIP_VF`).
pub const PCI_DEVICE_ID_ZIP_VF: u32 = 0xa251;

/// The `acc_magic` field. Unknown values are kept (and print as hex) so that the
/// check, not the parser, decides about them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Magic(pub u64);

impl Magic {
    /// `ACC_DEV_MAGIC_V1` (called `ACC_DEV_MAGIC` before V2 existed).
    pub const V1: Magic = Magic(0xCDCD_CDCD_FEED_AACC);
    /// `ACC_DEV_MAGIC_V2`.
    pub const V2: Magic = Magic(0xAACC_FEED_DECA_DEDE);

    /// The mdevmig state version this magic stands for (1 or 2), if known.
    pub fn state_version(self) -> Option<u32> {
        match self {
            Magic::V1 => Some(1),
            Magic::V2 => Some(2),
            _ => None,
        }
    }

    /// The magic of mdevmig state version `v`, if it has one.
    pub fn for_state_version(v: u32) -> Option<Magic> {
        match v {
            1 => Some(Magic::V1),
            2 => Some(Magic::V2),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Magic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Magic::V1 => write!(f, "ACC_DEV_MAGIC_V1"),
            Magic::V2 => write!(f, "ACC_DEV_MAGIC_V2"),
            Magic(other) => write!(f, "Magic({other:#018x})"),
        }
    }
}

impl std::fmt::Display for Magic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

/// The part of the state after the match data (bytes 40..176): QM registers, event
/// queue contexts and the four queue DMA addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QmRegs {
    /// `QM_VF_AEQ_INT_MASK`.
    pub aeq_int_mask: u32,
    /// `QM_VF_EQ_INT_MASK`.
    pub eq_int_mask: u32,
    /// `QM_IFC_INT_SOURCE_V`.
    pub ifc_int_source: u32,
    /// `QM_IFC_INT_MASK`.
    pub ifc_int_mask: u32,
    /// `QM_IFC_INT_SET_V`.
    pub ifc_int_set: u32,
    /// `QM_PAGE_SIZE`.
    pub page_size: u32,
    /// EQ context words (`struct qm_eqc`: head/tail, base_l, base_h, dw3, two reserved, dw6).
    pub qm_eqc_dw: [u32; 7],
    /// AEQ context words, same shape.
    pub qm_aeqc_dw: [u32; 7],
    /// Reserved.
    pub qm_rsv_regs: [u32; 5],
    /// Reserved.
    pub padding: u32,
    /// Event-queue ring address as stored (wrong in V1 states, see the module doc).
    pub eqe_dma: u64,
    /// Async-event-queue ring address as stored (wrong in V1 states).
    pub aeqe_dma: u64,
    /// SQ context table address.
    pub sqc_dma: u64,
    /// CQ context table address.
    pub cqc_dma: u64,
}

/// One `struct acc_vf_data`, as the kernel wrote it. Every byte of the input is kept,
/// so [`AccVfData::to_bytes`] gives back exactly what [`AccVfData::parse`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccVfData {
    /// `acc_magic`.
    pub acc_magic: Magic,
    /// `qp_num`.
    pub qp_num: u32,
    /// `dev_id`.
    pub dev_id: u32,
    /// `que_iso_cfg`.
    pub que_iso_cfg: u32,
    /// `qp_base`.
    pub qp_base: u32,
    /// `vf_qm_state`.
    pub vf_qm_state: u32,
    /// `major_ver` (V2); in a V1 state, the low half of reserved word 0.
    pub major_ver: u16,
    /// `minor_ver` (V2); in a V1 state, the high half of reserved word 0.
    pub minor_ver: u16,
    /// `qm_rsv_state[2]` (V1: `qm_rsv_state[1..3]`).
    pub qm_rsv_state: [u32; 2],
    /// Bytes 40..176, or `None` for a match-data-only (40-byte) state.
    pub regs: Option<QmRegs>,
}

/// What the destination device is, as far as the driver's match check goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    /// The destination VF's PCI device id.
    pub dev_id: u32,
    /// Queue pairs the destination VF was given.
    pub qp_num: u32,
    /// The destination PF's `QM_QUE_ISO_CFG_V`.
    pub que_iso_cfg: u32,
}

fn short(what: &'static str) -> impl FnOnce(mdevmig_plugin_api::Short) -> VendorError {
    move |_| VendorError::new(codes::BAD_LENGTH, format!("hisi_acc state ended inside {what}"))
}

fn u32_le(r: &mut Reader<'_>, what: &'static str) -> Result<u32, VendorError> {
    r.u32_le(what).map_err(short(what))
}

fn u64_le(r: &mut Reader<'_>, what: &'static str) -> Result<u64, VendorError> {
    r.u64_le(what).map_err(short(what))
}

fn u32_array<const N: usize>(r: &mut Reader<'_>, what: &'static str) -> Result<[u32; N], VendorError> {
    let mut out = [0u32; N];
    for slot in out.iter_mut() {
        *slot = u32_le(r, what)?;
    }
    Ok(out)
}

fn put_u32s(out: &mut Vec<u8>, words: &[u32]) {
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

/// `hi << 32 | lo`, the way the driver joins two context words into an address.
pub fn join_words(lo: u32, hi: u32) -> u64 {
    u64::from(hi).wrapping_shl(32) | u64::from(lo)
}

/// The ring base address held in a 7-word EQC/AEQC (`dw[2] << 32 | dw[1]`).
pub fn xqc_base(dw: &[u32; 7]) -> u64 {
    let lo = dw.get(XQC_ADDR_LOW).copied().unwrap_or(0);
    let hi = dw.get(XQC_ADDR_HIGH).copied().unwrap_or(0);
    join_words(lo, hi)
}

impl QmRegs {
    fn parse(r: &mut Reader<'_>) -> Result<QmRegs, VendorError> {
        Ok(QmRegs {
            aeq_int_mask: u32_le(r, "aeq_int_mask")?,
            eq_int_mask: u32_le(r, "eq_int_mask")?,
            ifc_int_source: u32_le(r, "ifc_int_source")?,
            ifc_int_mask: u32_le(r, "ifc_int_mask")?,
            ifc_int_set: u32_le(r, "ifc_int_set")?,
            page_size: u32_le(r, "page_size")?,
            qm_eqc_dw: u32_array(r, "qm_eqc_dw")?,
            qm_aeqc_dw: u32_array(r, "qm_aeqc_dw")?,
            qm_rsv_regs: u32_array(r, "qm_rsv_regs")?,
            padding: u32_le(r, "padding")?,
            eqe_dma: u64_le(r, "eqe_dma")?,
            aeqe_dma: u64_le(r, "aeqe_dma")?,
            sqc_dma: u64_le(r, "sqc_dma")?,
            cqc_dma: u64_le(r, "cqc_dma")?,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        put_u32s(
            out,
            &[
                self.aeq_int_mask,
                self.eq_int_mask,
                self.ifc_int_source,
                self.ifc_int_mask,
                self.ifc_int_set,
                self.page_size,
            ],
        );
        put_u32s(out, &self.qm_eqc_dw);
        put_u32s(out, &self.qm_aeqc_dw);
        put_u32s(out, &self.qm_rsv_regs);
        put_u32s(out, &[self.padding]);
        for a in [self.eqe_dma, self.aeqe_dma, self.sqc_dma, self.cqc_dma] {
            out.extend_from_slice(&a.to_le_bytes());
        }
    }
}

impl AccVfData {
    /// Parses a raw state: exactly 176 bytes (the whole struct) or exactly 40 bytes
    /// (match data only). Only the length is checked here; [`AccVfData::check`] judges
    /// the content.
    pub fn parse(input: &[u8]) -> Result<AccVfData, VendorError> {
        if input.len() != ACC_VF_DATA_LEN && input.len() != QM_MATCH_SIZE {
            return Err(VendorError::new(
                codes::BAD_LENGTH,
                format!(
                    "hisi_acc state is {} bytes; struct acc_vf_data is {ACC_VF_DATA_LEN} \
                     bytes, or {QM_MATCH_SIZE} when only the match data was saved",
                    input.len()
                ),
            ));
        }
        let mut r = Reader::new(input);
        let acc_magic = Magic(u64_le(&mut r, "acc_magic")?);
        let qp_num = u32_le(&mut r, "qp_num")?;
        let dev_id = u32_le(&mut r, "dev_id")?;
        let que_iso_cfg = u32_le(&mut r, "que_iso_cfg")?;
        let qp_base = u32_le(&mut r, "qp_base")?;
        let vf_qm_state = u32_le(&mut r, "vf_qm_state")?;
        let major_ver = r.u16_le("major_ver").map_err(short("major_ver"))?;
        let minor_ver = r.u16_le("minor_ver").map_err(short("minor_ver"))?;
        let qm_rsv_state = u32_array(&mut r, "qm_rsv_state")?;
        let regs = if r.is_empty() {
            None
        } else {
            Some(QmRegs::parse(&mut r)?)
        };
        r.expect_empty("struct acc_vf_data")
            .map_err(|t| VendorError::new(codes::BAD_LENGTH, format!("{} bytes after {}", t.left, t.what)))?;
        Ok(AccVfData {
            acc_magic,
            qp_num,
            dev_id,
            que_iso_cfg,
            qp_base,
            vf_qm_state,
            major_ver,
            minor_ver,
            qm_rsv_state,
            regs,
        })
    }

    /// The raw bytes: 176, or 40 for a match-data-only state.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ACC_VF_DATA_LEN);
        out.extend_from_slice(&self.acc_magic.0.to_le_bytes());
        put_u32s(
            &mut out,
            &[
                self.qp_num,
                self.dev_id,
                self.que_iso_cfg,
                self.qp_base,
                self.vf_qm_state,
            ],
        );
        out.extend_from_slice(&self.major_ver.to_le_bytes());
        out.extend_from_slice(&self.minor_ver.to_le_bytes());
        put_u32s(&mut out, &self.qm_rsv_state);
        if let Some(regs) = &self.regs {
            regs.write(&mut out);
        }
        out
    }

    /// The number of bytes [`AccVfData::to_bytes`] produces.
    pub fn encoded_len(&self) -> usize {
        if self.regs.is_some() {
            ACC_VF_DATA_LEN
        } else {
            QM_MATCH_SIZE
        }
    }

    /// The four queue DMA addresses the destination driver will program, in the order
    /// eqe, aeqe, sqc, cqc, or `None` for a match-data-only state. For V1 the
    /// EQE/AEQE addresses are recomputed from the context words, as
    /// `vf_qm_version_check()` does; otherwise the stored values are used.
    pub fn effective_dma(&self) -> Option<[u64; 4]> {
        let regs = self.regs.as_ref()?;
        let (eqe, aeqe) = if self.acc_magic == Magic::V1 {
            (xqc_base(&regs.qm_eqc_dw), xqc_base(&regs.qm_aeqc_dw))
        } else {
            (regs.eqe_dma, regs.aeqe_dma)
        };
        Some([eqe, aeqe, regs.sqc_dma, regs.cqc_dma])
    }

    /// Checks the state against the destination, in the order the driver does
    /// (`vf_qm_check_match()`, then `vf_qm_load_data()`), then the checks the driver
    /// leaves out. `state_version`, when given, is the mdevmig state version the
    /// section claims; the magic must be that version's.
    pub fn check(&self, dest: &Destination, state_version: Option<u32>) -> Result<(), VendorError> {
        self.check_magic(state_version)?;
        self.check_match(dest)?;
        self.check_content()
    }

    /// Magic and version: `vf_qm_version_check()`.
    pub fn check_magic(&self, state_version: Option<u32>) -> Result<(), VendorError> {
        let Some(found) = self.acc_magic.state_version() else {
            return Err(VendorError::new(
                codes::BAD_MAGIC,
                format!(
                    "acc_magic {} is neither ACC_DEV_MAGIC_V1 ({}) nor ACC_DEV_MAGIC_V2 ({})",
                    self.acc_magic,
                    Magic::V1,
                    Magic::V2
                ),
            ));
        };
        if let Some(claimed) = state_version {
            if claimed != found {
                return Err(VendorError::new(
                    codes::BAD_MAGIC,
                    format!(
                        "the section claims state version {claimed} but carries the \
                         version {found} magic {:?}",
                        self.acc_magic
                    ),
                ));
            }
        }
        if self.acc_magic == Magic::V2 && self.major_ver != ACC_DRV_MAJOR_VER {
            return Err(VendorError::new(
                codes::BAD_VERSION,
                format!(
                    "migration driver version {}.{} does not match: the driver loads \
                     major version {ACC_DRV_MAJOR_VER} only",
                    self.major_ver, self.minor_ver
                ),
            ));
        }
        Ok(())
    }

    /// The destination comparison of `vf_qm_check_match()`.
    pub fn check_match(&self, dest: &Destination) -> Result<(), VendorError> {
        if self.dev_id != dest.dev_id {
            return Err(VendorError::new(
                codes::DEV_ID_MISMATCH,
                format!(
                    "state is for VF device id {:#06x}, destination VF is {:#06x}",
                    self.dev_id, dest.dev_id
                ),
            ));
        }
        if self.qp_num != dest.qp_num {
            return Err(VendorError::new(
                codes::QP_NUM_MISMATCH,
                format!(
                    "state has {} queue pairs, destination VF has {}",
                    self.qp_num, dest.qp_num
                ),
            ));
        }
        if self.que_iso_cfg != dest.que_iso_cfg {
            return Err(VendorError::new(
                codes::QUE_ISO_CFG_MISMATCH,
                format!(
                    "state has queue isolation {:#x}, destination PF has {:#x}",
                    self.que_iso_cfg, dest.que_iso_cfg
                ),
            ));
        }
        Ok(())
    }

    /// Checks that do not depend on the destination: QM state, queue base, DMA
    /// addresses and (V2) their agreement with the context words.
    pub fn check_content(&self) -> Result<(), VendorError> {
        match (self.vf_qm_state, &self.regs) {
            (QM_READY, _) | (QM_NOT_READY, None) => {}
            (QM_NOT_READY, Some(_)) => {
                return Err(VendorError::new(
                    codes::BAD_QM_STATE,
                    "a whole (176-byte) state says QM_NOT_READY; the driver saves the \
                     registers only of a ready VF",
                ))
            }
            (other, _) => {
                return Err(VendorError::new(
                    codes::BAD_QM_STATE,
                    format!("vf_qm_state {other:#x} is neither QM_READY (0) nor QM_NOT_READY (1)"),
                ))
            }
        }
        if self.qp_base > MAX_QP_BASE {
            return Err(VendorError::new(
                codes::BAD_QP_BASE,
                format!(
                    "qp_base {:#x} does not fit the 16-bit VF-table base field",
                    self.qp_base
                ),
            ));
        }
        let (Some(regs), Some(dma)) = (&self.regs, self.effective_dma()) else {
            return Ok(());
        };
        check_dma(&dma)?;
        if self.acc_magic == Magic::V2 {
            let eqc = xqc_base(&regs.qm_eqc_dw);
            let aeqc = xqc_base(&regs.qm_aeqc_dw);
            if regs.eqe_dma != eqc || regs.aeqe_dma != aeqc {
                return Err(VendorError::new(
                    codes::DMA_MISMATCH,
                    format!(
                        "eqe_dma {:#x} / aeqe_dma {:#x} disagree with the EQC/AEQC base \
                         words {eqc:#x} / {aeqc:#x}",
                        regs.eqe_dma, regs.aeqe_dma
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A plausible whole state, as a current (`v2 = true`) or pre-2025 (`v2 = false`)
    /// kernel would save it for a VF whose guest driver is running. The V1 state
    /// reproduces the old kernel's wrong `eqe_dma`/`aeqe_dma`.
    pub fn sample(dev_id: u32, qp_num: u32, que_iso_cfg: u32, v2: bool) -> AccVfData {
        // The guest's hisi_qm_memory_init(): one page-aligned buffer holding the EQE
        // ring (2048 x 4 bytes), the AEQE ring (1024 x 4), then qp_num SQC and CQC
        // entries of 32 bytes each, every part QMC_ALIGNed to 32.
        const BASE: u64 = 0x0000_0001_2345_6000;
        const EQ_DEPTH: u32 = 2048;
        const AEQ_DEPTH: u32 = 1024;
        let eqe_dma = BASE;
        let aeqe_dma = eqe_dma.wrapping_add(8192);
        let sqc_dma = aeqe_dma.wrapping_add(4096);
        let cqc_dma = sqc_dma.wrapping_add(u64::from(qp_num).wrapping_mul(32));
        let xqc = |base: u64, depth: u32| -> [u32; 7] {
            let lo = u32::try_from(base & 0xffff_ffff).unwrap_or(0);
            let hi = u32::try_from(base.wrapping_shr(32)).unwrap_or(0);
            // head 0, tail 0 | base_l | base_h | dw3 | rsvd | rsvd | depth-1, phase
            [0, lo, hi, 0, 0, 0, depth.wrapping_sub(1) | 0x1_0000]
        };
        let qm_eqc_dw = xqc(eqe_dma, EQ_DEPTH);
        let qm_aeqc_dw = xqc(aeqe_dma, AEQ_DEPTH);
        let (acc_magic, major_ver, minor_ver, stored_eqe, stored_aeqe) = if v2 {
            (Magic::V2, ACC_DRV_MAJOR_VER, ACC_DRV_MINOR_VER, eqe_dma, aeqe_dma)
        } else {
            // The pre-fix vf_qm_state_save(): dw[1] << 32 | dw[0].
            let wrong = |dw: &[u32; 7]| join_words(dw[0], dw[1]);
            (Magic::V1, 0, 0, wrong(&qm_eqc_dw), wrong(&qm_aeqc_dw))
        };
        AccVfData {
            acc_magic,
            qp_num,
            dev_id,
            que_iso_cfg,
            qp_base: 64,
            vf_qm_state: QM_READY,
            major_ver,
            minor_ver,
            qm_rsv_state: [0; 2],
            regs: Some(QmRegs {
                aeq_int_mask: 0,
                eq_int_mask: 0,
                ifc_int_source: 0,
                ifc_int_mask: 0,
                ifc_int_set: 0,
                page_size: 0,
                qm_eqc_dw,
                qm_aeqc_dw,
                qm_rsv_regs: [0; 5],
                padding: 0,
                eqe_dma: stored_eqe,
                aeqe_dma: stored_aeqe,
                sqc_dma,
                cqc_dma,
            }),
        }
    }

    /// This state cut to its match data, as the driver saves it for a VF whose guest
    /// driver is not ready (`vf_qm_state = QM_NOT_READY`, 40 bytes).
    pub fn match_only(&self) -> AccVfData {
        AccVfData {
            vf_qm_state: QM_NOT_READY,
            regs: None,
            ..self.clone()
        }
    }
}

fn check_dma(dma: &[u64; 4]) -> Result<(), VendorError> {
    const NAMES: [&str; 4] = ["eqe_dma", "aeqe_dma", "sqc_dma", "cqc_dma"];
    if dma.iter().all(|a| *a == 0) {
        // The guest never set the queues up; the driver skips the restore.
        return Ok(());
    }
    for (name, addr) in NAMES.iter().zip(dma.iter()) {
        if *addr == 0 {
            return Err(VendorError::new(
                codes::BAD_DMA_ADDRESS,
                format!(
                    "{name} is zero while other queue addresses are set; the driver \
                     would silently skip restoring a running VF"
                ),
            ));
        }
        if *addr & (DMA_ALIGN.wrapping_sub(1)) != 0 {
            return Err(VendorError::new(
                codes::BAD_DMA_ADDRESS,
                format!("{name} {addr:#x} is not {DMA_ALIGN}-byte aligned"),
            ));
        }
    }
    Ok(())
}
