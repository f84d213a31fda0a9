//! The crate's decoder and encoder agree with the kernel's C layout, bit for bit.

mod common;

use common::*;
use mdevmig_mtty::format::{HEADER_LEN, MAX_STATE_LEN, PORT_LEN};
use mdevmig_mtty::{validate, MttyState, MttyType, SerialPort};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn sizes_match_the_kernel_structs() {
    assert_eq!(HEADER_LEN, 24);
    assert_eq!(PORT_LEN, 36);
    assert_eq!(MttyType::Mtty1.state_len(), 60);
    assert_eq!(MttyType::Mtty2.state_len(), 96);
    assert_eq!(MAX_STATE_LEN, 96);
    assert_eq!(image(1, &[Port::fresh()]).len(), 60);
    assert_eq!(image(2, &[Port::fresh(), Port::fresh()]).len(), 96);
}

#[test]
fn every_field_decodes_from_its_kernel_offset() {
    let mut p = Port::busy();
    p.uart_reg = [0, 0xf1, 0, 0x83, 0x1f, 0, 0, 0xee];
    p.dlab = 1;
    p.overrun = 1;
    p.divisor = 0xbeef;
    let q = Port::fresh();
    let bytes = two(q, p);
    let state = validate(&bytes, MttyType::Mtty2).unwrap();
    assert_eq!(state.mtty_type(), MttyType::Mtty2);
    let got = state.ports()[1];
    assert_eq!(got.uart_reg, p.uart_reg);
    assert_eq!(got.rxtx.fifo, p.fifo);
    assert_eq!(got.rxtx.head, 2);
    assert_eq!(got.rxtx.tail, 13);
    assert_eq!(got.rxtx.count, 5);
    assert_eq!(got.dlab, 1);
    assert_eq!(got.overrun, 1);
    assert_eq!(got.divisor, 0xbeef);
    assert_eq!(got.fcr, 0xc7);
    assert_eq!(got.max_fifo_size, 16);
    assert_eq!(got.intr_trigger_level, 1);
    assert_eq!(state.ports()[0], SerialPort::new());
    assert_eq!(state.to_bytes(), bytes);
}

#[test]
fn fresh_device_state_is_the_kernel_init_state() {
    for (n, ty) in [(1u32, MttyType::Mtty1), (2, MttyType::Mtty2)] {
        let ports = vec![Port::fresh(); n as usize];
        let expected = image(n, &ports);
        let state = MttyState::new_default(n).unwrap();
        assert_eq!(state, MttyState::default_for(ty));
        assert_eq!(state.to_bytes(), expected);
        assert_eq!(validate(&expected, ty).unwrap(), state);
    }
    assert!(MttyState::new_default(0).is_err());
    assert!(MttyState::new_default(3).is_err());
}

#[cfg(target_endian = "little")]
#[test]
fn fresh_mtty1_state_matches_the_x86_64_bytes() {
    // magic, major 1, minor 0, nr_ports 1, flags 0; then one port: 8 registers,
    // 16 FIFO bytes, head tail count dlab overrun pad, divisor, fcr, max_fifo_size 16,
    // trigger level, pad.
    let expected = hex("4e2c3e8c89099d7e 01000000 00000000 01000000 00000000
         0000000000000000 00000000000000000000000000000000
         00 00 00 00 00 00 0000 00 10 00 00");
    assert_eq!(MttyState::new_default(1).unwrap().to_bytes(), expected);
}

#[cfg(target_endian = "little")]
#[test]
fn busy_mtty2_state_matches_the_x86_64_bytes() {
    // What the driver holds after MttyState::busy_for's register accesses.
    let expected = hex("4e2c3e8c89099d7e 01000000 00000000 02000000 00000000
         0005000 30b00005a 6d646576 6d69670a 00000000 00000000
         08 03 05 00 00 00 0100 c7 10 01 00
         0005000 30b0000a5 74776963 65312073 61797320 68692c20
         05 0a 0b 00 00 00 0c00 c7 10 01 00");
    let state = MttyState::new_busy(2).unwrap();
    assert_eq!(state.to_bytes(), expected);
    // Port 1: "port 1 says " sent, 10 read back, then "hi, twice" wraps to the front.
    assert_eq!(&state.ports()[1].rxtx.fifo, b"twice1 says hi, ");
}

#[test]
fn busy_states_validate_and_differ_from_fresh_ones() {
    for ty in MttyType::ALL {
        let busy = MttyState::busy_for(ty);
        let bytes = busy.to_bytes();
        assert_eq!(validate(&bytes, ty).unwrap(), busy);
        assert_ne!(busy, MttyState::default_for(ty));
        let p0 = busy.ports()[0];
        assert_eq!((p0.rxtx.head, p0.rxtx.tail, p0.rxtx.count), (8, 3, 5));
        assert_eq!(p0.divisor, 1);
        assert_eq!(p0.uart_reg[7], 0x5a);
    }
    let p1 = MttyState::busy_for(MttyType::Mtty2).ports()[1];
    assert_eq!((p1.rxtx.head, p1.rxtx.tail, p1.rxtx.count), (5, 10, 11));
    assert_eq!(
        MttyState::new_busy(1).unwrap(),
        MttyState::busy_for(MttyType::Mtty1)
    );
    assert!(MttyState::new_busy(7).is_err());
}

#[test]
fn hand_built_states_round_trip_bit_exactly() {
    let mut full = Port::busy();
    full.head = 9;
    full.tail = 9;
    full.count = 16;
    full.overrun = 1;
    let mut fifo_off = Port::busy();
    fifo_off.fcr = 0x00;
    fifo_off.max_fifo_size = 1;
    let mut dlab = Port::busy();
    dlab.uart_reg[3] = 0x83;
    dlab.dlab = 1;
    dlab.divisor = 0xffff;
    let mut empty_overrun = Port::fresh();
    empty_overrun.overrun = 1;
    let cases = [
        one(Port::fresh()),
        one(Port::busy()),
        one(full),
        one(fifo_off),
        two(dlab, empty_overrun),
        two(full, fifo_off),
    ];
    for bytes in cases {
        let state = MttyState::parse(&bytes).unwrap();
        assert_eq!(state.to_bytes(), bytes);
        let ty = state.mtty_type();
        assert_eq!(validate(&bytes, ty).unwrap().to_bytes(), bytes);
    }
}

#[test]
fn from_ports_insists_on_the_type_port_count() {
    let p = SerialPort::new();
    assert!(MttyState::from_ports(MttyType::Mtty1, &[p]).is_ok());
    assert!(MttyState::from_ports(MttyType::Mtty2, &[p, p]).is_ok());
    for (ty, ports) in [
        (MttyType::Mtty1, vec![]),
        (MttyType::Mtty1, vec![p, p]),
        (MttyType::Mtty2, vec![p]),
        (MttyType::Mtty2, vec![p, p, p]),
    ] {
        let e = MttyState::from_ports(ty, &ports).unwrap_err();
        assert_eq!(e.code, "vendor.mtty.port_count");
    }
}
