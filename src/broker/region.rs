//! The migration region a VMM sees: the kernel's v2 interface, carrying the
//! enveloped stream instead of the raw one.
//!
//! ```text
//!   VMM                        MigrationRegion                     device
//!   set_state(STOP_COPY) ───►  save thread: broker::save ───────►  RUNNING→STOP_COPY
//!   read(data fd) ◄──────────  pipe ◄── signed envelope bytes ◄──  raw state
//!   set_state(STOP) ─────────► join: STOP, or the save's error
//!
//!   set_state(RESUMING) ─────► restore thread: broker::restore
//!   write(data fd) ──────────► pipe ──► verify, validate ───────►  RESUMING, writes
//!   set_state(STOP) ─────────► EOF; join: STOP, or ERROR with the restore's code
//! ```
//!
//! The data fd is a real pipe, so a VMM that already speaks VFIO migration v2 swaps
//! one fd for another. Leaving STOP_COPY for RUNNING aborts a save (the source goes
//! back to RUNNING); a failed restore leaves the region in ERROR and the device
//! reset, and [`MigrationRegion::reset`] brings the region back to RUNNING.
//!
//! A VMM's loop on each side, here over two simulated vGPUs in one process:
//!
//! ```
//! use std::sync::Arc;
//! use mdevmig::broker::region::{MigrationRegion, RegionConfig};
//! use mdevmig::device::{self, DataRead, MigState};
//! use mdevmig::sandbox::Validation;
//! use mdevmig::{Registry, RestoreOptions, SigningKeyPair, TrustStore};
//!
//! # fn main() -> mdevmig::Result<()> {
//! let registry = Arc::new(Registry::builtin());
//! let key = Arc::new(SigningKeyPair::generate());
//! let mut trust = TrustStore::new();
//! trust.add(key.verifying_key(), "source host");
//! let config = RegionConfig {
//!     registry: registry.clone(),
//!     key: Some(key),
//!     trust: Some(Arc::new(trust)),
//!     save: Default::default(),
//!     restore: RestoreOptions { validation: Validation::InProcess, ..Default::default() },
//! };
//! let open = |spec: &str| device::open(&spec.parse()?, &registry).map(|(d, _)| d);
//! let mut src = MigrationRegion::new(open("sim:mtty/mtty-2,seed=1")?, config.clone());
//! let mut dst = MigrationRegion::new(open("sim:mtty/mtty-2,seed=2")?, config);
//!
//! src.set_state(MigState::StopCopy)?; // RUNNING -> STOP -> STOP_COPY
//! dst.set_state(MigState::Resuming)?; // RUNNING -> STOP -> RESUMING
//! let mut buf = [0u8; 4096];
//! while let DataRead::Data(n) = src.read_data(&mut buf)? {
//!     dst.write_data(&buf[..n])?;
//! }
//! src.set_state(MigState::Stop)?; // the save's outcome
//! dst.set_state(MigState::Stop)?; // the restore's outcome: verified, validated, loaded
//! assert_eq!(
//!     src.last_save.as_ref().and_then(|r| r.state_digest),
//!     dst.last_restore.as_ref().and_then(|r| r.state_digest),
//! );
//! # Ok(())
//! # }
//! ```
//!
//! [`V1Region`] puts the deprecated v1 register interface
//! (`struct vfio_device_migration_info`) in front of the same machinery, for
//! region-based consumers.

use std::io::{PipeReader, PipeWriter, Read, Write};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{restore, save, RestoreOptions, RestoreReport, SaveOptions, SaveReport};
use crate::auth::{SigningKeyPair, TrustStore};
use crate::device::{fsm, DataRead, MigState, MigrationDevice};
use crate::error::{Code, Error, Result};
use crate::plugins::Registry;

type Dev = Box<dyn MigrationDevice>;

enum Job {
    Idle,
    Saving(PipeReader, JoinHandle<(Dev, Result<SaveReport>)>),
    Restoring(Option<PipeWriter>, JoinHandle<(Dev, Result<RestoreReport>)>),
}

/// What the region needs to save and restore.
#[derive(Clone)]
pub struct RegionConfig {
    /// Vendor plugins.
    pub registry: Arc<Registry>,
    /// Signing key (source side).
    pub key: Option<Arc<SigningKeyPair>>,
    /// Trust store (destination side).
    pub trust: Option<Arc<TrustStore>>,
    /// Save options.
    pub save: SaveOptions,
    /// Restore options.
    pub restore: RestoreOptions,
}

