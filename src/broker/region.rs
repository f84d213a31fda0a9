//! The migration region a VMM sees: the kernel's v2 interface, carrying the
//! enveloped stream instead of the raw one.
//!
//! ```text
//!   VMM                         MigrationRegion                      device
//!   set_state(PRE_COPY) ──────► device arc, then a save thread ────► RUNNING→PRE_COPY
//!   read_data ◄─────────────── pipe ◄── signed envelope bytes ◄──── initial data
//!     … NotYet (ENOMSG)         the thread parks at the device's temporary end
//!   precopy_info ─────────────► device's precopy info (its next round), + what
//!                               the pipe and the chunk being built hold
//!   read_data … NotYet          (rounds, while the guest runs)
//!   set_state(STOP_COPY) ─────► device arc; the same stream goes on ► PRE_COPY→STOP_COPY
//!   read_data … End ◄────────── the rest, the trailer, EOF
//!   set_state(STOP) ──────────► join: STOP, or the save's error
//!
//!   set_state(RESUMING) ──────► restore thread: broker::restore
//!   write_data ───────────────► pipe ──► verify, validate ─────────► RESUMING, writes
//!   set_state(STOP) ──────────► EOF; join: STOP, or ERROR with the restore's code
//! ```
//!
//! The region offers the device's own migration flags, so every arc the device
//! supports is there: STOP_COPY, and PRE_COPY, RUNNING_P2P and PRE_COPY_P2P where
//! the device has them. Each arc of a walk is taken by the device too, one for
//! one (include/uapi/linux/vfio.h, `vfio_mig_get_next_state()` in
//! drivers/vfio/vfio_main.c).
//!
//! # PRE_COPY and the ENOMSG rule
//!
//! The uAPI says a read of the data fd in PRE_COPY fails with ENOMSG when the
//! device has no more data *for now*; more may come later, and the stream goes on
//! in STOP_COPY. The region keeps that rule exactly in [`MigrationRegion::read_data`]:
//!
//! * the save thread copies the device's data into signed chunks and writes every
//!   complete chunk to the pipe; when the device says "no more now" it flushes
//!   them all and *parks*;
//! * `read_data` returns [`DataRead::NotYet`] only when the thread was parked
//!   before a read that found the pipe empty, so every byte the device gave
//!   before its temporary end has been read (except the chunk being built: chunks
//!   are cut canonically, `spec/wire-format.md` §5, so those bytes leave with the
//!   data that completes the chunk, at the latest in STOP_COPY);
//! * a precopy-info query, a move to PRE_COPY_P2P or STOP_COPY wakes the thread.
//!   The query is what lets the device prepare its next round (as the kernel's
//!   mlx5 driver does), so a QEMU-shaped loop (read until ENOMSG, query, read
//!   again) moves each round's dirty data.
//!
//! A VMM that reads the fd itself ([`MigrationRegion::data_fd`]) sees it
//! non-blocking in PRE_COPY: EAGAIN means nothing to read at this moment, which
//! includes the temporary end; in STOP_COPY it blocks until data or EOF, as the
//! kernel's does.
//!
//! [`MigrationRegion::precopy_info`] and [`MigrationRegion::data_size`] count
//! **envelope** bytes (what the VMM will read), not the device's raw bytes; the
//! device's raw answer is kept in
//! [`last_device_precopy`](MigrationRegion::last_device_precopy).
//!
//! # Aborts and failures
//!
//! Leaving PRE_COPY for RUNNING (PRE_COPY_P2P for RUNNING_P2P) abandons the save:
//! the device goes back to RUNNING with its state untouched, as the kernel's arc
//! does. A failed save or restore leaves the region in ERROR (the source put back
//! to RUNNING, a touched destination reset), and [`MigrationRegion::reset`] brings
//! the region back to RUNNING. A region dropped mid-migration does the same as an
//! abort, so a VMM that dies cannot leave a device half-migrated.
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
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use mdevmig_plugin_api::DeviceInfo;

use super::live::{EnvCost, LiveCtl};
use super::save::save_driven;
use super::{restore, RestoreOptions, RestoreReport, SaveOptions, SaveReport};
use crate::auth::{SigningKeyPair, TrustStore};
use crate::codec::limits;
use crate::device::{fsm, DataRead, MigState, MigrationDevice, PrecopyInfo};
use crate::error::{Code, Error, Result};
use crate::plugins::Registry;

