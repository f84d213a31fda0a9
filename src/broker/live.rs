//! PRE_COPY rounds: what a save does at the device's temporary end of data.
//!
//! A device in PRE_COPY yields its state while the guest runs, then says "no
//! more now" (`read()` fails with ENOMSG, include/uapi/linux/vfio.h). That ends a
//! *round*. Who decides what happens next is the save's [`Mode`]:
//!
//! * [`Mode::Policy`] (`save --precopy`): the save is its own VMM. It asks the
//!   device what STOP_COPY would still move (MIG_DATA_SIZE), in envelope bytes
//!   ([`EnvCost`]), and stops the device once that fits the budget
//!   ([`Converge`]); otherwise it asks for precopy info, which lets the device
//!   prepare its next round (mlx5 makes its next incremental image there), and
//!   reads again.
//! * [`Mode::Driven`] (the migration region): the VMM decides. The save parks
//!   ([`LiveCtl`]) until the region kicks it: a precopy-info query, a state
//!   change, or an abort.
//!
//! Either way, at each temporary end the writer first sends every complete chunk,
//! so the reader holds all the data the device gave except the chunk being built.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::{Converge, LiveReport, Round, StopReason};
use crate::codec::{record::FRAME_LEN, Header};
use crate::device::{MigState, MigrationDevice};
use crate::error::{Code, Error, Result};

/// A writer that counts the bytes it passes on, readable from another thread.
pub(crate) struct Counted<W> {
    inner: W,
    n: Arc<AtomicU64>,
}

impl<W> Counted<W> {
    pub(crate) fn new(inner: W, n: Arc<AtomicU64>) -> Self {
        Counted { inner, n }
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n.fetch_add(k as u64, Ordering::Relaxed);
        Ok(k)
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let k = self.inner.write_vectored(bufs)?;
        self.n.fetch_add(k as u64, Ordering::Relaxed);
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Envelope bytes that carrying raw bytes still costs, from a stream's header:
/// the data, a frame per chunk (one more per section for its partial last
/// chunk), an end record per streamed section and the trailer. An upper bound
/// for the rest of a stream whose header is `header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvCost {
    chunk_size: u64,
    sections: u64,
    ends: u64,
}

impl EnvCost {
    /// The cost model of a stream with this header.
    pub fn of(header: &Header) -> Self {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        EnvCost {
            chunk_size: u64::from(header.chunk_size).max(1),
            sections: count(header.sections.len()),
            ends: count(header.sections.iter().filter(|s| s.streamed()).count()),
        }
    }

    /// The cost model when the header is not known yet: one section of each
    /// kind, chunks of `chunk_size`.
    pub fn rough(chunk_size: u32) -> Self {
        EnvCost {
            chunk_size: u64::from(chunk_size).max(1),
            sections: 2,
            ends: 1,
        }
    }

