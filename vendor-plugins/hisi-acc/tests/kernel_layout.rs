//! States written by hand at the offsets of the kernel's `struct acc_vf_data`
//! (drivers/vfio/pci/hisilicon/hisi_acc_vfio_pci.h), independent of the crate's
//! serializer, and one test per rejection code.

use std::collections::BTreeMap;

use mdevmig_hisi_acc::codes;
use mdevmig_hisi_acc::format::{AccVfData, Destination, Magic, QM_NOT_READY};
use mdevmig_hisi_acc::plugin::{section_spec, HisiAccPlugin};
use mdevmig_plugin_api::{DeviceInfo, VendorError, VendorPlugin};

// Offsets from the C struct (u64 magic, five u32, u16 major, u16 minor, u32 rsv[2],
// six u32 registers, u32 eqc[7], u32 aeqc[7], u32 rsv_regs[5], u32 padding, four u64).
const OFF_MAGIC: usize = 0;
const OFF_QP_NUM: usize = 8;
const OFF_DEV_ID: usize = 12;
const OFF_QUE_ISO_CFG: usize = 16;
const OFF_QP_BASE: usize = 20;
const OFF_VF_QM_STATE: usize = 24;
const OFF_MAJOR: usize = 28;
const OFF_MINOR: usize = 30;
const OFF_EQC: usize = 64;
const OFF_AEQC: usize = 92;
const OFF_EQE_DMA: usize = 144;
const OFF_AEQE_DMA: usize = 152;
const OFF_SQC_DMA: usize = 160;
const OFF_CQC_DMA: usize = 168;
const LEN: usize = 176;

const V1_MAGIC: u64 = 0xCDCD_CDCD_FEED_AACC;
const V2_MAGIC: u64 = 0xAACC_FEED_DECA_DEDE;
const SEC_VF: u32 = 0xa256;
const HPRE_VF: u32 = 0xa259;

const EQE: u64 = 0x1_2345_6000;
const AEQE: u64 = EQE + 8192;
const SQC: u64 = AEQE + 4096;
const CQC: u64 = SQC + 64 * 32;

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// A ready SEC VF with 64 queue pairs, as a current kernel saves it.
fn hand_v2() -> Vec<u8> {
    let mut b = vec![0u8; LEN];
    put64(&mut b, OFF_MAGIC, V2_MAGIC);
    put32(&mut b, OFF_QP_NUM, 64);
    put32(&mut b, OFF_DEV_ID, SEC_VF);
    put32(&mut b, OFF_QUE_ISO_CFG, 1);
    put32(&mut b, OFF_QP_BASE, 64);
    put32(&mut b, OFF_VF_QM_STATE, 0);
    put16(&mut b, OFF_MAJOR, 1);
    put16(&mut b, OFF_MINOR, 0);
    // EQC: dw1 = base low, dw2 = base high, dw6 = depth-1 | phase.
    put32(&mut b, OFF_EQC + 4, EQE as u32);
    put32(&mut b, OFF_EQC + 8, (EQE >> 32) as u32);
    put32(&mut b, OFF_EQC + 24, 2047 | 0x1_0000);
    put32(&mut b, OFF_AEQC + 4, AEQE as u32);
    put32(&mut b, OFF_AEQC + 8, (AEQE >> 32) as u32);
    put32(&mut b, OFF_AEQC + 24, 1023 | 0x1_0000);
    put64(&mut b, OFF_EQE_DMA, EQE);
    put64(&mut b, OFF_AEQE_DMA, AEQE);
    put64(&mut b, OFF_SQC_DMA, SQC);
    put64(&mut b, OFF_CQC_DMA, CQC);
    b
}

/// The same VF saved by a pre-2025 kernel: V1 magic, no version, and eqe/aeqe_dma
/// built from the wrong words (dw[1] << 32 | dw[0]).
fn hand_v1() -> Vec<u8> {
    let mut b = hand_v2();
    put64(&mut b, OFF_MAGIC, V1_MAGIC);
    put16(&mut b, OFF_MAJOR, 0);
    put64(&mut b, OFF_EQE_DMA, (EQE & 0xffff_ffff) << 32);
    put64(&mut b, OFF_AEQE_DMA, (AEQE & 0xffff_ffff) << 32);
    b
}

fn sec_device() -> DeviceInfo {
    DeviceInfo {
        vendor: "hisi_acc".into(),
        device_type: "hisi-sec-vf".into(),
        attributes: BTreeMap::from([
            ("dev_id".into(), "0xa256".into()),
            ("qp_num".into(), "64".into()),
            ("que_iso_cfg".into(), "1".into()),
        ]),
        capabilities: Default::default(),
    }
}

fn validate(data: &[u8], version: u16) -> Result<(), VendorError> {
    HisiAccPlugin.validate_section(&sec_device(), &section_spec(version), data)
}

#[track_caller]
fn assert_code(r: Result<(), VendorError>, code: &str) {
    let e = r.expect_err("expected a rejection");
    assert_eq!(e.code, code, "wrong code; message: {}", e.message);
    assert!(codes::TABLE.iter().any(|(c, _)| *c == e.code));
    assert!(!e.message.is_empty());
}

