//! Simulated device state, for the broker's `sim` backend.
//!
//! A plugin may offer a [`SimModel`]: a deterministic device state (seeded) that the
//! broker's simulated device saves and loads through the kernel's v2 state machine.
//! The model owns the vendor bytes; the simulated device owns the state machine,
//! the data stream positions and fault injection.

use crate::VendorError;

/// A simulated device's state.
pub trait SimModel: Send {
    /// Length of the raw stream a save would produce now (MIG_DATA_SIZE).
    fn raw_len(&self) -> u64;

    /// Fills `buf` with the raw stream starting at `offset` of the snapshot taken when
    /// the save began; returns the bytes written (0 at the end).
    fn read_raw(&mut self, offset: u64, buf: &mut [u8]) -> usize;

    /// Called when a save begins (entering PRE_COPY or STOP_COPY from a running or
    /// stopped device): the model fixes the snapshot `read_raw` serves.
    fn begin_save(&mut self) {}

    /// Bytes at the start of the raw stream that PRE_COPY hands out while the
    /// device still runs (the "initial bytes" of `VFIO_MIG_GET_PRECOPY_INFO`).
    fn precopy_len(&self) -> u64 {
        0
    }

    /// Estimate of data dirtied since PRE_COPY began (`dirty_bytes`).
    fn dirty_bytes(&self) -> u64 {
        0
    }

    /// Simulates the guest touching the device while it runs.
    fn guest_activity(&mut self, _rounds: u32) {}

    /// Starts loading a new state (entering RESUMING).
    fn begin_load(&mut self);

    /// Takes the next bytes of the raw stream (one write(2)).
    fn load_data(&mut self, data: &[u8]) -> Result<(), VendorError>;

    /// RESUMING to STOP: the device's final consistency check. On success the loaded
    /// state becomes the device's state; on failure the old state stays.
    fn end_load(&mut self) -> Result<(), VendorError>;

    /// Abandons a load (reset during RESUMING).
    fn abort_load(&mut self);

    /// SHA-256 of the device's full state: equal digests mean equal states.
    fn digest(&mut self) -> [u8; 32];
}
