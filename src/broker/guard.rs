//! Guards that put a device back when a save or restore does not finish, on every
//! way out: an error returned with `?`, an early return, or a panic unwinding
//! through the broker (from a vendor plugin, a device backend or the broker
//! itself).
//!
//! | guard | armed while | dropped armed |
//! | --- | --- | --- |
//! | [`SourceGuard`] | a save runs | the source goes back to RUNNING (the kernel's abort arc from STOP_COPY or PRE_COPY), or is reset if that fails |
//! | [`DestinationGuard`] | a restore runs | a destination that was touched (moved to RESUMING) is reset; an untouched one is left exactly as it was |
//!
//! Both are disarmed only by the success path (`done`), so no caller has to
//! remember to clean up.

use std::ops::{Deref, DerefMut};

use crate::device::{MigState, MigrationDevice};

/// A source device during a save.
pub(crate) struct SourceGuard<'d> {
    dev: &'d mut (dyn MigrationDevice + 'd),
    armed: bool,
}

impl<'d> SourceGuard<'d> {
    pub(crate) fn new(dev: &'d mut (dyn MigrationDevice + 'd)) -> Self {
        SourceGuard { dev, armed: true }
    }

    /// The save finished: leave the device where it is (STOP).
    pub(crate) fn done(mut self) {
        self.armed = false;
    }
}

impl<'d> Deref for SourceGuard<'d> {
    type Target = dyn MigrationDevice + 'd;
    fn deref(&self) -> &Self::Target {
        // The guarded device itself: the guard only adds the drop.
        &*self.dev
    }
}

impl DerefMut for SourceGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.dev
    }
}

impl Drop for SourceGuard<'_> {
    fn drop(&mut self) {
        if self.armed && self.dev.set_state(MigState::Running).is_err() {
            let _ = self.dev.reset();
        }
    }
}

/// A destination device during a restore.
pub(crate) struct DestinationGuard<'d> {
    dev: &'d mut (dyn MigrationDevice + 'd),
    touched: bool,
    armed: bool,
}

impl<'d> DestinationGuard<'d> {
    pub(crate) fn new(dev: &'d mut (dyn MigrationDevice + 'd)) -> Self {
        DestinationGuard {
            dev,
            touched: false,
            armed: true,
        }
    }

    /// Moves the device into RESUMING: from here on a failure resets it.
    pub(crate) fn open_resuming(&mut self) -> crate::Result<()> {
        self.touched = true;
        self.dev.set_state(MigState::Resuming)
    }

    /// The restore finished: the device keeps its new state.
    pub(crate) fn done(mut self) {
        self.armed = false;
    }
}

impl<'d> Deref for DestinationGuard<'d> {
    type Target = dyn MigrationDevice + 'd;
    fn deref(&self) -> &Self::Target {
        &*self.dev
    }
}

impl DerefMut for DestinationGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.dev
    }
}

impl Drop for DestinationGuard<'_> {
    fn drop(&mut self) {
        if self.armed && self.touched {
            let _ = self.dev.reset();
        }
    }
}