#[test]
fn hand_built_states_are_accepted() {
    validate(&hand_v2(), 2).unwrap();
    validate(&hand_v1(), 1).unwrap();
}

#[test]
fn hand_built_state_equals_the_serializers_sample_bit_for_bit() {
    assert_eq!(AccVfData::sample(SEC_VF, 64, 1, true).to_bytes(), hand_v2());
    assert_eq!(AccVfData::sample(SEC_VF, 64, 1, false).to_bytes(), hand_v1());
}

#[test]
fn parse_reads_fields_at_kernel_offsets() {
    let s = AccVfData::parse(&hand_v2()).unwrap();
    assert_eq!(s.acc_magic, Magic::V2);
    assert_eq!(
        (s.qp_num, s.dev_id, s.que_iso_cfg, s.qp_base),
        (64, SEC_VF, 1, 64)
    );
    assert_eq!((s.vf_qm_state, s.major_ver, s.minor_ver), (0, 1, 0));
    let r = s.regs.as_ref().unwrap();
    assert_eq!(
        (r.eqe_dma, r.aeqe_dma, r.sqc_dma, r.cqc_dma),
        (EQE, AEQE, SQC, CQC)
    );
    assert_eq!(r.qm_eqc_dw[1], EQE as u32);
    assert_eq!(r.qm_aeqc_dw[2], (AEQE >> 32) as u32);
    // V1: the driver's effective EQE/AEQE addresses come from the context words.
    let v1 = AccVfData::parse(&hand_v1()).unwrap();
    assert_eq!(v1.effective_dma(), Some([EQE, AEQE, SQC, CQC]));
}

#[test]
fn round_trip_is_bit_exact_including_reserved_bytes() {
    for mut b in [hand_v1(), hand_v2()] {
        // Reserved words and padding are kept, whatever they hold.
        for off in [32usize, 36, 120, 124, 128, 132, 136, 140] {
            put32(&mut b, off, 0xdead_0000 | off as u32);
        }
        let s = AccVfData::parse(&b).unwrap();
        assert_eq!(s.to_bytes(), b);
        let m = &b[..40];
        assert_eq!(AccVfData::parse(m).unwrap().to_bytes(), m);
    }
}

#[test]
fn match_only_state_is_accepted_ready_or_not() {
    let mut m = hand_v2()[..40].to_vec();
    validate(&m, 2).unwrap(); // PRE_COPY: read before vf_qm_state was set (0)
    put32(&mut m, OFF_VF_QM_STATE, QM_NOT_READY);
    validate(&m, 2).unwrap(); // STOP_COPY of a VF whose guest driver is not ready
    assert_eq!(AccVfData::sample(SEC_VF, 64, 1, true).match_only().to_bytes(), m);
}

#[test]
fn all_zero_dma_addresses_are_accepted_as_queues_never_set_up() {
    let mut b = hand_v2();
    for off in [OFF_EQE_DMA, OFF_AEQE_DMA, OFF_SQC_DMA, OFF_CQC_DMA] {
        put64(&mut b, off, 0);
    }
    for off in [OFF_EQC + 4, OFF_EQC + 8, OFF_AEQC + 4, OFF_AEQC + 8] {
        put32(&mut b, off, 0);
    }
    validate(&b, 2).unwrap();
}

#[test]
fn bad_length() {
    for n in [0usize, 1, 39, 41, 100, 175] {
        assert_code(validate(&hand_v2()[..n], 2), codes::BAD_LENGTH);
    }
    let mut long = hand_v2();
    long.push(0);
    assert_code(validate(&long, 2), codes::BAD_LENGTH);
}

#[test]
fn bad_magic() {
    let mut b = hand_v2();
    put64(&mut b, OFF_MAGIC, 0x1122_3344_5566_7788);
    assert_code(validate(&b, 2), codes::BAD_MAGIC);
    // Byte-swapped V2 (a big-endian writer) is not V2.
    put64(&mut b, OFF_MAGIC, V2_MAGIC.swap_bytes());
    assert_code(validate(&b, 2), codes::BAD_MAGIC);
    // A known magic under the other state version.
    assert_code(validate(&hand_v1(), 2), codes::BAD_MAGIC);
    assert_code(validate(&hand_v2(), 1), codes::BAD_MAGIC);
}

#[test]
fn bad_version() {
    let mut b = hand_v2();
    put16(&mut b, OFF_MAJOR, 2);
    assert_code(validate(&b, 2), codes::BAD_VERSION);
    put16(&mut b, OFF_MAJOR, 0);
    assert_code(validate(&b, 2), codes::BAD_VERSION);
    // The driver ignores minor_ver, and so do we.
    let mut b = hand_v2();
    put16(&mut b, OFF_MINOR, 7);
    validate(&b, 2).unwrap();
    // In V1 the same bytes are reserved.
    let mut b = hand_v1();
    put16(&mut b, OFF_MAJOR, 9);
    validate(&b, 1).unwrap();
}

