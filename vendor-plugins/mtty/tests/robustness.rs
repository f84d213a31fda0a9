//! Hostile input: truncation at every length, deterministic mutations, random bytes,
//! and random guest register traffic never panic, and whatever is accepted re-encodes
//! to the same bytes.

mod common;

use common::*;
use mdevmig_mtty::uart::{UART_FCR, UART_LCR, UART_RX, UART_TX};
use mdevmig_mtty::{codes, validate, MttyPlugin, MttyState, MttyType};
use mdevmig_plugin_api::{DeviceInfo, VendorPlugin};

fn device(ty: MttyType) -> DeviceInfo {
    DeviceInfo {
        vendor: "mtty".into(),
        device_type: ty.device_type().into(),
        ..DeviceInfo::default()
    }
}

/// Runs every entry point on `bytes`; checks that accepted input round-trips and
/// that `validate` and the plugin agree. Returns how many entry points accepted.
fn exercise(bytes: &[u8]) -> usize {
    let plugin = MttyPlugin;
    let spec = MttyPlugin::section_spec();
    let mut accepted = 0;
    if let Ok(state) = MttyState::parse(bytes) {
        assert_eq!(state.to_bytes(), bytes);
        accepted += 1;
    }
    for ty in MttyType::ALL {
        let v = validate(bytes, ty);
        let p = plugin.validate_section(&device(ty), &spec, bytes);
        assert_eq!(v.as_ref().err(), p.as_ref().err());
        if let Ok(state) = v {
            assert_eq!(state.to_bytes(), bytes);
            assert_eq!(state.mtty_type(), ty);
            state.check().unwrap();
            accepted += 1;
        }
    }
    accepted
}

fn valid_states() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for ty in MttyType::ALL {
        v.push(MttyState::default_for(ty).to_bytes());
        v.push(MttyState::busy_for(ty).to_bytes());
    }
    v.push(one(Port::busy()));
    v.push(two(Port::busy(), Port::busy()));
    v
}

#[test]
fn truncation_at_every_length_fails_cleanly() {
    for full in valid_states() {
        assert_eq!(exercise(&full), 2);
        let ty = MttyState::parse(&full).unwrap().mtty_type();
        for len in 0..full.len() {
            let cut = &full[..len];
            assert_eq!(exercise(cut), 0, "prefix of {len} bytes accepted");
            let e = validate(cut, ty).unwrap_err();
            assert_eq!(e.code, codes::BAD_LENGTH, "prefix {len}: {e}");
            assert_eq!(MttyState::parse(cut).unwrap_err().code, codes::BAD_LENGTH);
        }
        // And with extra bytes of any value appended.
        for extra in [&[0u8][..], &[0xff], &[0; 36], &[0; 60]] {
            let mut long = full.clone();
            long.extend_from_slice(extra);
            assert_eq!(exercise(&long), 0);
        }
    }
}

#[test]
fn every_single_byte_mutation_is_handled() {
    for base in valid_states() {
        for at in 0..base.len() {
            let orig = base[at];
            for v in [0, 1, 2, 15, 16, 17, 0x7f, 0x80, 0xff, orig ^ 1, orig ^ 0x80] {
                let mut m = base.clone();
                m[at] = v;
                exercise(&m);
            }
        }
    }
}

#[test]
fn every_u16_and_u32_edge_value_is_handled() {
    let u32s = [
        0,
        1,
        2,
        3,
        16,
        17,
        0xff,
        0x100,
        0x7fff_ffff,
        0x8000_0000,
        u32::MAX,
    ];
    let u16s = [0u16, 1, 0xf, 0x10, 0x11, 0xff, 0x100, 0x8000, 0xffff];
    for base in valid_states() {
        for at in 0..=base.len() - 4 {
            for v in u32s {
                let mut m = base.clone();
                put_u32(&mut m, at, v);
                exercise(&m);
            }
        }
        for at in 0..=base.len() - 2 {
            for v in u16s {
                let mut m = base.clone();
                m[at..at + 2].copy_from_slice(&v.to_ne_bytes());
                exercise(&m);
            }
        }
    }
}

