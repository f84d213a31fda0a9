//! One test per rejection code, each on a state written byte by byte from the kernel
//! layout (tests/common), each asserting the exact code.

mod common;

use std::collections::BTreeMap;

use common::*;
use mdevmig_mtty::{codes, validate, MttyPlugin, MttyState, MttyType, SECTION_NAME};
use mdevmig_plugin_api::{DeviceInfo, VendorPlugin};

/// The code `validate` gives `bytes` for a device of `ty`.
fn code(bytes: &[u8], ty: MttyType) -> &'static str {
    validate(bytes, ty).unwrap_err().code
}

/// The code `validate` gives a one-port state whose port 0 is `p`, and the same port
/// as port 1 of a two-port state (after a valid port 0).
fn port_codes(p: Port) -> (&'static str, &'static str) {
    (
        code(&one(p), MttyType::Mtty1),
        code(&two(Port::busy(), p), MttyType::Mtty2),
    )
}

fn assert_port_code(p: Port, expected: &str) {
    assert_eq!(port_codes(p), (expected, expected));
}

fn device(ty: &str) -> DeviceInfo {
    DeviceInfo {
        vendor: "mtty".into(),
        device_type: ty.into(),
        ..DeviceInfo::default()
    }
}

#[test]
fn codes_are_pinned() {
    assert_eq!(
        codes::ALL,
        [
            "vendor.mtty.bad_length",
            "vendor.mtty.bad_magic",
            "vendor.mtty.bad_version",
            "vendor.mtty.bad_flags",
            "vendor.mtty.port_count",
            "vendor.mtty.padding",
            "vendor.mtty.fifo_index",
            "vendor.mtty.fifo_count",
            "vendor.mtty.fifo_size",
            "vendor.mtty.register",
            "vendor.mtty.device_type",
            "vendor.mtty.attribute",
            "vendor.mtty.unsupported_version",
            "vendor.mtty.unknown_section",
        ]
    );
}

#[test]
fn bad_length() {
    let ok1 = one(Port::busy());
    let ok2 = two(Port::busy(), Port::fresh());
    // Shorter than the header.
    assert_eq!(code(&ok1[..23], MttyType::Mtty1), codes::BAD_LENGTH);
    assert_eq!(MttyState::parse(&[]).unwrap_err().code, codes::BAD_LENGTH);
    // One byte short, one byte long, for the right type.
    assert_eq!(code(&ok1[..59], MttyType::Mtty1), codes::BAD_LENGTH);
    assert_eq!(code(&ok2[..95], MttyType::Mtty2), codes::BAD_LENGTH);
    let mut long = ok1.clone();
    long.push(0);
    assert_eq!(code(&long, MttyType::Mtty1), codes::BAD_LENGTH);
    assert_eq!(MttyState::parse(&long).unwrap_err().code, codes::BAD_LENGTH);
    // A 1-port header followed by two ports (the kernel's ENOMEM case is the reverse).
    let mut padded = ok2.clone();
    put_u32(&mut padded, H_NR_PORTS, 1);
    assert_eq!(code(&padded, MttyType::Mtty1), codes::BAD_LENGTH);
    assert_eq!(MttyState::parse(&padded).unwrap_err().code, codes::BAD_LENGTH);
    // The plugin's layout refuses any other raw length for the type.
    let p = MttyPlugin;
    for (ty, good) in [("mtty-1", 60u64), ("mtty-2", 96)] {
        assert!(p.layout(&device(ty), 1, good).is_ok());
        for bad in [0, 24, good - 1, good + 1, 96 + 60 - good, u64::MAX] {
            assert_eq!(p.layout(&device(ty), 1, bad).unwrap_err().code, codes::BAD_LENGTH);
        }
    }
}

#[test]
fn bad_magic() {
    let mut b = one(Port::fresh());
    b[H_MAGIC] ^= 1;
    assert_eq!(code(&b, MttyType::Mtty1), codes::BAD_MAGIC);
    b[H_MAGIC..H_MAGIC + 8].copy_from_slice(&MAGIC.swap_bytes().to_ne_bytes());
    assert_eq!(code(&b, MttyType::Mtty1), codes::BAD_MAGIC);
    assert_eq!(MttyState::parse(&b).unwrap_err().code, codes::BAD_MAGIC);
}