/// A v2-shaped migration region over a device.
pub struct MigrationRegion {
    dev: Option<Dev>,
    state: MigState,
    job: Job,
    cfg: RegionConfig,
    /// The last save's report.
    pub last_save: Option<SaveReport>,
    /// The last restore's report.
    pub last_restore: Option<RestoreReport>,
}

/// The region supports STOP_COPY only: the envelope carries PRE_COPY data inside
/// the save, not as a separate phase.
const REGION_FLAGS: u64 = fsm::FLAG_STOP_COPY;

impl fsm::Arcs for MigrationRegion {
    fn arc_flags(&self) -> u64 {
        REGION_FLAGS
    }
    fn current(&self) -> MigState {
        self.state
    }
    fn enter(&mut self, state: MigState) {
        self.state = state;
    }
    fn take_arc(&mut self, from: MigState, to: MigState) -> Result<()> {
        self.region_arc(from, to)
    }
}

/// Runs a save or restore worker's body, turning a panic inside it (a vendor
/// plugin's or a device backend's) into an `internal.error`. The panic has
/// already unwound through the broker's guards, so the device was put back
/// (source RUNNING, touched destination reset) and the worker still hands the
/// device back to the region.
fn contained<T>(what: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(Error::new(
            Code::Internal,
            format!("the {what} worker panicked ({why}); the device was put back"),
        ))
    })
}

impl MigrationRegion {
    /// A region in RUNNING over `dev`.
    pub fn new(dev: Dev, cfg: RegionConfig) -> Self {
        MigrationRegion {
            dev: Some(dev),
            state: MigState::Running,
            job: Job::Idle,
            cfg,
            last_save: None,
            last_restore: None,
        }
    }

    /// The region's migration flags.
    pub fn migration_flags(&self) -> u64 {
        REGION_FLAGS
    }

    /// Current state.
    pub fn state(&self) -> MigState {
        self.state
    }

    /// The device, when no save or restore is running.
    pub fn device(&mut self) -> Option<&mut Dev> {
        self.dev.as_mut()
    }

    /// Moves the region; streaming states start a save or a restore. A failed
    /// arc leaves the region in ERROR (and the device put back by the save's or
    /// restore's guard); [`MigrationRegion::reset`] returns it to RUNNING.
    pub fn set_state(&mut self, target: MigState) -> Result<()> {
        fsm::walk(self, target)
    }