type Dev = Box<dyn MigrationDevice>;

/// The device while a save runs: shared by the region (state changes, precopy
/// info, size queries) and the save worker (reads), each call under the lock.
type SharedDev = Arc<Mutex<Dev>>;

fn lock(dev: &SharedDev) -> MutexGuard<'_, Dev> {
    dev.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The save worker's view of the shared device.
struct WorkerDev {
    dev: SharedDev,
    taken: Arc<AtomicU64>,
    info: DeviceInfo,
    backend: &'static str,
    flags: u64,
}

impl MigrationDevice for WorkerDev {
    fn backend(&self) -> &'static str {
        self.backend
    }
    fn info(&self) -> &DeviceInfo {
        &self.info
    }
    fn migration_flags(&self) -> u64 {
        self.flags
    }
    fn state(&mut self) -> Result<MigState> {
        lock(&self.dev).state()
    }
    fn set_state(&mut self, target: MigState) -> Result<()> {
        lock(&self.dev).set_state(target)
    }
    fn read_data(&mut self, buf: &mut [u8]) -> Result<DataRead> {
        let mut dev = lock(&self.dev);
        let got = dev.read_data(buf)?;
        if let DataRead::Data(n) = got {
            // Under the device lock: a size query sees the device's position
            // and this count move together.
            self.taken.fetch_add(n as u64, Ordering::AcqRel);
        }
        Ok(got)
    }
    fn write_data(&mut self, buf: &[u8]) -> Result<()> {
        lock(&self.dev).write_data(buf)
    }
    fn data_size(&mut self) -> Result<u64> {
        lock(&self.dev).data_size()
    }
    fn precopy_info(&mut self) -> Result<PrecopyInfo> {
        lock(&self.dev).precopy_info()
    }
    fn reset(&mut self) -> Result<()> {
        lock(&self.dev).reset()
    }
    fn state_digest(&mut self) -> Option<[u8; 32]> {
        lock(&self.dev).state_digest()
    }
}

/// The save worker's end of the data pipe. It is non-blocking, so that a save
/// the VMM abandons ends even while the VMM still holds a copy of the read end
/// (as QEMU keeps the kernel's data fd until cleanup; no EPIPE comes then): a
/// full pipe is waited on in short polls, between which the abort flag is
/// checked.
struct PipeOut {
    w: PipeWriter,
    ctl: Arc<LiveCtl>,
}

