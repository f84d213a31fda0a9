//! The broker's guards on the paths no error value takes: a device backend that
//! panics in the middle of a save or a restore. The source must end RUNNING, a
//! touched destination reset, and the migration region must hand its device
//! back and report the failure instead of losing the device for good.

#[path = "support/opts.rs"]
mod opts;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use mdevmig::auth::{SigningKeyPair, TrustStore};
use mdevmig::broker::region::{MigrationRegion, RegionConfig};
use mdevmig::broker::{restore, save, RestoreOptions, SaveOptions};
use mdevmig::device::SimDevice;
use mdevmig::device::{DataRead, MigState, MigrationDevice, PrecopyInfo, FLAG_STOP_COPY};
use mdevmig::plugins::Registry;
use mdevmig::Code;
use mdevmig_plugin_api::{DeviceInfo, SimOptions};
use opts::ropts;

fn key() -> SigningKeyPair {
    SigningKeyPair::from_seed(&[9; 32])
}

fn trust() -> TrustStore {
    let mut t = TrustStore::new();
    t.add(key().verifying_key(), "test");
    t
}

fn simgpu(seed: u64) -> SimDevice {
    let registry = Registry::builtin();
    let info = registry
        .device_info("simgpu", "vgpu-64m", &Default::default(), BTreeSet::new())
        .unwrap();
    let model = registry
        .sim("simgpu")
        .unwrap()
        .sim_model(
            "vgpu-64m",
            &SimOptions {
                seed,
                attributes: info.attributes.clone(),
            },
        )
        .unwrap();
    SimDevice::new(info, FLAG_STOP_COPY, model)
}

/// Which data call panics, and on which call (1-based).
#[derive(Clone, Copy)]
enum PanicAt {
    Read(usize),
    Write(usize),
}

/// A simulated device whose `read_data` or `write_data` panics on its n-th call.
/// The device itself is shared, so a test can look at it after the panic, even
/// when a region owns the wrapper.
struct Panicky {
    inner: Arc<Mutex<SimDevice>>,
    info: DeviceInfo,
    at: PanicAt,
    reads: usize,
    writes: usize,
}

impl Panicky {
    fn new(dev: SimDevice, at: PanicAt) -> (Self, Arc<Mutex<SimDevice>>) {
        let info = dev.info().clone();
        let inner = Arc::new(Mutex::new(dev));
        let p = Panicky {
            inner: inner.clone(),
            info,
            at,
            reads: 0,
            writes: 0,
        };
        (p, inner)
    }

    fn dev(&self) -> std::sync::MutexGuard<'_, SimDevice> {
        self.inner.lock().unwrap()
    }
}

impl MigrationDevice for Panicky {
    fn backend(&self) -> &'static str {
        "sim"
    }
    fn info(&self) -> &DeviceInfo {
        &self.info
    }
    fn migration_flags(&self) -> u64 {
        self.dev().migration_flags()
    }
    fn state(&mut self) -> mdevmig::Result<MigState> {
        self.dev().state()
    }
    fn set_state(&mut self, target: MigState) -> mdevmig::Result<()> {
        self.dev().set_state(target)
    }
    fn read_data(&mut self, buf: &mut [u8]) -> mdevmig::Result<DataRead> {
        self.reads += 1;
        if matches!(self.at, PanicAt::Read(n) if n == self.reads) {
            panic!("injected panic in read_data");
        }
        self.dev().read_data(buf)
    }
    fn write_data(&mut self, buf: &[u8]) -> mdevmig::Result<()> {
        self.writes += 1;
        if matches!(self.at, PanicAt::Write(n) if n == self.writes) {
            panic!("injected panic in write_data");
        }
        self.dev().write_data(buf)
    }
    fn data_size(&mut self) -> mdevmig::Result<u64> {
        self.dev().data_size()
    }
    fn precopy_info(&mut self) -> mdevmig::Result<PrecopyInfo> {
        self.dev().precopy_info()
    }
    fn reset(&mut self) -> mdevmig::Result<()> {
        self.dev().reset()
    }
}

fn stream_of(seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    save(
        &mut simgpu(seed),
        &Registry::builtin(),
        &key(),
        &mut out,
        &SaveOptions::default(),
    )
    .unwrap();
    out
}

