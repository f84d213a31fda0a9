//! Simulated devices with a running guest (`dirty-rate=N`): PRE_COPY in rounds the
//! way a VMM drives it (read to ENOMSG, ask for precopy info, read the next
//! round), simgpu's throttle under time-based dirtying, and broker saves of busy
//! devices that restore to the state the source stopped in.

#[path = "support/opts.rs"]
mod opts;

use std::time::Duration;

use mdevmig::auth::{SigningKeyPair, TrustStore};
use mdevmig::broker::{restore, save, SaveOptions};
use mdevmig::device::{self, DataRead, MigState, MigrationDevice, PrecopyInfo};
use mdevmig::plugins::Registry;
use mdevmig_xe::{Config, StreamValidator, XE_VF_64M};
use opts::ropts;

fn open(spec: &str) -> Box<dyn MigrationDevice> {
    device::open(&spec.parse().unwrap(), &Registry::builtin())
        .unwrap()
        .0
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Reads until the device has no more data now: (bytes, why it stopped).
fn read_until(dev: &mut dyn MigrationDevice, out: &mut Vec<u8>) -> DataRead {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match dev.read_data(&mut buf).unwrap() {
            DataRead::Data(n) => out.extend_from_slice(&buf[..n]),
            other => return other,
        }
    }
}

/// Loads `stream` into `dev` (RESUMING, 1 MiB writes, STOP); its digest.
fn load(dev: &mut dyn MigrationDevice, stream: &[u8]) -> [u8; 32] {
    dev.set_state(MigState::Resuming).unwrap();
    for part in stream.chunks(1 << 20) {
        dev.write_data(part).unwrap();
    }
    dev.set_state(MigState::Stop).unwrap();
    dev.state_digest().unwrap()
}

#[test]
fn xe_precopy_rounds_follow_a_running_guest_and_the_stream_restores() {
    let mut src = open("sim:xe/xe-vf-64m,seed=7,dirty-rate=16M");
    let at_start = src.state_digest().unwrap();
    src.set_state(MigState::PreCopy).unwrap();
    let first = src.precopy_info().unwrap();
    assert!(first.initial_bytes > 64 << 20, "{first:?}");
    let mut stream = Vec::new();
    assert_eq!(read_until(&mut *src, &mut stream), DataRead::NotYet);
    let mut rounds = 0;
    for _ in 0..6 {
        sleep_ms(15);
        // The query makes the next image: what the guest dirtied, as re-sends.
        let info = src.precopy_info().unwrap();
        assert_eq!(info.initial_bytes, 0);
        let before = stream.len();
        assert_eq!(read_until(&mut *src, &mut stream), DataRead::NotYet);
        if stream.len() > before {
            rounds += 1;
            assert!((stream.len() - before) as u64 <= info.dirty_bytes, "{info:?}");
            assert_eq!((stream.len() - before) % (4096 + 24), 0);
        }
    }
    assert!(rounds >= 3, "only {rounds} rounds yielded data");
    // While the save is in progress MIG_DATA_SIZE is what is left, exactly.
    src.set_state(MigState::StopCopy).unwrap();
    let left = src.data_size().unwrap();
    let pre = stream.len() as u64;
    assert_eq!(read_until(&mut *src, &mut stream), DataRead::End);
    assert_eq!(stream.len() as u64 - pre, left);
    assert!(src.precopy_info().is_err());
    src.set_state(MigState::Stop).unwrap();
    let digest = src.state_digest().unwrap();
    assert_ne!(digest, at_start, "the guest ran during pre-copy");
    // Stopped: the state holds still.
    sleep_ms(10);
    assert_eq!(src.state_digest().unwrap(), digest);
    let config = Config::new(XE_VF_64M);
    let mut v = StreamValidator::new(&config);
    v.feed(&stream).unwrap();
    v.finish().unwrap();
    assert!(stream.len() as u64 <= config.max_stream_len());
    let mut dst = open("sim:xe/xe-vf-64m,seed=8");
    assert_eq!(load(&mut *dst, &stream), digest);
}

#[test]
fn simgpu_holds_back_time_based_dirtying_past_its_fb_dirty_capacity() {
    // 1 GiB/s: about 32 activity rounds per millisecond.
    let mut src = open("sim:simgpu/vgpu-64m,seed=5,dirty-rate=1G");
    src.set_state(MigState::PreCopy).unwrap();
    let mut stream = Vec::new();
    assert_eq!(read_until(&mut *src, &mut stream), DataRead::NotYet);
    sleep_ms(40);
    // vgpu-64m's fb-dirty holds 256 pages: the guest's writes to further pages are
    // held back, so the dirty estimate stops there.
    let full = PrecopyInfo {
        initial_bytes: 0,
        dirty_bytes: 256 * 4096,
    };
    assert_eq!(src.precopy_info().unwrap(), full);
    sleep_ms(20);
    assert_eq!(src.precopy_info().unwrap(), full);
    // simgpu has one round: no re-sends in PRE_COPY, fb-dirty carries the pages.
    assert_eq!(read_until(&mut *src, &mut stream), DataRead::NotYet);
    src.set_state(MigState::StopCopy).unwrap();
    let left = src.data_size().unwrap();
    let pre = stream.len() as u64;
    assert_eq!(read_until(&mut *src, &mut stream), DataRead::End);
    assert_eq!(stream.len() as u64 - pre, left);
    src.set_state(MigState::Stop).unwrap();
    let digest = src.state_digest().unwrap();
    let mut dst = open("sim:simgpu/vgpu-64m,seed=6");
    assert_eq!(load(&mut *dst, &stream), digest);
}

#[test]
fn broker_saves_of_busy_devices_restore_the_stopped_state() {
    let key = SigningKeyPair::from_seed(&[5; 32]);
    let mut trust = TrustStore::new();
    trust.add(key.verifying_key(), "test");
    let registry = Registry::builtin();
    for (spec, dst_spec) in [
        (
            "sim:simgpu/vgpu-64m,seed=1,dirty-rate=256M",
            "sim:simgpu/vgpu-64m,seed=2",
        ),
        (
            "sim:xe/xe-vf-64m,seed=3,dirty-rate=64M",
            "sim:xe/xe-vf-64m,seed=4",
        ),
        ("sim:mtty/mtty-2,seed=5,dirty-rate=1G", "sim:mtty/mtty-2,seed=6"),
    ] {
        for precopy in [false, true] {
            let mut src = open(spec);
            let mut out = Vec::new();
            let opts = SaveOptions {
                precopy,
                ..SaveOptions::default()
            };
            let rep = save(&mut *src, &registry, &key, &mut out, &opts).unwrap();
            let digest = rep.state_digest.unwrap();
            assert_eq!(src.state().unwrap(), MigState::Stop);
            assert_eq!(src.state_digest().unwrap(), digest, "{spec}");
            let mut dst = open(dst_spec);
            let r = restore(&mut *dst, &registry, &trust, &out[..], &ropts()).unwrap();
            assert_eq!(r.state_digest.unwrap(), digest, "{spec} precopy={precopy}");
        }
    }
}