#[test]
fn bad_version() {
    for (major, minor) in [(0, 0), (2, 0), (1, 1), (0x0100_0000, 0), (1, u32::MAX)] {
        let mut b = two(Port::fresh(), Port::fresh());
        put_u32(&mut b, H_MAJOR, major);
        put_u32(&mut b, H_MINOR, minor);
        assert_eq!(code(&b, MttyType::Mtty2), codes::BAD_VERSION, "{major}.{minor}");
        assert_eq!(MttyState::parse(&b).unwrap_err().code, codes::BAD_VERSION);
    }
}

#[test]
fn bad_flags() {
    for flags in [1, 0x8000_0000, u32::MAX] {
        let mut b = one(Port::fresh());
        put_u32(&mut b, H_FLAGS, flags);
        assert_eq!(code(&b, MttyType::Mtty1), codes::BAD_FLAGS);
        assert_eq!(MttyState::parse(&b).unwrap_err().code, codes::BAD_FLAGS);
    }
}

#[test]
fn port_count() {
    // A valid state of the other type.
    assert_eq!(code(&one(Port::busy()), MttyType::Mtty2), codes::PORT_COUNT);
    assert_eq!(
        code(&two(Port::busy(), Port::busy()), MttyType::Mtty1),
        codes::PORT_COUNT
    );
    // A header claiming a port count no mtty type has.
    for nr in [0, 3, 24, u32::MAX] {
        let mut b = one(Port::fresh());
        put_u32(&mut b, H_NR_PORTS, nr);
        assert_eq!(MttyState::parse(&b).unwrap_err().code, codes::PORT_COUNT);
        assert_eq!(code(&b, MttyType::Mtty1), codes::PORT_COUNT);
        assert_eq!(code(&b, MttyType::Mtty2), codes::PORT_COUNT);
    }
}

#[test]
fn padding() {
    for at in [P_PAD1, P_PAD2] {
        for port in [0, 1] {
            let mut b = two(Port::busy(), Port::busy());
            b[port_at(port) + at] = 0x80;
            assert_eq!(code(&b, MttyType::Mtty2), codes::PADDING);
            assert_eq!(MttyState::parse(&b).unwrap_err().code, codes::PADDING);
        }
    }
}

#[test]
fn fifo_index() {
    for (head, tail) in [(16, 0), (0, 16), (255, 255), (200, 3), (3, 128)] {
        let mut p = Port::fresh();
        p.head = head;
        p.tail = tail;
        p.count = 0;
        assert_port_code(p, codes::FIFO_INDEX);
    }
    // The kernel exploit shape: head far past the FIFO, room to write.
    let mut p = Port::busy();
    p.head = 0xf0;
    p.count = 0;
    p.max_fifo_size = 16;
    assert_port_code(p, codes::FIFO_INDEX);
    // parse alone decodes it (no semantic checks), and re-encodes it exactly.
    let b = one(p);
    assert_eq!(MttyState::parse(&b).unwrap().to_bytes(), b);
}

#[test]
fn fifo_count() {
    for (head, tail, count) in [
        (0, 0, 17),
        (0, 0, 255),
        (5, 0, 3),
        (5, 0, 21),
        (0, 5, 5),
        (3, 3, 1),
        (4, 3, 16),
        (9, 9, 15),
    ] {
        let mut p = Port::busy();
        p.head = head;
        p.tail = tail;
        p.count = count;
        assert_port_code(p, codes::FIFO_COUNT);
    }
    // The consistent ones around them are accepted.
    for (head, tail, count) in [(0, 0, 0), (0, 0, 16), (5, 0, 5), (0, 5, 11), (9, 9, 16)] {
        let mut p = Port::busy();
        p.head = head;
        p.tail = tail;
        p.count = count;
        assert!(
            validate(&one(p), MttyType::Mtty1).is_ok(),
            "{head} {tail} {count}"
        );
    }
}

#[test]
fn fifo_size() {
    // Values the driver never sets.
    for max in [0, 2, 4, 8, 14, 15, 17, 32, 255] {
        let mut p = Port::busy();
        p.max_fifo_size = max;
        assert_port_code(p, codes::FIFO_SIZE);
    }
    // 1 before any FCR write (mtty_init_dev sets 16).
    let mut p = Port::fresh();
    p.max_fifo_size = 1;
    assert_port_code(p, codes::FIFO_SIZE);
    // 16 after an FCR write without UART_FCR_ENABLE_FIFO.
    let mut p = Port::busy();
    p.fcr = 0xc6;
    assert_port_code(p, codes::FIFO_SIZE);
    // 1 after an FCR write with it.
    let mut p = Port::busy();
    p.max_fifo_size = 1;
    assert_port_code(p, codes::FIFO_SIZE);
}

