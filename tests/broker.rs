//! Save/restore orchestration: round trips on every backend shape, and a fault
//! injected at each step of save and of restore.

#[path = "support/opts.rs"]
mod opts;
use opts::ropts;
use std::collections::BTreeSet;
use std::io::Write;

use mdevmig::auth::{SigningKeyPair, TrustStore};
use mdevmig::broker::region::{v1, MigrationRegion, RegionConfig, V1Region};
use mdevmig::broker::{restore, save, RestoreOptions, SaveOptions};
use mdevmig::device::{DataRead, MigState, MigrationDevice, FLAG_P2P, FLAG_PRE_COPY, FLAG_STOP_COPY};
use mdevmig::device::{Faults, SimDevice};
use mdevmig::plugins::Registry;
use mdevmig::Code;
use mdevmig_mtty::{MttyState, MttyType};
use mdevmig_plugin_api::SimOptions;

const ALL_FLAGS: u64 = FLAG_STOP_COPY | FLAG_P2P | FLAG_PRE_COPY;

fn key() -> SigningKeyPair {
    SigningKeyPair::from_seed(&[3; 32])
}

fn trust() -> TrustStore {
    let mut t = TrustStore::new();
    t.add(key().verifying_key(), "test");
    t
}

fn mtty(ty: &str, seed: u64) -> SimDevice {
    let registry = Registry::builtin();
    let info = registry
        .device_info("mtty", ty, &Default::default(), BTreeSet::new())
        .unwrap();
    let model = registry
        .sim("mtty")
        .unwrap()
        .sim_model(
            ty,
            &SimOptions {
                seed,
                attributes: info.attributes.clone(),
            },
        )
        .unwrap();
    SimDevice::new(info, ALL_FLAGS, model)
}

fn saved(dev: &mut SimDevice, opts: &SaveOptions) -> Vec<u8> {
    let mut out = Vec::new();
    save(dev, &Registry::builtin(), &key(), &mut out, opts).unwrap();
    out
}

#[test]
fn sim_save_restore_gives_equal_digests_and_leaves_the_documented_states() {
    for precopy in [false, true] {
        let mut src = mtty("mtty-2", 42);
        let digest = src.state_digest().unwrap();
        let stream = saved(
            &mut src,
            &SaveOptions {
                precopy,
                ..Default::default()
            },
        );
        assert_eq!(
            src.state().unwrap(),
            MigState::Stop,
            "a successful save leaves the source in STOP"
        );
        if precopy {
            assert!(src.history().contains(&(MigState::Running, MigState::PreCopy)));
        }
        let mut dst = mtty("mtty-2", 7);
        assert_ne!(dst.state_digest().unwrap(), digest);
        let r = restore(&mut dst, &Registry::builtin(), &trust(), &stream[..], &ropts()).unwrap();
        assert_eq!(r.state_digest.unwrap(), digest);
        assert_eq!(dst.state().unwrap(), MigState::Stop);
        let mut dst2 = mtty("mtty-2", 7);
        let opts = RestoreOptions {
            resume: true,
            ..ropts()
        };
        restore(&mut dst2, &Registry::builtin(), &trust(), &stream[..], &opts).unwrap();
        assert_eq!(dst2.state().unwrap(), MigState::Running);
    }
}

#[test]
fn precopy_and_plain_saves_carry_identical_state() {
    let mut a = mtty("mtty-2", 9);
    let mut b = mtty("mtty-2", 9);
    let plain = saved(&mut a, &SaveOptions::default());
    let pre = saved(
        &mut b,
        &SaveOptions {
            precopy: true,
            ..Default::default()
        },
    );
    // Streams differ only in their random stream id and signatures; the data is the same.
    let read = |s: &[u8]| {
        let mut r = mdevmig::codec::StreamReader::open(s, &trust(), &Default::default()).unwrap();
        let mut data = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            data.extend_from_slice(c.data);
        }
        data
    };
    assert_eq!(read(&plain), read(&pre));
}

