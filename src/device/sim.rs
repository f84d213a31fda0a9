//! The simulated device: the embedded default.
//!
//! It obeys the kernel's state machine exactly ([`super::fsm`]): a SET walks the
//! kernel's arcs one by one, each arc has the side effects a v2 driver gives it, a
//! failed arc leaves the device in ERROR, and only a reset leaves ERROR.
//!
//! | arc | effect |
//! | --- | --- |
//! | RUNNING(_P2P) → PRE_COPY(_P2P) | a save begins: new data stream; its initial data is the model's `precopy_len()` now; PRE_COPY yields up to the model's current `precopy_len()`, then a temporary end of data (ENOMSG) until a precopy-info query starts the next round |
//! | PRE_COPY_P2P → STOP_COPY | the same stream continues with the rest of the state |
//! | STOP → STOP_COPY | a save begins: new data stream with the whole state |
//! | STOP → RESUMING | a load begins: new data stream for writing |
//! | RESUMING → STOP | the model's final consistency check; a failure fails the arc |
//! | leaving a streaming state | the stream closes |
//!
//! The state comes from a vendor plugin's [`SimModel`]; it is seeded, so two runs
//! with the same spec produce the same bytes. Faults can be injected at any arc, read
//! or write, for the broker's recovery tests.
//!
//! # Pre-copy rounds
//!
//! PRE_COPY yields data in rounds, as mlx5 does. `read_data` serves the stream up
//! to the model's current [`precopy_len`](SimModel::precopy_len) and returns
//! [`DataRead::NotYet`] (ENOMSG) there. `precopy_info` (`VFIO_MIG_GET_PRECOPY_INFO`)
//! is what makes the device prepare its next incremental image: when the reader has
//! read everything up to `precopy_len`, it first calls
//! [`next_precopy_round`](SimModel::next_precopy_round), which may move data
//! dirtied since into the stream. It then reports, as `struct vfio_precopy_info`
//! defines them,
//!
//! ```text
//! initial_bytes = initial_end - pos          (0 once the initial data is read)
//! dirty_bytes   = (precopy_len - max(pos, initial_end)) + model.dirty_bytes()
//! ```
//!
//! where `initial_end` is `precopy_len` when the save began and `pos` what the
//! reader has read: round data not yet read, plus what the model would still
//! re-send. Both saturate at 0. A model without rounds (simgpu) reports its dirty
//! estimate and carries the dirtied data in STOP_COPY. The uAPI leaves open how these
//! numbers relate to what STOP_COPY will stream; `data_size` (MIG_DATA_SIZE) is the
//! length left: during a save `raw_len() - pos`.
//!
//! # A running guest
//!
//! With a dirty rate ([`SimDevice::set_dirty_rate`], the spec's `dirty-rate=N`) the
//! simulated guest keeps writing while the device runs (RUNNING, RUNNING_P2P,
//! PRE_COPY, PRE_COPY_P2P). Every [`MigrationDevice`] call that reaches the device
//! (`state`, `set_state`, `read_data`, `write_data`, `data_size`, `precopy_info`,
//! `reset`, `state_digest`) first accounts the wall-clock time since the last
//! accounting: `rate × elapsed` bytes, in whole
//! rounds of [`SimDevice::ACTIVITY_ROUND_BYTES`] (8 pages of 4 KiB: one
//! [`guest_activity`](SimModel::guest_activity) round of simgpu and xe, which both
//! write 8 pages; mtty's guest is idle and a round changes nothing), the remainder
//! carried exactly (integer nanoseconds). Time while stopped (STOP, STOP_COPY,
//! RESUMING, ERROR) does not count. One accounting runs at most
//! [`SimDevice::MAX_ACTIVITY_ROUNDS`] rounds, so a long idle period (a VMM that
//! waits minutes between two calls) cannot stall the process; rounds past the cap
//! are dropped, as if the guest had been throttled. Rate 0, the default, never
//! calls the model.

use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::DeviceInfo;
#[cfg(test)]
use sha2::{Digest, Sha256};
use std::time::Instant;

use super::fsm::{self, MigState};
use super::{DataRead, MigrationDevice, PrecopyInfo};
use crate::error::{Code, Error, Result};

