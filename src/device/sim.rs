//! The simulated device: the embedded default.
//!
//! It obeys the kernel's state machine exactly ([`super::fsm`]): a SET walks the
//! kernel's arcs one by one, each arc has the side effects a v2 driver gives it, a
//! failed arc leaves the device in ERROR, and only a reset leaves ERROR.
//!
//! | arc | effect |
//! | --- | --- |
//! | RUNNING(_P2P) → PRE_COPY(_P2P) | a save begins: new data stream, PRE_COPY yields the model's initial bytes, then a temporary end of data (ENOMSG) |
//! | PRE_COPY_P2P → STOP_COPY | the same stream continues with the rest of the state |
//! | STOP → STOP_COPY | a save begins: new data stream with the whole state |
//! | STOP → RESUMING | a load begins: new data stream for writing |
//! | RESUMING → STOP | the model's final consistency check; a failure fails the arc |
//! | leaving a streaming state | the stream closes |
//!
//! The state comes from a vendor plugin's [`SimModel`]; it is seeded, so two runs
//! with the same spec produce the same bytes. Faults can be injected at any arc, read
//! or write, for the broker's recovery tests.

use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::DeviceInfo;
#[cfg(test)]
use sha2::{Digest, Sha256};

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
    Save { pos: u64 },
    Load { pos: u64 },
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
}

impl SimDevice {
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
            (MigState::Running | MigState::RunningP2p, MigState::PreCopy | MigState::PreCopyP2p)
            | (MigState::Stop, MigState::StopCopy) => {
                self.model.begin_save();
                self.stream = Stream::Save { pos: 0 };
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
        Ok(self.state)
    }

    fn set_state(&mut self, target: MigState) -> Result<()> {
        fsm::walk(self, target)
    }

    fn read_data(&mut self, buf: &mut [u8]) -> Result<DataRead> {
        let Stream::Save { pos } = self.stream else {
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
        };
        Ok(DataRead::Data(n))
    }

    fn write_data(&mut self, buf: &[u8]) -> Result<()> {
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
        match self.stream {
            Stream::Save { pos } if self.state == MigState::StopCopy => {
                Ok(self.model.raw_len().saturating_sub(pos))
            }
            _ => Ok(self.model.raw_len()),
        }
    }

    fn precopy_info(&mut self) -> Result<PrecopyInfo> {
        match (self.state, self.stream) {
            (MigState::PreCopy | MigState::PreCopyP2p, Stream::Save { pos }) => Ok(PrecopyInfo {
                initial_bytes: self.model.precopy_len().saturating_sub(pos),
                dirty_bytes: self.model.dirty_bytes(),
            }),
            (s, _) => Err(Error::new(
                Code::DeviceData,
                format!("precopy info in {s} (EINVAL)"),
            )),
        }
    }

    fn reset(&mut self) -> Result<()> {
        if self.faults.fail_reset {
            return Err(Error::new(Code::DeviceReset, "injected reset fault"));
        }
        if self.state == MigState::Resuming {
            self.model.abort_load();
        }
        self.resets = self.resets.saturating_add(1);
        self.stream = Stream::None;
        self.state = MigState::Running;
        Ok(())
    }

    fn state_digest(&mut self) -> Option<[u8; 32]> {
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

    #[test]
    fn reads_and_writes_outside_their_states_fail() {
        let mut d = dev(0);
        assert!(d.read_data(&mut [0; 4]).is_err());
        assert!(d.write_data(&[0; 4]).is_err());
        d.set_state(MigState::StopCopy).unwrap();
        assert!(d.write_data(&[0; 4]).is_err());
    }
}
