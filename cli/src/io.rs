//! The command line's streams, watched for stalls and signals.
//!
//! A save or restore that hangs holds a device mid-migration (a destination in
//! RESUMING, a source in STOP_COPY), so the stream a command reads or writes is
//! wrapped in [`Watched`]:
//!
//! * before each read or write it waits with `poll(2)` for at most the idle
//!   timeout; a peer that moves no byte for that long fails the stream, which the
//!   broker answers by putting the device back (reset, or RUNNING) and the command
//!   reports as `io.idle_timeout`;
//! * SIGINT and SIGTERM set a flag instead of killing the process
//!   ([`install_signal_handlers`]); `poll` returns early on a signal, the next read
//!   or write fails, the device is put back the same way, partial files are
//!   removed as their guards drop, and the command exits `128 + signal`
//!   (`io.interrupted`). A second signal exits at once. SIGPIPE is ignored by Rust
//!   programs; a write to a reader that went away fails with EPIPE and ends the
//!   same way, as signal 13.
//!
//! Pipes and sockets are switched to non-blocking so a write to a reader that
//! stopped reading cannot block past the timeout; regular files and terminals
//! are left as they are (a read or write of a regular file does not stall).

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The signal that asked the command to stop (0: none).
static SIGNAL: std::sync::OnceLock<Arc<AtomicUsize>> = std::sync::OnceLock::new();
/// A watched stream reached its idle timeout.
static STALLED: AtomicBool = AtomicBool::new(false);
/// A write met EPIPE: its reader went away.
static BROKEN_PIPE: AtomicBool = AtomicBool::new(false);

/// The default idle timeout of `save` and `restore`, in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;

fn signal_flag() -> &'static Arc<AtomicUsize> {
    SIGNAL.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// Makes SIGINT and SIGTERM stop the command cleanly (see the module docs). A
/// second one exits at once with status 1.
pub fn install_signal_handlers() {
    let flag = signal_flag();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let shutdown = Arc::new(AtomicBool::new(false));
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&shutdown));
        let _ = signal_hook::flag::register(sig, shutdown);
        let _ = signal_hook::flag::register_usize(sig, Arc::clone(flag), usize::try_from(sig).unwrap_or(0));
    }
}

/// Why a stream stopped, if it was a signal, a broken pipe or the idle timeout:
/// the signal number (13 for a broken pipe), or `Some(0)` for a stall.
pub fn stopped_by() -> Option<usize> {
    match signal_flag().load(Ordering::SeqCst) {
        0 if BROKEN_PIPE.load(Ordering::SeqCst) => Some(13),
        0 if STALLED.load(Ordering::SeqCst) => Some(0),
        0 => None,
        sig => Some(sig),
    }
}

fn interrupted() -> Option<std::io::Error> {
    // Not ErrorKind::Interrupted: read_exact and write_all retry those forever.
    (signal_flag().load(Ordering::SeqCst) != 0).then(|| std::io::Error::other("stopped by a signal"))
}

/// A stream whose every read and write waits at most `idle` for its peer.
pub struct Watched<F: AsFd> {
    inner: F,
    idle: Option<Duration>,
    /// The file status flags to put back when done (set for a pipe or socket
    /// made non-blocking: the flag is shared with every process holding it).
    restore: Option<nix::fcntl::OFlag>,
}

impl<F: AsFd> Watched<F> {
    /// Watches `inner`; `idle` of `None` waits forever (signals still stop it).
    pub fn new(inner: F, idle: Option<Duration>) -> Self {
        let fd = inner.as_fd();
        let mut restore = None;
        if let Ok(st) = nix::sys::stat::fstat(fd) {
            let kind = nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT;
            if kind == nix::sys::stat::SFlag::S_IFIFO || kind == nix::sys::stat::SFlag::S_IFSOCK {
                if let Ok(flags) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL) {
                    let old = nix::fcntl::OFlag::from_bits_truncate(flags);
                    let nonblocking = old | nix::fcntl::OFlag::O_NONBLOCK;
                    if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(nonblocking)).is_ok() {
                        restore = Some(old);
                    }
                }
            }
        }
        Watched { inner, idle, restore }
    }

    /// Waits until the stream is ready for `events`, the idle timeout, or a signal.
    fn wait(&self, events: PollFlags) -> std::io::Result<()> {
        let timeout = match self.idle {
            None => PollTimeout::NONE,
            Some(d) => PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX),
        };
        loop {
            if let Some(e) = interrupted() {
                return Err(e);
            }
            let mut fds = [PollFd::new(self.inner.as_fd(), events)];
            match poll(&mut fds, timeout) {
                Ok(0) => {
                    STALLED.store(true, Ordering::SeqCst);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no byte moved for {} s (the idle timeout)",
                            self.idle.map_or(0, |d| d.as_secs())
                        ),
                    ));
                }
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs `op` when the stream is ready, retrying on EAGAIN and EINTR.
    fn io<T>(
        &mut self,
        events: PollFlags,
        mut op: impl FnMut(&mut F) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        loop {
            self.wait(events)?;
            match op(&mut self.inner) {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    BROKEN_PIPE.store(true, Ordering::SeqCst);
                    return Err(e);
                }
                r => return r,
            }
        }
    }
}

impl<F: AsFd + Read> Read for Watched<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.io(PollFlags::POLLIN, |f| f.read(buf))
    }
}

impl<F: AsFd + Write> Write for Watched<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.io(PollFlags::POLLOUT, |f| f.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        self.io(PollFlags::POLLOUT, |f| f.write_vectored(bufs))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.io(PollFlags::POLLOUT, |f| f.flush())
    }
}

impl<F: AsFd> Drop for Watched<F> {
    fn drop(&mut self) {
        if let Some(old) = self.restore {
            let _ = nix::fcntl::fcntl(self.inner.as_fd(), nix::fcntl::FcntlArg::F_SETFL(old));
        }
    }
}

impl<F: AsFd + AsRawFd> AsRawFd for Watched<F> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.inner.as_raw_fd()
    }
}