/// Where a simulated device fails on purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Fail the arc into this state.
    pub fail_arc_into: Option<MigState>,
    /// Fail the read that would return data at or past this stream offset.
    pub fail_read_at: Option<u64>,
    /// Fail the write that would take the stream past this offset.
    pub fail_write_at: Option<u64>,
    /// Fail resets.
    pub fail_reset: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    None,
    /// Reading at `pos`; `initial_end` is where a PRE_COPY save's initial data ends
    /// (0 for a save that began in STOP_COPY).
    Save {
        pos: u64,
        initial_end: u64,
    },
    Load {
        pos: u64,
    },
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// The activity rounds `rate` bytes per second make in `nanos` nanoseconds on top
/// of `carry` byte-nanoseconds left over, and the new carry: rounds at most
/// [`SimDevice::MAX_ACTIVITY_ROUNDS`] (the excess is dropped), the carry always
/// less than one round.
fn activity_rounds(rate: u64, nanos: u128, carry: u128) -> (u32, u128) {
    let unit = u128::from(SimDevice::ACTIVITY_ROUND_BYTES).saturating_mul(NANOS_PER_SECOND);
    let total = u128::from(rate).saturating_mul(nanos).saturating_add(carry);
    let rounds = total.checked_div(unit).unwrap_or(0);
    let rounds = u32::try_from(rounds)
        .unwrap_or(u32::MAX)
        .min(SimDevice::MAX_ACTIVITY_ROUNDS);
    (rounds, total.checked_rem(unit).unwrap_or(0))
}

/// A simulated migratable device.
pub struct SimDevice {
    info: DeviceInfo,
    flags: u64,
    state: MigState,
    model: Box<dyn SimModel>,
    stream: Stream,
    history: Vec<(MigState, MigState)>,
    faults: Faults,
    resets: u32,
    bytes_loaded: u64,
    /// Bytes per second the guest writes while the device runs.
    dirty_rate: u64,
    /// When running time was last accounted; `None` while stopped.
    clock: Option<Instant>,
    /// Byte-nanoseconds accounted but short of a whole round.
    carry: u128,
}

impl SimDevice {
    /// Bytes one activity round stands for: 8 pages of 4 KiB, what one
    /// [`guest_activity`](SimModel::guest_activity) round of the simgpu and xe
    /// models writes (mtty's model does nothing in a round).
    pub const ACTIVITY_ROUND_BYTES: u64 = 8 * 4096;

    /// Most activity rounds one accounting runs (512 MiB of writes): rounds past
    /// it are dropped, so a long idle period cannot stall the process.
    pub const MAX_ACTIVITY_ROUNDS: u32 = 1 << 14;

    /// Sets how many bytes per second the simulated guest writes while the device
    /// runs (0, the default, stops it). Time up to now is accounted at the old rate.
    pub fn set_dirty_rate(&mut self, bytes_per_second: u64) {
        self.account();
        self.dirty_rate = bytes_per_second;
        if bytes_per_second == 0 {
            self.carry = 0;
        }
    }

    /// Bytes per second the simulated guest writes while the device runs.
    pub fn dirty_rate(&self) -> u64 {
        self.dirty_rate
    }

    /// Runs the guest for the time since the last accounting, if the device runs.
    fn account(&mut self) {
        if !self.state.is_running() {
            self.clock = None;
            return;
        }
        let now = Instant::now();
        let Some(last) = self.clock.replace(now) else {
            return;
        };
        if self.dirty_rate == 0 {
            return;
        }
        let nanos = now.saturating_duration_since(last).as_nanos();
        let (rounds, carry) = activity_rounds(self.dirty_rate, nanos, self.carry);
        self.carry = carry;
        if rounds > 0 {
            self.model.guest_activity(rounds);
        }
    }

    /// After a state change: the clock runs from now while the device runs.
    fn restart_clock(&mut self) {
        self.clock = self.state.is_running().then(Instant::now);
    }

    /// Every arc the device has taken, in order: what a test of a migration's
    /// state sequence checks.
    pub fn history(&self) -> &[(MigState, MigState)] {
        &self.history
    }

