//! One check per rejection code of the section validators, each on a valid section
//! changed in one field, each asserting the exact code. (Raw-stream codes —
//! framing, record order, missing section, truncated, not loading — are in
//! tests/sim.rs; cannot_convert in tests/plugin.rs.)

mod common;

use common::*;
use mdevmig_plugin_api::{DeviceInfo, SectionSpec, VendorPlugin, VersionWindow};
use mdevmig_simgpu::{codes, GpuType, Section, SimGpuPlugin, VGPU_256M, VGPU_64M};

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

const ALL_ON: &[(&str, &str)] = &[("encoder", "on"), ("ctx3", "on")];

/// A valid section of a `vgpu-64m` configured `pairs`, its spec and its device.
fn valid(section: Section, pairs: &[(&str, &str)]) -> (Vec<u8>, SectionSpec, DeviceInfo) {
    let m = model(VGPU_64M, 3, pairs);
    (
        m.section_data(section).unwrap(),
        section.spec(VGPU_64M),
        device("vgpu-64m", pairs, &[]),
    )
}

/// The code for `section` after `f` changed it, on a 64m device configured `pairs`.
fn code_with(section: Section, pairs: &[(&str, &str)], f: impl FnOnce(&mut Vec<u8>)) -> &'static str {
    let (mut data, spec, dev) = valid(section, pairs);
    SimGpuPlugin::new().validate_section(&dev, &spec, &data).unwrap();
    f(&mut data);
    SimGpuPlugin::new()
        .validate_section(&dev, &spec, &data)
        .unwrap_err()
        .code
}

fn code(section: Section, f: impl FnOnce(&mut Vec<u8>)) -> &'static str {
    code_with(section, ALL_ON, f)
}

const CTX: usize = 64; // first context slot in regs
const Q: usize = 16; // first queue slot in ctx3

#[test]
fn codes_are_pinned_and_described() {
    let names: Vec<&str> = codes::TABLE.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        names,
        [
            "vendor.simgpu.bad_length",
            "vendor.simgpu.bad_magic",
            "vendor.simgpu.device_type",
            "vendor.simgpu.attribute",
            "vendor.simgpu.unsupported_version",
            "vendor.simgpu.unknown_section",
            "vendor.simgpu.framing",
            "vendor.simgpu.record_order",
            "vendor.simgpu.missing_section",
            "vendor.simgpu.truncated",
            "vendor.simgpu.fb_size",
            "vendor.simgpu.heads",
            "vendor.simgpu.ctx_count",
            "vendor.simgpu.context",
            "vendor.simgpu.ring_size",
            "vendor.simgpu.ring_index",
            "vendor.simgpu.enum_value",
            "vendor.simgpu.display_fit",
            "vendor.simgpu.fence",
            "vendor.simgpu.reserved",
            "vendor.simgpu.telemetry_range",
            "vendor.simgpu.ctx3_mismatch",
            "vendor.simgpu.ctx3_queue",
            "vendor.simgpu.encoder_mismatch",
            "vendor.simgpu.encoder_range",
            "vendor.simgpu.dirty_count",
            "vendor.simgpu.dirty_index",
            "vendor.simgpu.bulk_range",
            "vendor.simgpu.not_loading",
            "vendor.cannot_convert",
        ]
    );
    for (c, meaning) in codes::TABLE {
        assert!(c.starts_with("vendor."));
        assert!(!meaning.is_empty() && !meaning.contains('\n'));
    }
    // Every `codes::NAME` used in the source is in the table.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let codes_rs = std::fs::read_to_string(format!("{dir}/codes.rs")).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (i, _) in text.match_indices("codes::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.is_empty() {
                continue;
            }
            let decl = format!("pub const {name}: &str = \"");
            let at = codes_rs
                .find(&decl)
                .unwrap_or_else(|| panic!("codes::{name} not declared"));
            let value: String = codes_rs[at + decl.len()..]
                .chars()
                .take_while(|c| *c != '"')
                .collect();
            assert!(names.contains(&value.as_str()), "{value} missing from TABLE");
        }
    }
}