impl PipeOut {
    fn retry(
        &mut self,
        mut f: impl FnMut(&mut PipeWriter) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        loop {
            match f(&mut self.w) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.ctl.aborted() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::BrokenPipe,
                            "the save was abandoned",
                        ));
                    }
                    let mut fds = [PollFd::new(self.w.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut fds, PollTimeout::from(IO_POLL_MS));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl Write for PipeOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.retry(|w| w.write(buf))
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        self.retry(|w| w.write_vectored(bufs))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The restore worker's end of the data pipe. The end of the stream is the
/// region's move to STOP (`ended`), not EOF: the VMM may still hold a copy of
/// the write end, and the kernel never makes a state change wait for the VMM
/// to close its fd. The flag is read before each read, so "ended and empty"
/// means every byte the VMM wrote has been read.
struct PipeIn {
    r: PipeReader,
    ended: Arc<AtomicBool>,
}

impl Read for PipeIn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let ended = self.ended.load(Ordering::Acquire);
            match self.r.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if ended {
                        return Ok(0);
                    }
                    let mut fds = [PollFd::new(self.r.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(IO_POLL_MS));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

/// How long a worker waits on its pipe between checks of the region's flags.
const IO_POLL_MS: u8 = 20;

/// A save in progress.
struct Saving {
    r: Option<PipeReader>,
    ctl: Arc<LiveCtl>,
    dev: SharedDev,
    h: JoinHandle<Result<SaveReport>>,
}

/// A restore in progress.
struct Restoring {
    w: Option<PipeWriter>,
    ended: Arc<AtomicBool>,
    h: JoinHandle<(Dev, Result<RestoreReport>)>,
}

impl Restoring {
    /// Ends the stream and waits for the restore's outcome.
    fn join(self) -> Option<(Dev, Result<RestoreReport>)> {
        self.ended.store(true, Ordering::Release);
        drop(self.w);
        self.h.join().ok()
    }
}

enum Job {
    Idle,
    Saving(Saving),
    Restoring(Restoring),
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
    /// Save options (`precopy` and `converge` are the save's own policy and do
    /// not apply: the VMM drives PRE_COPY through the region).
    pub save: SaveOptions,
    /// Restore options.
    pub restore: RestoreOptions,
}

/// A v2-shaped migration region over a device.
pub struct MigrationRegion {
    dev: Option<Dev>,
    flags: u64,
    state: MigState,
    job: Job,
    cfg: RegionConfig,
    /// The last save's report.
    pub last_save: Option<SaveReport>,
    /// The last restore's report.
    pub last_restore: Option<RestoreReport>,
    /// The device's own answer to the last precopy-info query (raw bytes).
    pub last_device_precopy: Option<PrecopyInfo>,
    history: Vec<(MigState, MigState)>,
}

impl fsm::Arcs for MigrationRegion {
    fn arc_flags(&self) -> u64 {
        self.flags
    }
    fn current(&self) -> MigState {
        self.state
    }
    fn enter(&mut self, state: MigState) {
        self.state = state;
    }
    fn take_arc(&mut self, from: MigState, to: MigState) -> Result<()> {
        self.region_arc(from, to)?;
        self.history.push((from, to));
        Ok(())
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

/// How long `read_data` waits at a time for a busy save worker in PRE_COPY
/// (data wakes it at once; a worker that parks is seen at the next timeout).
const PRECOPY_POLL_MS: u8 = 2;

/// The pipe size the region asks for: a whole default chunk and its frame
/// fit, so a worker rarely waits for the VMM mid-chunk.
const PIPE_SIZE: usize = 2 << 20;

/// Blocks SIGPIPE in the calling thread: a write to a pipe whose reader is gone
/// then fails with EPIPE instead of killing the process. Rust programs ignore
/// SIGPIPE already; a C host embedding the library may not, and SIGPIPE from a
/// write is sent to the writing thread, so the region's own threads block it
/// (a pending one is discarded when the thread ends).
fn block_sigpipe() {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::from(Signal::SIGPIPE)), None);
}

/// Runs the write `f` on the caller's thread with SIGPIPE blocked; if it failed
/// with EPIPE, consumes the SIGPIPE it raised (pending on this thread, since a
/// blocked signal is queued even when ignored, so the wait returns at once),
/// then restores the caller's signal mask.
fn without_sigpipe<T>(f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let pipe = SigSet::from(Signal::SIGPIPE);
    let mut old = SigSet::empty();
    let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&pipe), Some(&mut old)).is_ok();
    let out = f();
    if blocked {
        if matches!(&out, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe) {
            let _ = pipe.wait();
        }
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    out
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(Code::IoRead, what, &e)
}

fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::io(Code::IoOpen, "data fd", &e.into()))?;
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(fd, FcntlArg::F_SETFL(flags))
        .map(|_| ())
        .map_err(|e| Error::io(Code::IoOpen, "data fd", &e.into()))
}

impl MigrationRegion {
    /// A region in RUNNING over `dev`, offering the device's migration flags
    /// (STOP_COPY, and P2P and PRE_COPY where the device has them).
    pub fn new(dev: Dev, cfg: RegionConfig) -> Self {
        let flags = (dev.migration_flags() & (fsm::FLAG_STOP_COPY | fsm::FLAG_P2P | fsm::FLAG_PRE_COPY))
            | fsm::FLAG_STOP_COPY;
        MigrationRegion {
            dev: Some(dev),
            flags,
            state: MigState::Running,
            job: Job::Idle,
            cfg,
            last_save: None,
            last_restore: None,
            last_device_precopy: None,
            history: Vec::new(),
        }
    }

    /// Every arc the region has taken, in order (each one taken by the device
    /// too).
    pub fn history(&self) -> &[(MigState, MigState)] {
        &self.history
    }