    /// Injects `faults` (they replace any set before): a read, write or arc
    /// that fails, so that callers' error paths can be exercised.
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// How many times the device was reset.
    pub fn resets(&self) -> u32 {
        self.resets
    }

    /// Bytes written by the last load (RESUMING).
    pub fn bytes_loaded(&self) -> u64 {
        self.bytes_loaded
    }

    /// A device in RUNNING with `flags` (STOP_COPY is always included).
    pub fn new(info: DeviceInfo, flags: u64, model: Box<dyn SimModel>) -> Self {
        SimDevice {
            info,
            flags: flags | fsm::FLAG_STOP_COPY,
            state: MigState::Running,
            model,
            stream: Stream::None,
            history: Vec::new(),
            faults: Faults::default(),
            resets: 0,
            bytes_loaded: 0,
            dirty_rate: 0,
            clock: Some(Instant::now()),
            carry: 0,
        }
    }

    /// Simulates the guest using the device (only while it runs).
    pub fn guest_activity(&mut self, rounds: u32) {
        if self.state.is_running() {
            self.model.guest_activity(rounds);
        }
    }

    fn arc(&mut self, from: MigState, to: MigState) -> Result<()> {
        if self.faults.fail_arc_into == Some(to) {
            return Err(Error::new(
                Code::DeviceTransition,
                format!("injected fault on arc {from} -> {to}"),
            ));
        }
        match (from, to) {
            (MigState::Running | MigState::RunningP2p, MigState::PreCopy | MigState::PreCopyP2p) => {
                self.model.begin_save();
                self.stream = Stream::Save {
                    pos: 0,
                    initial_end: self.model.precopy_len(),
                };
            }
            (MigState::Stop, MigState::StopCopy) => {
                self.model.begin_save();
                self.stream = Stream::Save {
                    pos: 0,
                    initial_end: 0,
                };
            }
            (MigState::PreCopy | MigState::PreCopyP2p, MigState::StopCopy) => {
                // Same stream, continues past the initial bytes.
            }
            (MigState::PreCopy, MigState::PreCopyP2p) | (MigState::PreCopyP2p, MigState::PreCopy) => {}
            (MigState::Stop, MigState::Resuming) => {
                self.model.begin_load();
                self.bytes_loaded = 0;
                self.stream = Stream::Load { pos: 0 };
            }
            (MigState::Resuming, MigState::Stop) => {
                self.stream = Stream::None;
                self.model.end_load().map_err(|e| {
                    Error::new(
                        Code::DeviceLoad,
                        format!(
                            "device refused the state at RESUMING -> STOP: [{}] {}",
                            e.code, e.message
                        ),
                    )
                })?;
            }
            _ => {
                self.stream = Stream::None;
            }
        }
        Ok(())
    }
}

impl fsm::Arcs for SimDevice {
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
        self.arc(from, to)?;
        self.history.push((from, to));
        Ok(())
    }
    fn arc_failed(&mut self, from: MigState) {
        if from == MigState::Resuming {
            self.model.abort_load();
        }
        self.stream = Stream::None;
    }
}

impl MigrationDevice for SimDevice {
    fn backend(&self) -> &'static str {
        "sim"
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn migration_flags(&self) -> u64 {
        self.flags
    }

    fn state(&mut self) -> Result<MigState> {
        self.account();
        Ok(self.state)
    }

    fn set_state(&mut self, target: MigState) -> Result<()> {
        self.account();
        let walked = fsm::walk(self, target);
        self.restart_clock();
        walked
    }

