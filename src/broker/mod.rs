//! Save (source) and restore (destination) orchestration.
//!
//! ```text
//! save:    RUNNING ─[PRE_COPY: initial bytes]─► STOP_COPY: rest ─► STOP
//!            device raw stream ─► plugin layout (framing checked, stripped)
//!            ─► sections ─► envelope writer (signed chunks) ─► output
//!          any failure: back to RUNNING (reset if that fails too)
//!
//! restore: 1 header parsed and authenticated     (nothing touched yet)
//!          2 compatibility and section policy    (compat::evaluate)
//!          3 each chunk verified                 (signature, sequence)
//!          4 the vendor plugin validates         (whole structured sections)
//!          5 RESUMING, writes to the device      (framing re-inserted)
//!          6 the trailer verified
//!          7 STOP: the driver's final check; RUNNING with --resume
//!          any failure after the device was touched: reset
//! ```
//!
//! Verified and validated data is held back in a bounded buffer (8 MiB by default)
//! before the device is touched, so a state that fits (mtty, hisi_acc, any small
//! device) is verified to its trailer and validated whole before its first byte
//! reaches the kernel. Larger states stream: each structured section is still
//! validated whole before any of it is written, bulk data chunk by chunk, and a
//! failure later in the stream resets the device.

mod guard;
mod live;
pub mod region;
mod restore;
mod save;

pub use restore::restore;
pub use save::save;

use std::io::Read;

use crate::auth::TrustStore;
use crate::codec::ReadOptions;
use crate::codec::StreamReader;

use crate::codec::Header;
use crate::compat::{self, Policy};
use crate::device::{MigState, MigrationDevice};
use crate::error::{Code, Error, Result};
use crate::sandbox::Validation;

/// How to save.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// Use PRE_COPY when the device supports it: state flows in rounds while the
    /// device still runs, until [`SaveOptions::converge`] says to stop it.
    pub precopy: bool,
    /// When a PRE_COPY save stops the device.
    pub converge: Converge,
    /// Emit this state version (converting through the plugin if needed).
    pub version: Option<u32>,
    /// Bind the stream to the destination's session nonce.
    pub session: Option<[u8; 32]>,
    /// Chunk size (a power of two, 4 KiB..16 MiB).
    pub chunk_size: u32,
    /// Sections to leave out (optional ones the destination would skip anyway).
    pub omit: Vec<String>,
    /// The versions the plugin on this host produces, if narrowed.
    pub produce_window: Option<mdevmig_plugin_api::VersionWindow>,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            precopy: false,
            converge: Converge::default(),
            version: None,
            session: None,
            chunk_size: crate::codec::default_chunk_size(),
            omit: Vec::new(),
            produce_window: None,
        }
    }
}

/// When a PRE_COPY save stops the device, as a VMM decides it: after each round
/// (the data the device yields up to its temporary end of data), the save asks
/// the device what STOP_COPY would still move (`VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`,
/// as QEMU's `vfio_state_pending_exact`), turns it into envelope bytes, and stops
/// the device once that fits [`downtime_bytes`](Converge::downtime_bytes).
/// Otherwise it asks for precopy info (`VFIO_MIG_GET_PRECOPY_INFO`, which lets the
/// device prepare its next round) and reads again, up to the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Converge {
    /// Stop once the envelope bytes still to move after the stop are at most
    /// this. `None`: stop after the first round (the device's initial data).
    pub downtime_bytes: Option<u64>,
    /// Stop after this many rounds, converged or not.
    pub max_rounds: u32,
    /// Stop once PRE_COPY has lasted this long, converged or not (checked at the
    /// end of each round).
    pub max_precopy: std::time::Duration,
}

impl Converge {
    /// The decision after a PRE_COPY round, as a VMM makes it: `rounds` rounds
    /// done, `left` envelope bytes STOP_COPY would still move, `elapsed` time in
    /// PRE_COPY. `Some(reason)` means stop the device now. A save that cannot
    /// converge goes on to its limits, even through rounds that move nothing
    /// (a device may find more to send later).
    pub fn decide(&self, rounds: u32, left: u64, elapsed: std::time::Duration) -> Option<StopReason> {
        match self.downtime_bytes {
            None => Some(StopReason::InitialData),
            Some(b) if left <= b => Some(StopReason::Budget),
            Some(_) if rounds >= self.max_rounds => Some(StopReason::MaxRounds),
            Some(_) if elapsed >= self.max_precopy => Some(StopReason::MaxTime),
            Some(_) => None,
        }
    }
}

impl Default for Converge {
    fn default() -> Self {
        Converge {
            downtime_bytes: None,
            max_rounds: 30,
            max_precopy: std::time::Duration::from_secs(60),
        }
    }
}