    /// The region's migration flags: the device's.
    pub fn migration_flags(&self) -> u64 {
        self.flags
    }

    /// Current state.
    pub fn state(&self) -> MigState {
        self.state
    }

    /// The device, when no save or restore is running.
    pub fn device(&mut self) -> Option<&mut Dev> {
        self.dev.as_mut()
    }

    /// Moves the region along the kernel's arcs; streaming states start a save
    /// or a restore. A failed arc leaves the region in ERROR (and the device put
    /// back by the save's or restore's guard); [`MigrationRegion::reset`]
    /// returns it to RUNNING.
    pub fn set_state(&mut self, target: MigState) -> Result<()> {
        fsm::walk(self, target)
    }

    fn region_arc(&mut self, from: MigState, to: MigState) -> Result<()> {
        use MigState::{PreCopy, PreCopyP2p, Resuming, Running, RunningP2p, Stop, StopCopy};
        match (from, to) {
            (Stop, StopCopy) | (Running, PreCopy) | (RunningP2p, PreCopyP2p) => self.start_save(to),
            (PreCopy, PreCopyP2p) | (PreCopyP2p, PreCopy) => self.live_arc(to),
            (PreCopy | PreCopyP2p, StopCopy) => self.stop_copy(),
            (PreCopy, Running) | (PreCopyP2p, RunningP2p) => self.abort_save(to),
            (StopCopy, Stop) => self.finish_save(),
            (Stop, Resuming) => self.start_restore(),
            (Resuming, Stop) => self.finish_restore(),
            _ => match self.dev.as_mut() {
                Some(dev) => dev.set_state(to),
                None => Err(Error::new(Code::Internal, "device busy")),
            },
        }
    }

    /// Into STOP_COPY from STOP, or into PRE_COPY(_P2P): the device takes the
    /// arc (its data stream opens), then a save worker writes the envelope into
    /// the data pipe.
    fn start_save(&mut self, to: MigState) -> Result<()> {
        let key = self
            .cfg
            .key
            .clone()
            .ok_or_else(|| Error::new(Code::Usage, "region has no signing key"))?;
        let (registry, opts) = (self.cfg.registry.clone(), self.cfg.save.clone());
        let (r, w) = std::io::pipe().map_err(|e| Error::io(Code::IoOpen, "pipe", &e))?;
        // Best effort: a larger pipe only saves wake-ups.
        let _ = rustix::pipe::fcntl_setpipe_size(&w, PIPE_SIZE);
        let precopy = to != MigState::StopCopy;
        set_nonblocking(r.as_fd(), precopy)?;
        let dev = self
            .dev
            .as_mut()
            .ok_or_else(|| Error::new(Code::Internal, "device busy"))?;
        let at = Instant::now();
        dev.set_state(to)?;
        let dev = self.take_dev()?;
        let (info, backend, flags) = (dev.info().clone(), dev.backend(), dev.migration_flags());
        let shared: SharedDev = Arc::new(Mutex::new(dev));
        let ctl = Arc::new(LiveCtl::default());
        if !precopy {
            ctl.stopped(at);
        }
        let mut worker = WorkerDev {
            dev: shared.clone(),
            taken: ctl.taken.clone(),
            info,
            backend,
            flags,
        };
        let wctl = ctl.clone();
        set_nonblocking(w.as_fd(), true)?;
        let w = PipeOut { w, ctl: ctl.clone() };
        let h = std::thread::spawn(move || {
            block_sigpipe();
            let res = contained("save", || {
                save_driven(&mut worker, &registry, &key, w, &opts, wctl.clone())
            });
            wctl.finish();
            res
        });
        self.job = Job::Saving(Saving {
            r: Some(r),
            ctl,
            dev: shared,
            h,
        });
        Ok(())
    }

    fn saving(&mut self) -> Result<&mut Saving> {
        match &mut self.job {
            Job::Saving(s) => Ok(s),
            _ => Err(Error::new(Code::Internal, "no save running")),
        }
    }

    /// A save whose worker has already stopped (it failed): its outcome.
    fn failed_save(&mut self) -> Result<()> {
        if self.saving()?.ctl.lock().finished {
            return self.join_save().and_then(|_| {
                Err(Error::new(
                    Code::Internal,
                    "the save finished before the device left PRE_COPY",
                ))
            });
        }
        Ok(())
    }