    fn read_data(&mut self, buf: &mut [u8]) -> Result<DataRead> {
        self.account();
        let Stream::Save { pos, initial_end } = self.stream else {
            return Err(Error::new(
                Code::DeviceData,
                format!("no saving data stream in {}", self.state),
            ));
        };
        if self.faults.fail_read_at.is_some_and(|at| pos >= at) {
            return Err(Error::new(
                Code::DeviceData,
                format!("injected read fault at offset {pos}"),
            ));
        }
        let limit = match self.state {
            MigState::PreCopy | MigState::PreCopyP2p => self.model.precopy_len(),
            MigState::StopCopy => u64::MAX,
            other => return Err(Error::new(Code::DeviceData, format!("read in {other}"))),
        };
        let room = usize::try_from(limit.saturating_sub(pos)).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        if want == 0 && limit != u64::MAX {
            return Ok(DataRead::NotYet);
        }
        let n = self.model.read_raw(pos, buf.get_mut(..want).unwrap_or(&mut []));
        if n == 0 {
            return Ok(if limit == u64::MAX {
                DataRead::End
            } else {
                DataRead::NotYet
            });
        }
        self.stream = Stream::Save {
            pos: pos.saturating_add(n as u64),
            initial_end,
        };
        Ok(DataRead::Data(n))
    }

    fn write_data(&mut self, buf: &[u8]) -> Result<()> {
        self.account();
        let Stream::Load { pos } = self.stream else {
            return Err(Error::new(
                Code::DeviceData,
                format!("no resuming data stream in {}", self.state),
            ));
        };
        let end = pos.saturating_add(buf.len() as u64);
        if self.faults.fail_write_at.is_some_and(|at| end > at) {
            return Err(Error::new(
                Code::DeviceData,
                format!("injected write fault at offset {pos}"),
            ));
        }
        self.model.load_data(buf).map_err(|e| {
            Error::new(
                Code::DeviceData,
                format!("device refused a write: [{}] {}", e.code, e.message),
            )
        })?;
        self.stream = Stream::Load { pos: end };
        self.bytes_loaded = end;
        Ok(())
    }

    fn data_size(&mut self) -> Result<u64> {
        self.account();
        match (self.state, self.stream) {
            (MigState::PreCopy | MigState::PreCopyP2p | MigState::StopCopy, Stream::Save { pos, .. }) => {
                Ok(self.model.raw_len().saturating_sub(pos))
            }
            _ => Ok(self.model.raw_len()),
        }
    }

    fn precopy_info(&mut self) -> Result<PrecopyInfo> {
        self.account();
        match (self.state, self.stream) {
            (MigState::PreCopy | MigState::PreCopyP2p, Stream::Save { pos, initial_end }) => {
                if pos >= self.model.precopy_len() {
                    // Everything available was read: the device prepares its next
                    // incremental image.
                    self.model.next_precopy_round();
                }
                let pending = self.model.precopy_len().saturating_sub(pos.max(initial_end));
                Ok(PrecopyInfo {
                    initial_bytes: initial_end.saturating_sub(pos),
                    dirty_bytes: pending.saturating_add(self.model.dirty_bytes()),
                })
            }
            (s, _) => Err(Error::new(
                Code::DeviceData,
                format!("precopy info in {s} (EINVAL)"),
            )),
        }
    }

    fn reset(&mut self) -> Result<()> {
        self.account();
        if self.faults.fail_reset {
            return Err(Error::new(Code::DeviceReset, "injected reset fault"));
        }
        if self.state == MigState::Resuming {
            self.model.abort_load();
        }
        self.resets = self.resets.saturating_add(1);
        self.stream = Stream::None;
        self.state = MigState::Running;
        self.restart_clock();
        Ok(())
    }

    fn state_digest(&mut self) -> Option<[u8; 32]> {
        self.account();
        Some(self.model.digest())
    }
}

#[cfg(test)]
/// A trivial deterministic model for tests of the device layer alone: `len`
/// bytes derived from `seed`, the first `precopy` of them available in PRE_COPY.
pub(crate) struct PatternModel {
    seed: u64,
    len: u64,
    precopy: u64,
    loading: Option<Sha256>,
    loaded_len: u64,
    digest: Option<[u8; 32]>,
}

#[cfg(test)]
impl PatternModel {
    /// A model of `len` bytes.
    pub fn new(seed: u64, len: u64, precopy: u64) -> Self {
        PatternModel {
            seed,
            len,
            precopy,
            loading: None,
            loaded_len: 0,
            digest: None,
        }
    }

    fn byte(&self, i: u64) -> u8 {
        (i ^ self.seed.rotate_left(32))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .to_le_bytes()[7]
    }
}