#[test]
fn bad_length_every_section() {
    for s in [
        Section::Regs,
        Section::Telemetry,
        Section::Ctx3,
        Section::Encoder,
        Section::FbDirty,
    ] {
        assert_eq!(
            code(s, |d| {
                d.pop();
            }),
            codes::BAD_LENGTH,
            "{s:?} short"
        );
        assert_eq!(code(s, |d| d.push(0)), codes::BAD_LENGTH, "{s:?} long");
        assert_eq!(code(s, |d| d.clear()), codes::BAD_LENGTH, "{s:?} empty");
    }
    let p = SimGpuPlugin::new();
    let dev = device("vgpu-64m", &[], &[]);
    assert_eq!(
        p.validate_section(&dev, &Section::Fb.spec(VGPU_64M), &[0; 10])
            .unwrap_err()
            .code,
        codes::BAD_LENGTH
    );
}

#[test]
fn bad_magic_every_section() {
    for s in [
        Section::Regs,
        Section::Telemetry,
        Section::Ctx3,
        Section::Encoder,
        Section::FbDirty,
    ] {
        assert_eq!(code(s, |d| d[0] ^= 0x20), codes::BAD_MAGIC, "{s:?}");
    }
}

#[test]
fn register_file() {
    let r = Section::Regs;
    assert_eq!(code(r, |d| put32(d, 4, VGPU_256M.fb_pages())), codes::FB_SIZE);
    // The same regs on a 256m device: the framebuffer size is the type's.
    let (data, spec, _) = valid(r, &[]);
    let d256 = device("vgpu-256m", &[], &[]);
    assert_eq!(
        SimGpuPlugin::new()
            .validate_section(&d256, &spec, &data)
            .unwrap_err()
            .code,
        codes::FB_SIZE
    );
    for heads in [0, 2, 5] {
        assert_eq!(code(r, |d| put32(d, 8, heads)), codes::HEADS, "heads {heads}");
    }
    // Shell device: same type, heads=2 configured.
    assert_eq!(code_with(r, &[("heads", "2")], |d| put32(d, 8, 1)), codes::HEADS);
    assert_eq!(code(r, |d| put32(d, 12, 65)), codes::CTX_COUNT);
    assert_eq!(code(r, |d| put32(d, 12, u32::MAX)), codes::CTX_COUNT);
    // ctx_count 64 leaves the unused slots "active" and free.
    assert_eq!(code(r, |d| put32(d, 12, 64)), codes::CONTEXT);
    // A non-zero slot beyond ctx_count.
    assert_eq!(code(r, |d| put32(d, CTX + 63 * 32 + 4, 1)), codes::CONTEXT);
    // Active slot 0: free, priority 4, unaligned ring, zero page table.
    assert_eq!(code(r, |d| put32(d, CTX, 0)), codes::CONTEXT);
    assert_eq!(code(r, |d| put32(d, CTX + 4, 4)), codes::CONTEXT);
    assert_eq!(code(r, |d| put64(d, CTX + 8, 0x1001)), codes::CONTEXT);
    assert_eq!(code(r, |d| put64(d, CTX + 16, 0)), codes::CONTEXT);
    assert_eq!(code(r, |d| put32(d, CTX, 4)), codes::ENUM_VALUE);
    for size in [0, 100, 128, 131_072, 4095] {
        assert_eq!(
            code(r, |d| put32(d, 16, size)),
            codes::RING_SIZE,
            "ring size {size}"
        );
    }
    assert_eq!(code(r, |d| put32(d, 20, 4096)), codes::RING_INDEX);
    assert_eq!(code(r, |d| put32(d, 24, u32::MAX)), codes::RING_INDEX);
    assert_eq!(
        code(r, |d| {
            put32(d, 16, 256);
            put32(d, 20, 255);
            put32(d, 24, 256)
        }),
        codes::RING_INDEX
    );
    assert_eq!(code(r, |d| put32(d, 28, 4)), codes::ENUM_VALUE);
    assert_eq!(code(r, |d| put32(d, 32, 5)), codes::ENUM_VALUE);
    // 3840x2160 on 4 heads needs 132 MB: not on a 64m, fine on a 256m.
    let four = [("heads", "4")];
    assert_eq!(code_with(r, &four, |d| put32(d, 32, 4)), codes::DISPLAY_FIT);
    let (mut data, spec, _) = valid(r, &four);
    put32(&mut data, 4, VGPU_256M.fb_pages());
    put32(&mut data, 32, 4);
    let d256 = device("vgpu-256m", &four, &[]);
    SimGpuPlugin::new().validate_section(&d256, &spec, &data).unwrap();
    assert_eq!(code(r, |d| put32(d, 36, 0x10)), codes::RESERVED);
    assert_eq!(code(r, |d| put64(d, 56, 1)), codes::RESERVED);
    assert_eq!(code(r, |d| put64(d, CTX + 24, 1)), codes::RESERVED);
    assert_eq!(
        code(r, |d| {
            put64(d, 40, 5);
            put64(d, 48, 6)
        }),
        codes::FENCE
    );
    // Scratch registers hold anything.
    let (mut data, spec, dev) = valid(r, ALL_ON);
    for b in &mut data[2112..] {
        *b = 0xa5;
    }
    SimGpuPlugin::new().validate_section(&dev, &spec, &data).unwrap();
}