    /// PRE_COPY <-> PRE_COPY_P2P: the device moves; the stream goes on.
    fn live_arc(&mut self, to: MigState) -> Result<()> {
        self.failed_save()?;
        let s = self.saving()?;
        lock(&s.dev).set_state(to)?;
        s.ctl.kick();
        Ok(())
    }

    /// PRE_COPY(_P2P) -> STOP_COPY: the device stops and the same stream
    /// continues to its trailer; reads of the data fd now block until data or
    /// the end.
    fn stop_copy(&mut self) -> Result<()> {
        self.failed_save()?;
        let s = self.saving()?;
        if let Some(r) = &s.r {
            set_nonblocking(r.as_fd(), false)?;
        }
        let at = Instant::now();
        lock(&s.dev).set_state(MigState::StopCopy)?;
        s.ctl.stopped(at);
        Ok(())
    }

    /// PRE_COPY -> RUNNING (PRE_COPY_P2P -> RUNNING_P2P): the VMM abandons the
    /// migration. The save stops and its guard puts the device back to
    /// RUNNING, state untouched; then the device goes where the VMM asked.
    fn abort_save(&mut self, to: MigState) -> Result<()> {
        self.saving()?.ctl.abort();
        let _ = self.join_save();
        let dev = self
            .dev
            .as_mut()
            .ok_or_else(|| Error::new(Code::Internal, "device lost by the save worker"))?;
        if dev.state()? == to {
            return Ok(());
        }
        dev.set_state(to)
    }