/// In-process validation with a small hold-back, so that the device is touched
/// early and later writes stream.
fn small_hold_back() -> RestoreOptions {
    RestoreOptions {
        hold_back: 1 << 20,
        ..ropts()
    }
}

#[test]
fn a_panic_in_the_middle_of_a_save_leaves_the_source_running_and_unchanged() {
    let (mut dev, inner) = Panicky::new(simgpu(1), PanicAt::Read(3));
    let before = inner.lock().unwrap().state_digest();
    let r = catch_unwind(AssertUnwindSafe(|| {
        save(
            &mut dev,
            &Registry::builtin(),
            &key(),
            std::io::sink(),
            &SaveOptions::default(),
        )
    }));
    assert!(r.is_err(), "the panic propagates to the caller");
    let mut src = inner.lock().unwrap();
    assert_eq!(src.state().unwrap(), MigState::Running);
    assert_eq!(src.state_digest(), before);
}

#[test]
fn a_panic_after_the_destination_was_touched_resets_it() {
    let stream = stream_of(2);
    let (mut dev, inner) = Panicky::new(simgpu(3), PanicAt::Write(3));
    let resets = inner.lock().unwrap().resets();
    let r = catch_unwind(AssertUnwindSafe(|| {
        restore(
            &mut dev,
            &Registry::builtin(),
            &trust(),
            &stream[..],
            &small_hold_back(),
        )
    }));
    assert!(r.is_err(), "the panic propagates to the caller");
    let mut dst = inner.lock().unwrap();
    assert_eq!(dst.resets(), resets + 1, "the guard reset the destination once");
    assert_eq!(dst.state().unwrap(), MigState::Running);
}

fn region(dev: Panicky) -> MigrationRegion {
    MigrationRegion::new(
        Box::new(dev),
        RegionConfig {
            registry: Arc::new(Registry::builtin()),
            key: Some(Arc::new(key())),
            trust: Some(Arc::new(trust())),
            save: SaveOptions::default(),
            restore: small_hold_back(),
        },
    )
}

#[test]
fn the_region_survives_a_panicking_save_worker() {
    let (dev, inner) = Panicky::new(simgpu(4), PanicAt::Read(2));
    let before = inner.lock().unwrap().state_digest();
    let mut r = region(dev);
    r.set_state(MigState::Stop).unwrap();
    r.set_state(MigState::StopCopy).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(DataRead::Data(_)) = r.read_data(&mut buf) {}
    let e = r.set_state(MigState::Stop).unwrap_err();
    assert_eq!(e.code, Code::Internal, "{e}");
    assert!(e.message.contains("save worker panicked"), "{e}");
    assert_eq!(r.state(), MigState::Error);
    assert!(r.device().is_some(), "the device came back to the region");
    r.reset().unwrap();
    assert_eq!(r.state(), MigState::Running);
    let mut src = inner.lock().unwrap();
    assert_eq!(src.state().unwrap(), MigState::Running);
    assert_eq!(src.state_digest(), before);
}

#[test]
fn the_region_survives_a_panicking_restore_worker() {
    let stream = stream_of(5);
    let (dev, inner) = Panicky::new(simgpu(6), PanicAt::Write(2));
    let resets = inner.lock().unwrap().resets();
    let mut r = region(dev);
    r.set_state(MigState::Stop).unwrap();
    r.set_state(MigState::Resuming).unwrap();
    for piece in stream.chunks(1 << 16) {
        if r.write_data(piece).is_err() {
            break; // the worker is gone; the reason comes with STOP
        }
    }
    let e = r.set_state(MigState::Stop).unwrap_err();
    assert_eq!(e.code, Code::Internal, "{e}");
    assert!(e.message.contains("restore worker panicked"), "{e}");
    assert_eq!(r.state(), MigState::Error);
    assert!(r.device().is_some(), "the device came back to the region");
    assert_eq!(
        inner.lock().unwrap().resets(),
        resets + 1,
        "the touched destination was reset"
    );
    r.reset().unwrap();
    assert_eq!(r.state(), MigState::Running);
}