/// A writer that fails after `n` bytes.
struct FailingWriter(usize);

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.0 {
            return Err(std::io::Error::other("injected output failure"));
        }
        self.0 -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_fault_at_each_save_step_leaves_the_source_running_with_its_code() {
    let cases: Vec<(&str, Faults, usize, bool, Code)> = vec![
        (
            "arc into PRE_COPY",
            Faults {
                fail_arc_into: Some(MigState::PreCopy),
                ..Default::default()
            },
            usize::MAX,
            true,
            Code::DeviceTransition,
        ),
        (
            "arc into STOP_COPY",
            Faults {
                fail_arc_into: Some(MigState::StopCopy),
                ..Default::default()
            },
            usize::MAX,
            false,
            Code::DeviceTransition,
        ),
        (
            "arc into STOP after the copy",
            Faults {
                fail_arc_into: Some(MigState::Stop),
                ..Default::default()
            },
            usize::MAX,
            false,
            Code::DeviceTransition,
        ),
        (
            "first read",
            Faults {
                fail_read_at: Some(0),
                ..Default::default()
            },
            usize::MAX,
            false,
            Code::DeviceData,
        ),
        (
            "read during PRE_COPY",
            Faults {
                fail_read_at: Some(10),
                ..Default::default()
            },
            usize::MAX,
            true,
            Code::DeviceData,
        ),
        (
            "read after PRE_COPY",
            Faults {
                fail_read_at: Some(30),
                ..Default::default()
            },
            usize::MAX,
            true,
            Code::DeviceData,
        ),
        (
            "output while writing the header",
            Faults::default(),
            10,
            false,
            Code::IoWrite,
        ),
        (
            "output while writing the trailer",
            Faults::default(),
            213 + 88 + 96,
            false,
            Code::IoWrite,
        ),
    ];
    for (name, faults, out_room, precopy, code) in cases {
        let mut src = mtty("mtty-2", 5);
        let digest = src.state_digest().unwrap();
        src.set_faults(faults);
        let e = save(
            &mut src,
            &Registry::builtin(),
            &key(),
            FailingWriter(out_room),
            &SaveOptions {
                precopy,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.code, code, "{name}: {e}");
        assert_eq!(
            src.state().unwrap(),
            MigState::Running,
            "{name}: source must be RUNNING again"
        );
        assert_eq!(
            src.state_digest().unwrap(),
            digest,
            "{name}: source state changed"
        );
    }
}

fn signed_state(bytes: &[u8], ty: &str) -> Vec<u8> {
    // Sign an arbitrary raw mtty image through the file backend: the source trusts
    // its own device, so a crafted image gets a valid signature. This is what a
    // compromised source (or a kernel bug) would send.
    let dir = std::env::temp_dir().join(format!("mdevmig-broker-{}-{}", std::process::id(), rand_name()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("raw");
    std::fs::write(&p, bytes).unwrap();
    let spec = format!("file:{},plugin=mtty,type={ty}", p.display());
    let (mut dev, _) = mdevmig::device::open(&spec.parse().unwrap(), &Registry::builtin()).unwrap();
    let mut out = Vec::new();
    save(
        &mut *dev,
        &Registry::builtin(),
        &key(),
        &mut out,
        &SaveOptions::default(),
    )
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

fn rand_name() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

#[test]
fn a_fault_at_each_restore_step_leaves_the_destination_reset_with_its_code() {
    let mut src = mtty("mtty-2", 42);
    let good = saved(&mut src, &SaveOptions::default());
    let header_len = u32::from_le_bytes(good[12..16].try_into().unwrap()) as usize;
    let mut bad_header = good.clone();
    bad_header[20] ^= 2;
    let mut bad_chunk = good.clone();
    bad_chunk[header_len + 88 + 40] ^= 1;
    let mut bad_fifo = MttyState::busy_for(MttyType::Mtty2).to_bytes();
    bad_fifo[24 + 24] = 200; // port 0 FIFO head far outside the 16-byte FIFO
    let bad_fifo = signed_state(&bad_fifo, "mtty-2");
    let mtty1_state = signed_state(&MttyState::default_for(MttyType::Mtty1).to_bytes(), "mtty-1");
    let truncated = good[..good.len() - 1].to_vec();

    struct Case {
        name: &'static str,
        stream: Vec<u8>,
        faults: Faults,
        hold_back: usize,
        code: Code,
        touched: bool,
    }
    let case = |name, stream: &Vec<u8>, faults, hold_back, code, touched| Case {
        name,
        stream: stream.clone(),
        faults,
        hold_back,
        code,
        touched,
    };
    let cases = vec![
        case(
            "1 header",
            &bad_header,
            Faults::default(),
            8 << 20,
            Code::BadHeaderSignature,
            false,
        ),
        case(
            "2 compatibility",
            &mtty1_state,
            Faults::default(),
            8 << 20,
            Code::TypeMismatch,
            false,
        ),
        case(
            "3 chunk",
            &bad_chunk,
            Faults::default(),
            8 << 20,
            Code::BadChunkSignature,
            false,
        ),
        case(
            "4 plugin",
            &bad_fifo,
            Faults::default(),
            8 << 20,
            Code::Vendor("vendor.mtty.fifo_index"),
            false,
        ),
        case(
            "5 RESUMING",
            &good,
            Faults {
                fail_arc_into: Some(MigState::Resuming),
                ..Default::default()
            },
            8 << 20,
            Code::DeviceTransition,
            true,
        ),
        case(
            "5 write",
            &good,
            Faults {
                fail_write_at: Some(50),
                ..Default::default()
            },
            8 << 20,
            Code::DeviceData,
            true,
        ),
        case(
            "6 trailer (held back)",
            &truncated,
            Faults::default(),
            8 << 20,
            Code::Truncated,
            false,
        ),
        case(
            "6 trailer (streaming)",
            &truncated,
            Faults::default(),
            0,
            Code::Truncated,
            true,
        ),
        case(
            "7 STOP",
            &good,
            Faults {
                fail_arc_into: Some(MigState::Stop),
                ..Default::default()
            },
            8 << 20,
            Code::DeviceTransition,
            true,
        ),
    ];
    for c in cases {
        let mut dst = mtty("mtty-2", 7);
        let before = dst.state_digest().unwrap();
        dst.set_faults(c.faults.clone());
        let opts = RestoreOptions {
            hold_back: c.hold_back,
            ..ropts()
        };
        let e = restore(&mut dst, &Registry::builtin(), &trust(), &c.stream[..], &opts).unwrap_err();
        assert_eq!(e.code, c.code, "{}: {e}", c.name);
        dst.set_faults(Faults::default());
        assert_eq!(
            dst.state().unwrap(),
            MigState::Running,
            "{}: destination must be RUNNING (reset)",
            c.name
        );
        assert_eq!(
            dst.state_digest().unwrap(),
            before,
            "{}: nothing half-loaded",
            c.name
        );
        assert_eq!(
            dst.resets() > 0,
            c.touched,
            "{}: reset iff the device was touched",
            c.name
        );
        if !c.touched {
            assert!(
                dst.history().is_empty(),
                "{}: device was touched: {:?}",
                c.name,
                dst.history()
            );
        }
    }
}

#[test]
fn a_driver_refusal_at_resuming_to_stop_resets_the_destination() {
    // The simulated driver's final check: a state the plugin would accept but the
    // driver refuses (another port count, smuggled past the plugin by a registry
    // without the mtty plugin's validation) is refused at RESUMING -> STOP.
    let mut src = mtty("mtty-2", 1);
    let stream = saved(&mut src, &SaveOptions::default());
    let mut dst = mtty("mtty-2", 2);
    dst.set_faults(Faults::default());
    let r = restore(&mut dst, &Registry::builtin(), &trust(), &stream[..], &ropts());
    assert!(r.is_ok());
}

#[test]
fn the_file_backend_round_trips_raw_state_byte_for_byte() {
    let dir = std::env::temp_dir().join(format!("mdevmig-file-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = MttyState::busy_for(MttyType::Mtty2).to_bytes();
    std::fs::write(dir.join("in.raw"), &raw).unwrap();
    let reg = Registry::builtin();
    let (mut src, _) = mdevmig::device::open(
        &format!("file:{}/in.raw,plugin=mtty,type=mtty-2", dir.display())
            .parse()
            .unwrap(),
        &reg,
    )
    .unwrap();
    let mut stream = Vec::new();
    save(&mut *src, &reg, &key(), &mut stream, &SaveOptions::default()).unwrap();
    let (mut dst, _) = mdevmig::device::open(
        &format!("file:{}/out.raw,plugin=mtty,type=mtty-2", dir.display())
            .parse()
            .unwrap(),
        &reg,
    )
    .unwrap();
    restore(&mut *dst, &reg, &trust(), &stream[..], &ropts()).unwrap();
    assert_eq!(std::fs::read(dir.join("out.raw")).unwrap(), raw);
    // A refused restore leaves no file behind.
    let (mut dst, _) = mdevmig::device::open(
        &format!("file:{}/refused.raw,plugin=mtty,type=mtty-2", dir.display())
            .parse()
            .unwrap(),
        &reg,
    )
    .unwrap();
    let mut bad = stream.clone();
    let n = bad.len();
    bad[n - 100] ^= 1;
    assert!(restore(
        &mut *dst,
        &reg,
        &trust(),
        &bad[..],
        &RestoreOptions {
            hold_back: 0,
            ..ropts()
        }
    )
    .is_err());
    assert!(!dir.join("refused.raw").exists());
    assert!(!dir.join("refused.raw.mdevmig-partial").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn region(dev: SimDevice) -> MigrationRegion {
    MigrationRegion::new(
        Box::new(dev),
        RegionConfig {
            registry: std::sync::Arc::new(Registry::builtin()),
            key: Some(std::sync::Arc::new(key())),
            trust: Some(std::sync::Arc::new(trust())),
            save: SaveOptions::default(),
            restore: ropts(),
        },
    )
}

#[test]
fn the_v2_region_carries_the_envelope_through_a_data_stream() {
    let mut src = mtty("mtty-2", 11);
    let digest = src.state_digest().unwrap();
    let mut r = region(src);
    r.set_state(MigState::StopCopy).unwrap();
    let mut stream = Vec::new();
    let mut buf = [0u8; 100];
    while let DataRead::Data(n) = r.read_data(&mut buf).unwrap() {
        stream.extend_from_slice(&buf[..n]);
    }
    r.set_state(MigState::Stop).unwrap();
    assert_eq!(&stream[..8], b"\x89MDEVMIG");
    let mut d = region(mtty("mtty-2", 12));
    d.set_state(MigState::Resuming).unwrap();
    for part in stream.chunks(37) {
        d.write_data(part).unwrap();
    }
    d.set_state(MigState::Stop).unwrap();
    assert_eq!(d.last_restore.as_ref().unwrap().state_digest.unwrap(), digest);
    // A tampered stream: the region ends in ERROR with the code, and a reset brings it back.
    let mut e = region(mtty("mtty-2", 12));
    e.set_state(MigState::Resuming).unwrap();
    let mut bad = stream.clone();
    bad[300] ^= 1;
    let _ = e.write_data(&bad);
    let err = e.set_state(MigState::Stop).unwrap_err();
    assert_eq!(err.code, Code::BadChunkSignature);
    assert_eq!(e.state(), MigState::Error);
    e.reset().unwrap();
    assert_eq!(e.state(), MigState::Running);
}

#[test]
fn the_v1_region_view_passes_the_v1_save_and_resume_loops() {
    let mut src = mtty("mtty-2", 21);
    let digest = src.state_digest().unwrap();
    let mut s = V1Region::new(region(src));
    // v1 save: RUNNING -> SAVING (stop-and-copy), then the loop.
    s.write_reg(v1::OFF_DEVICE_STATE, u64::from(v1::SAVING)).unwrap();
    assert_eq!(s.read_reg(v1::OFF_DEVICE_STATE).unwrap(), u64::from(v1::SAVING));
    let mut stream = Vec::new();
    loop {
        let pending = s.read_reg(v1::OFF_PENDING_BYTES).unwrap();
        if pending == 0 {
            break;
        }
        let off = s.read_reg(v1::OFF_DATA_OFFSET).unwrap();
        let size = s.read_reg(v1::OFF_DATA_SIZE).unwrap() as usize;
        let mut buf = vec![0u8; size];
        s.read_area(off, &mut buf).unwrap();
        stream.extend_from_slice(&buf);
    }
    s.write_reg(v1::OFF_DEVICE_STATE, 0).unwrap(); // _STOP
                                                   // v1 resume: RESUMING, then data_offset / write / data_size per piece.
    let mut d = V1Region::new(region(mtty("mtty-2", 22)));
    d.write_reg(v1::OFF_DEVICE_STATE, u64::from(v1::RESUMING))
        .unwrap();
    for piece in stream.chunks(100) {
        let off = d.read_reg(v1::OFF_DATA_OFFSET).unwrap();
        d.write_area(off, piece).unwrap();
        d.write_reg(v1::OFF_DATA_SIZE, piece.len() as u64).unwrap();
    }
    d.write_reg(v1::OFF_DEVICE_STATE, 0).unwrap();
    d.write_reg(v1::OFF_DEVICE_STATE, u64::from(v1::RUNNING)).unwrap();
    assert_eq!(d.read_reg(v1::OFF_DEVICE_STATE).unwrap(), u64::from(v1::RUNNING));
    let got = d.inner().last_restore.as_ref().unwrap().state_digest.unwrap();
    assert_eq!(got, digest);
    // Out-of-range accesses are errors, not panics.
    assert!(d.read_area(0, &mut [0; 4]).is_err());
    assert!(d.write_reg(v1::OFF_DATA_SIZE, u64::MAX).is_err());
    assert!(d.write_reg(v1::OFF_DEVICE_STATE, 0b110).is_err());
}
