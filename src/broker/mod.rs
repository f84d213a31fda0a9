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
    /// Use PRE_COPY when the device supports it: initial bytes flow while the
    /// device still runs.
    pub precopy: bool,
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
            version: None,
            session: None,
            chunk_size: crate::codec::default_chunk_size(),
            omit: Vec::new(),
            produce_window: None,
        }
    }
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