#[test]
fn telemetry() {
    let t = Section::Telemetry;
    for (at, v) in [(4, 125_001u32), (8, 600_001), (12, 3001)] {
        assert_eq!(code(t, |d| put32(d, at, v)), codes::TELEMETRY_RANGE);
    }
    assert_eq!(code(t, |d| d[63] = 1), codes::RESERVED);
}

#[test]
fn ctx3() {
    let c = Section::Ctx3;
    // Enabled state on a ctx3=off device, and the reset image on a ctx3=on one.
    assert_eq!(code_with(c, &[], |d| put32(d, 4, 1)), codes::CTX3_MISMATCH);
    assert_eq!(code(c, |d| put32(d, 4, 0)), codes::CTX3_MISMATCH);
    assert_eq!(code(c, |d| put32(d, 4, 2)), codes::ENUM_VALUE);
    assert_eq!(code(c, |d| put32(d, 8, 9)), codes::CTX3_QUEUE);
    assert_eq!(code_with(c, &[], |d| put32(d, 8, 1)), codes::CTX3_QUEUE);
    assert_eq!(code(c, |d| put32(d, Q, 8)), codes::CTX3_QUEUE);
    assert_eq!(code(c, |d| put32(d, Q, 2048)), codes::CTX3_QUEUE);
    assert_eq!(code(c, |d| put32(d, Q + 4, 1024)), codes::CTX3_QUEUE);
    assert_eq!(code(c, |d| put32(d, Q + 12, 4)), codes::CTX3_QUEUE);
    assert_eq!(code(c, |d| put64(d, Q + 16, 0x10)), codes::CTX3_QUEUE);
    assert_eq!(code(c, |d| put32(d, Q + 7 * 32, 16)), codes::CTX3_QUEUE);
    assert_eq!(code(c, |d| put32(d, 12, 1)), codes::RESERVED);
    assert_eq!(code(c, |d| put64(d, Q + 24, 1)), codes::RESERVED);
}

#[test]
fn encoder() {
    let e = Section::Encoder;
    // Offered to a device configured encoder=off.
    let (data, spec, _) = valid(e, &[("encoder", "on")]);
    let off = device("vgpu-64m", &[], &[]);
    let err = SimGpuPlugin::new()
        .validate_section(&off, &spec, &data)
        .unwrap_err();
    assert_eq!(err.code, codes::ENCODER_MISMATCH);
    assert_eq!(code(e, |d| put32(d, 4, 2)), codes::ENUM_VALUE);
    assert_eq!(code(e, |d| put32(d, 8, 0)), codes::ENUM_VALUE);
    assert_eq!(code(e, |d| put32(d, 8, 4)), codes::ENUM_VALUE);
    for (at, v) in [
        (12, 15u32),
        (12, 7682),
        (12, 1921),
        (16, 4322),
        (20, 99),
        (20, 200_001),
        (24, 0),
        (24, 1001),
    ] {
        assert_eq!(
            code(e, |d| put32(d, at, v)),
            codes::ENCODER_RANGE,
            "field at {at} = {v}"
        );
    }
    assert_eq!(code(e, |d| put64(d, 40, 0)), codes::ENCODER_RANGE);
    // Idle with leftovers of a session.
    assert_eq!(code(e, |d| put32(d, 4, 0)), codes::ENCODER_RANGE);
    let idle = |d: &mut Vec<u8>| {
        d[4..].fill(0);
    };
    let (mut data, spec, dev) = valid(e, ALL_ON);
    idle(&mut data);
    SimGpuPlugin::new().validate_section(&dev, &spec, &data).unwrap();
    assert_eq!(
        code(e, |d| {
            idle(d);
            d[255] = 1
        }),
        codes::ENCODER_RANGE
    );
    assert_eq!(code(e, |d| put32(d, 28, 1)), codes::RESERVED);
}