#[cfg(test)]
impl SimModel for PatternModel {
    fn raw_len(&self) -> u64 {
        self.len
    }
    fn read_raw(&mut self, offset: u64, buf: &mut [u8]) -> usize {
        let n = usize::try_from(self.len.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        for (i, b) in buf.iter_mut().take(n).enumerate() {
            *b = self.byte(offset.saturating_add(i as u64));
        }
        n
    }
    fn precopy_len(&self) -> u64 {
        self.precopy.min(self.len)
    }
    fn begin_load(&mut self) {
        self.loading = Some(Sha256::new());
        self.loaded_len = 0;
    }
    fn load_data(&mut self, data: &[u8]) -> std::result::Result<(), mdevmig_plugin_api::VendorError> {
        if let Some(h) = &mut self.loading {
            h.update(data);
        }
        self.loaded_len = self.loaded_len.saturating_add(data.len() as u64);
        Ok(())
    }
    fn end_load(&mut self) -> std::result::Result<(), mdevmig_plugin_api::VendorError> {
        if self.loaded_len != self.len {
            return Err(mdevmig_plugin_api::VendorError::new(
                "vendor.pattern.bad_length",
                format!("loaded {} of {} bytes", self.loaded_len, self.len),
            ));
        }
        self.digest = self.loading.take().map(|h| h.finalize().into());
        Ok(())
    }
    fn abort_load(&mut self) {
        self.loading = None;
    }
    fn digest(&mut self) -> [u8; 32] {
        if let Some(d) = self.digest {
            return d;
        }
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut off = 0;
        loop {
            let n = self.read_raw(off, &mut buf);
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            off += n as u64;
        }
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::fsm::{FLAG_P2P, FLAG_PRE_COPY};

    fn dev(flags: u64) -> SimDevice {
        SimDevice::new(
            DeviceInfo::default(),
            flags,
            Box::new(PatternModel::new(1, 10_000, 100)),
        )
    }

    fn read_all(d: &mut SimDevice) -> (Vec<u8>, DataRead) {
        let mut out = Vec::new();
        let mut buf = [0u8; 777];
        loop {
            match d.read_data(&mut buf).unwrap() {
                DataRead::Data(n) => out.extend_from_slice(&buf[..n]),
                other => return (out, other),
            }
        }
    }

    #[test]
    fn pre_copy_yields_initial_bytes_then_a_temporary_end() {
        let mut d = dev(FLAG_P2P | FLAG_PRE_COPY);
        d.set_state(MigState::PreCopy).unwrap();
        assert_eq!(d.precopy_info().unwrap().initial_bytes, 100);
        let (first, end) = read_all(&mut d);
        assert_eq!((first.len(), end), (100, DataRead::NotYet));
        assert_eq!(d.precopy_info().unwrap().initial_bytes, 0);
        d.set_state(MigState::StopCopy).unwrap();
        assert_eq!(
            d.history.last(),
            Some(&(MigState::PreCopyP2p, MigState::StopCopy))
        );
        let (rest, end) = read_all(&mut d);
        assert_eq!((rest.len(), end), (9_900, DataRead::End));
        assert!(d.precopy_info().is_err());
    }

    #[test]
    fn a_failed_arc_leaves_error_and_only_reset_leaves_it() {
        let mut d = dev(0);
        d.set_faults(Faults {
            fail_arc_into: Some(MigState::StopCopy),
            ..Faults::default()
        });
        assert_eq!(
            d.set_state(MigState::StopCopy).unwrap_err().code,
            Code::DeviceTransition
        );
        assert_eq!(d.state().unwrap(), MigState::Error);
        assert!(d.set_state(MigState::Running).is_err());
        d.reset().unwrap();
        assert_eq!(d.state().unwrap(), MigState::Running);
    }

    #[test]
    fn resuming_to_stop_is_the_final_check() {
        let mut d = dev(0);
        d.set_state(MigState::Resuming).unwrap();
        d.write_data(&[0; 10]).unwrap();
        assert_eq!(d.set_state(MigState::Stop).unwrap_err().code, Code::DeviceLoad);
        assert_eq!(d.state().unwrap(), MigState::Error);
    }

    #[test]
    fn a_load_of_the_saved_bytes_reproduces_the_digest() {
        let mut src = dev(0);
        let digest = src.state_digest().unwrap();
        src.set_state(MigState::StopCopy).unwrap();
        let (bytes, _) = read_all(&mut src);
        let mut dst = SimDevice::new(
            DeviceInfo::default(),
            0,
            Box::new(PatternModel::new(2, 10_000, 0)),
        );
        assert_ne!(dst.state_digest().unwrap(), digest);
        dst.set_state(MigState::Resuming).unwrap();
        for part in bytes.chunks(333) {
            dst.write_data(part).unwrap();
        }
        dst.set_state(MigState::Stop).unwrap();
        assert_eq!(dst.state_digest().unwrap(), digest);
    }

    /// What a [`RoundModel`] saw.
    #[derive(Debug, Default)]
    struct Probe {
        /// guest_activity calls and the rounds of each.
        activity: Vec<u32>,
        /// next_precopy_round calls.
        next_rounds: u32,
    }

    /// A model whose pre-copy grows in rounds: each activity round dirties `grow`
    /// bytes, each pre-copy round moves them into the stream.
    struct RoundModel {
        inner: PatternModel,
        probe: std::sync::Arc<std::sync::Mutex<Probe>>,
        initial: u64,
        precopy: u64,
        grow: u64,
        dirty: u64,
    }

    impl SimModel for RoundModel {
        fn raw_len(&self) -> u64 {
            self.inner.raw_len()
        }
        fn read_raw(&mut self, offset: u64, buf: &mut [u8]) -> usize {
            self.inner.read_raw(offset, buf)
        }
        fn begin_save(&mut self) {
            self.precopy = self.initial;
            self.dirty = 0;
        }
        fn precopy_len(&self) -> u64 {
            self.precopy
        }
        fn dirty_bytes(&self) -> u64 {
            self.dirty
        }
        fn next_precopy_round(&mut self) {
            self.probe.lock().unwrap().next_rounds += 1;
            self.precopy = (self.precopy + self.dirty).min(self.raw_len());
            self.dirty = 0;
        }
        fn guest_activity(&mut self, rounds: u32) {
            self.probe.lock().unwrap().activity.push(rounds);
            self.dirty += u64::from(rounds) * self.grow;
        }
        fn begin_load(&mut self) {
            self.inner.begin_load();
        }
        fn load_data(&mut self, data: &[u8]) -> std::result::Result<(), mdevmig_plugin_api::VendorError> {
            self.inner.load_data(data)
        }
        fn end_load(&mut self) -> std::result::Result<(), mdevmig_plugin_api::VendorError> {
            self.inner.end_load()
        }
        fn abort_load(&mut self) {
            self.inner.abort_load();
        }
        fn digest(&mut self) -> [u8; 32] {
            self.inner.digest()
        }
    }

    fn round_dev(grow: u64) -> (SimDevice, std::sync::Arc<std::sync::Mutex<Probe>>) {
        let probe = std::sync::Arc::default();
        let model = RoundModel {
            inner: PatternModel::new(3, 10_000, 0),
            probe: std::sync::Arc::clone(&probe),
            initial: 100,
            precopy: 100,
            grow,
            dirty: 0,
        };
        (
            SimDevice::new(DeviceInfo::default(), FLAG_P2P | FLAG_PRE_COPY, Box::new(model)),
            probe,
        )
    }

    fn rounds_seen(probe: &std::sync::Mutex<Probe>) -> u64 {
        probe.lock().unwrap().activity.iter().map(|r| u64::from(*r)).sum()
    }

    fn sleep_ms(ms: u64) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }

    #[test]
    fn activity_rounds_carry_the_remainder_exactly_and_cap() {
        let round = SimDevice::ACTIVITY_ROUND_BYTES;
        // One round per second, in half seconds: none, then one, nothing lost.
        let (r, c) = activity_rounds(round, 500_000_000, 0);
        assert_eq!(r, 0);
        let (r, c) = activity_rounds(round, 500_000_000, c);
        assert_eq!((r, c), (1, 0));
        // 1000 steps of 1 ms at 3 rounds per second: exactly 3 rounds.
        let (mut total, mut carry) = (0u32, 0u128);
        for _ in 0..1000 {
            let (r, c) = activity_rounds(3 * round, 1_000_000, carry);
            total += r;
            carry = c;
        }
        assert_eq!((total, carry), (3, 0));
        // 1.5 rounds' worth: one round and half a round carried.
        let (r, c) = activity_rounds(round + round / 2, NANOS_PER_SECOND, 0);
        assert_eq!(r, 1);
        assert_eq!(c, u128::from(round / 2) * NANOS_PER_SECOND);
        // The cap, and no overflow at the extremes.
        assert_eq!(
            activity_rounds(u64::MAX, 10 * NANOS_PER_SECOND, 0).0,
            SimDevice::MAX_ACTIVITY_ROUNDS
        );
        assert_eq!(
            activity_rounds(u64::MAX, u128::MAX, u128::MAX).0,
            SimDevice::MAX_ACTIVITY_ROUNDS
        );
        assert_eq!(activity_rounds(0, u128::MAX, 0), (0, 0));
    }

    #[test]
    fn a_dirty_rate_dirties_only_while_the_device_runs() {
        let (mut d, probe) = round_dev(1);
        // One round per millisecond.
        d.set_dirty_rate(SimDevice::ACTIVITY_ROUND_BYTES * 1000);
        assert_eq!(d.dirty_rate(), SimDevice::ACTIVITY_ROUND_BYTES * 1000);
        sleep_ms(60);
        d.state().unwrap();
        let running = rounds_seen(&probe);
        assert!(running >= 50, "{running} rounds in 60 ms of RUNNING");
        // PRE_COPY runs too.
        d.set_state(MigState::PreCopy).unwrap();
        let at_precopy = rounds_seen(&probe);
        sleep_ms(30);
        d.data_size().unwrap();
        assert!(rounds_seen(&probe) >= at_precopy + 25);
        // Stopped: STOP_COPY, STOP, RESUMING, ERROR do not count.
        d.set_state(MigState::StopCopy).unwrap();
        let stopped = rounds_seen(&probe);
        sleep_ms(40);
        d.state().unwrap();
        d.data_size().unwrap();
        d.set_state(MigState::Stop).unwrap();
        sleep_ms(40);
        d.state_digest().unwrap();
        d.set_state(MigState::Resuming).unwrap();
        sleep_ms(40);
        d.write_data(&[0; 4]).unwrap();
        d.set_faults(Faults {
            fail_arc_into: Some(MigState::Stop),
            ..Faults::default()
        });
        assert!(d.set_state(MigState::Stop).is_err());
        assert_eq!(d.state().unwrap(), MigState::Error);
        sleep_ms(40);
        d.state().unwrap();
        assert_eq!(rounds_seen(&probe), stopped);
        // A reset runs the device again, from now: the stopped time stays lost.
        d.set_faults(Faults::default());
        d.reset().unwrap();
        d.state().unwrap();
        let resumed = rounds_seen(&probe);
        assert!(
            resumed < stopped + 40,
            "{} rounds right after the reset",
            resumed - stopped
        );
        sleep_ms(30);
        d.state().unwrap();
        assert!(rounds_seen(&probe) >= resumed + 25);
        // STOP -> RUNNING restarts the clock too.
        d.set_state(MigState::Stop).unwrap();
        sleep_ms(100);
        let before = rounds_seen(&probe);
        d.set_state(MigState::Running).unwrap();
        d.state().unwrap();
        assert!(rounds_seen(&probe) < before + 40);
    }

    #[test]
    fn rate_zero_never_calls_the_model() {
        let (mut d, probe) = round_dev(1);
        assert_eq!(d.dirty_rate(), 0);
        sleep_ms(20);
        d.state().unwrap();
        d.set_state(MigState::PreCopy).unwrap();
        sleep_ms(20);
        d.precopy_info().unwrap();
        d.data_size().unwrap();
        d.set_state(MigState::Running).unwrap();
        // A rate set and cleared again: nothing carried over.
        d.set_dirty_rate(1);
        d.set_dirty_rate(0);
        sleep_ms(20);
        d.state().unwrap();
        d.state_digest().unwrap();
        d.reset().unwrap();
        assert!(probe.lock().unwrap().activity.is_empty());
    }

    #[test]
    fn one_accounting_runs_at_most_the_cap() {
        let (mut d, probe) = round_dev(1);
        d.set_dirty_rate(u64::MAX);
        sleep_ms(5);
        d.state().unwrap();
        sleep_ms(5);
        d.state().unwrap();
        let calls = probe.lock().unwrap().activity.clone();
        assert_eq!(calls, vec![SimDevice::MAX_ACTIVITY_ROUNDS; 2]);
    }

    #[test]
    fn precopy_info_starts_a_round_once_everything_was_read() {
        let (mut d, probe) = round_dev(50);
        assert_eq!(d.data_size().unwrap(), 10_000);
        d.set_state(MigState::PreCopy).unwrap();
        assert_eq!(
            d.precopy_info().unwrap(),
            PrecopyInfo {
                initial_bytes: 100,
                dirty_bytes: 0
            }
        );
        // Dirtied while the initial data is being read: reported, no round yet.
        d.guest_activity(2);
        let mut buf = [0u8; 40];
        assert_eq!(d.read_data(&mut buf).unwrap(), DataRead::Data(40));
        assert_eq!(d.data_size().unwrap(), 10_000 - 40);
        assert_eq!(
            d.precopy_info().unwrap(),
            PrecopyInfo {
                initial_bytes: 60,
                dirty_bytes: 100
            }
        );
        assert_eq!(probe.lock().unwrap().next_rounds, 0);
        let (rest, end) = read_all(&mut d);
        assert_eq!((rest.len(), end), (60, DataRead::NotYet));
        // All read: the query makes the next image, which read() then serves.
        assert_eq!(
            d.precopy_info().unwrap(),
            PrecopyInfo {
                initial_bytes: 0,
                dirty_bytes: 100
            }
        );
        assert_eq!(probe.lock().unwrap().next_rounds, 1);
        let mut part = [0u8; 30];
        assert_eq!(d.read_data(&mut part).unwrap(), DataRead::Data(30));
        // Part of the round read: no new round, the rest is still dirty data.
        d.guest_activity(1);
        assert_eq!(
            d.precopy_info().unwrap(),
            PrecopyInfo {
                initial_bytes: 0,
                dirty_bytes: 70 + 50
            }
        );
        assert_eq!(probe.lock().unwrap().next_rounds, 1);
        let (rest, end) = read_all(&mut d);
        assert_eq!((rest.len(), end), (70, DataRead::NotYet));
        assert_eq!(
            d.precopy_info().unwrap(),
            PrecopyInfo {
                initial_bytes: 0,
                dirty_bytes: 50
            }
        );
        let (rest, _) = read_all(&mut d);
        assert_eq!(rest.len(), 50);
        // Idle: a round adds nothing, the temporary end of data stays.
        assert_eq!(d.precopy_info().unwrap(), PrecopyInfo::default());
        assert_eq!(d.read_data(&mut buf).unwrap(), DataRead::NotYet);
        assert_eq!(probe.lock().unwrap().next_rounds, 3);
        // STOP_COPY continues the same stream to its end.
        d.set_state(MigState::StopCopy).unwrap();
        assert_eq!(d.data_size().unwrap(), 10_000 - 250);
        let (rest, end) = read_all(&mut d);
        assert_eq!((rest.len(), end), (10_000 - 250, DataRead::End));
        assert_eq!(d.data_size().unwrap(), 0);
        d.set_state(MigState::Stop).unwrap();
        assert_eq!(d.data_size().unwrap(), 10_000);
    }

    #[test]
    fn reads_and_writes_outside_their_states_fail() {
        let mut d = dev(0);
        assert!(d.read_data(&mut [0; 4]).is_err());
        assert!(d.write_data(&[0; 4]).is_err());
        d.set_state(MigState::StopCopy).unwrap();
        assert!(d.write_data(&[0; 4]).is_err());
    }
}