    /// Ends the save job: closes the region's read end (a worker still writing
    /// gets EPIPE), waits for the worker and takes the device back.
    fn join_save(&mut self) -> Result<SaveReport> {
        let Job::Saving(Saving { r, ctl, dev, h }) = std::mem::replace(&mut self.job, Job::Idle) else {
            return Err(Error::new(Code::Internal, "no save running"));
        };
        drop(r);
        ctl.abort();
        let res = h
            .join()
            .unwrap_or_else(|_| Err(Error::new(Code::Internal, "save thread panicked")));
        match Arc::try_unwrap(dev) {
            Ok(m) => self.dev = Some(m.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)),
            Err(_) => return Err(Error::new(Code::Internal, "save worker kept the device")),
        }
        res
    }

    /// STOP_COPY -> STOP: the reader is done; the save's outcome.
    fn finish_save(&mut self) -> Result<()> {
        let report = self.join_save()?;
        self.last_save = Some(report);
        Ok(())
    }

    /// STOP -> RESUMING: a restore worker reads the envelope from the data pipe
    /// and moves the device (STOP -> RESUMING) when the header has passed.
    fn start_restore(&mut self) -> Result<()> {
        let trust = self
            .cfg
            .trust
            .clone()
            .ok_or_else(|| Error::new(Code::Usage, "region has no trust store"))?;
        let (registry, opts) = (self.cfg.registry.clone(), self.cfg.restore.clone());
        let (r, w) = std::io::pipe().map_err(|e| Error::io(Code::IoOpen, "pipe", &e))?;
        set_nonblocking(r.as_fd(), true)?;
        let ended = Arc::new(AtomicBool::new(false));
        let input = PipeIn {
            r,
            ended: ended.clone(),
        };
        let mut dev = self.take_dev()?;
        let h = std::thread::spawn(move || {
            block_sigpipe();
            let res = contained("restore", || restore(&mut *dev, &registry, &trust, input, &opts));
            (dev, res)
        });
        self.job = Job::Restoring(Restoring { w: Some(w), ended, h });
        Ok(())
    }

    /// RESUMING -> STOP: end of stream; the restore's outcome.
    fn finish_restore(&mut self) -> Result<()> {
        let Job::Restoring(job) = std::mem::replace(&mut self.job, Job::Idle) else {
            return Err(Error::new(Code::Internal, "no restore running"));
        };
        let (dev, res) = job
            .join()
            .ok_or_else(|| Error::new(Code::Internal, "restore thread panicked"))?;
        self.dev = Some(dev);
        self.last_restore = Some(res?);
        Ok(())
    }

    fn take_dev(&mut self) -> Result<Dev> {
        self.dev
            .take()
            .ok_or_else(|| Error::new(Code::Internal, "device busy"))
    }

    /// The data fd of the stream in progress, for a VMM that polls or reads it
    /// itself: the read end in PRE_COPY and STOP_COPY, the write end in
    /// RESUMING. In PRE_COPY the read end is non-blocking: EAGAIN means no data
    /// at this moment; [`MigrationRegion::read_data`] tells the kernel's
    /// temporary end of data (ENOMSG) from a worker that is still busy.
    pub fn data_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.job {
            Job::Saving(Saving { r: Some(r), .. }) => Some(r.as_fd()),
            Job::Restoring(Restoring { w: Some(w), .. }) => Some(w.as_fd()),
            _ => None,
        }
    }

    /// Reads enveloped bytes (PRE_COPY, PRE_COPY_P2P, STOP_COPY), as a read of
    /// the kernel's data fd: data, [`DataRead::NotYet`] in PRE_COPY when the
    /// device has nothing more until the next precopy-info query or state
    /// change (the kernel's ENOMSG), or [`DataRead::End`] after the trailer.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<DataRead> {
        let precopy = matches!(self.state, MigState::PreCopy | MigState::PreCopyP2p);
        let state = self.state;
        let Job::Saving(Saving { r: Some(r), ctl, .. }) = &mut self.job else {
            return Err(Error::new(
                Code::DeviceData,
                format!("region: no saving stream in {state}"),
            ));
        };
        if !precopy {
            return match r.read(buf) {
                Ok(0) => Ok(DataRead::End),
                Ok(n) => Ok(DataRead::Data(n)),
                Err(e) => Err(io_err("region data")(e)),
            };
        }
        loop {
            // Parked before the read: every byte it wrote is already in the pipe.
            let settled = {
                let st = ctl.lock();
                st.parked || st.finished
            };
            match r.read(buf) {
                Ok(0) => {
                    return Err(Error::new(
                        Code::DeviceData,
                        "region: the save stopped in PRE_COPY; leaving PRE_COPY reports why",
                    ))
                }
                Ok(n) => return Ok(DataRead::Data(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if settled {
                        return Ok(DataRead::NotYet);
                    }
                    // Wait for data, or for the worker to park (it does not
                    // write then, so the wait ends at the timeout).
                    let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(PRECOPY_POLL_MS));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("region data")(e)),
            }
        }
    }

    /// `VFIO_MIG_GET_PRECOPY_INFO` (PRE_COPY states only), in **envelope**
    /// bytes: what the VMM will still read. The device is asked first (which
    /// lets it prepare its next round, as mlx5 does), then the region adds what
    /// it holds: unread bytes in the data pipe and the chunk being built.
    /// `initial_bytes` counts while the device still has initial data;
    /// `dirty_bytes` counts the rest, the section ends and the trailer. The
    /// device's own raw answer is kept in
    /// [`last_device_precopy`](MigrationRegion::last_device_precopy).
    pub fn precopy_info(&mut self) -> Result<PrecopyInfo> {
        if !matches!(self.state, MigState::PreCopy | MigState::PreCopyP2p) {
            return Err(Error::new(
                Code::DeviceData,
                format!("precopy info in {} (EINVAL)", self.state),
            ));
        }
        self.failed_save()?;
        let chunk_size = self.cfg.save.chunk_size;
        let Job::Saving(s) = &self.job else {
            return Err(Error::new(Code::Internal, "no save running"));
        };
        let (dev, held) = {
            let mut d = lock(&s.dev);
            (d.precopy_info()?, s.ctl.in_flight())
        };
        let cost = s.ctl.lock().cost;
        let unread =
            s.r.as_ref()
                .and_then(|r| rustix::io::ioctl_fionread(r).ok())
                .unwrap_or(0);
        let cost = cost.unwrap_or_else(|| EnvCost::rough(chunk_size));
        let frames = |raw: u64| cost.rest(raw).saturating_sub(cost.rest(0));
        let pending = unread.saturating_add(held).saturating_add(cost.rest(0));
        let info = if dev.initial_bytes > 0 {
            PrecopyInfo {
                initial_bytes: pending
                    .saturating_add(dev.initial_bytes.saturating_add(frames(dev.initial_bytes))),
                dirty_bytes: dev.dirty_bytes.saturating_add(frames(dev.dirty_bytes)),
            }
        } else {
            PrecopyInfo {
                initial_bytes: 0,
                dirty_bytes: pending.saturating_add(dev.dirty_bytes.saturating_add(frames(dev.dirty_bytes))),
            }
        };
        s.ctl.kick();
        self.last_device_precopy = Some(dev);
        Ok(info)
    }

    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` in envelope bytes: what STOP_COPY
    /// would still move now (unread bytes in the data pipe, the chunk being
    /// built, the device's estimate with its chunk frames, the trailer). Outside
    /// a save: an upper bound for a whole stream, its header at the format's
    /// limit.
    pub fn data_size(&mut self) -> Result<u64> {
        let chunk_size = self.cfg.save.chunk_size;
        match &mut self.job {
            Job::Saving(s) => {
                let (raw, held) = {
                    let mut d = lock(&s.dev);
                    (d.data_size()?, s.ctl.in_flight())
                };
                let cost = s.ctl.lock().cost.unwrap_or_else(|| EnvCost::rough(chunk_size));
                let unread =
                    s.r.as_ref()
                        .and_then(|r| rustix::io::ioctl_fionread(r).ok())
                        .unwrap_or(0);
                Ok(unread.saturating_add(cost.rest(held.saturating_add(raw))))
            }
            _ => {
                let raw = self
                    .dev
                    .as_mut()
                    .ok_or_else(|| Error::new(Code::Internal, "device busy"))?
                    .data_size()?;
                Ok(EnvCost::rough(chunk_size)
                    .rest(raw)
                    .saturating_add(u64::from(limits::MAX_HEADER_LEN)))
            }
        }
    }

    /// Writes enveloped bytes (RESUMING). A write error means the restore has
    /// already refused the stream; the reason comes with the move to STOP.
    pub fn write_data(&mut self, buf: &[u8]) -> Result<()> {
        match &mut self.job {
            Job::Restoring(Restoring { w: Some(w), .. }) => {
                without_sigpipe(|| w.write_all(buf)).map_err(|e| Error::io(Code::IoWrite, "region data", &e))
            }
            _ => Err(Error::new(
                Code::DeviceData,
                format!("region: no resuming stream in {}", self.state),
            )),
        }
    }

    /// Ends any job: a save's source goes back to RUNNING, a restore's touched
    /// destination is reset (by their guards).
    fn abandon(&mut self) {
        match std::mem::replace(&mut self.job, Job::Idle) {
            Job::Saving(s) => {
                self.job = Job::Saving(s);
                let _ = self.join_save();
            }
            Job::Restoring(job) => {
                if let Some((dev, _)) = job.join() {
                    self.dev = Some(dev);
                }
            }
            Job::Idle => {}
        }
    }

    /// Resets the region and the device to RUNNING, abandoning any job.
    pub fn reset(&mut self) -> Result<()> {
        self.abandon();
        if let Some(dev) = self.dev.as_mut() {
            dev.reset()?;
        }
        self.state = MigState::Running;
        Ok(())
    }
}

impl Drop for MigrationRegion {
    /// A region dropped mid-migration (its VMM gone) abandons the job: the
    /// source back to RUNNING, a touched destination reset. A region left in
    /// ERROR resets its device too, so a device whose restore was refused
    /// before it was touched (and sits in STOP) is RUNNING again, as after a
    /// refused `restore`.
    fn drop(&mut self) {
        self.abandon();
        if self.state == MigState::Error {
            if let Some(dev) = self.dev.as_mut() {
                let _ = dev.reset();
            }
        }
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
            MigState::Running | MigState::RunningP2p => v1::RUNNING,
            MigState::PreCopy | MigState::PreCopyP2p => v1::RUNNING | v1::SAVING, // 011: pre-copy
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
                if !matches!(
                    self.inner.state(),
                    MigState::StopCopy | MigState::PreCopy | MigState::PreCopyP2p
                ) {
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
                    x if x == v1::RUNNING | v1::SAVING => MigState::PreCopy,
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