fn dirty_with(ty: GpuType, entries: &[(u32, u8)]) -> Vec<u8> {
    let pages: Vec<(u32, Vec<u8>)> = entries.iter().map(|(p, b)| (*p, vec![*b; 4096])).collect();
    mdevmig_simgpu::sections::encode_fb_dirty(ty, pages.iter().map(|(p, b)| (*p, b.as_slice())))
}

#[test]
fn fb_dirty() {
    let p = SimGpuPlugin::new();
    let dev = device("vgpu-64m", &[], &[]);
    let spec = Section::FbDirty.spec(VGPU_64M);
    let check = |d: &[u8]| p.validate_section(&dev, &spec, d);
    let good = dirty_with(VGPU_64M, &[(0, 1), (7, 2), (16383, 3)]);
    check(&good).unwrap();
    let decoded = mdevmig_simgpu::sections::FbDirty::decode(&good, VGPU_64M).unwrap();
    assert_eq!(decoded.indices, [0, 7, 16383]);
    assert_eq!(decoded.encode(VGPU_64M), good);
    let code = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut d = good.clone();
        f(&mut d);
        check(&d).unwrap_err().code
    };
    assert_eq!(code(&|d| put32(d, 4, 257)), codes::DIRTY_COUNT);
    assert_eq!(code(&|d| put32(d, 8, 1024)), codes::DIRTY_COUNT);
    assert_eq!(code(&|d| put32(d, 12, 512)), codes::DIRTY_COUNT);
    assert_eq!(code(&|d| put32(d, 16 + 8, 16384)), codes::DIRTY_INDEX);
    assert_eq!(code(&|d| put32(d, 16 + 4, 0)), codes::DIRTY_INDEX);
    assert_eq!(code(&|d| put32(d, 16 + 4, 16383)), codes::DIRTY_INDEX);
    assert_eq!(code(&|d| put32(d, 16 + 12, 9)), codes::RESERVED);
    assert_eq!(
        code(&|d| {
            let n = d.len();
            d[n - 1] = 1
        }),
        codes::RESERVED
    );
    // Count 4 with only three pages: the fourth index (0) does not increase.
    assert_eq!(code(&|d| put32(d, 4, 4)), codes::DIRTY_INDEX);
    // A 64m section on a 256m device has the wrong length.
    let d256 = device("vgpu-256m", &[], &[]);
    assert_eq!(
        p.validate_section(&d256, &Section::FbDirty.spec(VGPU_256M), &good)
            .unwrap_err()
            .code,
        codes::BAD_LENGTH
    );
}

#[test]
fn device_section_and_version_codes() {
    let p = SimGpuPlugin::new();
    let (data, spec, dev) = valid(Section::Regs, &[]);
    let mut other = dev.clone();
    other.device_type = "vgpu-2g".into();
    assert_eq!(
        p.validate_section(&other, &spec, &data).unwrap_err().code,
        codes::DEVICE_TYPE
    );
    let mut other = dev.clone();
    other.attributes.insert("encoder".into(), "maybe".into());
    assert_eq!(
        p.validate_section(&other, &spec, &data).unwrap_err().code,
        codes::ATTRIBUTE
    );
    let mut s = spec.clone();
    s.name = "simgpu.nope".into();
    assert_eq!(
        p.validate_section(&dev, &s, &data).unwrap_err().code,
        codes::UNKNOWN_SECTION
    );
    let mut s = spec.clone();
    s.version = 2;
    assert_eq!(
        p.validate_section(&dev, &s, &data).unwrap_err().code,
        codes::UNKNOWN_SECTION
    );
    // ctx3 is unknown to a build without version 3; telemetry to one without 2.
    let w = VersionWindow::new(1, 1);
    let v1 = SimGpuPlugin::with_windows(w, w).unwrap();
    let (cdata, cspec, _) = valid(Section::Ctx3, &[]);
    assert_eq!(
        v1.validate_section(&dev, &cspec, &cdata).unwrap_err().code,
        codes::UNKNOWN_SECTION
    );
    let (tdata, tspec, _) = valid(Section::Telemetry, &[]);
    assert_eq!(
        v1.validate_section(&dev, &tspec, &tdata).unwrap_err().code,
        codes::UNKNOWN_SECTION
    );
    p.validate_section(&dev, &tspec, &tdata).unwrap();
    assert_eq!(p.layout(&dev, 0, 0).unwrap_err().code, codes::UNSUPPORTED_VERSION);
    assert_eq!(
        p.convert(&dev, 3, 0, &[]).unwrap_err().code,
        codes::UNSUPPORTED_VERSION
    );
}