#[test]
fn dev_id_mismatch() {
    let mut b = hand_v2();
    put32(&mut b, OFF_DEV_ID, HPRE_VF);
    assert_code(validate(&b, 2), codes::DEV_ID_MISMATCH);
    // The kernel compares the whole u32 with the u16 PCI id.
    put32(&mut b, OFF_DEV_ID, 0x1_a256);
    assert_code(validate(&b, 2), codes::DEV_ID_MISMATCH);
}

#[test]
fn qp_num_mismatch() {
    let mut b = hand_v2();
    put32(&mut b, OFF_QP_NUM, 63);
    assert_code(validate(&b, 2), codes::QP_NUM_MISMATCH);
}

#[test]
fn que_iso_cfg_mismatch() {
    let mut b = hand_v2();
    put32(&mut b, OFF_QUE_ISO_CFG, 0);
    assert_code(validate(&b, 2), codes::QUE_ISO_CFG_MISMATCH);
}

#[test]
fn bad_qm_state() {
    let mut b = hand_v2();
    put32(&mut b, OFF_VF_QM_STATE, 2);
    assert_code(validate(&b, 2), codes::BAD_QM_STATE);
    assert_code(validate(&b[..40], 2), codes::BAD_QM_STATE);
    // A whole state is only ever saved for a ready VF.
    put32(&mut b, OFF_VF_QM_STATE, QM_NOT_READY);
    assert_code(validate(&b, 2), codes::BAD_QM_STATE);
}

#[test]
fn bad_qp_base() {
    let mut b = hand_v2();
    put32(&mut b, OFF_QP_BASE, 0x1_0000);
    assert_code(validate(&b, 2), codes::BAD_QP_BASE);
    put32(&mut b, OFF_QP_BASE, 0xffff);
    validate(&b, 2).unwrap();
}

#[test]
fn bad_dma_address() {
    for off in [OFF_EQE_DMA, OFF_AEQE_DMA, OFF_SQC_DMA, OFF_CQC_DMA] {
        // One address zero while the others are set.
        let mut b = hand_v2();
        put64(&mut b, off, 0);
        if off == OFF_EQE_DMA {
            put32(&mut b, OFF_EQC + 4, 0);
            put32(&mut b, OFF_EQC + 8, 0);
        }
        if off == OFF_AEQE_DMA {
            put32(&mut b, OFF_AEQC + 4, 0);
            put32(&mut b, OFF_AEQC + 8, 0);
        }
        assert_code(validate(&b, 2), codes::BAD_DMA_ADDRESS);
    }
    for off in [OFF_SQC_DMA, OFF_CQC_DMA] {
        for bump in [1u64, 8, 16] {
            let mut b = hand_v2();
            let v = u64::from_le_bytes(b[off..off + 8].try_into().unwrap());
            put64(&mut b, off, v + bump);
            assert_code(validate(&b, 2), codes::BAD_DMA_ADDRESS);
        }
    }
    // V1: the address the driver uses comes from the EQC words; misalign it there.
    let mut b = hand_v1();
    put32(&mut b, OFF_EQC + 4, EQE as u32 + 4);
    assert_code(validate(&b, 1), codes::BAD_DMA_ADDRESS);
    let mut b = hand_v1();
    put32(&mut b, OFF_AEQC + 4, 0);
    put32(&mut b, OFF_AEQC + 8, 0);
    assert_code(validate(&b, 1), codes::BAD_DMA_ADDRESS);
}

#[test]
fn dma_mismatch() {
    let mut b = hand_v2();
    put64(&mut b, OFF_EQE_DMA, EQE + 0x1000);
    assert_code(validate(&b, 2), codes::DMA_MISMATCH);
    let mut b = hand_v2();
    put32(&mut b, OFF_AEQC + 8, 7);
    assert_code(validate(&b, 2), codes::DMA_MISMATCH);
}

#[test]
fn checks_run_in_the_drivers_order() {
    // Bad magic wins over everything else, then dev_id, qp_num, que_iso_cfg.
    let mut b = hand_v2();
    put32(&mut b, OFF_QUE_ISO_CFG, 9);
    put32(&mut b, OFF_QP_NUM, 9);
    put32(&mut b, OFF_DEV_ID, HPRE_VF);
    put64(&mut b, OFF_SQC_DMA, 0);
    assert_code(validate(&b, 2), codes::DEV_ID_MISMATCH);
    put64(&mut b, OFF_MAGIC, 0);
    assert_code(validate(&b, 2), codes::BAD_MAGIC);
}

#[test]
fn check_without_plugin_uses_the_given_destination() {
    let s = AccVfData::parse(&hand_v2()).unwrap();
    let dest = Destination {
        dev_id: SEC_VF,
        qp_num: 64,
        que_iso_cfg: 1,
    };
    s.check(&dest, None).unwrap();
    s.check(&dest, Some(2)).unwrap();
    assert_code(s.check(&dest, Some(1)), codes::BAD_MAGIC);
}
