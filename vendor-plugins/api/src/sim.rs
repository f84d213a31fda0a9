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
    /// device still runs: right after [`begin_save`](Self::begin_save) the initial
    /// data (the `initial_bytes` of `VFIO_MIG_GET_PRECOPY_INFO`), then growing by
    /// what each [`next_precopy_round`](Self::next_precopy_round) adds. It never
    /// shrinks during a save.
    fn precopy_len(&self) -> u64 {
        0
    }

    /// The raw bytes a next pre-copy round (or, failing that, STOP_COPY) would
    /// re-send for data the guest dirtied and that is not yet in the stream: the
    /// device's part of `dirty_bytes` in `VFIO_MIG_GET_PRECOPY_INFO` (the broker's
    /// simulated device adds the stream bytes a round produced and the reader has
    /// not read yet). 0 when no save is being tracked.
    fn dirty_bytes(&self) -> u64 {
        0
    }

    /// Called in PRE_COPY when the reader has read everything up to
    /// [`precopy_len`](Self::precopy_len) and asks for precopy info
    /// (`VFIO_MIG_GET_PRECOPY_INFO`): the device prepares its next incremental
    /// image, as mlx5 does. The model may move data dirtied since the last round (or
    /// since [`begin_save`](Self::begin_save)) into the stream as re-sends, growing
    /// `precopy_len`, and [`dirty_bytes`](Self::dirty_bytes) shrinks accordingly;
    /// it may also add nothing (nothing dirty, or no room left for re-sends).
    ///
    /// The default does nothing: a format whose sections all have fixed lengths
    /// before the first byte cannot re-send (simgpu keeps its one round, `fb`,
    /// and carries dirtied pages in `fb-dirty` in STOP_COPY).
    fn next_precopy_round(&mut self) {}

    /// Simulates the guest touching the device while it runs, `rounds` times. What
    /// one round writes is the model's own (simgpu and xe: 8 pages of 4 KiB; mtty:
    /// nothing, its guest is idle); the broker's simulated device turns a dirty
    /// rate in bytes per second into rounds of 32 KiB.
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
