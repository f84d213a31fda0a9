//! The device layer: a small trait that mirrors the kernel's VFIO migration v2 uAPI,
//! and its backends.
//!
//! | backend | spec | what it is |
//! | --- | --- | --- |
//! | [`SimDevice`] | `sim:<plugin>/<type>[,seed=N][,dirty-rate=N][,key=value...]` | a simulated device obeying the kernel's state machine exactly, its guest dirtying state at `dirty-rate` bytes per second while it runs; the embedded default |
//! | [`FileDevice`] | `file:<path>,plugin=<p>,type=<t>` | raw vendor state in a file (offline images, imports) |
//! | [`VfioBackend`] | `vfio:<mdev uuid or sysfs path>` | a real mdev or VFIO PCI device through vfio-ioctls |
//! | [`VfioFdBackend`] | (no spec: C's `mdevmig_dev_open_vfio_fd`) | a real device over a VFIO device fd its VMM already owns |
//!
//! The trait is the kernel's interface, not a convenience layer over it: state
//! changes walk the kernel's arcs (those of `vfio_mig_get_next_state()` in
//! drivers/vfio/vfio_main.c), entering a saving or resuming state opens
//! the data stream, PRE_COPY reports initial and dirty bytes and a temporary end of
//! data, and RESUMING to STOP is where the device does its final consistency check.

mod file;
pub(crate) mod fsm;
mod sim;
mod spec;
mod vfio;
mod vfio_fd;

pub use file::FileDevice;
pub use fsm::{MigState, FLAG_P2P, FLAG_PRE_COPY, FLAG_STOP_COPY};
use mdevmig_plugin_api::DeviceInfo;
pub use sim::{Faults, SimDevice};
pub use spec::{open, DeviceSpec, HostOverrides};
pub use vfio::VfioBackend;
pub use vfio_fd::VfioFdBackend;

use crate::error::Result;

/// Outcome of a read from the data stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRead {
    /// This many bytes were read.
    Data(usize),
    /// No data now, more may come later (ENOMSG in PRE_COPY).
    NotYet,
    /// End of the stream.
    End,
}

/// `struct vfio_precopy_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrecopyInfo {
    /// Bytes of initial data not yet read.
    pub initial_bytes: u64,
    /// Estimate of dirty data the device would produce now.
    pub dirty_bytes: u64,
}

/// A migratable device, with the kernel's v2 semantics.
pub trait MigrationDevice: Send {
    /// Backend name (`sim`, `file`, `vfio`).
    fn backend(&self) -> &'static str;

    /// Vendor, type, configuration and host capabilities.
    fn info(&self) -> &DeviceInfo;

    /// `VFIO_DEVICE_FEATURE_MIGRATION` flags.
    fn migration_flags(&self) -> u64;

    /// Current state (`VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`, GET).
    fn state(&mut self) -> Result<MigState>;

    /// Moves to `target` along the kernel's arcs (SET). Entering STOP_COPY,
    /// PRE_COPY(_P2P) or RESUMING opens a data stream; leaving them closes it.
    fn set_state(&mut self, target: MigState) -> Result<()>;

    /// Reads from the data stream.
    fn read_data(&mut self, buf: &mut [u8]) -> Result<DataRead>;

    /// Writes to the data stream (RESUMING). One call is one write(2): a
    /// structure is written in one call so the driver sees it whole.
    fn write_data(&mut self, buf: &[u8]) -> Result<()>;

    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`: bytes STOP_COPY would yield now.
    fn data_size(&mut self) -> Result<u64>;

    /// `VFIO_MIG_GET_PRECOPY_INFO` (PRE_COPY states only).
    fn precopy_info(&mut self) -> Result<PrecopyInfo>;

    /// `VFIO_DEVICE_RESET`: back to RUNNING, streams closed.
    fn reset(&mut self) -> Result<()>;

    /// SHA-256 of the device's full state, where the backend can compute it
    /// without disturbing the device (simulated devices).
    fn state_digest(&mut self) -> Option<[u8; 32]> {
        None
    }
}

impl<T: MigrationDevice + ?Sized> MigrationDevice for Box<T> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn info(&self) -> &DeviceInfo {
        (**self).info()
    }
    fn migration_flags(&self) -> u64 {
        (**self).migration_flags()
    }
    fn state(&mut self) -> Result<MigState> {
        (**self).state()
    }
    fn set_state(&mut self, target: MigState) -> Result<()> {
        (**self).set_state(target)
    }
    fn read_data(&mut self, buf: &mut [u8]) -> Result<DataRead> {
        (**self).read_data(buf)
    }
    fn write_data(&mut self, buf: &[u8]) -> Result<()> {
        (**self).write_data(buf)
    }
    fn data_size(&mut self) -> Result<u64> {
        (**self).data_size()
    }
    fn precopy_info(&mut self) -> Result<PrecopyInfo> {
        (**self).precopy_info()
    }
    fn reset(&mut self) -> Result<()> {
        (**self).reset()
    }
    fn state_digest(&mut self) -> Option<[u8; 32]> {
        (**self).state_digest()
    }
}

/// Flags as names, for people.
pub fn flag_names(flags: u64) -> Vec<&'static str> {
    let mut v = Vec::new();
    if flags & FLAG_STOP_COPY != 0 {
        v.push("STOP_COPY");
    }
    if flags & FLAG_P2P != 0 {
        v.push("P2P");
    }
    if flags & FLAG_PRE_COPY != 0 {
        v.push("PRE_COPY");
    }
    v
}