    fn region_arc(&mut self, from: MigState, to: MigState) -> Result<()> {
        match (from, to) {
            (MigState::Stop, MigState::StopCopy) => self.start_save(),
            (MigState::StopCopy, MigState::Stop) => self.finish_save(),
            (MigState::Stop, MigState::Resuming) => self.start_restore(),
            (MigState::Resuming, MigState::Stop) => self.finish_restore(),
            (MigState::Stop, MigState::Running) | (MigState::Running, MigState::Stop) => {
                match self.dev.as_mut() {
                    Some(dev) => dev.set_state(to),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// The device, RUNNING, for a worker (broker::save and restore start from
    /// RUNNING and move it themselves).
    fn dev_for_worker(&mut self) -> Result<Dev> {
        // Work on the device in place, so that a failure here leaves it with
        // the region instead of dropping it.
        let dev = self
            .dev
            .as_mut()
            .ok_or_else(|| Error::new(Code::Internal, "device busy"))?;
        if dev.state()? == MigState::Stop {
            dev.set_state(MigState::Running)?;
        }
        self.take_dev()
    }

    /// STOP -> STOP_COPY: a save worker writes the envelope into the data pipe.
    fn start_save(&mut self) -> Result<()> {
        let key = self
            .cfg
            .key
            .clone()
            .ok_or_else(|| Error::new(Code::Usage, "region has no signing key"))?;
        let (registry, opts) = (self.cfg.registry.clone(), self.cfg.save.clone());
        let (r, w) = std::io::pipe().map_err(|e| Error::io(Code::IoOpen, "pipe", &e))?;
        let mut dev = self.dev_for_worker()?;
        let h = std::thread::spawn(move || {
            let res = contained("save", || save(&mut *dev, &registry, &key, w, &opts));
            (dev, res)
        });
        self.job = Job::Saving(r, h);
        Ok(())
    }

    /// STOP_COPY -> STOP: the reader is done; the save's outcome.
    fn finish_save(&mut self) -> Result<()> {
        let Job::Saving(r, h) = std::mem::replace(&mut self.job, Job::Idle) else {
            return Err(Error::new(Code::Internal, "no save running"));
        };
        drop(r);
        let (dev, res) = h
            .join()
            .map_err(|_| Error::new(Code::Internal, "save thread panicked"))?;
        self.dev = Some(dev);
        self.last_save = Some(res?);
        Ok(())
    }

    /// STOP -> RESUMING: a restore worker reads the envelope from the data pipe.
    fn start_restore(&mut self) -> Result<()> {
        let trust = self
            .cfg
            .trust
            .clone()
            .ok_or_else(|| Error::new(Code::Usage, "region has no trust store"))?;
        let (registry, opts) = (self.cfg.registry.clone(), self.cfg.restore.clone());
        let (r, w) = std::io::pipe().map_err(|e| Error::io(Code::IoOpen, "pipe", &e))?;
        let mut dev = self.dev_for_worker()?;
        let h = std::thread::spawn(move || {
            let res = contained("restore", || restore(&mut *dev, &registry, &trust, r, &opts));
            (dev, res)
        });
        self.job = Job::Restoring(Some(w), h);
        Ok(())
    }

    /// RESUMING -> STOP: end of stream; the restore's outcome.
    fn finish_restore(&mut self) -> Result<()> {
        let Job::Restoring(w, h) = std::mem::replace(&mut self.job, Job::Idle) else {
            return Err(Error::new(Code::Internal, "no restore running"));
        };
        drop(w); // end of stream
        let (dev, res) = h
            .join()
            .map_err(|_| Error::new(Code::Internal, "restore thread panicked"))?;
        self.dev = Some(dev);
        self.last_restore = Some(res?);
        Ok(())
    }

    fn take_dev(&mut self) -> Result<Dev> {
        self.dev
            .take()
            .ok_or_else(|| Error::new(Code::Internal, "device busy"))
    }

    /// Reads enveloped bytes (STOP_COPY).
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<DataRead> {
        match &mut self.job {
            Job::Saving(r, _) => match r.read(buf) {
                Ok(0) => Ok(DataRead::End),
                Ok(n) => Ok(DataRead::Data(n)),
                Err(e) => Err(Error::io(Code::IoRead, "region data", &e)),
            },
            _ => Err(Error::new(
                Code::DeviceData,
                format!("region: no saving stream in {}", self.state),
            )),
        }
    }

    /// Writes enveloped bytes (RESUMING). A write error means the restore has
    /// already refused the stream; the reason comes with the move to STOP.
    pub fn write_data(&mut self, buf: &[u8]) -> Result<()> {
        match &mut self.job {
            Job::Restoring(Some(w), _) => w
                .write_all(buf)
                .map_err(|e| Error::io(Code::IoWrite, "region data", &e)),
            _ => Err(Error::new(
                Code::DeviceData,
                format!("region: no resuming stream in {}", self.state),
            )),
        }
    }

    /// Resets the region and the device to RUNNING, abandoning any job.
    pub fn reset(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.job, Job::Idle) {
            Job::Saving(r, h) => {
                drop(r);
                if let Ok((dev, _)) = h.join() {
                    self.dev = Some(dev);
                }
            }
            Job::Restoring(w, h) => {
                drop(w);
                if let Ok((dev, _)) = h.join() {
                    self.dev = Some(dev);
                }
            }
            Job::Idle => {}
        }
        if let Some(dev) = self.dev.as_mut() {
            dev.reset()?;
        }
        self.state = MigState::Running;
        Ok(())
    }
}

/// `device_state` bits of the deprecated v1 interface.
pub mod v1 {
    /// `VFIO_DEVICE_STATE_V1_RUNNING`.
    pub const RUNNING: u32 = 1 << 0;
    /// `VFIO_DEVICE_STATE_V1_SAVING`.
    pub const SAVING: u32 = 1 << 1;
    /// `VFIO_DEVICE_STATE_V1_RESUMING`.
    pub const RESUMING: u32 = 1 << 2;
    /// Offset of `device_state`.
    pub const OFF_DEVICE_STATE: u64 = 0;
    /// Offset of `pending_bytes`.
    pub const OFF_PENDING_BYTES: u64 = 8;
    /// Offset of `data_offset`.
    pub const OFF_DATA_OFFSET: u64 = 16;
    /// Offset of `data_size`.
    pub const OFF_DATA_SIZE: u64 = 24;
    /// Where the data area starts in the region.
    pub const DATA_OFFSET: u64 = 4096;
    /// Size of the data area.
    pub const DATA_AREA: usize = 64 * 1024;
}

/// The deprecated v1 register interface over a [`MigrationRegion`]:
/// `struct vfio_device_migration_info { u32 device_state; u32 reserved;
/// u64 pending_bytes; u64 data_offset; u64 data_size; }` at offset 0 and a data
/// area at [`v1::DATA_OFFSET`].
///
/// Save loop: read `pending_bytes` (0 = done) → read `data_offset` → read
/// `data_size` → read that many bytes at `data_offset` → again.
/// Resume loop: read `data_offset` → write data there → write `data_size`.
pub struct V1Region {
    inner: MigrationRegion,
    area: Vec<u8>,
    staged: usize,
    ended: bool,
}

impl V1Region {
    /// Wraps a region.
    pub fn new(inner: MigrationRegion) -> Self {
        V1Region {
            inner,
            area: vec![0; v1::DATA_AREA],
            staged: 0,
            ended: false,
        }
    }

    /// The v2 region inside.
    pub fn inner(&mut self) -> &mut MigrationRegion {
        &mut self.inner
    }

    fn v1_state(&self) -> u32 {
        match self.inner.state() {
            MigState::Running => v1::RUNNING,
            MigState::StopCopy => v1::SAVING,
            MigState::Resuming => v1::RESUMING,
            MigState::Stop => 0,
            _ => v1::SAVING | v1::RESUMING, // 110: error
        }
    }

    fn refill(&mut self) -> Result<()> {
        self.staged = 0;
        while !self.ended && self.staged < self.area.len() {
            match self.inner.read_data(&mut self.area[self.staged..])? {
                DataRead::Data(n) => self.staged += n,
                DataRead::End => self.ended = true,
                DataRead::NotYet => break,
            }
        }
        Ok(())
    }

    /// Reads a u64 register (`pending_bytes`, `data_offset`, `data_size`) or the
    /// u32 `device_state`.
    pub fn read_reg(&mut self, offset: u64) -> Result<u64> {
        match offset {
            v1::OFF_DEVICE_STATE => Ok(u64::from(self.v1_state())),
            v1::OFF_PENDING_BYTES => {
                if self.inner.state() != MigState::StopCopy {
                    return Ok(0);
                }
                // Reading pending_bytes starts an iteration: the previous
                // iteration's data has been consumed.
                self.refill()?;
                Ok(self.staged as u64)
            }
            v1::OFF_DATA_OFFSET => Ok(v1::DATA_OFFSET),
            v1::OFF_DATA_SIZE => Ok(self.staged as u64),
            _ => Err(Error::new(
                Code::DeviceData,
                format!("v1 region: no register at {offset}"),
            )),
        }
    }

    /// Writes `device_state` or `data_size`.
    pub fn write_reg(&mut self, offset: u64, value: u64) -> Result<()> {
        match offset {
            v1::OFF_DEVICE_STATE => {
                let target = match u32::try_from(value).unwrap_or(u32::MAX) {
                    v1::RUNNING => MigState::Running,
                    v1::SAVING => MigState::StopCopy,
                    v1::RESUMING => MigState::Resuming,
                    0 => MigState::Stop,
                    other => {
                        return Err(Error::new(
                            Code::DeviceTransition,
                            format!("v1 region: device_state {other:#05b} not supported"),
                        ))
                    }
                };
                self.staged = 0;
                self.ended = false;
                self.inner.set_state(target)
            }
            v1::OFF_DATA_SIZE => {
                let n = usize::try_from(value).unwrap_or(usize::MAX);
                let data = self.area.get(..n).ok_or_else(|| {
                    Error::new(
                        Code::DeviceData,
                        format!("v1 region: data_size {value} larger than the data area"),
                    )
                })?;
                let data = data.to_vec();
                self.inner.write_data(&data)
            }
            _ => Err(Error::new(
                Code::DeviceData,
                format!("v1 region: register at {offset} is read-only"),
            )),
        }
    }

    /// Reads from the data area (`offset` is a region offset).
    pub fn read_area(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = offset
            .checked_sub(v1::DATA_OFFSET)
            .and_then(|o| usize::try_from(o).ok());
        let src = start.and_then(|s| self.area.get(s..s.checked_add(buf.len())?));
        buf.copy_from_slice(
            src.ok_or_else(|| Error::new(Code::DeviceData, "v1 region: read outside the data area"))?,
        );
        Ok(())
    }

    /// Writes into the data area.
    pub fn write_area(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        let start = offset
            .checked_sub(v1::DATA_OFFSET)
            .and_then(|o| usize::try_from(o).ok());
        let dst = start.and_then(|s| self.area.get_mut(s..s.checked_add(buf.len())?));
        dst.ok_or_else(|| Error::new(Code::DeviceData, "v1 region: write outside the data area"))?
            .copy_from_slice(buf);
        Ok(())
    }
}