    /// Envelope bytes to carry `raw` more data bytes and end the stream.
    pub fn rest(&self, raw: u64) -> u64 {
        let frame = FRAME_LEN as u64;
        let chunks = raw.div_ceil(self.chunk_size).saturating_add(self.sections);
        raw.saturating_add(chunks.saturating_mul(frame))
            .saturating_add(self.ends.saturating_add(1).saturating_mul(frame))
    }
}

/// What the region and its save worker share while a live save runs.
#[derive(Default)]
pub(crate) struct LiveCtl {
    state: Mutex<CtlState>,
    cv: Condvar,
    /// Envelope bytes written to the data fd so far.
    pub(crate) written: Arc<AtomicU64>,
    /// Raw bytes read from the device (counted under the device lock).
    pub(crate) taken: Arc<AtomicU64>,
    /// Data bytes the writer has written to the data fd.
    emitted: AtomicU64,
    /// The region moved the device to STOP_COPY.
    stopped: AtomicBool,
    /// Bumped (under the lock) by the region to wake a parked worker. The worker
    /// reads it before each device read, so a kick that comes between a read
    /// that found nothing and the worker parking is not lost.
    kick: AtomicU64,
}

/// The part of [`LiveCtl`] behind its lock.
#[derive(Default)]
pub(crate) struct CtlState {
    /// The worker waits at a temporary end of data, every complete chunk sent.
    pub(crate) parked: bool,
    /// The VMM left PRE_COPY for RUNNING: the save is abandoned.
    abort: bool,
    /// When the region moved the device to STOP_COPY, and the bytes written then.
    stop: Option<(Instant, u64)>,
    /// The save worker has finished (either way).
    pub(crate) finished: bool,
    /// The stream's cost model, once the worker has its header.
    pub(crate) cost: Option<EnvCost>,
}

impl LiveCtl {
    /// Raw bytes the save has taken from the device but not yet written to the
    /// data fd (being hashed, or in the chunk being built). An over-estimate
    /// for a moment after each write, never an under-estimate.
    pub(crate) fn in_flight(&self) -> u64 {
        self.taken
            .load(Ordering::Acquire)
            .saturating_sub(self.emitted.load(Ordering::Acquire))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, CtlState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes a parked worker to read again (after a state change or a
    /// precopy-info query that may have given the device more to send).
    pub(crate) fn kick(&self) {
        let mut st = self.lock();
        self.kick.fetch_add(1, Ordering::AcqRel);
        st.parked = false;
        self.cv.notify_all();
    }

    /// The region moved the device to STOP_COPY at `at`.
    pub(crate) fn stopped(&self, at: Instant) {
        let mut st = self.lock();
        st.stop = Some((at, self.written.load(Ordering::Relaxed)));
        self.stopped.store(true, Ordering::Release);
        self.kick.fetch_add(1, Ordering::AcqRel);
        st.parked = false;
        self.cv.notify_all();
    }

    /// Whether the VMM abandoned the save.
    pub(crate) fn aborted(&self) -> bool {
        self.lock().abort
    }

    /// The VMM abandons the save.
    pub(crate) fn abort(&self) {
        let mut st = self.lock();
        st.abort = true;
        self.cv.notify_all();
    }

    /// The worker is done.
    pub(crate) fn finish(&self) {
        let mut st = self.lock();
        st.finished = true;
        st.parked = false;
        self.cv.notify_all();
    }
}

/// Who decides at a temporary end of data.
pub(crate) enum Mode {
    /// The save itself, by a [`Converge`] policy.
    Policy(Converge),
    /// The VMM, through the migration region.
    Driven(Arc<LiveCtl>),
}

/// A save's PRE_COPY bookkeeping and decisions.
pub(crate) struct Live {
    mode: Mode,
    written: Arc<AtomicU64>,
    cost: Option<EnvCost>,
    pub(crate) in_precopy: bool,
    started: Instant,
    round_started: Instant,
    round_from: u64,
    round_raw: u64,
    rounds: Vec<Round>,
    stop: Option<(Instant, u64)>,
    left_at_stop: u64,
    reason: StopReason,
    /// The region's kick count seen before the last device read.
    kick_seen: u64,
}

impl Live {
    pub(crate) fn new(mode: Mode) -> Self {
        let written = match &mode {
            Mode::Policy(_) => Arc::new(AtomicU64::new(0)),
            Mode::Driven(ctl) => ctl.written.clone(),
        };
        let now = Instant::now();
        Live {
            mode,
            written,
            cost: None,
            in_precopy: false,
            started: now,
            round_started: now,
            round_from: 0,
            round_raw: 0,
            rounds: Vec::new(),
            stop: None,
            left_at_stop: 0,
            reason: StopReason::NoPrecopy,
            kick_seen: 0,
        }
    }

    /// The counter the output writer must add to.
    pub(crate) fn counter(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    fn budget(&self) -> Option<u64> {
        match &self.mode {
            Mode::Policy(c) => c.downtime_bytes,
            Mode::Driven(_) => None,
        }
    }

    /// Puts the device where the copy starts. A policy save moves it to PRE_COPY
    /// when `precopy` (asked for and offered), else to STOP_COPY; a driven save
    /// finds it where the region put it. `raw_estimate` is the device's size
    /// estimate, for the report of a save that never pre-copies.
    pub(crate) fn start(
        &mut self,
        dev: &mut dyn MigrationDevice,
        precopy: bool,
        header: &Header,
        raw_estimate: u64,
    ) -> Result<()> {
        let cost = EnvCost::of(header);
        self.cost = Some(cost);
        let now = Instant::now();
        (self.started, self.round_started) = (now, now);
        let in_precopy = match &self.mode {
            Mode::Policy(_) => {
                dev.set_state(if precopy {
                    MigState::PreCopy
                } else {
                    MigState::StopCopy
                })?;
                precopy
            }
            Mode::Driven(ctl) => {
                ctl.lock().cost = Some(cost);
                matches!(dev.state()?, MigState::PreCopy | MigState::PreCopyP2p)
            }
        };
        self.in_precopy = in_precopy;
        if !in_precopy {
            let at = match &self.mode {
                Mode::Driven(ctl) => ctl.lock().stop.map_or(now, |(t, _)| t),
                Mode::Policy(_) => now,
            };
            self.stop = Some((at, 0));
            self.left_at_stop = cost.rest(raw_estimate);
            self.reason = StopReason::NoPrecopy;
        }
        Ok(())
    }

    /// The writer has written `emitted` data bytes to the output.
    pub(crate) fn emitted(&self, emitted: u64) {
        if let Mode::Driven(ctl) = &self.mode {
            ctl.emitted.store(emitted, Ordering::Release);
        }
    }

    /// Raw bytes read while in PRE_COPY.
    pub(crate) fn count_raw(&mut self, n: usize) {
        if self.in_precopy {
            self.round_raw = self.round_raw.saturating_add(n as u64);
        }
    }

    /// Before each device read: a driven save notices the region's STOP_COPY.
    pub(crate) fn before_read(&mut self) {
        if let Mode::Driven(ctl) = &self.mode {
            self.kick_seen = ctl.kick.load(Ordering::Acquire);
            if self.in_precopy && ctl.stopped.load(Ordering::Acquire) {
                self.stopped_by_vmm(ctl.clone());
            }
        }
    }

    fn stopped_by_vmm(&mut self, ctl: Arc<LiveCtl>) {
        self.end_round();
        let (at, written) = ctl.lock().stop.unwrap_or((Instant::now(), 0));
        self.stop = Some((at, written));
        self.in_precopy = false;
        self.reason = StopReason::Vmm;
    }

    fn end_round(&mut self) {
        let now = Instant::now();
        let written = self.written.load(Ordering::Relaxed);
        // The save's own rounds are all reported, empty ones too (they count
        // towards its limit); a VMM's kicks that found nothing are not rounds.
        if self.round_raw > 0 || matches!(self.mode, Mode::Policy(_)) {
            self.rounds.push(Round {
                bytes: written.saturating_sub(self.round_from),
                raw_bytes: self.round_raw,
                seconds: now.duration_since(self.round_started).as_secs_f64(),
            });
        }
        self.round_from = written;
        self.round_raw = 0;
        self.round_started = now;
    }

    /// The device said "no more now" in PRE_COPY; every complete chunk has been
    /// written and the writer holds `held` data bytes. Decides what comes next;
    /// on return the save reads again.
    pub(crate) fn at_temporary_end(&mut self, dev: &mut dyn MigrationDevice, held: u64) -> Result<()> {
        match &self.mode {
            Mode::Policy(c) => {
                let c = *c;
                self.policy_round_end(dev, held, c)
            }
            Mode::Driven(ctl) => {
                let ctl = ctl.clone();
                self.park(&ctl)
            }
        }
    }

    fn policy_round_end(&mut self, dev: &mut dyn MigrationDevice, held: u64, c: Converge) -> Result<()> {
        self.end_round();
        let cost = self
            .cost
            .ok_or_else(|| Error::new(Code::Internal, "live save not started"))?;
        let left = cost.rest(held.saturating_add(dev.data_size()?));
        let rounds = u32::try_from(self.rounds.len()).unwrap_or(u32::MAX);
        let reason = c.decide(rounds, left, self.started.elapsed());
        match reason {
            Some(reason) => {
                let at = Instant::now();
                dev.set_state(MigState::StopCopy)?;
                self.stop = Some((at, self.written.load(Ordering::Relaxed)));
                self.left_at_stop = left;
                self.reason = reason;
                self.in_precopy = false;
                Ok(())
            }
            // The query that lets the device prepare its next round.
            None => dev.precopy_info().map(|_| ()),
        }
    }

    fn park(&mut self, ctl: &LiveCtl) -> Result<()> {
        self.end_round();
        let mut st = ctl.lock();
        st.parked = true;
        ctl.cv.notify_all();
        while ctl.kick.load(Ordering::Acquire) == self.kick_seen && !st.abort {
            st = ctl.cv.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        st.parked = false;
        if st.abort {
            return Err(Error::new(
                Code::DeviceTransition,
                "the VMM left PRE_COPY for RUNNING: save abandoned",
            ));
        }
        drop(st);
        self.before_read();
        Ok(())
    }

    /// The trailer is written: the report.
    pub(crate) fn report(mut self) -> LiveReport {
        if self.in_precopy {
            // A stream that ended in PRE_COPY (the whole state pre-copied).
            self.end_round();
        }
        let now = Instant::now();
        let written = self.written.load(Ordering::Relaxed);
        let (at, before) = self.stop.unwrap_or((now, written));
        let downtime_bytes = written.saturating_sub(before);
        if self.reason == StopReason::Vmm {
            self.left_at_stop = downtime_bytes;
        }
        LiveReport {
            precopy_seconds: at.saturating_duration_since(self.started).as_secs_f64(),
            downtime_bytes,
            downtime_seconds: now.saturating_duration_since(at).as_secs_f64(),
            left_at_stop: self.left_at_stop,
            converged: self.budget().is_none_or(|b| self.left_at_stop <= b),
            stop_reason: self.reason,
            rounds: self.rounds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_cost_bounds_a_real_stream() {
        let h = crate::codec::Header {
            flags: 0,
            state_version: 1,
            min_version: 1,
            chunk_size: 4096,
            key_id: crate::SigningKeyPair::generate().id(),
            session_nonce: [0; 32],
            stream_id: [0; 16],
            vendor: "v".into(),
            device_type: "t".into(),
            attributes: Default::default(),
            sections: vec![crate::codec::SectionEntry {
                name: "a".into(),
                version: 1,
                flags: 0,
                length: 10_000,
            }],
        };
        let c = EnvCost::of(&h);
        // 10,000 bytes: 3 chunks + 1 spare frame, plus the trailer.
        assert_eq!(c.rest(10_000), 10_000 + 4 * 88 + 88);
        assert_eq!(c.rest(0), 88 + 88);
    }
}