/// Why a save stopped its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopReason {
    /// No PRE_COPY: not asked for, or the device does not offer it.
    #[default]
    NoPrecopy,
    /// No downtime budget was given: stopped after the initial data.
    InitialData,
    /// What was left fit the downtime budget.
    Budget,
    /// The round limit was reached first.
    MaxRounds,
    /// The PRE_COPY time limit was reached first.
    MaxTime,
    /// The VMM moved the migration region to STOP_COPY.
    Vmm,
}

impl StopReason {
    /// The name in reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::NoPrecopy => "no-precopy",
            StopReason::InitialData => "initial-data",
            StopReason::Budget => "downtime-budget",
            StopReason::MaxRounds => "max-rounds",
            StopReason::MaxTime => "max-precopy-seconds",
            StopReason::Vmm => "vmm",
        }
    }
}

/// One PRE_COPY round: what the device yielded up to a temporary end of data.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Round {
    /// Envelope bytes written to the output during the round.
    pub bytes: u64,
    /// Raw device bytes read during the round.
    pub raw_bytes: u64,
    /// How long the round took.
    pub seconds: f64,
}

/// How a save went live: its PRE_COPY rounds and the downtime it added.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LiveReport {
    /// PRE_COPY rounds, in order: every round of `save --precopy` (an empty one
    /// too), or the rounds that moved data when the VMM drives the region.
    pub rounds: Vec<Round>,
    /// Time from the save's start to STOP_COPY.
    pub precopy_seconds: f64,
    /// Envelope bytes written after the device was stopped (STOP_COPY): the
    /// rest of the state, the chunk the writer held, section ends and trailer.
    pub downtime_bytes: u64,
    /// Time from the move to STOP_COPY to the trailer written.
    pub downtime_seconds: f64,
    /// The save's estimate, when it stopped the device, of the envelope bytes
    /// still to move.
    pub left_at_stop: u64,
    /// Whether what was left when the device stopped fit the downtime budget
    /// (always true when there is no budget).
    pub converged: bool,
    /// Why the device was stopped when it was.
    pub stop_reason: StopReason,
}

/// What a save did.
#[derive(Debug, Clone)]
pub struct SaveReport {
    /// The header written.
    pub header: Header,
    /// Raw bytes read from the device.
    pub raw_bytes: u64,
    /// Data bytes the envelope carries (sections left out are not counted;
    /// streamed sections count at their final length).
    pub data_bytes: u64,
    /// Raw bytes read during PRE_COPY, before STOP_COPY.
    pub precopy_bytes: u64,
    /// Device state digest (simulated devices).
    pub state_digest: Option<[u8; 32]>,
    /// PRE_COPY rounds and downtime.
    pub live: LiveReport,
}

/// A save or restore starts from a device that is not mid-migration.
pub(crate) fn check_idle(dev: &mut dyn MigrationDevice, role: &str) -> Result<()> {
    let start = dev.state()?;
    if matches!(start, MigState::Running | MigState::Stop | MigState::RunningP2p) {
        return Ok(());
    }
    Err(Error::new(
        Code::DeviceTransition,
        format!("{role} is in {start}; a migration starts from RUNNING or STOP (reset it first)"),
    ))
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The session nonce this destination issued, if any.
    pub session: Option<[u8; 32]>,
    /// Operator policy.
    pub policy: Policy,
    /// Leave the device RUNNING (else STOP, for the VMM to resume).
    pub resume: bool,
    /// Bytes of verified data held back before the device is touched.
    pub hold_back: usize,
    /// The versions the plugin on this host loads, if narrowed.
    pub load_window: Option<mdevmig_plugin_api::VersionWindow>,
    /// Where the vendor plugin validates structured sections (a sandboxed child
    /// process unless in-process is chosen explicitly).
    pub validation: Validation,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            session: None,
            policy: Policy::default(),
            resume: false,
            hold_back: 8 << 20,
            load_window: None,
            validation: Validation::default(),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The authenticated header.
    pub header: Header,
    /// The verdict applied.
    pub verdict: compat::Verdict,
    /// Raw bytes written to the device.
    pub written: u64,
    /// Device state digest (simulated devices).
    pub state_digest: Option<[u8; 32]>,
    /// Final device state.
    pub final_state: MigState,
}

/// What [`verify`] found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The authenticated header.
    pub header: Header,
    /// Chunks verified.
    pub chunks: u64,
    /// Data bytes the stream carried (streamed sections at their final length).
    pub data_bytes: u64,
}

/// Verifies a whole stream without a device: the header, every chunk's and
/// section end's signature and place, and the trailer, with the same reader and
/// codes as [`restore`]. `session` is the nonce this destination issued, when the
/// stream must be bound to it.
pub fn verify(input: impl Read, trust: &TrustStore, session: Option<[u8; 32]>) -> Result<VerifyReport> {
    let opts = ReadOptions {
        expected_nonce: session,
        ..Default::default()
    };
    let mut r = StreamReader::open(input, trust, &opts)?;
    let chunks = r.verify_to_end()?;
    Ok(VerifyReport {
        header: r.header().header.clone(),
        chunks,
        data_bytes: r.received(),
    })
}