#[test]
fn register() {
    // C bools other than 0/1.
    let mut p = Port::busy();
    p.overrun = 2;
    assert_port_code(p, codes::REGISTER);
    let mut p = Port::busy();
    p.dlab = 0xff;
    p.uart_reg[3] |= 0x80;
    assert_port_code(p, codes::REGISTER);
    // Registers the driver never stores.
    for slot in [0, 2, 5, 6] {
        let mut p = Port::busy();
        p.uart_reg[slot] = 1;
        assert_port_code(p, codes::REGISTER);
    }
    // dlab and LCR bit 7 disagree, both ways.
    let mut p = Port::busy();
    p.dlab = 1;
    assert_port_code(p, codes::REGISTER);
    let mut p = Port::busy();
    p.uart_reg[3] = 0x83;
    assert_port_code(p, codes::REGISTER);
    // Trigger levels the driver never leaves behind (its 1/4/8/14 decode is overwritten).
    for level in [2, 4, 8, 14, 16, 255] {
        let mut p = Port::busy();
        p.intr_trigger_level = level;
        assert_port_code(p, codes::REGISTER);
    }
    // Level 0 means no FCR write, so fcr must still be 0.
    let mut p = Port::fresh();
    p.fcr = 0x01;
    assert_port_code(p, codes::REGISTER);
}

#[test]
fn device_type() {
    let p = MttyPlugin;
    for ty in ["mtty-3", "mtty", "", "MTTY-1", "mtty-1 "] {
        assert_eq!(
            p.configure(ty, &BTreeMap::new()).unwrap_err().code,
            codes::DEVICE_TYPE
        );
        assert_eq!(p.sections(&device(ty), 1).unwrap_err().code, codes::DEVICE_TYPE);
        assert_eq!(p.layout(&device(ty), 1, 60).unwrap_err().code, codes::DEVICE_TYPE);
        let bytes = one(Port::fresh());
        let e = p.validate_section(&device(ty), &MttyPlugin::section_spec(), &bytes);
        assert_eq!(e.unwrap_err().code, codes::DEVICE_TYPE);
        assert_eq!(p.produces(ty), None);
        assert_eq!(p.loads(ty), None);
    }
}

#[test]
fn attribute() {
    let p = MttyPlugin;
    let attrs = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
    for (ty, a) in [
        ("mtty-1", attrs("ports", "2")),
        ("mtty-2", attrs("ports", "1")),
        ("mtty-2", attrs("ports", "02")),
        ("mtty-1", attrs("ports", "")),
        ("mtty-1", attrs("baud", "9600")),
    ] {
        assert_eq!(p.configure(ty, &a).unwrap_err().code, codes::ATTRIBUTE);
        let mut d = device(ty);
        d.attributes = a;
        assert_eq!(p.sections(&d, 1).unwrap_err().code, codes::ATTRIBUTE);
    }
}

#[test]
fn unsupported_version() {
    let p = MttyPlugin;
    for v in [0, 2, u32::MAX] {
        assert_eq!(
            p.sections(&device("mtty-1"), v).unwrap_err().code,
            codes::UNSUPPORTED_VERSION
        );
        assert_eq!(
            p.layout(&device("mtty-2"), v, 96).unwrap_err().code,
            codes::UNSUPPORTED_VERSION
        );
    }
}

#[test]
fn unknown_section() {
    let p = MttyPlugin;
    let bytes = one(Port::busy());
    let mut spec = MttyPlugin::section_spec();
    spec.name = "mtty.other".into();
    let e = p.validate_section(&device("mtty-1"), &spec, &bytes);
    assert_eq!(e.unwrap_err().code, codes::UNKNOWN_SECTION);
    let mut spec = MttyPlugin::section_spec();
    assert_eq!(spec.name, SECTION_NAME);
    spec.version = 2;
    let e = p.validate_section(&device("mtty-1"), &spec, &bytes);
    assert_eq!(e.unwrap_err().code, codes::UNKNOWN_SECTION);
}

#[test]
fn every_error_carries_a_listed_code_and_a_message() {
    let mut b = one(Port::busy());
    b[port_at(0) + P_HEAD] = 99;
    let e = validate(&b, MttyType::Mtty1).unwrap_err();
    assert!(codes::ALL.contains(&e.code));
    assert!(e.to_string().contains("port 0"), "{e}");
    assert!(e.to_string().contains("99"), "{e}");
}