#[test]
fn random_ports_behind_a_valid_header_are_handled() {
    let mut rng = Rng(0x6d74_7479_0001);
    let (mut accepted, mut refused) = (0, 0);
    // Field values near the edges of what the checks allow, so both outcomes occur.
    let pick = |rng: &mut Rng, edge: &[u8]| {
        if rng.below(8) == 0 {
            rng.byte()
        } else {
            edge[rng.below(edge.len() as u64) as usize]
        }
    };
    for _ in 0..20_000 {
        let n = 1 + rng.below(2) as usize;
        let mut ports = vec![Port::fresh(); n];
        for p in &mut ports {
            for slot in [1, 3, 4, 7] {
                p.uart_reg[slot] = rng.byte();
            }
            for slot in [0, 2, 5, 6] {
                p.uart_reg[slot] = pick(&mut rng, &[0; 31]);
            }
            p.fifo = [rng.byte(); 16];
            p.head = pick(&mut rng, &[0, 1, 7, 15, 15, 9, 3, 16]);
            p.tail = pick(&mut rng, &[0, 1, 7, 15, 15, 9, 3, 16]);
            let queued = p.head.wrapping_sub(p.tail) & 15;
            p.count = pick(&mut rng, &[queued, queued, queued, queued, queued, 16, 17]);
            let dlab = p.uart_reg[3] >> 7;
            p.dlab = pick(&mut rng, &[dlab, dlab, dlab, dlab, dlab, dlab, 1 - dlab, 2]);
            p.overrun = pick(&mut rng, &[0, 1, 0, 1, 0, 1, 0, 2]);
            p.divisor = u16::from_le_bytes([rng.byte(), rng.byte()]);
            // A consistent FCR triple most of the time, an edge value otherwise.
            let fcr = rng.byte();
            let (f, m, t) = match rng.below(10) {
                0..=2 => (0, 16, 0),
                3..=8 => (fcr, if fcr & 1 == 1 { 16 } else { 1 }, 1),
                _ => (
                    fcr,
                    pick(&mut rng, &[0, 1, 16, 17]),
                    pick(&mut rng, &[0, 1, 4, 14]),
                ),
            };
            (p.fcr, p.max_fifo_size, p.intr_trigger_level) = (f, m, t);
        }
        let b = image(n as u32, &ports);
        // parse always decodes these; validate (for the one matching type) decides.
        if exercise(&b) == 2 {
            accepted += 1;
        } else {
            refused += 1;
        }
        // Fully random bytes too, any length up to 100.
        let len = rng.below(101) as usize;
        let r: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        assert_eq!(exercise(&r), 0);
    }
    assert!(
        accepted > 100 && refused > 100,
        "{accepted} accepted, {refused} refused"
    );
}

/// Random guest traffic from a fresh port never leaves a state `check` refuses (the
/// checks are invariants of the driver), and every intermediate state round-trips.
#[test]
fn guest_register_traffic_keeps_every_invariant() {
    let mut rng = Rng(0x6d74_7479_0002);
    for _ in 0..3_000 {
        let mut state = MttyState::default_for(MttyType::Mtty2);
        for _ in 0..200 {
            let port = rng.below(2) as usize;
            let p = &mut state.ports_mut()[port];
            // Bias towards the FIFO and its configuration.
            let offset = match rng.below(10) {
                0..=2 => UART_TX,
                3..=4 => UART_RX,
                5 => UART_FCR,
                6 => UART_LCR,
                _ => rng.below(10) as u8,
            };
            let data = rng.byte();
            if rng.below(2) == 0 {
                p.guest_write(offset, data);
            } else {
                p.guest_read(offset);
            }
            if let Err(e) = state.check() {
                panic!("offset {offset} data {data:#04x} broke {state:?}: {e}");
            }
            let bytes = state.to_bytes();
            assert_eq!(validate(&bytes, MttyType::Mtty2).unwrap(), state);
        }
    }
}

#[test]
fn a_full_fifo_reads_as_empty_like_the_driver() {
    let mut state = MttyState::default_for(MttyType::Mtty1);
    let p = &mut state.ports_mut()[0];
    for i in 0..16 {
        p.guest_write(UART_TX, i);
    }
    assert_eq!((p.rxtx.head, p.rxtx.tail, p.rxtx.count), (0, 0, 16));
    // head == tail: the driver's RX read returns nothing and LSR says no data.
    assert_eq!(p.guest_read(UART_RX), 0);
    assert_eq!(p.guest_read(5) & 0x01, 0);
    p.guest_write(UART_TX, 0xaa);
    assert_eq!(p.overrun, 1);
    assert!(validate(&state.to_bytes(), MttyType::Mtty1).is_ok());
}
